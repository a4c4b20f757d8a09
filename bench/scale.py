"""How `curate` grows with the pool (issue 14): the whole pipeline at N and 4N candidates, and the
former whole-run steps on synthetic data at 10^5 and 4·10^5 photos.

    .venv/bin/python bench/scale.py curate [--seed 102] [--per-class 300] [--scale 4] [--model-from WORLD]
                                           [--code DIR] [--root .cache/bench-scale] [--tag NAME]
    .venv/bin/python bench/scale.py steps [--sizes 100000 400000]

curate: two planted worlds of the "small" size that differ only in pool_per_class (N = 12 classes x
per-class x 1.2 with the planted noise; 4N = scale x that). The training split does not depend on the
pool (each split has its own random stream), so one trained model serves both: the first world's
(trained here unless --model-from names a built world with the same spec but the pool, whose
model is reused). Each world's pool is served on 127.0.0.1 and `counteranimal curate RUN` runs in a
child process under the DirectRunner (default options), with nothing else in it; its process tree
(the CLI and any worker it starts) is sampled every 0.2 s from /proc: peak memory = the largest sum
of the tree's resident set sizes. Near duplicates: every near_duplicate rejection, and those that are
not a planted copy (ground truth: the rejected photo and the one it points to are not the same
planted source or its copies) = false matches. --code DIR runs the CLI from another checkout (the
code before a change, for the side-by-side).

steps: the two steps that used to gather the whole run on one worker, as they now run, on synthetic
data: the near-duplicate decision per hash bucket (curation/dedupe.py's blocks, one call per block)
and the label-noise neighbour shares (curation/neighbors.py's blocked search, one call per block),
at each size: seconds, and seconds per photo relative to the smallest size.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow.parquet as pq  # noqa: E402

from curation import atomic, config  # noqa: E402
from curation.world import generate, spec  # noqa: E402


# -- the worlds --------------------------------------------------------------------------------
def world_spec(seed: int, per_class: int) -> spec.WorldSpec:
    return spec.preset("small", seed=seed, pool_per_class=per_class, pool_common_share=0.4)   # bench/discovery.py's size


def build_world(folder: Path, seed: int, per_class: int) -> dict:
    started = time.monotonic()
    desc = generate.build(folder, world_spec(seed, per_class))
    print(f"world {folder.name}: {desc['counts']['pool']} pool photos ({time.monotonic() - started:.0f}s)", flush=True)
    return desc


def checkpoint_for(world: Path, model_from: Path | None) -> Path:
    """The reference model: --model-from's (same spec but the pool: the same training split), else trained here."""
    from curation.world import train

    if model_from is not None:
        a = json.loads((model_from / ".spec.json").read_text())
        b = json.loads((world / ".spec.json").read_text())
        a.pop("pool_per_class"), b.pop("pool_per_class")
        if a != b:
            raise SystemExit(f"--model-from {model_from}: its world differs from {world} in more than the pool")
        return train.checkpoint_path(model_from)
    checkpoint = train.checkpoint_path(world)
    if not checkpoint.is_file():
        train.train(world, train.TrainSettings())
    return checkpoint


# -- one curate, measured ----------------------------------------------------------------------
def tree_rss(root_pid: int) -> int:
    """Bytes resident in root_pid and all its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
            with open(f"/proc/{entry}/statm") as f:
                pages = int(f.read().split()[1])
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
        rss[int(entry)] = pages * os.sysconf("SC_PAGE_SIZE")
    total, todo = 0, [root_pid]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += children.get(pid, [])
    return total


def run_measured(cmd: list[str], env: dict, log: Path) -> dict:
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        peak, stop = [0], threading.Event()

        def sample():
            while not stop.wait(0.2):
                peak[0] = max(peak[0], tree_rss(proc.pid))

        t = threading.Thread(target=sample, daemon=True)
        t.start()
        rc = proc.wait()
        stop.set()
        t.join()
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {rc}); see {log}")
    return {"wall_s": round(time.monotonic() - started, 1), "peak_rss_mb": round(peak[0] / 2**20)}


def curate(world: Path, run: Path, checkpoint: Path, code: Path) -> dict:
    from curation.world import train
    from curation.world.candidates import write_candidate_urls
    from curation.world.run_config import run_config
    from pipeline.imageserver import ImageServer

    shutil.rmtree(run, ignore_errors=True)
    cfg = run_config(world, train.REFERENCE_MODEL, checkpoint)   # default thresholds and settings
    atomic.write_text(run / "config.yaml", config.dump(cfg))
    env = {**os.environ, "PYTHONPATH": str(code)}
    with ImageServer(world / "pool") as server:
        write_candidate_urls(world, server.base, run / "urls.csv")
        measured = run_measured([sys.executable, "-m", "pipeline.cli", "curate", str(run)], env, run / "curate.log")
    return {**measured, **outcomes(world, run)}


def outcomes(world: Path, run: Path) -> dict:
    samples = pq.read_table(run / "samples", columns=["uid", "status", "reason", "duplicate_of"]).to_pylist()
    source_id = {r["uid"]: r["source_id"] for r in pq.read_table(run / "candidates" / "candidates.parquet",
                                                                 columns=["uid", "source_id"]).to_pylist()}
    truth = {r["uid"]: r for r in pq.read_table(world / "ground_truth.parquet",
                                                columns=["uid", "duplicate_of", "noise"]).to_pylist()}

    def family(uid: str) -> str:      # a planted copy and its source share one family
        t = truth[source_id[uid]]
        return t["duplicate_of"] or t["uid"]

    near = [r for r in samples if r["reason"] == "near_duplicate"]
    false = [r for r in near if family(r["uid"]) != family(r["duplicate_of"])]
    manifest = json.loads((run / "manifest.json").read_text())
    return {"candidates": len(samples), "ok": sum(r["status"] == "ok" for r in samples),
            "duplicates": sum(r["reason"] == "duplicate" for r in samples), "near_duplicates": len(near),
            "false_near_duplicates": len(false),
            "planted_near_dup": sum(t["noise"] == "near_dup" for t in truth.values()),
            "stage_s": {k: round(v.get("seconds", 0), 1) for k, v in manifest.get("stages", {}).items()}}


def cmd_curate(args) -> None:
    root = Path(args.root)
    sizes = [args.per_class, args.per_class * args.scale]
    worlds = [root / f"small-seed{args.seed}-pool{n}" for n in sizes]
    for w, n in zip(worlds, sizes):
        build_world(w, args.seed, n)
    checkpoint = checkpoint_for(worlds[0], Path(args.model_from) if args.model_from else None)
    code = Path(args.code).resolve() if args.code else ROOT
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=code, capture_output=True,
                            text=True).stdout.strip() or "?"
    results = []
    for w, n in zip(worlds, sizes):
        r = curate(w, root / f"{w.name}-{args.tag}-run", checkpoint, code)
        r["pool_per_class"] = n
        print(json.dumps(r), flush=True)
        results.append(r)
    a, b = results
    ratios = {"candidates": round(b["candidates"] / a["candidates"], 2), "wall": round(b["wall_s"] / a["wall_s"], 2),
              "peak_memory": round(b["peak_rss_mb"] / a["peak_rss_mb"], 2),
              "near_duplicates": round(b["near_duplicates"] / max(1, a["near_duplicates"]), 2)}
    out = {"date": str(date.today()), "commit": commit, "code": str(code), "tag": args.tag,
           "machine": f"{platform.machine()}, {os.cpu_count()} cores", "runner": "DirectRunner (defaults)",
           "seed": args.seed, "results": results, "ratios_4n_over_n": ratios}
    atomic.write_text(root / f"curate-{args.tag}.json", json.dumps(out, indent=2))
    print(json.dumps(out["ratios_4n_over_n"]))
    print(f"N {a['candidates']} -> 4N {b['candidates']} candidates: wall {a['wall_s']}s -> {b['wall_s']}s "
          f"({ratios['wall']}x), peak memory {a['peak_rss_mb']} -> {b['peak_rss_mb']} MB ({ratios['peak_memory']}x), "
          f"near duplicates {a['near_duplicates']} -> {b['near_duplicates']} ({ratios['near_duplicates']}x; "
          f"false {a['false_near_duplicates']} -> {b['false_near_duplicates']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("curate")
    c.add_argument("--seed", type=int, default=102)
    c.add_argument("--per-class", type=int, default=300)
    c.add_argument("--scale", type=int, default=4)
    c.add_argument("--model-from", help="a built world with the same spec but the pool, whose model to reuse")
    c.add_argument("--code", help="run the CLI from this checkout (default: this one)")
    c.add_argument("--root", default=str(ROOT / ".cache" / "bench-scale"))
    c.add_argument("--tag", default="new")
    s = sub.add_parser("steps")
    s.add_argument("--sizes", type=int, nargs="+", default=[100_000, 400_000])
    s.add_argument("--root", default=str(ROOT / ".cache" / "bench-scale"))
    args = ap.parse_args()
    if args.cmd == "curate":
        cmd_curate(args)
    else:
        cmd_steps(args)


def cmd_steps(args) -> None:
    raise SystemExit("steps: not written yet")


if __name__ == "__main__":
    main()
