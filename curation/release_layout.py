"""The release folder's names, in one place: what `release` writes and `download`/`evaluate` read.

```
RUN/release/NAME-VERSION/
  common/nshards.txt, common/0.tar … common/(n-1).tar     one split per group, unpadded shard names
  counter/nshards.txt, counter/0.tar …
  classnames.txt                        one name per line: the label space the pairs were chosen in
  zeroshot_classification_templates.txt one template per line, with {c}
  one_vs_k.json                         {class_idx: [label indices]}: the reference model's "1 vs 20" sets
  metadata.parquet                      one row per image (schema release_metadata)
  SHA256SUMS                            sha256sum format over every other file, relative paths
  README.md                             the dataset card
  croissant.json                        MLCommons Croissant
```

The names follow clip_benchmark's `wds/` loader (it builds ``{split}/{0..n-1}.tar`` from
``nshards.txt`` and formats templates with ``{c}``) and HF datasets' webdataset loader (a key ends at
its first dot, so keys contain none).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from curation import storage

SPLITS = ("common", "counter")

NSHARDS = "nshards.txt"
CLASSNAMES = "classnames.txt"
TEMPLATES = "zeroshot_classification_templates.txt"
ONE_VS_K = "one_vs_k.json"
METADATA = "metadata.parquet"
CHECKSUMS = "SHA256SUMS"
CARD = "README.md"
CROISSANT = "croissant.json"

# Per-sample members of a shard: the image under its stored extension, the label, the record.
IMAGE_EXTENSIONS = ("jpg", "webp", "png")   # png when fetch.encode_format is png
CLS = "cls"
JSON = "json"

# clip_benchmark's wds loader starts 4 workers by default and fails when a split has fewer shards.
MIN_SHARDS = 4

_KEY_OK = re.compile(r"[^A-Za-z0-9_-]")


def release_name(name: str, version: str) -> str:
    """The release's folder name under RUN/release/."""
    return f"{name}-{version}"


def release_dir(run: str | os.PathLike, name: str, version: str) -> Path:
    from curation.run_paths import RunPaths

    return RunPaths(run).release(name, version)


def shard_name(i: int) -> str:
    """Unpadded, as clip_benchmark expects: 0.tar, 1.tar, …"""
    return f"{int(i)}.tar"


def read_nshards(release: str | os.PathLike, split: str) -> int:
    path = storage.path(release) / split / NSHARDS
    text = path.read_text().strip()
    try:
        n = int(text)
    except ValueError:
        raise ValueError(f"{path}: expected a shard count, found {text[:40]!r}") from None
    if n < 0:
        raise ValueError(f"{path}: negative shard count {n}")
    return n


def shard_paths(release: str | os.PathLike, split: str) -> list[Path]:
    """The split's shards in order, from its nshards.txt."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    folder = storage.path(release) / split
    return [folder / shard_name(i) for i in range(read_nshards(release, split))]


def sample_key(uid: str) -> str:
    """A sample's key inside a shard: the uid with anything but [A-Za-z0-9_-] replaced by '_'.

    No dots (webdataset and HF datasets split a member name at its first dot); uids in this project
    are hex digests already, so the key is the uid.
    """
    key = _KEY_OK.sub("_", str(uid))
    if not key:
        raise ValueError(f"empty sample key for uid {uid!r}")
    return key


def relative_files(release: str | os.PathLike) -> list[str]:
    """Every file a release holds besides SHA256SUMS, as sorted POSIX paths relative to it."""
    root = storage.path(release)
    out = []
    for p in root.rglob("*"):
        if p.is_file() and p.name != CHECKSUMS and not p.name.startswith("."):
            out.append(p.relative_to(root).as_posix())
    return sorted(out)
