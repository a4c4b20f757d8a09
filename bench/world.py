"""Acceptance figures for the planted world, per seed: does the reference model learn the shortcut?

    .venv/bin/python bench/world.py [--seeds 0 1 2] [--size default] [--root .cache/bench/world]

For each seed: build the world, train ca-tiny on its biased split (timed), compute the oracle on
the balanced grid, and print one markdown row. Acceptance: planted-common accuracy >= 70%, mean
drop over biased classes >= 20 points, background zero-shot accuracy >= 60%. The rows go into
bench/RESULTS.md (## world) together with the machine line printed first.
"""
from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from curation.world import generate, oracle, spec, train  # noqa: E402


def machine() -> str:
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (load {load:.1f} at start), "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def run_seed(root: Path, seed: int, size: str, epochs: int | None) -> dict:
    world_dir = root / f"{size}-seed{seed}"
    t0 = time.time()
    desc = generate.build(world_dir, spec.preset(size, seed=seed))
    built = time.time() - t0
    settings = train.TrainSettings(**({"epochs": epochs} if epochs else {}))
    info = train.train(world_dir, settings)
    result = oracle.compute(world_dir, info["model"], info["checkpoint"], reference=True, threads=settings.threads)
    s = result["summary"]
    ok = s["acc_planted_common"] >= 0.7 and s["mean_planted_drop_biased"] >= 0.2 and s["background_accuracy"] >= 0.6
    return {"seed": seed, "classes": len(desc["classes"]), "biased": s["n_biased"], "train_images": info["train_images"],
            "build_s": built, "train_s": info["seconds"], "summary": s, "pass": ok}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--size", default="default", choices=sorted(spec.PRESETS))
    ap.add_argument("--epochs", type=int, help="override the training epochs")
    ap.add_argument("--root", default=".cache/bench/world")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    print(f"machine: {machine()}")
    print(f"world size: {args.size}\n")
    print("| seed | classes (biased) | train imgs | build s | train s | planted-common acc | oracle-counter acc "
          "| mean drop, biased (oracle) | counter = planted | control drop min..max (mean) | background acc | pass |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    ok = True
    for seed in args.seeds:
        r = run_seed(Path(args.root), seed, args.size, args.epochs)
        s = r["summary"]
        ok &= r["pass"]
        pct = lambda v: f"{100 * v:.1f}"
        print(f"| {seed} | {r['classes']} ({r['biased']}) | {r['train_images']} | {r['build_s']:.0f} | {r['train_s']:.0f} "
              f"| {pct(s['acc_planted_common'])} | {pct(s['acc_oracle_counter_biased'])} "
              f"| {pct(s['mean_planted_drop_biased'])} ({pct(s['mean_oracle_drop_biased'])}) "
              f"| {s['counter_is_planted']}/{s['n_biased']} "
              f"| {pct(s['control_drop_min'])}..{pct(s['control_drop_max'])} ({pct(s['control_drop_mean'])}) "
              f"| {pct(s['background_accuracy'])} | {'yes' if r['pass'] else 'NO'} |", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
