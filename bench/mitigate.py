"""Benchmark `mitigate` on planted worlds: every method side by side, per seed, judged on a held-back part.

    .venv/bin/python bench/mitigate.py --seeds 0 1 2 [--size small] [--cache .cache/mitigate-worlds]

Per seed: build (or reuse) the world, train its reference model (curation/world/reference.py), then run
every method of `counteranimal mitigate` on the world's ground-truth groups: the pool's clean photos
(class × true background) to train on, the balanced grid split per cell into validation (1/3, model
selection on worst-group accuracy) and test (2/3, every figure below). The pair per biased class is its
planted common and the oracle's counter.

Acceptance (issue 15): the spurious-aware method's worst-group accuracy above zero-shot's and above
CLIP-loss fine-tuning's, its common → counter drop below zero-shot's, and its average accuracy within
2 points of CLIP-loss fine-tuning's.
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--size", default="small")
    ap.add_argument("--cache", default=str(ROOT / ".cache" / "mitigate-worlds"))
    ap.add_argument("--out", default=str(ROOT / ".cache" / "mitigate-bench"))
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--templates", default="openai", choices=["openai", "source"])
    ap.add_argument("--threads", type=int, default=1)   # one: no OpenMP spin-waiting on a shared machine
    ap.add_argument("--json", help="also write every seed's summary here")
    args = ap.parse_args()

    from curation.mitigate import data as mdata, report, train
    from curation.world.reference import ensure_trained

    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"commit {commit}, {time.strftime('%Y-%m-%d')}, {platform.machine()}, torch {torch.__version__}, "
          f"{args.threads} threads, world size {args.size}, {args.epochs} epochs, templates {args.templates}")
    summaries, checks = {}, []
    for seed in args.seeds:
        t0 = time.time()
        folder = Path(args.cache) / f"{args.size}-{seed}"
        _, model, checkpoint = ensure_trained(folder, args.size, seed)
        data = mdata.from_world(folder)
        settings = train.Settings(model=model, pretrained=str(checkpoint), epochs=args.epochs, templates=args.templates,
                                  threads=args.threads, progress=False)
        summary = train.run(data, settings, Path(args.out) / f"{args.size}-{seed}")
        summaries[seed] = summary
        print(f"\n### seed {seed} ({time.time() - t0:.0f} s, {data.counts()})\n")
        print(report.table(summary))
        r = {m: summary["results"][m]["test"] for m in summary["results"]}
        ok = {
            "worst > zero-shot": r["spurious"]["worst_group_acc"] > r["zero-shot"]["worst_group_acc"],
            "worst > clip-ft": r["spurious"]["worst_group_acc"] > r["clip-ft"]["worst_group_acc"],
            "drop < zero-shot": r["spurious"]["drop"] < r["zero-shot"]["drop"],
            "|avg - clip-ft| <= 2": abs(r["spurious"]["avg_acc"] - r["clip-ft"]["avg_acc"]) <= 2,
        }
        checks.append(ok)
        print("\nchecks: " + ", ".join(f"{k}: {'yes' if v else 'NO'}" for k, v in ok.items()))

    methods = list(next(iter(summaries.values()))["results"])
    print(f"\n### mean over seeds {args.seeds}\n")
    print("| method | avg acc | worst-group acc | common | counter | drop |")
    print("|---|---|---|---|---|---|")
    for m in methods:
        vals = [summaries[s]["results"][m]["test"] for s in summaries]
        mean = {k: sum(v[k] for v in vals) / len(vals) for k in ("avg_acc", "worst_group_acc", "common_acc", "counter_acc", "drop")}
        print(f"| {train.LABELS[m]} | {mean['avg_acc']:.1f} | {mean['worst_group_acc']:.1f} | {mean['common_acc']:.1f} "
              f"| {mean['counter_acc']:.1f} | {mean['drop']:.1f} |")
    passed = {k: sum(c[k] for c in checks) for k in checks[0]}
    print("\nchecks passed (seeds): " + ", ".join(f"{k} {v}/{len(checks)}" for k, v in passed.items()))
    if args.json:
        Path(args.json).write_text(json.dumps({str(k): v for k, v in summaries.items()}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
