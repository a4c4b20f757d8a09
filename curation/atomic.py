"""Outputs appear whole or not at all: write to a temp name in the same folder, then rename.

For a run directory in an object store (curation/storage.py) the temp file is local and the
rename is the upload: a single PUT, which the store makes visible only once it is complete.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Iterator

from curation import storage

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int | None = None) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it onto ``path`` only if the block succeeds.

    The file gets ``mode``, or by default the mode any new file would get (umask applied).
    """
    path = storage.path(path)
    if isinstance(path, storage.UrlPath):
        fd, tmp = tempfile.mkstemp(prefix=".counteranimal-", suffix=path.suffix or ".tmp")
        os.close(fd)
        try:
            yield Path(tmp)
            path.put_file(tmp)
        finally:
            os.unlink(tmp)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK if mode is None else mode)   # mkstemp's own is 0600
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    path = storage.path(path)
    if isinstance(path, storage.UrlPath):
        path.write_bytes(data)     # one PUT
        return
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_parquet(path: str | os.PathLike, table) -> None:
    import pyarrow.parquet as pq

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)


def clean_temp_files(folder: str | os.PathLike) -> int:
    """Remove leftovers of writes that a killed run never renamed; returns how many."""
    folder = storage.path(folder)
    if isinstance(folder, storage.UrlPath):
        return 0      # uploads are whole objects: no temp names are ever left there
    if not folder.is_dir():
        return 0
    n = 0
    for p in folder.glob(".*.tmp"):
        p.unlink(missing_ok=True)
        n += 1
    return n
