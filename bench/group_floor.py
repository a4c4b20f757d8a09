"""The strict rule's size floor (thresholds.min_group_size): pairs found at each floor, model-only and verified.

    .venv/bin/python bench/group_floor.py --tuning 20 17 15 12
    .venv/bin/python bench/group_floor.py --acceptance 20 15
    .venv/bin/python bench/group_floor.py --small-tuning 15 default
    .venv/bin/python bench/group_floor.py --small-acceptance 15 default

A floor is a number of photos or ``default`` (min_group_size unset: 15, or 5% of the class's photos
where fewer, at least 8). The runs: bench/annotate.py's TUNING worlds under
.cache/bench/annotate-tuning, bench/discovery.py's acceptance runs, or the ``small`` size at its own
pool (150 photos per class, 60% on a biased class's common) with the grid at 60 photos per cell,
under .cache/bench/floor-small: SMALL_TUNING on tuning seeds, SMALL_ACCEPTANCE on others, built and
curated here when missing. For each run and each floor: a hard-linked copy of the run gets the
propose stage again with that floor (the fetch, clean, score and backgrounds outputs do not depend
on it), the model's pairs are judged (curation/world/judge.py), and bench/annotate.py's offline
loop labels every photo, then runs the active loop, with 3 simulated annotators at 10% error
(votes in-process), each judged against the oracle. The copy is removed afterwards.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from annotation import simulate  # noqa: E402
from bench import annotate as verify_bench  # noqa: E402
from curation import config  # noqa: E402
from curation.world.judge import judge  # noqa: E402
from pipeline.options import pipeline_options  # noqa: E402
from pipeline.propose import run_propose  # noqa: E402


# The small size at its own pool (150 photos per class, 60% on a biased class's common: ~10 photos on
# each other background). Tuning seeds (bench/discovery.py TUNING_SEEDS) and others for acceptance.
SMALL_TUNING = (("default", 1), ("emergent", 2), ("shared-common", 3), ("few-captions", 1), ("independent", 2))
SMALL_ACCEPTANCE = (("default", 121), ("emergent", 122), ("shared-common", 123), ("few-captions", 124),
                    ("independent", 125), ("pool-common-0.7", 126), ("null", 127))
SMALL_ROOT = ROOT / ".cache" / "bench" / "floor-small"
# The oracle's grid at 60 photos per cell (the size's own is 24), as bench/discovery.py's acceptance
# size has it, so a class without a significant oracle drop is one the grid could have shown.
SMALL_GRID = 60


def runs(which: str) -> list[tuple[Path, Path]]:
    if which == "tuning":
        return [verify_bench._tuning_world(verify_bench.TUNING_ROOT, v, s)
                for v, s in verify_bench.TUNING]
    if which == "acceptance":
        specs = [spec.split(":") for spec in verify_bench._acceptance_specs()]
        return [verify_bench._acceptance_world(size, int(seed), variant) for size, seed, variant in specs]
    from bench.discovery import TUNING_SEEDS, curate, prepare

    out = []
    for variant, seed in SMALL_TUNING if which == "small-tuning" else SMALL_ACCEPTANCE:
        assert (seed in TUNING_SEEDS) == (which == "small-tuning"), (variant, seed)
        world = prepare(SMALL_ROOT, "small", variant, seed, False, grid_per_cell=SMALL_GRID)
        run = world.with_name(world.name + "-run")
        if not (run / "proposals.parquet").is_file():
            curate(world, run, background=False)
        out.append((world, run))
    return out


def at_floor(world: Path, run: Path, floor: int | None, scratch: Path) -> dict:
    """``floor`` None: the config's default (min_group_size unset)."""
    copy = scratch / f"{run.name}-{floor or 'default'}"
    subprocess.run(["cp", "-al", str(run.resolve()), str(copy)], check=True)
    try:
        cfg = config.load(copy)
        cfg = cfg.model_copy(update={"thresholds": cfg.thresholds.model_copy(update={"min_group_size": floor})})
        run_propose(copy, cfg, pipeline_options([]), say=lambda *a: None)
        model = judge(world, copy, min_group_size=floor)
        oracle = verify_bench.Oracle(world, cfg.thresholds.min_accuracy_range)
        truth = simulate.read_truth(world / "ground_truth.parquet", copy)
        model_rows = verify_bench.model_pairs(copy, cfg)
        out = {s: verify_bench.offline_loop(copy, cfg, truth, s, 0.1, 3, 0, oracle, model_rows)
               for s in ("everything", "active")}
        return dict(model=model["found"], significant=model["significant"], model_fp=len(model["false_positives"]),
                    unconfirmed=len(model["unconfirmed"]), everything=out["everything"]["found"],
                    all_labels=out["everything"]["labels"], active=out["active"]["found"],
                    labels=out["active"]["labels"], active_fp=len(out["active"]["false_positives"]))
    finally:
        shutil.rmtree(copy)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    which = ap.add_mutually_exclusive_group(required=True)
    for name in ("tuning", "acceptance", "small-tuning", "small-acceptance"):
        which.add_argument(f"--{name}", dest="which", action="store_const", const=name)
    ap.add_argument("floors", nargs="+", type=lambda v: v if v == "default" else int(v),
                    help="photos, or 'default' (min_group_size unset)")
    args = ap.parse_args()
    totals = {f: dict.fromkeys(("model", "significant", "everything", "active", "labels", "all_labels",
                                "model_fp", "active_fp"), 0) for f in args.floors}
    with tempfile.TemporaryDirectory(prefix="bench-floor-") as scratch:
        for world, run in runs(args.which):
            for floor in args.floors:
                r = at_floor(world, run, None if floor == "default" else floor, Path(scratch))
                print(f"{world.name} floor {floor}: model {r['model']}/{r['significant']} (unconfirmed "
                      f"{r['unconfirmed']}, FP {r['model_fp']}); every photo labelled {r['everything']}; active "
                      f"{r['active']} with {r['labels']} labels ({r['labels'] / r['all_labels']:.1%}), FP "
                      f"{r['active_fp']}", flush=True)
                for k in totals[floor]:
                    totals[floor][k] += r[k]
    print("\n| floor | model-only | every photo labelled | active loop | labels (share of everything) | FP |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for f, t in totals.items():
        print(f"| {f} | {t['model']}/{t['significant']} | {t['everything']} | {t['active']} | {t['labels']} "
              f"({t['labels'] / t['all_labels']:.1%}) | {t['model_fp'] + t['active_fp']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
