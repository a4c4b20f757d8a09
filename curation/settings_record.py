"""What settings a stage's outputs were made with, kept beside them (e.g. RUN/scores/settings.json).

A stage that skips finished work cannot tell on its own that config.yaml changed since; it records
the settings its outputs depend on and, on the next run, learns what they were.
"""
from __future__ import annotations

import json
from pathlib import Path

from curation import atomic


def replace(path: Path, now: dict) -> dict | None:
    """Record ``now`` at ``path``; return what was recorded before when it differs (None: the same,
    or nothing readable recorded, as for outputs made before records were kept)."""
    try:
        before = json.loads(path.read_text()) if path.exists() else None
    except (OSError, ValueError):
        before = None
    if before != now:
        atomic.write_text(path, json.dumps(now, indent=1, sort_keys=True) + "\n")
    return before if before not in (None, now) else None
