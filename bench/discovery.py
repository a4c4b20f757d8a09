"""Issue 5's acceptance, per seed: does the curate DAG rediscover the oracle's (common, counter) pairs?

    .venv/bin/python bench/discovery.py [--seeds 0 1 2 3 4] [--size default]

For each seed: build the planted world, train its reference model, compute the oracle (all reused
when already there), serve the pool on 127.0.0.1, run `counteranimal curate` (every stage) and
judge the proposals against the oracle (curation/world/judge.py). Prints one markdown row per
seed for bench/RESULTS.md; the timings are context, the pass/fail columns are the result.
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation import atomic, config  # noqa: E402
from curation.world import spec  # noqa: E402
from curation.world.candidates import write_candidate_urls  # noqa: E402
from curation.world.judge import judge  # noqa: E402
from curation.world.reference import ensure_trained  # noqa: E402
from curation.world.run_config import run_config  # noqa: E402
from pipeline.cli import main as cli  # noqa: E402
from pipeline.imageserver import ImageServer  # noqa: E402


def run_seed(root: Path, seed: int, size: str) -> dict:
    world = root / f"{size}-seed{seed}"
    _, model, checkpoint = ensure_trained(world, size, seed)
    run = root / f"{size}-seed{seed}-run"
    shutil.rmtree(run, ignore_errors=True)
    cfg = run_config(world, model, checkpoint)     # the default thresholds
    atomic.write_text(run / "config.yaml", config.dump(cfg))
    started = time.monotonic()
    with ImageServer(world / "pool") as server:
        write_candidate_urls(world, server.base, run / "urls.csv")
        assert cli(["curate", str(run)]) == 0
    verdict = judge(world, run, cfg.thresholds.min_accuracy_range)
    verdict["curate_s"] = time.monotonic() - started
    return verdict


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--size", default="default", choices=list(spec.PRESETS))
    ap.add_argument("--root", default=str(ROOT / ".cache" / "bench" / "discovery"))
    args = ap.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    rows, found, significant = [], 0, 0
    for seed in args.seeds:
        v = run_seed(Path(args.root), seed, args.size)
        found, significant = found + v["found"], significant + v["significant"]
        misses = [c for c, x in v["classes"].items() if not x["correct"]]
        rows.append(f"| {seed} | {v['found']}/{v['significant']} ({100 * v['recall']:.0f}%) | "
                    f"{', '.join(v['false_positives']) or 'none'} | {100 * v['background_accuracy']:.1f} | "
                    f"{', '.join(misses) or '–'} | {v['curate_s']:.0f} |")
    print("| seed | oracle pairs found | false positives | background acc % | misses | curate s |")
    print("| --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print(f"all seeds: {found}/{significant} ({100 * found / max(1, significant):.0f}%)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
