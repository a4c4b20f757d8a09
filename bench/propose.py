"""Backgrounds and propose at 10× the planted pool: time and peak memory beside the other stages.

Takes a curated run (default: demo-run/run from `make demo`), replicates its scores N times with
fresh uids and slightly perturbed embeddings (so clusters are not exact copies), and runs the
backgrounds and propose stages on the result, each in its own process so its peak RSS is its own.
The DAG's other stages are put beside them from the source run's manifest, scaled by N (they
are linear in the number of photos), so the ratio says whether these two dominate.

    .venv/bin/python bench/propose.py [--run demo-run/run] [--times 10]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
STAGE = """
import sys
from pathlib import Path
from curation import config
from pipeline.options import pipeline_options
from pipeline import propose
run = Path(sys.argv[1])
getattr(propose, "run_" + sys.argv[2])(run, config.load(run), pipeline_options([]), say=lambda s: None)
import resource
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def replicate(src: Path, dst: Path, times: int) -> int:
    shutil.rmtree(dst, ignore_errors=True)
    (dst / "scores" / "text").mkdir(parents=True)
    shutil.copy(src / "config.yaml", dst / "config.yaml")
    for f in (src / "scores" / "text").glob("*.parquet"):
        shutil.copy(f, dst / "scores" / "text" / f.name)
    rng = np.random.default_rng(0)
    n = 0
    for f in sorted((src / "scores").glob("*.parquet")):
        table = pq.read_table(f)
        for t in range(times):
            emb = np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)
            emb += rng.normal(scale=0.01, size=emb.shape).astype(np.float32)
            out = table.set_column(table.schema.get_field_index("uid"), "uid",
                                   pa.array([f"{u}-{t}" for u in table.column("uid").to_pylist()]))
            out = out.set_column(out.schema.get_field_index("embedding"), table.schema.field("embedding"),
                                 pa.array(emb.astype(np.float16).tolist(), type=table.schema.field("embedding").type))
            pq.write_table(out.replace_schema_metadata(table.schema.metadata), dst / "scores" / f"{f.stem}-{t:03d}.parquet")
            n += out.num_rows
    return n


def run_stage(run: Path, stage: str) -> tuple[float, float]:
    """Seconds and the stage process's own peak RSS in MiB."""
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-c", STAGE, str(run), stage], check=True, cwd=ROOT,
                         capture_output=True, text=True)
    seconds = time.monotonic() - started
    return seconds, int(out.stdout.split()[-1]) / 1024


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=str(ROOT / "demo-run" / "run"))
    ap.add_argument("--times", type=int, default=10)
    args = ap.parse_args()
    src = Path(args.run)
    if not (src / "manifest.json").exists():
        print(f"{src} is not a curated run; run `make demo` first or pass --run", file=sys.stderr)
        return 2
    manifest = json.loads((src / "manifest.json").read_text())["stages"]
    dst = ROOT / ".cache" / "bench" / "propose-run"
    rows = replicate(src, dst, args.times)
    results = {stage: run_stage(dst, stage) for stage in ("backgrounds", "propose")}
    print(f"{rows} scored photos ({args.times}× {src})")
    print(f"{'stage':<12} {'seconds':>8} {'peak MiB':>9}   (other stages: source run's seconds × {args.times})")
    for stage in ("fetch", "clean", "score"):
        print(f"{stage:<12} {manifest[stage]['seconds'] * args.times:>8.1f} {'':>9}")
    for stage, (s, mib) in results.items():
        print(f"{stage:<12} {s:>8.1f} {mib:>9.0f}")
    others = sum(manifest[s]["seconds"] * args.times for s in ("fetch", "clean", "score"))
    ours = sum(s for s, _ in results.values())
    print(f"backgrounds + propose / (fetch + clean + score) = {ours / others:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
