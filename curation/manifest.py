"""RUN/manifest.json: versions, config hash, and per-stage counts and timings.

Stages merge their part in with ``update``; the file is rewritten atomically each time.
"""
from __future__ import annotations

import datetime as _dt
import json
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

from curation import atomic, storage

PACKAGES = ("counteranimal", "apache-beam", "img2dataset", "open_clip_torch", "torch", "pyarrow", "webdataset")


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


def read(run_dir: str | Path) -> dict:
    path = storage.path(run_dir) / "manifest.json"
    return json.loads(path.read_text()) if path.exists() else {}


def update(run_dir: str | Path, patch: dict[str, Any]) -> dict:
    """Deep-merge ``patch`` into the manifest (dicts merge, other values replace) and save it."""
    doc = _merge(read(run_dir), patch)
    doc["updated_at"] = _now()
    atomic.write_text(storage.path(run_dir) / "manifest.json", json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return doc


def count_by(table, column: str) -> dict:
    """Rows per distinct non-null value of a pyarrow table's column, for a stage's counts."""
    import pyarrow.compute as pc

    if table.num_rows == 0:
        return {}
    return {d["values"]: d["counts"] for d in pc.value_counts(table.column(column)).to_pylist()
            if d["values"] is not None}


def record_stage(run_dir: str | Path, stage: str, *, config_digest: str, counts: dict, seconds: float,
                 **extra: Any) -> dict:
    """Record a stage's latest run. It replaces the stage's earlier record whole: counts are a
    snapshot of the run directory, and merging them would keep reasons that no longer occur
    (e.g. 720 http_404 from a first fetch beside the 708 ok of the fetch that replaced it)."""
    doc = read(run_dir)
    stages = dict(doc.get("stages") or {})
    stages[stage] = {"counts": counts, "seconds": round(seconds, 3), "finished_at": _now(), **extra}
    doc.update(versions=versions(), config_digest=config_digest, stages=stages, updated_at=_now())
    atomic.write_text(storage.path(run_dir) / "manifest.json", json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return doc


def _merge(base: dict, patch: dict) -> dict:
    out = dict(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
