"""Judge a run's proposals against the planted world's oracle.

A class has a *significant* oracle drop when its oracle drop interval excludes zero and the drop
exceeds the selection rule's minimum range. For such a class the proposal is right when its
common is the oracle's common (the planted common for biased classes) and its counter is the
oracle's lowest-accuracy background — where two backgrounds' oracle accuracies lie within each
other's intervals, either counts. A class without a significant oracle drop must not be kept.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from curation.world.oracle import read_oracle


def judge(world_dir: str | Path, run_dir: str | Path, min_range_points: float = 5.0) -> dict:
    world_dir, run_dir = Path(world_dir), Path(run_dir)
    oracle = read_oracle(world_dir)["classes"]
    cells = {(c["class_name"], c["background"]): c for c in pq.read_table(world_dir / "oracle.parquet").to_pylist()}
    proposals = [r for r in pq.read_table(run_dir / "proposals.parquet").to_pylist()
                 if r["source"] == "model" and r["model_id"] != "all"]

    def tied(cls: str, a: str | None, b: str) -> bool:
        if a is None:
            return False
        x, y = cells[(cls, a)], cells[(cls, b)]
        return a == b or (x["accuracy_lo"] <= y["accuracy_hi"] and y["accuracy_lo"] <= x["accuracy_hi"])

    per_class = {}
    for r in proposals:
        o = oracle[r["class_name"]]
        significant = o["drop_lo"] > 0 and 100 * o["drop"] > min_range_points
        common = o["planted_common"] or o["oracle_common"]
        right_pair = tied(r["class_name"], r["common"], common) and tied(r["class_name"], r["counter"], o["oracle_counter"])
        kept = r["decision"] == "kept"
        per_class[r["class_name"]] = dict(
            significant=significant, kept=kept, proposed=(r["common"], r["counter"]),
            oracle=(common, o["oracle_counter"]), correct=kept and right_pair if significant else not kept)
    sig = [c for c, v in per_class.items() if v["significant"]]
    return {
        "classes": per_class,
        "significant": len(sig),
        "found": sum(per_class[c]["correct"] for c in sig),
        "recall": sum(per_class[c]["correct"] for c in sig) / len(sig) if sig else None,
        "false_positives": sorted(c for c, v in per_class.items() if not v["significant"] and v["kept"]),
        "background_accuracy": background_accuracy(world_dir, run_dir),
    }


def background_accuracy(world_dir: Path, run_dir: Path) -> float | None:
    """Share of grouped photos whose assigned background is the true one."""
    truth = {r["uid"]: r["background"] for r in pq.read_table(world_dir / "ground_truth.parquet",
                                                              columns=["uid", "background"]).to_pylist()}
    source_id = {r["uid"]: r["source_id"] for r in pq.read_table(run_dir / "candidates" / "candidates.parquet",
                                                                 columns=["uid", "source_id"]).to_pylist()}
    groups = [g for g in pq.read_table(run_dir / "groups", columns=["uid", "background", "method"]).to_pylist()
              if g["method"] != "human"]
    if not groups:
        return None
    return sum(truth.get(source_id[g["uid"]]) == g["background"] for g in groups) / len(groups)
