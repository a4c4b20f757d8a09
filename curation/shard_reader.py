"""Read a WebDataset tar shard (img2dataset's layout: KEY.jpg + KEY.json per sample) as plain data."""
from __future__ import annotations

import tarfile
from typing import BinaryIO, Iterator

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def iter_samples(fileobj: BinaryIO) -> Iterator[tuple[str, dict[str, bytes]]]:
    """Yield (key, {extension: bytes}) per sample, in tar order, streaming (no seeks)."""
    key, parts = None, {}
    with tarfile.open(fileobj=fileobj, mode="r|*") as tar:
        for member in tar:
            if not member.isfile():
                continue
            base = member.name.rsplit("/", 1)[-1]
            if "." not in base:
                continue
            k, ext = base.split(".", 1)
            if k != key and key is not None:
                yield key, parts
                parts = {}
            key = k
            parts[ext.lower()] = tar.extractfile(member).read()
    if key is not None:
        yield key, parts


def image_bytes(parts: dict[str, bytes]) -> bytes | None:
    for ext in IMAGE_EXTENSIONS:
        if ext in parts:
            return parts[ext]
    return None
