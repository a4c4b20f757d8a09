"""`world judge` on a null world: its checks can fail (proposals written by hand, judged for real)."""
from __future__ import annotations

import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq

import schemas
from curation import atomic, config
from curation.stats import drop_interval
from curation.world.judge import is_significant, judge
from curation.world.run_config import run_config
from tests.support.null_world import null_world  # noqa: F401  (session fixture)

CLI = [sys.executable, "-m", "pipeline.cli"]


def write_run(null_world, run, decide, human=None) -> None:
    """A run folder with the world's config and one proposals row per class: decide(cls, oracle entry)
    gives (decision, common, counter); human, if given, the same for verified ("human") rows."""
    cfg = run_config(null_world.dir, null_world.model, null_world.checkpoint)
    atomic.write_text(run / "config.yaml", config.dump(cfg))
    rows = []
    for i, (cls, o) in enumerate(null_world.oracle["classes"].items()):
        decision, common, counter = decide(cls, o)
        rows.append(dict(class_idx=i, class_name=cls, source="model", model_id="reference", common=common,
                         counter=counter, decision=decision, reason=f"hand-made {decision}"))
        if human is not None:
            decision, common, counter = human(cls, o)
            rows.append(dict(class_idx=i, class_name=cls, source="human", model_id="reference", common=common,
                             counter=counter, decision=decision, reason=f"hand-made human {decision}"))
        rows.append(dict(class_idx=i, class_name=cls, source="model", model_id="other", common=common,
                         counter=counter, decision="kept", reason="another model's row, not deciding"))
    atomic.write_parquet(run / "proposals.parquet", schemas.conform(pa.Table.from_pylist(rows), "proposals"))


def test_null_world_has_classes_without_a_significant_oracle_drop(null_world):
    assert not any(o["biased"] for o in null_world.oracle["classes"].values())
    flat = [c for c, o in null_world.oracle["classes"].items() if not is_significant(o)]
    assert flat, "the null world's oracle gives every class a significant drop: judge's false-positive check is vacuous"


def test_a_kept_class_without_a_significant_drop_is_a_false_positive(null_world, tmp_path):
    classes = null_world.oracle["classes"]
    flat = sorted(c for c, o in classes.items() if not is_significant(o))
    sig = sorted(c for c, o in classes.items() if is_significant(o))
    wrong = sig[0] if sig else None

    def decide(cls, o):
        if cls == flat[0]:
            return "kept", o["oracle_common"], o["oracle_counter"]          # a pair the oracle does not support
        if cls == wrong:                                                     # a real drop, dropped
            return "dropped", o["oracle_common"], o["oracle_counter"]
        if sig and cls == sig[-1] and cls != wrong:
            return "kept", o["oracle_common"], o["oracle_counter"]          # the oracle's own pair
        if len(sig) > 2 and cls == sig[1]:
            return "kept", o["oracle_counter"], o["oracle_common"]          # the pair upside down
        return ("undecided" if cls in flat else "dropped"), None, None

    run = tmp_path / "run"
    write_run(null_world, run, decide)
    v = judge(null_world.dir, run)
    assert v["model_id"] == "reference"                           # the other model's rows do not decide
    assert v["false_positives"] == [flat[0]]
    assert v["non_significant"] == len(flat) and v["false_positive_rate"] == 1 / len(flat)
    assert v["classes"][flat[0]]["cause"] == "false positive" and "hand-made kept" in v["classes"][flat[0]]["why"]
    assert v["undecided"] == flat[1:]
    assert v["significant"] == len(sig)
    if wrong:
        assert wrong in v["misses"] and v["classes"][wrong]["cause"] == "rule"
        assert v["misses"][wrong].startswith("dropped (oracle drop") and "hand-made dropped" in v["misses"][wrong]
    if len(sig) > 1:
        assert v["classes"][sig[-1]]["correct"] and sig[-1] not in v["misses"]
        assert v["found"] == 1 and v["classes"][sig[-1]]["confirmed"]
    # Kept pairs are checked on the grid as fixed pairs: the flat class's and the upside-down one fail.
    assert v["unconfirmed"] == sorted([flat[0]] + ([sig[1]] if len(sig) > 2 else []))
    if len(sig) > 2:
        assert sig[1] in v["misses"] and v["classes"][sig[1]]["grid_drop"] < 0

    # Nothing kept: no false positive, and the judge says so on the command line.
    write_run(null_world, run, lambda cls, o: ("dropped", None, None))
    assert judge(null_world.dir, run)["false_positives"] == []
    done = subprocess.run(CLI + ["world", "judge", str(null_world.dir), str(run)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"false positives: none of the {len(flat)} classes without a significant oracle drop" in done.stdout
    assert "kept pairs not confirmed on the grid: none (of 0 kept)" in done.stdout


def test_judge_command_judges_the_verified_pairs_when_asked(null_world, tmp_path):
    flat = sorted(c for c, o in null_world.oracle["classes"].items() if not is_significant(o))
    keep_flat = lambda cls, o: ("kept", o["oracle_common"], o["oracle_counter"]) if cls == flat[0] else ("dropped", None, None)
    drop_all = lambda cls, o: ("dropped", None, None)
    run = tmp_path / "run"

    def judged(*extra):
        return subprocess.run(CLI + ["world", "judge", str(null_world.dir), str(run), *extra], capture_output=True,
                              text=True, timeout=120)

    write_run(null_world, run, keep_flat)               # model rows only: nothing verified yet
    done = judged("--source", "human")
    assert done.returncode == 2 and "has no verified pairs yet" in done.stderr and "Traceback" not in done.stderr
    write_run(null_world, run, keep_flat, human=drop_all)   # the model keeps a flat class, people drop it
    model, human = judged(), judged("--source", "human")
    assert model.returncode == human.returncode == 0
    assert f"false positives: {flat[0]} of the {len(flat)} classes" in model.stdout
    assert "Judged: the verified pairs (human labels)" in human.stdout
    assert f"false positives: none of the {len(flat)} classes" in human.stdout


def test_a_kept_pair_whose_reported_interval_misses_its_grid_drop_is_not_covered(null_world, tmp_path):
    cfg = run_config(null_world.dir, null_world.model, null_world.checkpoint)
    run = tmp_path / "run"
    atomic.write_text(run / "config.yaml", config.dump(cfg))
    classes = list(null_world.oracle["classes"].items())
    cells = {(c["class_name"], c["background"]): c for c in pq.read_table(null_world.dir / "oracle.parquet").to_pylist()}
    rows = []
    for i, (cls, o) in enumerate(classes):
        a, b = cells[(cls, o["oracle_common"])], cells[(cls, o["oracle_counter"])]
        grid = o["acc_common"] - o["acc_counter"]       # the oracle pair's grid drop, and its own interval
        grid_lo, grid_hi = drop_interval(a["correct"], a["n"], b["correct"], b["n"])
        # class 0 reports an interval around its grid drop, class 1 one that ends below the grid's own
        # interval (its intervals do not meet), the rest nothing kept
        lo, hi = ((grid - 0.05, grid + 0.05) if i == 0 else (grid_lo - 0.3, grid_lo - 0.01) if i == 1 else (None, None))
        rows.append(dict(class_idx=i, class_name=cls, source="model", model_id="reference", common=o["oracle_common"],
                         counter=o["oracle_counter"], decision="kept" if i < 2 else "dropped", reason="by hand",
                         drop=None if lo is None else (lo + hi) / 2, drop_lo=lo, drop_hi=hi))
    atomic.write_parquet(run / "proposals.parquet", schemas.conform(pa.Table.from_pylist(rows), "proposals"))
    v = judge(null_world.dir, run)
    assert v["classes"][classes[0][0]]["covered"] and not v["classes"][classes[1][0]]["covered"]
    assert v["not_covered"] == [classes[1][0]]
    done = subprocess.run(CLI + ["world", "judge", str(null_world.dir), str(run)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and f"misses their grid drop: {classes[1][0]};" in done.stdout
