"""How `curate` grows with the pool (issue 14): the whole pipeline at N and 4N candidates, and the
former whole-run steps on synthetic data at 10^5 and 4·10^5 photos.

    .venv/bin/python bench/scale.py curate [--seed 102] [--per-class 300] [--scale 4] [--model-from WORLD]
                                           [--code DIR] [--root .cache/bench-scale] [--tag NAME]
    .venv/bin/python bench/scale.py steps [--sizes 100000 400000]

curate: two planted worlds of the "small" size that differ only in pool_per_class (N = 12 classes x
per-class x 1.2 with the planted noise; 4N = scale x that). The training split does not depend on the
pool (each split has its own random stream), so one trained model serves both: the first world's
(trained here unless --model-from names a built world with the same spec but the pool and the
grid, whose model is reused). Each world's pool is served on 127.0.0.1 and `counteranimal curate RUN` runs in a
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
        # The pool and the grid (the oracle's) have random streams of their own: training does not see them.
        a, b = ({k: v for k, v in d.items() if not k.startswith(("pool_", "grid_"))} for d in (a, b))
        if a != b:
            raise SystemExit(f"--model-from {model_from}: its world differs from {world} in more than the pool "
                             "and the grid")
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
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=env["PYTHONPATH"])
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


def synthetic_candidates(n: int, seed: int) -> list:
    """n photos for the dedupe: families of 1-3 (a photo and its copies: hashes a few bits apart,
    thumbnails a little noisy; a third of the copies another animal on the same background, whose
    thumbnails differ), random hashes otherwise; 2% exact copies."""
    import numpy as np

    from curation import dedupe, image_checks

    rng = np.random.default_rng(seed)
    nb = image_checks.THUMB_BYTES
    out, i = [], 0
    while len(out) < n:
        base = int(rng.integers(0, 2**63)) | (int(rng.integers(0, 2)) << 63)
        thumb = rng.integers(20, 236, nb).astype(np.int16)
        for j in range(int(rng.integers(1, 4))):
            flips = sum(1 << int(b) for b in rng.choice(64, int(rng.integers(0, 6)), replace=False)) if j else 0
            h = base ^ flips
            t = thumb + rng.integers(-3, 4, nb) if j else thumb
            if j and rng.random() < 0.33:
                t = np.where(rng.random(nb) < 0.33, rng.integers(0, 256, nb), t)
            sha = out[int(rng.integers(len(out)))].sha256 if out and rng.random() < 0.02 else f"s{i}"
            out.append(dedupe.Candidate(f"u{i:07d}", int(rng.integers(20)), sha,
                                        (h, h ^ (1 << int(rng.integers(64))), h ^ (3 << int(rng.integers(62))), h),
                                        int(rng.choice([4096, 9216, 16384])),
                                        np.clip(t, 0, 255).astype(np.uint8).tobytes()))
            i += 1
    return out[:n]


def synthetic_embeddings(n: int, seed: int, d: int = 512):
    """Unit embeddings in 20 classes x 10 scenes, 2% of the labels wrong (what label_noise looks for)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    cls, scene = rng.integers(20, size=n), rng.integers(10, size=n)
    ccent, scent = rng.normal(size=(20, d)), rng.normal(size=(10, d))
    x = 0.6 * ccent[cls] + 0.5 * scent[scene] + 0.9 * rng.normal(size=(n, d))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16).astype(np.float32)
    labels = np.where(rng.random(n) < 0.02, rng.integers(20, size=n), cls)
    return [f"u{i:07d}" for i in range(n)], x, labels


def cmd_steps(args) -> None:
    """The former whole-run steps, block by block in one process, at each size."""
    import numpy as np

    from curation import dedupe, neighbors
    from curation.config import CleanSpec

    spec = CleanSpec()
    rows = []
    for n in args.sizes:
        cands = synthetic_candidates(n, seed=n)
        started = time.monotonic()
        dropped, _ = dedupe.find_duplicates_blocked(cands, spec.near_duplicate_bits,
                                                    spec.near_duplicate_max_cell_difference)
        dedupe_s = time.monotonic() - started
        del cands
        uids, emb, labels = synthetic_embeddings(n, seed=n)
        started = time.monotonic()
        shares = neighbors.shares(uids, emb, labels, spec.label_noise_neighbors)
        search_s = time.monotonic() - started
        # Agreement with the exact search, on the first 1,000 photos as queries against all.
        q = min(1000, n)
        sims = emb[:q] @ emb.T
        sims[np.arange(q), np.arange(q)] = -np.inf
        nearest = np.argpartition(-sims, spec.label_noise_neighbors - 1, axis=1)[:, :spec.label_noise_neighbors]
        exact = (labels[nearest] == labels[:q, None]).mean(axis=1)
        flag_exact = exact <= spec.label_noise_max_neighbor_share
        flag_cells = shares[:q] <= spec.label_noise_max_neighbor_share
        row = {"photos": n, "dedupe_s": round(dedupe_s, 1), "near_duplicates": sum(
                   d.reason == "near_duplicate" for d in dropped.values()),
               "neighbour_search_s": round(search_s, 1), "cells": neighbors.n_cells(n),
               "share_equal_to_exact": round(float((np.abs(exact - shares[:q]) < 1e-6).mean()), 3),
               "flag_agreement": round(float((flag_exact == flag_cells).mean()), 3)}
        print(json.dumps(row), flush=True)
        rows.append(row)
    base = rows[0]
    for r in rows:
        r["dedupe_s_per_photo_vs_first"] = round(r["dedupe_s"] / r["photos"] / (base["dedupe_s"] / base["photos"]), 2)
        r["search_s_per_photo_vs_first"] = round(r["neighbour_search_s"] / r["photos"] /
                                                 (base["neighbour_search_s"] / base["photos"]), 2)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    out = {"date": str(date.today()), "commit": commit, "machine": f"{platform.machine()}, {os.cpu_count()} cores",
           "rows": rows}
    Path(args.root).mkdir(parents=True, exist_ok=True)
    atomic.write_text(Path(args.root) / "steps.json", json.dumps(out, indent=2))
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
