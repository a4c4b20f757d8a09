"""`counteranimal download`: a release folder over real HTTP on 127.0.0.1 (and from a local path),
verified file by file, resumed with Range after a dropped connection, refusing tampered files by name."""
from __future__ import annotations

import functools
import hashlib
import os
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from curation.errors import UserError
from pipeline.cli import main
from pipeline.download import download, parse_checksums
from pipeline.fileserver import FileServer

FILES = {"common/nshards.txt": b"2\n", "counter/nshards.txt": b"1\n", "classnames.txt": b"cat\ndog\n",
         "common/0.tar": os.urandom(300_000), "common/1.tar": os.urandom(70_000), "counter/0.tar": os.urandom(200_000)}


def write_release(folder: Path, files: dict[str, bytes] = FILES) -> Path:
    for rel, data in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_bytes(data)
    sums = "".join(f"{hashlib.sha256(files[r]).hexdigest()}  {r}\n" for r in sorted(files))
    (folder / "SHA256SUMS").write_text(sums)
    return folder


def assert_same(src: Path, dest: Path) -> None:
    for rel in [*FILES, "SHA256SUMS"]:
        assert (dest / rel).read_bytes() == (src / rel).read_bytes(), rel
    assert not list(dest.rglob("*.part"))


@pytest.fixture
def release(tmp_path):
    return write_release(tmp_path / "rel")


def test_http_download_verifies_every_file(release, tmp_path, capsys):
    with FileServer(release).start() as server:
        assert main(["download", server.base, str(tmp_path / "out"), "--no-progress"]) == 0
        paths = [p for p, _ in server.requests]
    assert paths[0] == "SHA256SUMS" and sorted(paths[1:]) == sorted(FILES)
    assert_same(release, tmp_path / "out")
    assert "6 files verified" in capsys.readouterr().out


def test_flipped_byte_fails_naming_the_file(release, tmp_path, capsys):
    data = bytearray(FILES["counter/0.tar"])
    data[12345] ^= 0x01
    (release / "counter/0.tar").write_bytes(bytes(data))
    out = tmp_path / "out"
    with FileServer(release).start() as server:
        assert main(["download", server.base, str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "counter/0.tar: checksum mismatch" in err and "1 of 6 files" in err
    assert "Traceback" not in err
    # Nothing half-written or wrong under a final name; the checksum list is not written either.
    assert not (out / "counter/0.tar").exists() and not (out / "counter/0.tar.part").exists()
    assert not (out / "SHA256SUMS").exists()
    assert (out / "common/0.tar").read_bytes() == FILES["common/0.tar"]


def test_truncated_file_at_the_source_is_refused(release, tmp_path):
    (release / "common/0.tar").write_bytes(FILES["common/0.tar"][:1000])
    with FileServer(release).start() as server, pytest.raises(UserError, match=r"common/0\.tar: checksum mismatch \(1,000 bytes"):
        download(server.base, tmp_path / "out", progress=False)


def test_dropped_connection_resumes_with_range(release, tmp_path):
    with FileServer(release, drop_after={"common/0.tar": 100_000}).start() as server:
        r = download(server.base, tmp_path / "out", progress=False)
        ranges = [rng for p, rng in server.requests if p == "common/0.tar"]
    assert ranges == [None, "bytes=100000-"]
    assert r.resumed == 1 and r.fetched == 6
    assert_same(release, tmp_path / "out")


def test_interrupted_run_resumes_on_the_next(release, tmp_path, capsys):
    """A first run that gives up mid-file keeps the partial file; the second continues it, not restarts."""
    out = tmp_path / "out"
    with FileServer(release, drop_after={"counter/0.tar": 64_000}).start() as server:
        assert main(["download", server.base, str(out), "--retries", "0", "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "counter/0.tar: incomplete after 1 attempts" in err
        assert (out / "counter/0.tar.part").stat().st_size == 64_000 and not (out / "counter/0.tar").exists()
        server.requests.clear()
        assert main(["download", server.base, str(out), "--no-progress"]) == 0
        # Only the missing file is fetched again, and from where it stopped.
        assert [r for r in server.requests if r[0] != "SHA256SUMS"] == [("counter/0.tar", "bytes=64000-")]
    assert_same(release, out)


def test_server_without_range_restarts_the_partial(release, tmp_path):
    """python's http.server ignores Range (200 + whole body): the partial must be replaced, not appended to."""
    out = tmp_path / "out"
    (out / "common").mkdir(parents=True)
    (out / "common/0.tar.part").write_bytes(FILES["common/0.tar"][:5000])
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(release)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        download(f"http://127.0.0.1:{httpd.server_address[1]}", out, progress=False)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert_same(release, out)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_local_path_source_and_rerun_reuses(release, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["download", str(release), str(out), "--no-progress"]) == 0
    assert_same(release, out)
    assert main(["download", str(release), str(out), "--no-progress"]) == 0
    assert "0 fetched, 0 resumed, 6 already there" in capsys.readouterr().out
    # A wrong file already in DEST is replaced by the right one.
    (out / "classnames.txt").write_bytes(b"bird\n")
    assert main(["download", str(release), str(out), "--no-progress"]) == 0
    assert (out / "classnames.txt").read_bytes() == FILES["classnames.txt"]


def test_checksum_list_with_a_path_outside_the_release_is_refused(tmp_path):
    with pytest.raises(UserError, match=r"names '\.\./evil', which is not a path inside"):
        parse_checksums(f"{'0' * 64}  ../evil\n", "SHA256SUMS")
    with pytest.raises(UserError, match="line 1 is not"):
        parse_checksums("hello\n", "SHA256SUMS")


def test_missing_source_and_missing_file_are_named(release, tmp_path, capsys):
    assert main(["download", str(tmp_path / "nowhere"), str(tmp_path / "o1"), "--no-progress"]) == 2
    assert "SHA256SUMS" in capsys.readouterr().err
    (release / "common/1.tar").unlink()
    with FileServer(release).start() as server:
        assert main(["download", server.base, str(tmp_path / "o2"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "common/1.tar" in err and "404" in err
    assert not list((tmp_path / "o2").rglob("*.part"))


def _prefixed_local_filesystem():
    """A Beam FileSystem for the scheme localtest:// over local files, registered as Beam registers any
    (by subclassing): the download takes the FileSystems path (open, match, join, seek) as for gs:// or s3://."""
    from apache_beam.io.localfilesystem import LocalFileSystem

    prefix = "localtest://"

    class PrefixedLocal(LocalFileSystem):
        @classmethod
        def scheme(cls):
            return "localtest"

        def join(self, base, *paths):
            return prefix + super().join(base[len(prefix):], *paths)

        def open(self, path, *args, **kwargs):
            return super().open(path[len(prefix):], *args, **kwargs)

        def match(self, patterns, limits=None):
            return super().match([p[len(prefix):] for p in patterns], limits)

    return PrefixedLocal, prefix


def test_beam_filesystems_source_with_resume(release, tmp_path):
    cls, prefix = _prefixed_local_filesystem()
    out = tmp_path / "out"
    (out / "common").mkdir(parents=True)
    (out / "common/0.tar.part").write_bytes(FILES["common/0.tar"][:5000])
    r = download(prefix + str(release), out, progress=False)
    assert r.resumed == 1 and r.fetched == 6
    assert_same(release, out)
    assert cls.scheme() == "localtest"
