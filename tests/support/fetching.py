"""Helpers for fetch tests: a run directory with a config and a candidate table."""
from __future__ import annotations

import hashlib
import io
import tarfile
from pathlib import Path

import pyarrow as pa
import yaml

import schemas
from curation import atomic

CLASSES = [{"name": "tabby cat", "imagenet_idx": 281}, {"name": "goldfish", "imagenet_idx": 1}]


def write_config(run: Path, fetch: dict | None = None, source: dict | None = None) -> Path:
    cfg = {
        "classes": CLASSES,
        "backgrounds": ["grass", "water"],
        "models": [{"name": "RN50"}],
        "source": source or {"kind": "url_list", "path": "urls.csv"},
        "fetch": {"image_size": 256, "chunk_size": 10, "thread_count": 8, "timeout": 2.0,
                  "allowed_networks": ["127.0.0.0/8"], **(fetch or {})},
    }
    run.mkdir(parents=True, exist_ok=True)
    path = run / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def candidates_table(urls: list[str], source: str = "url_list") -> pa.Table:
    rows = []
    for i, url in enumerate(urls):
        cls = CLASSES[i % len(CLASSES)]
        rows.append({"uid": hashlib.sha1(url.encode()).hexdigest()[:16], "url": url, "class_idx": cls["imagenet_idx"],
                     "class_name": cls["name"], "source": source, "source_id": str(i), "license": "cc-by",
                     "attribution": f"(c) tester {i}, cc-by"})
    return schemas.conform(pa.Table.from_pylist(rows), "candidates").sort_by("uid")


def write_candidates(run: Path, urls: list[str], source: str = "url_list") -> pa.Table:
    table = candidates_table(urls, source)
    atomic.write_parquet(run / "candidates" / "candidates.parquet", table)
    return table


def read_samples(run: Path) -> pa.Table:
    return schemas.read_folder(run / "samples", "samples").sort_by("uid")


def shard_contents(run: Path) -> dict[str, dict[str, bytes]]:
    """{shard name: {member name: bytes}} for every tar in RUN/shards."""
    out = {}
    for tar_path in sorted((run / "shards").glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            out[tar_path.name] = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
    return out


def image_size(data: bytes) -> tuple[int, int]:
    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        return img.size
