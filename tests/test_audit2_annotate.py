"""Second CLI audit: what `counteranimal annotate pull` prints after a partial annotation round.

A class whose human groups are still too small has no human pair: the line says why (the
proposal's reason) instead of "human None → None (dropped)".
"""
from __future__ import annotations

import pyarrow as pa

import schemas
from curation import atomic
from pipeline.commands.annotate import pair_lines


def _row(source: str, common, counter, decision: str, reason: str) -> dict:
    fields = {f.name: None for f in schemas.SCHEMAS["proposals"]}
    return {**fields, "class_idx": 8, "class_name": "hen", "source": source, "model_id": "reference",
            "common": common, "counter": counter, "decision": decision, "reason": reason,
            "n_common": 0, "n_counter": 0}


def test_a_human_side_without_a_pair_says_why(tmp_path):
    rows = [_row("model", "grass", "tree", "kept", "grass → tree: 100.0% → 10.0%"),
            _row("human", None, None, "dropped", "fewer than two background groups with ≥ 20 photos (1)")]
    table = schemas.conform(pa.Table.from_pylist(rows), "proposals")
    atomic.write_parquet(tmp_path / "proposals.parquet", table)
    assert pair_lines(tmp_path) == [
        "  hen: model grass → tree (kept); human no pair "
        "(dropped: fewer than two background groups with ≥ 20 photos (1))"]


def test_both_sides_with_pairs_read_as_before(tmp_path):
    rows = [_row("model", "grass", "tree", "kept", "r1"), _row("human", "grass", "snow", "kept", "r2")]
    atomic.write_parquet(tmp_path / "proposals.parquet", schemas.conform(pa.Table.from_pylist(rows), "proposals"))
    assert pair_lines(tmp_path) == ["  hen: model grass → tree (kept); human grass → snow (kept)"]
