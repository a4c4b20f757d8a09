"""Where the run directory lives: a local folder, or an object store URL (``s3://``, ``gs://``).

    run = storage.path("s3://bucket/runs/r1")      # or "/data/runs/r1": a pathlib.Path, as before
    samples = run / "samples"                      # the same operators and methods either way
    table = storage.read_table(samples / "00000.parquet")
    atomic.write_parquet(run / "proposals.parquet", table)   # appears whole (curation/atomic.py)

A local path stays a ``pathlib.Path`` and every stage does exactly what it did before (temp
name, then ``os.replace``). A URL becomes a ``UrlPath``: the subset of pathlib the stages use,
over fsspec. Writes to it are whole-object uploads (a single PUT, which an object store makes
visible only once complete: its equivalent of the rename), so nothing half-written is seen;
an object store has no folders, so ``mkdir`` does nothing and a "folder" exists while it holds
an object.

Why fsspec and not Beam ``FileSystems`` here: ``curation/`` never imports apache_beam (house rule),
and the launcher, the Beam workers and the plain-Python commands (report, download checks)
share this one module, so there is one S3 client and one set of options for all of them.
``pipeline/options.py`` hands Beam's own S3 options (``--s3_endpoint_url``,
``--s3_access_key_id``, ``--s3_secret_access_key``, ``--s3_verify``, ``--s3_region_name``) to
``configure``; a ``UrlPath`` carries them inside itself, so a DoFn unpickled on a worker reaches
the same endpoint as the launcher. Without them, s3fs reads the usual ``AWS_*`` environment.
``s3://`` needs s3fs and ``gs://`` gcsfs (the ``cluster`` extra); only ``s3://`` is tested here
(tests/test_object_storage.py, against a moto server).
"""
from __future__ import annotations

import contextlib
import fnmatch
import os
import posixpath
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

_OPTIONS: dict[str, dict] = {}     # scheme -> fsspec storage options, set by configure()


def configure(scheme: str, **options) -> None:
    """Storage options for every ``UrlPath`` of ``scheme`` made from now on (None values dropped)."""
    _OPTIONS[scheme] = {k: v for k, v in options.items() if v is not None}


def configure_s3(endpoint_url: str | None = None, access_key_id: str | None = None,
                 secret_access_key: str | None = None, region_name: str | None = None,
                 verify: bool | str | None = None, path_style: bool = False) -> None:
    """s3fs options from Beam's S3 option names; ``path_style`` for servers without virtual hosts."""
    client = {"endpoint_url": endpoint_url, "region_name": region_name, "verify": verify}
    configure("s3", key=access_key_id, secret=secret_access_key,
              client_kwargs={k: v for k, v in client.items() if v is not None} or None,
              config_kwargs={"s3": {"addressing_style": "path"}} if path_style or endpoint_url else None,
              # Workers write objects the launcher then lists: never answer from a stale listing.
              use_listings_cache=False)


def is_url(p) -> bool:
    return isinstance(p, UrlPath) or (isinstance(p, str) and "://" in p and not p.startswith("file://"))


def path(p: "str | os.PathLike | UrlPath") -> "Path | UrlPath":
    """A ``UrlPath`` for an object store URL, else a ``pathlib.Path`` (``file://`` stripped)."""
    if isinstance(p, UrlPath):
        return p
    if isinstance(p, str) and p.startswith("file://"):
        return Path(p[len("file://"):])
    if is_url(p):
        scheme, rest = p.split("://", 1)
        return UrlPath(scheme, rest.strip("/"), _OPTIONS.get(scheme, {}))
    return Path(p)


def _fs(scheme: str, options: dict):
    import fsspec

    return fsspec.filesystem(scheme, **options)


class _Stat:
    def __init__(self, size: int):
        self.st_size = size


class UrlPath:
    """The part of ``pathlib.Path`` the stages use, for an object in an object store.

    It is deliberately not ``os.PathLike``: a library given one by mistake fails loudly instead of
    writing ``s3:/bucket/x`` to the local disk.
    """

    __slots__ = ("scheme", "key", "options")

    def __init__(self, scheme: str, key: str, options: dict | None = None):
        self.scheme, self.key, self.options = scheme, key.strip("/"), dict(options or {})

    # -- names -----------------------------------------------------------------------------------
    def __str__(self) -> str:
        return f"{self.scheme}://{self.key}"

    def __repr__(self) -> str:
        return f"UrlPath({str(self)!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, UrlPath) and str(self) == str(other)

    def __lt__(self, other: "UrlPath") -> bool:
        return str(self) < str(other)

    def __hash__(self) -> int:
        return hash(str(self))

    def __truediv__(self, part) -> "UrlPath":
        return self.joinpath(part)

    def joinpath(self, *parts) -> "UrlPath":
        key = self.key
        for part in parts:
            key = posixpath.join(key, str(part).strip("/")) if str(part) else key
        return UrlPath(self.scheme, key, self.options)

    @property
    def name(self) -> str:
        return posixpath.basename(self.key)

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def stem(self) -> str:
        return self.name[: len(self.name) - len(self.suffix)] if self.suffix else self.name

    @property
    def parent(self) -> "UrlPath":
        return UrlPath(self.scheme, posixpath.dirname(self.key), self.options)

    def with_name(self, name: str) -> "UrlPath":
        return self.parent / name

    def with_suffix(self, suffix: str) -> "UrlPath":
        return self.parent / (self.stem + suffix)

    def relative_to(self, other) -> Path:
        other = path(other)
        if not isinstance(other, UrlPath) or not (self.key + "/").startswith(other.key.rstrip("/") + "/") \
                and self.key != other.key:
            raise ValueError(f"{self} is not under {other}")
        return Path(posixpath.relpath(self.key, other.key))

    def resolve(self) -> "UrlPath":
        return self

    def absolute(self) -> "UrlPath":
        return self

    # -- queries ---------------------------------------------------------------------------------
    @property
    def fs(self):
        return _fs(self.scheme, self.options)

    def exists(self) -> bool:
        return self.fs.exists(self.key)

    def is_file(self) -> bool:
        return self.fs.isfile(self.key)

    def is_dir(self) -> bool:
        return self.fs.isdir(self.key)

    def stat(self) -> _Stat:
        return _Stat(int(self.fs.size(self.key)))

    def iterdir(self) -> Iterator["UrlPath"]:
        if not self.is_dir():
            raise FileNotFoundError(str(self))
        for entry in sorted(self.fs.ls(self.key, detail=False)):
            yield UrlPath(self.scheme, entry, self.options)

    def glob(self, pattern: str) -> Iterator["UrlPath"]:
        """Entries one level down (files and "folders") whose name matches ``pattern`` (fnmatch, as
        pathlib: ``*`` matches dot names too), or at any depth for a pattern starting ``**/``."""
        if pattern.startswith("**/"):
            yield from self.rglob(pattern[3:])
            return
        if not self.is_dir():
            return
        for entry in sorted(self.fs.ls(self.key, detail=False)):
            name = posixpath.basename(entry.rstrip("/"))
            if fnmatch.fnmatchcase(name, pattern):
                yield UrlPath(self.scheme, entry, self.options)

    def rglob(self, pattern: str) -> Iterator["UrlPath"]:
        if not self.is_dir():
            return
        for entry in sorted(self.fs.find(self.key)):
            if fnmatch.fnmatchcase(posixpath.basename(entry), pattern):
                yield UrlPath(self.scheme, entry, self.options)

    # -- reads and writes ------------------------------------------------------------------------
    def open(self, mode: str = "rb", encoding: str | None = None):
        if any(c in mode for c in "wax+"):
            raise ValueError(f"open {self} for reading only; write with curation.atomic (whole objects)")
        return self.fs.open(self.key, mode, encoding=encoding) if "b" not in mode else self.fs.open(self.key, mode)

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.key)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> int:
        self.fs.pipe_file(self.key, bytes(data))      # one PUT: the object appears whole
        return len(data)

    def write_text(self, text: str, encoding: str = "utf-8") -> int:
        return self.write_bytes(text.encode(encoding))

    def put_file(self, local: str | os.PathLike) -> None:
        """Upload a local file to this object (visible only once the upload completes)."""
        self.fs.put_file(os.fspath(local), self.key)

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Nothing to do: an object store makes a "folder" when an object is written under it."""

    def unlink(self, missing_ok: bool = False) -> None:
        try:
            self.fs.rm_file(self.key)
        except FileNotFoundError:
            if not missing_ok:
                raise

    def rmtree(self) -> None:
        if self.fs.exists(self.key):
            self.fs.rm(self.key, recursive=True)

    def __reduce__(self):
        return (UrlPath, (self.scheme, self.key, self.options))


# -- helpers that take either kind ----------------------------------------------------------------

def read_table(p, **kwargs):
    """``pq.read_table`` for a local path or a URL."""
    import pyarrow.parquet as pq

    p = path(p)
    if isinstance(p, UrlPath):
        import pyarrow as pa

        return pq.read_table(pa.BufferReader(p.read_bytes()), **kwargs)
    return pq.read_table(p, **kwargs)


def read_schema(p):
    import pyarrow.parquet as pq

    p = path(p)
    if isinstance(p, UrlPath):
        with p.open("rb") as f:
            return pq.read_schema(f)
    return pq.read_schema(p)


def rmtree(p, ignore_errors: bool = True) -> None:
    p = path(p)
    if isinstance(p, UrlPath):
        try:
            p.rmtree()
        except OSError:
            if not ignore_errors:
                raise
    else:
        shutil.rmtree(p, ignore_errors=ignore_errors)


def move_in(local: str | os.PathLike, dest) -> None:
    """Move a finished local file onto ``dest``: a rename on the same disk, an upload to an object store."""
    dest = path(dest)
    if isinstance(dest, UrlPath):
        dest.put_file(local)
        os.unlink(local)
    else:
        os.replace(local, dest)


@contextlib.contextmanager
def local_copy(p) -> Iterator[Path]:
    """A local path holding ``p``'s bytes (itself when local), for libraries that need a real file."""
    p = path(p)
    if not isinstance(p, UrlPath):
        yield p
        return
    fd, tmp = tempfile.mkstemp(prefix=".counteranimal-", suffix=p.suffix)
    os.close(fd)
    try:
        p.fs.get_file(p.key, tmp)
        yield Path(tmp)
    finally:
        os.unlink(tmp)
