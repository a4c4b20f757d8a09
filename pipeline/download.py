"""Download a release folder and verify it: SHA256SUMS first, then every file it lists.

    download("http://host/planted-world-1.0/", "data/planted-world-1.0")   # or a local path, gs://, s3://
    python -m pipeline.download SRC DEST     (= counteranimal download SRC DEST)

- Sources: an http(s) URL of the folder, or anything Beam's FileSystems opens (a local path,
  gs://, s3://, …).
- Parallel: one thread per file, ``workers`` at a time.
- Resumable: a file is written as ``NAME.part`` and continued from its size (HTTP ``Range``;
  FileSystems files are seeked); a file already present with the right checksum is not fetched
  again; a broken connection is retried from where it stopped.
- Verified: every file's SHA-256 must match SHA256SUMS before it is renamed to its final name, so
  a half-written or tampered file never appears under that name. A mismatch names the file and
  both digests; DEST/SHA256SUMS is written last, once every file verified.
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from http.client import HTTPException
from pathlib import Path, PurePosixPath

from curation import atomic
from curation.errors import UserError
from curation.release_layout import CHECKSUMS

PART = ".part"
CHUNK = 1 << 20
_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


@dataclass
class Result:
    dest: Path
    files: int = 0
    fetched: int = 0          # files transferred (wholly or from a partial)
    reused: int = 0           # already present with the right checksum
    resumed: int = 0          # continued from a .part file
    bytes: int = 0            # bytes transferred this run
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)


class _Retry(Exception):
    """The transfer stopped early (connection dropped, fewer bytes than announced): resume it."""


def is_http(src: str) -> bool:
    return src.startswith(("http://", "https://"))


def parse_checksums(text: str, where: str) -> dict[str, str]:
    """SHA256SUMS (sha256sum's format) -> {relative POSIX path: hex digest}; refuses unsafe paths."""
    out: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        m = _LINE.match(line)
        if not m:
            raise UserError(f"line {n} is not '<sha256>  <path>': {line[:80]!r}.", where=where)
        rel = m.group(2)
        parts = PurePosixPath(rel).parts
        if rel.startswith("/") or "\\" in rel or ".." in parts or not parts or rel == CHECKSUMS:
            raise UserError(f"line {n} names {rel!r}, which is not a path inside the release.", where=where)
        out[rel] = m.group(1).lower()
    if not out:
        raise UserError("lists no files.", where=where)
    return out


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


class _Source:
    def __init__(self, src: str, timeout: float):
        self.src, self.timeout = src, timeout
        self.http = is_http(src)
        self.base = src.rstrip("/") + "/" if self.http else src

    def url(self, rel: str) -> str:
        if self.http:
            return self.base + urllib.request.quote(rel)
        if "://" not in self.src:            # a local path: no need to start Beam's filesystems
            return str(Path(self.src, *rel.split("/")))
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.join(self.base, *rel.split("/"))

    def read_small(self, rel: str) -> bytes:
        buf = bytearray()
        for chunk in self.stream(rel, 0, lambda total, restart: None):
            buf += chunk
        return bytes(buf)

    def stream(self, rel: str, offset: int, started):
        """Yield the file's bytes from ``offset``; calls started(total size or None, restart from 0?)."""
        url = self.url(rel)
        if not self.http and "://" not in self.src:
            yield from self._local(url, offset, started)
            return
        if not self.http:
            from apache_beam.io.filesystems import CompressionTypes, FileSystems

            try:
                f = FileSystems.open(url, compression_type=CompressionTypes.UNCOMPRESSED)
            except Exception as exc:  # noqa: BLE001 (each filesystem raises its own kind)
                raise UserError(f"cannot open {url}: {exc}") from None
            with f:
                size = None
                try:
                    size = FileSystems.match([url])[0].metadata_list[0].size_in_bytes
                except Exception:  # noqa: BLE001 (the size only bounds the transfer)
                    pass
                restart = False
                if offset:
                    try:
                        f.seek(offset)
                    except Exception:  # noqa: BLE001 (a stream that cannot seek: start over)
                        restart = True
                started(size, restart)
                yield from iter(lambda: f.read(CHUNK), b"")
            return
        req = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
        try:
            resp = urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code == 416 and offset:      # the partial file is already whole
                started(offset, False)
                return
            raise UserError(f"{url}: the server answered {exc.code} {exc.reason}.") from None
        except (urllib.error.URLError, OSError, HTTPException) as exc:
            raise _Retry(f"cannot connect: {getattr(exc, 'reason', exc)}") from None
        with resp:
            length = resp.headers.get("Content-Length")
            if offset and resp.status == 206:
                total = resp.headers.get("Content-Range", "").rpartition("/")[2]
                started(int(total) if total.isdigit() else None, False)
            else:                                # 200: the server ignored Range; start over
                started(int(length) if length and length.isdigit() else None, bool(offset))
            try:
                yield from iter(lambda: resp.read(CHUNK), b"")
            except (OSError, HTTPException) as exc:   # IncompleteRead, reset, timeout
                raise _Retry(f"connection dropped: {exc}") from None

    @staticmethod
    def _local(path: str, offset: int, started):
        try:
            f = open(path, "rb")
        except OSError as exc:
            raise UserError(f"cannot open {path}: {exc.strerror or exc}.") from None
        with f:
            started(os.fstat(f.fileno()).st_size, False)
            f.seek(offset)
            yield from iter(lambda: f.read(CHUNK), b"")


def download(src: str, dest: str | os.PathLike, *, workers: int = 4, retries: int = 3, timeout: float = 60.0,
             progress: bool = True) -> Result:
    """Copy the release at ``src`` into ``dest``, verified against its SHA256SUMS; see the module doc.

    Raises UserError naming every file that failed (checksum mismatch, missing, still incomplete
    after ``retries`` resumptions); files that verified stay, so a re-run fetches only the rest.
    """
    started = time.monotonic()
    dest = Path(dest)
    source = _Source(str(src), timeout)
    where = source.url(CHECKSUMS)
    try:
        sums_bytes = source.read_small(CHECKSUMS)
    except _Retry as exc:
        raise UserError(f"cannot fetch the release's checksum list: {exc}", where=where) from None
    try:
        sums = parse_checksums(sums_bytes.decode("utf-8"), where)
    except UnicodeDecodeError:
        raise UserError("is not a text file.", where=where) from None
    dest.mkdir(parents=True, exist_ok=True)
    result = Result(dest, files=len(sums))
    lock = threading.Lock()
    bar = _progress(len(sums), progress, dest)

    def one(rel: str, digest: str) -> str | None:
        try:
            return _fetch_file(source, rel, digest, dest, retries, result, lock)
        finally:
            with lock:
                bar.update(1)
                bar.set_postfix_str(f"{result.bytes / 1e6:.1f} MB", refresh=False)

    try:
        with ThreadPoolExecutor(max(1, workers), thread_name_prefix="download") as pool:
            futures = {pool.submit(one, rel, digest): rel for rel, digest in sorted(sums.items())}
            for fut in as_completed(futures):
                try:
                    problem = fut.result()
                except UserError as exc:
                    problem = f"{futures[fut]}: {exc}"
                if problem:
                    result.failures.append(problem)
    finally:
        bar.close()
    result.seconds = time.monotonic() - started
    if result.failures:
        result.failures.sort()
        raise UserError(f"{len(result.failures)} of {len(sums)} files of {src} failed: " + "; ".join(result.failures),
                        hint="Files that verified are kept; re-run the same command to resume the rest.")
    atomic.write_bytes(dest / CHECKSUMS, sums_bytes)
    return result


def _fetch_file(source: _Source, rel: str, digest: str, dest: Path, retries: int, result: Result, lock) -> str | None:
    """Fetch one file into place; return a problem sentence naming it, or None when it verified."""
    final = dest / Path(*rel.split("/"))
    part = final.with_name(final.name + PART)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.is_file() and sha256_file(final) == digest:
        with lock:
            result.reused += 1
        return None
    last, fresh_retry = None, True
    for _attempt in range(retries + 1):
        offset = part.stat().st_size if part.is_file() else 0
        total: list = [None]
        got = 0
        try:
            with open(part, "ab") as f:
                def started(size, restart, f=f):
                    total[0] = size
                    if restart:            # the source cannot continue the partial: start it over
                        f.seek(0)
                        f.truncate()

                try:
                    for chunk in source.stream(rel, offset, started):
                        f.write(chunk)
                        got += len(chunk)
                finally:
                    with lock:
                        result.bytes += got
                        result.resumed += bool(offset and f.tell() > got)
        except _Retry as exc:
            last = str(exc)
            continue
        except UserError:                        # e.g. 404: no empty partial left behind
            if part.is_file() and part.stat().st_size == 0:
                part.unlink()
            raise
        size = part.stat().st_size if part.is_file() else 0
        if total[0] is not None and size < total[0]:
            last = f"got {size:,} of {total[0]:,} bytes"
            continue
        found = sha256_file(part) if part.is_file() else hashlib.sha256(b"").hexdigest()
        if found == digest:
            os.replace(part, final)
            with lock:
                result.fetched += 1
            return None
        if offset and fresh_retry:              # a stale partial from another version: start over once
            part.unlink(missing_ok=True)
            fresh_retry = False
            continue
        part.unlink(missing_ok=True)
        if final.is_file():
            final.unlink()                      # an older, wrong copy must not pass for this release's file
        return (f"{rel}: checksum mismatch ({size:,} bytes, sha256 {found}, expected {digest}): the file was "
                "tampered with or truncated at the source")
    return f"{rel}: incomplete after {retries + 1} attempts ({last}); the partial file {part.name} is kept for a re-run"


def _progress(total: int, enabled: bool, dest: Path):
    from tqdm import tqdm

    return tqdm(total=total, unit="file", desc=f"download → {dest.name}", disable=not enabled, file=sys.stderr,
                leave=False)


if __name__ == "__main__":
    from pipeline.cli import main

    sys.exit(main(["download", *sys.argv[1:]]))
