"""Does the curate DAG rediscover the oracle's (common, counter) pairs, and keep nothing else?

    .venv/bin/python bench/discovery.py [--variants default null ...] [--seeds 0 1 2 3 4] [--size default]
    .venv/bin/python bench/discovery.py --acceptance [--background-model]

For each (variant, seed): build the planted world, train its reference model, compute the oracle
(all reused when already there), serve the pool on 127.0.0.1, run `counteranimal curate` (every
stage, default thresholds) and judge the proposals against the oracle (curation/world/judge.py).
With --background-model the world's second model (reference.BACKGROUND_SETTINGS: balanced split,
every caption naming the scene) is trained too and a second run assigns backgrounds with it, the
reference model alone deciding the pairs (what `init --world OUT --background-model NAME` writes).

Seeds: TUNING_SEEDS (0–4) are the seeds thresholds and flags were chosen on; ACCEPTANCE names
other seeds, spread over the variants, null worlds included, that nothing was tuned on.
--acceptance runs them at ACCEPTANCE_SIZE: the "small" size (12 classes, 3 of them controls, 8
training epochs) with the default size's pool (300 photos per class, 40% on a biased class's
common unless the variant sets it), because eight default-size worlds do not fit a shared 2-core
machine in an evening; the pool, which sets the group sizes, is the default's.

--prepare builds and trains the worlds only. --judge-only judges the runs already curated, curating
nothing (a world whose grid_per_cell changed gets its grid redrawn and its oracle recomputed first:
pool and models stay, so the runs stay valid). --reuse-runs keeps runs already curated: their
fetch, clean and score outputs stand (each stage redoes what its settings invalidate), the config
is written anew with today's defaults, and backgrounds and propose run again — so the expensive,
rule-independent stages can run early and the decision later, with the rule then committed.

Prints one markdown table per variant for bench/RESULTS.md; the timings are context, the other
columns are the result.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation import atomic, config  # noqa: E402
from curation.world import spec  # noqa: E402
from curation.world.candidates import write_candidate_urls  # noqa: E402
from curation.world.judge import judge  # noqa: E402
from curation.world.reference import BACKGROUND_MODEL, ensure_background_model, ensure_trained  # noqa: E402
from curation.world.run_config import run_config  # noqa: E402
from pipeline.cli import main as cli  # noqa: E402
from pipeline.imageserver import ImageServer  # noqa: E402

TUNING_SEEDS = (0, 1, 2, 3, 4)
# (variant, seed): the acceptance worlds, none of them a tuning seed.
ACCEPTANCE = (("null", 101), ("default", 102), ("null", 106), ("shared-common", 103), ("emergent", 104),
              ("pool-common-0.7", 108), ("few-captions", 105), ("independent", 107))
# The acceptance worlds also curated with the second model as background judge under --background-model.
ACCEPTANCE_BACKGROUND = (("few-captions", 105), ("independent", 107))
# The grid at the default size's 60 photos per cell (small: 24), so the oracle has the power to tell a
# class without a shortcut from one with, once its choice of best and worst background is accounted for.
ACCEPTANCE_SIZE = ("small", {"pool_per_class": 300, "pool_common_share": 0.4, "grid_per_cell": 60})


def world_dir(root: Path, size: str, variant: str, seed: int) -> Path:
    # The default variant keeps the folder name it had before variants existed (its cache is reused).
    return root / (f"{size}-seed{seed}" if variant == "default" else f"{size}-{variant}-seed{seed}")


def prepare(root: Path, size: str, variant: str, seed: int, background: bool, **overrides) -> Path:
    # A variant's own pool share wins over the size-wide override.
    overrides = {k: v for k, v in overrides.items() if k not in spec.VARIANTS[variant]}
    world = world_dir(root, size, variant, seed)
    started = time.monotonic()
    ensure_trained(world, size, seed, variant, **overrides)
    if background:
        ensure_background_model(world)
    print(f"prepared {world} in {time.monotonic() - started:.0f}s", flush=True)
    return world


def curate(world: Path, run: Path, background: bool, reuse: bool = False, judge_only: bool = False) -> dict:
    from curation.world import train

    if judge_only:      # the run's decisions as they stand, judged against the world's (maybe redrawn) oracle
        if not (run / "proposals.parquet").is_file() or not (run / ".bench_curate_s").is_file():
            raise SystemExit(f"--judge-only: {run} has not been curated by this benchmark")
        verdict = judge(world, run, config.load(run).thresholds.min_accuracy_range)
        verdict.update(curate_s=float((run / ".bench_curate_s").read_text()), decide_s=None,
                       grid_background_accuracy=_grid_background_accuracy(world, BACKGROUND_MODEL if background else None))
        return verdict
    reuse = reuse and (run / "scores").is_dir() and (run / ".bench_curate_s").is_file()
    if not reuse:
        shutil.rmtree(run, ignore_errors=True)
    bg = None
    if background:
        bg = (train.REFERENCE_MODEL, train.checkpoint_path(world, BACKGROUND_MODEL), BACKGROUND_MODEL)
    cfg = run_config(world, train.REFERENCE_MODEL, train.checkpoint_path(world), background_model=bg)  # default thresholds
    atomic.write_text(run / "config.yaml", config.dump(cfg))
    started = time.monotonic()
    if reuse:   # the pool's URLs (and so the candidates) are those of the first pass; no server needed
        assert cli(["curate", str(run), "--stages", "clean,score,backgrounds,propose"]) == 0
        first = float((run / ".bench_curate_s").read_text())
    else:
        with ImageServer(world / "pool") as server:
            write_candidate_urls(world, server.base, run / "urls.csv")
            assert cli(["curate", str(run)]) == 0
        first = time.monotonic() - started
        atomic.write_text(run / ".bench_curate_s", f"{first:.1f}")
    verdict = judge(world, run, cfg.thresholds.min_accuracy_range)
    verdict["curate_s"] = first
    verdict["decide_s"] = time.monotonic() - started if reuse else None
    verdict["grid_background_accuracy"] = _grid_background_accuracy(world, BACKGROUND_MODEL if background else None)
    return verdict


def _grid_background_accuracy(world: Path, name: str | None) -> float:
    """The background-assigning model's own background accuracy on the balanced grid (its oracle)."""
    import json

    from curation.world import oracle, train

    stem = "oracle" if name is None else f"oracle-{oracle.model_slug(train.REFERENCE_MODEL, str(train.checkpoint_path(world, name)))}"
    return json.loads((world / f"{stem}.json").read_text())["summary"]["background_accuracy"]


def row(seed, v: dict, label: str = "") -> str:
    pct = lambda x: "–" if x is None else f"{100 * x:.0f}%"
    misses = "; ".join(f"{c} ({v['classes'][c]['cause']})" for c in v["misses"]) or "–"
    bg = "n/a" if v["background_accuracy"] is None else f"{100 * v['background_accuracy']:.1f}"
    fps = f"{len(v['false_positives'])}" + (f" ({', '.join(v['false_positives'])})" if v["false_positives"] else "")
    unconf = f"{len(v['unconfirmed'])}/{v['kept']}" + (f" ({', '.join(v['unconfirmed'])})" if v["unconfirmed"] else "")
    return (f"| {seed}{label} | {v['significant']} | {v['found']} ({pct(v['recall'])}) | {v['non_significant']} | "
            f"{fps} | {unconf} | {len(v['undecided'])} | {bg} | {misses} | {v['curate_s']:.0f} |")


def total_row(entries: list[dict]) -> str:
    sig, found = sum(v["significant"] for v in entries), sum(v["found"] for v in entries)
    non, fp = sum(v["non_significant"] for v in entries), sum(len(v["false_positives"]) for v in entries)
    und = sum(len(v["undecided"]) for v in entries)
    kept, unconf = sum(v["kept"] for v in entries), sum(len(v["unconfirmed"]) for v in entries)
    return (f"| **total** | {sig} | {found} ({100 * found / max(1, sig):.0f}%) | {non} | {fp} "
            f"({100 * fp / max(1, non):.0f}%) | {unconf}/{kept} | {und} | | | {sum(v['curate_s'] for v in entries):.0f} |")


HEADER = ("| seed | significant classes | found (recall) | non-significant classes | false positives | "
          "kept pairs unconfirmed on the grid | undecided | background acc % | misses (cause) | curate s |\n"
          "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--variants", nargs="+", default=["default"], choices=list(spec.VARIANTS))
    ap.add_argument("--seeds", type=int, nargs="+", default=list(TUNING_SEEDS))
    ap.add_argument("--acceptance", action="store_true", help="the ACCEPTANCE worlds instead of variants x seeds")
    ap.add_argument("--size", default="default", choices=list(spec.PRESETS))
    ap.add_argument("--pool-per-class", type=int, help="a smaller (or larger) pool than the size's")
    ap.add_argument("--background-model", action="store_true",
                    help="also curate with the world's second model assigning backgrounds (acceptance: the "
                         "ACCEPTANCE_BACKGROUND worlds)")
    ap.add_argument("--prepare", action="store_true", help="build and train the worlds only")
    ap.add_argument("--reuse-runs", action="store_true", help="keep runs curated before; re-run the decision stages")
    ap.add_argument("--judge-only", action="store_true",
                    help="judge the runs curated before as they stand (after a redrawn grid, say); curate nothing")
    ap.add_argument("--root", default=str(ROOT / ".cache" / "bench" / "discovery"))
    args = ap.parse_args()
    root = Path(args.root) / ("acceptance" if args.acceptance else "")
    worlds = list(ACCEPTANCE) if args.acceptance else [(v, s) for v in args.variants for s in args.seeds]
    with_bg = set(ACCEPTANCE_BACKGROUND if args.acceptance else worlds) if args.background_model else set()
    overrides = {"pool_per_class": args.pool_per_class}
    if args.acceptance:
        args.size, overrides = ACCEPTANCE_SIZE[0], {**ACCEPTANCE_SIZE[1], **{k: v for k, v in overrides.items() if v}}
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; commit {commit}; "
          f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; seeds "
          f"{'acceptance' if args.acceptance else 'as given'} (tuning seeds: {', '.join(map(str, TUNING_SEEDS))})")
    results: dict[str, list] = {}
    for variant, seed in worlds:
        world = prepare(root, args.size, variant, seed, False, **overrides)
        if args.prepare:
            continue
        v = curate(world, world.with_name(world.name + "-run"), background=False, reuse=args.reuse_runs,
                    judge_only=args.judge_only)
        results.setdefault(variant, []).append((seed, "", v))
        print(row(seed, v), flush=True)
    # The second model's runs last: the reference-model runs are the acceptance result.
    for variant, seed in [w for w in worlds if w in with_bg]:
        world = prepare(root, args.size, variant, seed, True, **overrides)
        if args.prepare:
            continue
        b = curate(world, world.with_name(world.name + "-bgrun"), background=True, reuse=args.reuse_runs,
                    judge_only=args.judge_only)
        results[variant].append((seed, " (background model)", b))
        print(row(seed, b, " (background model)"), flush=True)
    if args.prepare:
        return 0
    everything = []
    for variant, entries in results.items():
        print(f"\n### {variant}\n\n{HEADER}")
        for seed, label, v in entries:
            print(row(seed, v, label))
        ref = [v for _, label, v in entries if not label]
        everything += ref
        print(total_row(ref))
    print(f"\n### all variants (reference-model runs)\n\n{HEADER}\n{total_row(everything)}")
    good = [v for v in everything if (v["background_accuracy"] or 0) >= 0.7]
    sig, found = sum(v["significant"] for v in good), sum(v["found"] for v in good)
    print(f"\nWorlds whose background assignment is at least 70% accurate: {len(good)} of {len(everything)}; "
          f"found {found}/{sig} ({100 * found / max(1, sig):.0f}%) of their classes with a significant oracle drop.")
    for variant, entries in results.items():
        for seed, label, v in entries:
            if label:
                ref = next(x for s, lab, x in entries if s == seed and not lab)
                print(f"background assignment accuracy, {variant} seed {seed}: reference model "
                      f"{100 * ref['background_accuracy']:.1f}% of the pool's grouped photos "
                      f"({100 * ref['grid_background_accuracy']:.1f}% on the grid), second model "
                      f"{100 * v['background_accuracy']:.1f}% ({100 * v['grid_background_accuracy']:.1f}% on the grid)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
