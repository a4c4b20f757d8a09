"""False positives where there is nothing to find: worlds with genuinely flat classes (issue 11).

    .venv/bin/python bench/flat_null.py --tuning | --acceptance [--spread 0.10]

A null world trained balanced is not flat for ca-tiny (every class has a real oracle drop; see
bench/RESULTS.md), so on it "≤ 5% of classes without a significant oracle drop kept" counts
nothing. Per (variant, seed) this bench:

1. builds and trains the world at bench/discovery.py's acceptance size, its grid at GRID photos
   per cell (world A: a 60-photo grid's accuracies are too noisy to tell a flat set, a set that
   looked flat there spread 28 points on a fresh 150-photo grid);
2. per control class (every class of a null world), picks from A's oracle a set of ≥ 3
   backgrounds whose grid accuracies lie within ``--spread`` (curation/world/flat.py); classes
   without one, and biased classes, keep every background;
3. builds world B: the same settings (so the same training split, checked byte for byte, and A's
   model copied in) with those classes' pool and grid photos only on their set, and a fresh grid
   (``grid_draw`` 1) of GRID photos per cell, so whether a class is flat is judged on photos the
   set was not chosen on, by an oracle with more photos per cell than the pool's groups have (a
   drop too small for a 60-photo grid to see may be real at the pool's ~100 photos per group);
4. curates B with the default config (every stage, photos served on 127.0.0.1) and judges it.

A kept class without a significant oracle drop on B's grid is a false positive. The pipeline
assigns backgrounds from the whole vocabulary, so misassigned, flagged and wrong-label photos
still form the small mixed groups that manufacture drops: the mechanism issue 11 describes.
"""
from __future__ import annotations

import argparse
import json
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

from bench.discovery import ACCEPTANCE_SIZE, curate, prepare  # noqa: E402
from curation.world import generate, spec  # noqa: E402
from curation.world.flat import flat_sets  # noqa: E402
from curation.world.oracle import read_oracle  # noqa: E402
from curation.world.reference import ensure_trained  # noqa: E402

TUNING = (("null", 2), ("null", 3))
# Seeds and variants of bench/discovery.py's acceptance list (null 101 and 106, and two biased worlds
# whose 3 control classes may get a flat set) and a third null world (109): nothing tuned on them.
ACCEPTANCE = (("null", 101), ("null", 106), ("null", 109), ("default", 102), ("independent", 107))


GRID = 150


def run_of(world: Path) -> Path:
    return world.with_name(world.name + "-run")


def flat_world(root: Path, variant: str, seed: int, spread: float) -> tuple[Path, dict]:
    size, overrides = ACCEPTANCE_SIZE[0], dict(ACCEPTANCE_SIZE[1], grid_per_cell=GRID)
    a = prepare(root, size, variant, seed, False, **overrides)
    overrides = {k: v for k, v in overrides.items() if k not in spec.VARIANTS[variant]}   # as prepare() does
    sets = flat_sets(read_oracle(a)["classes"], spread)
    b = a.with_name(f"{a.name}-flat{round(100 * spread)}")
    wanted = dict(overrides, class_backgrounds=sets, grid_draw=1)
    if generate.built_with_other_settings(b, spec.preset(size, variant=variant, seed=seed, **wanted)) or \
            (b.exists() and not (b / "world.json").is_file()):      # another B, or one killed mid-build
        shutil.rmtree(b)
        shutil.rmtree(run_of(b), ignore_errors=True)           # its photos are not the new pool's
    generate.build(b, spec.preset(size, variant=variant, seed=seed, **wanted))
    if (a / "train.parquet").read_bytes() != (b / "train.parquet").read_bytes():
        raise SystemExit(f"{b}: its training split differs from {a}'s, so {a}'s model is not its model")
    if not (b / "model").is_dir():
        shutil.copytree(a / "model", b / "model")
    ensure_trained(b, size, seed, variant, **wanted)      # the copied model stands; computes B's oracle
    return b, sets


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    which = ap.add_mutually_exclusive_group(required=True)
    which.add_argument("--tuning", action="store_true", help=f"worlds {TUNING}")
    which.add_argument("--acceptance", action="store_true", help=f"worlds {ACCEPTANCE}")
    ap.add_argument("--spread", type=float, default=0.10, help="a flat set's largest accuracy spread on A's grid")
    ap.add_argument("--root", default=str(ROOT / ".cache" / "bench" / "flat-null"))
    args = ap.parse_args()
    worlds = TUNING if args.tuning else ACCEPTANCE
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores; commit {commit}; "
          f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; {'tuning' if args.tuning else 'acceptance'} worlds {worlds}; "
          f"spread {args.spread}")
    totals = dict(flat=0, non_sig=0, fp=0, sig=0, found=0, unconfirmed=0, kept=0)
    for variant, seed in worlds:
        started = time.monotonic()
        b, sets = flat_world(Path(args.root), variant, seed, args.spread)
        v = curate(b, run_of(b), background=False, reuse=True)   # a redrawn grid keeps the run
        oracle = read_oracle(b)["classes"]
        print(f"\n#### {variant} {seed} ({len(sets)} of {len(oracle)} classes on a flat set; "
              f"{time.monotonic() - started:.0f} s)\n")
        print("| class | backgrounds | accuracy on B's grid % | oracle significant | decision | pair | rule says |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for cls, e in oracle.items():
            c = v["classes"][cls]
            accs = ", ".join(f"{bg} {100 * a:.0f}" for bg, a in sorted(e["accuracy"].items(), key=lambda x: -x[1]))
            pair = f"{c['proposed'][0]}→{c['proposed'][1]}" if c["proposed"][1] else "–"
            reason = (c["reason"] or "").replace("|", "/")
            print(f"| {cls} | {'flat set' if cls in sets else 'all'} | {accs} | "
                  f"{'yes' if c['significant'] else 'no'} | {c['decision']} | {pair} | {reason[:110]} |")
        fps = v["false_positives"]
        print(f"\n{variant} {seed}: non-significant {v['non_significant']}, kept among them {len(fps)} "
              f"({', '.join(fps) or 'none'}); significant {v['significant']}, found {v['found']}; "
              f"kept pairs unconfirmed on the grid {len(v['unconfirmed'])}/{v['kept']}")
        totals["flat"] += len(sets)
        totals["non_sig"] += v["non_significant"]
        totals["fp"] += len(fps)
        totals["sig"] += v["significant"]
        totals["found"] += v["found"]
        totals["unconfirmed"] += len(v["unconfirmed"])
        totals["kept"] += v["kept"]
    t = totals
    print(f"\n**total**: {t['flat']} classes on a flat set; {t['non_sig']} without a significant oracle drop, "
          f"**{t['fp']} kept ({100 * t['fp'] / max(1, t['non_sig']):.1f}%)**; significant {t['sig']}, found "
          f"{t['found']}; kept pairs unconfirmed on the grid {t['unconfirmed']}/{t['kept']}")
    print(json.dumps(t))
    return 0


if __name__ == "__main__":
    sys.exit(main())
