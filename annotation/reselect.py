"""The hook between human verification and pair selection (issue 5's stage).

`annotate pull` writes RUN/groups/human.parquet (method 'human'). Pair selection reads every
RUN/groups/*.parquet, so re-running it groups photos twice — by the model's labels and by the
verified ones — and writes both sets of rows (source 'model' and 'human') into proposals.parquet.
The selection stage registers itself here; until one is given, pull says what to run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import schemas

# Re-runs pair selection for a run directory (reading RUN/groups/*.parquet, human rows included)
# and rewrites RUN/proposals.parquet with source 'model' and 'human' rows side by side.
Selection = Callable[[Path], object]


def rerun_selection(run: Path, select: Selection | None, say: Callable[[str], None] = print) -> bool:
    """Call the selection stage on verified labels; False (with a note) when none is available."""
    if select is None:
        say("annotate pull: verified groups are in RUN/groups/human.parquet; re-run pair selection "
            "to put human-verified proposals beside the model's in proposals.parquet")
        return False
    select(Path(run))
    return True


def side_by_side(run: Path) -> list[dict]:
    """Per class, the model's and the humans' (common, counter, drop, decision), for display."""
    path = Path(run) / "proposals.parquet"
    if not path.exists():
        return []
    rows: dict[tuple, dict] = {}
    for p in schemas.read(path, "proposals").to_pylist():
        key = (p["class_idx"], p["class_name"])
        side = rows.setdefault(key, {"class_idx": key[0], "class_name": key[1]})
        if p["source"] not in side:   # first row per source (the decisive model comes first)
            side[p["source"]] = {k: p[k] for k in ("common", "counter", "drop", "decision", "model_id", "reason")}
    return [rows[k] for k in sorted(rows)]
