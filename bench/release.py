"""Release throughput: `counteranimal release` (the Beam pipeline, card, Croissant and checksums included)
against a plain `webdataset.ShardWriter` loop writing the same photos, side by side in one run.

Takes a curated run (default: the planted test world's, curated under /tmp if absent), replicates its
photos N times with fresh uids (shards, samples, candidates and model groups; scores are copied as they
are, for the 1-vs-k sets), and then runs, R rounds, in an order rotated each round:

  release   pipeline.release.run_release(..., verified=False) into RUN/release/bench-1 as the CLI runs
            it with these Beam options (on the default runner: the in-process path, see
            pipeline/release.py; else the Beam pipeline)
  beam      the same with the Beam pipeline forced (only when the CLI's path is the in-process one)
  plain     the same photos (release.plan's selection) read from the same run shards with
            curation.shard_reader and written by webdataset.ShardWriter, maxcount = photos / shards,
            each sample {__key__, jpg, cls, json}

and prints images/s for each (median of the rounds) and the ratios to plain. Both release sides do
everything `counteranimal release` does (plan, 1-vs-k sets, shards with sha256 per image, metadata,
card, Croissant, SHA256SUMS, the rename); plain writes the tars only.

    .venv/bin/python bench/release.py --run RUN [--times 20] [--rounds 3] [-- BEAM OPTIONS]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from curation import config, release, shard_reader  # noqa: E402
from curation import release_layout as layout  # noqa: E402


def replicate(src: Path, dst: Path, times: int) -> int:
    """dst: src's photos ``times`` over, each copy with its own uid (uid + 2 hex digits)."""
    shutil.rmtree(dst, ignore_errors=True)
    for sub in ("shards", "samples", "candidates", "groups"):
        (dst / sub).mkdir(parents=True)
    shutil.copy(src / "config.yaml", dst / "config.yaml")
    shutil.copy(src / "proposals.parquet", dst / "proposals.parquet")
    shutil.copytree(src / "scores", dst / "scores")
    samples = pq.read_table(src / "samples").to_pylist()
    candidates = pq.read_table(src / "candidates")
    groups = pq.read_table(src / "groups")
    groups = groups.filter(pa.compute.not_equal(groups.column("method"), "human"))
    by_shard: dict[str, list[dict]] = {}
    for s in samples:
        if s["status"] == "ok" and s["shard"]:
            by_shard.setdefault(s["shard"], []).append(s)
    n, chunk = 0, 0
    for t in range(times):
        suffix = f"{t:02x}"
        rows = []
        for shard, ss in sorted(by_shard.items()):
            keys = {s["key"]: s for s in ss}
            out = f"{chunk:05d}.tar"
            with open(src / "shards" / shard, "rb") as f, tarfile.open(dst / "shards" / out, "w") as tar:
                for key, parts in shard_reader.iter_samples(f):
                    if key not in keys:
                        continue
                    for ext, data in parts.items():
                        info = tarfile.TarInfo(f"{key}{suffix}.{ext}")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
            for s in ss:
                rows.append(dict(s, uid=s["uid"] + suffix, key=s["key"] + suffix, shard=out, chunk=chunk))
            chunk += 1
        n += len(rows)
        pq.write_table(pa.Table.from_pylist(rows, schema=pq.read_schema(next((src / "samples").glob("*.parquet")))),
                       dst / "samples" / f"{t:05d}.parquet")
        cand = candidates.set_column(0, "uid", pa.array([u + suffix for u in candidates.column("uid").to_pylist()]))
        pq.write_table(cand, dst / "candidates" / f"{t:05d}.parquet")
        g = groups.set_column(0, "uid", pa.array([u + suffix for u in groups.column("uid").to_pylist()]))
        pq.write_table(g, dst / "groups" / f"model-{t:05d}.parquet")
    return n


def plain(run: Path, plan: release.Plan, out: Path) -> int:
    """The baseline: the same photos, each run shard read once as the release reads it, written by one
    webdataset ShardWriter per split."""
    import webdataset as wds

    shutil.rmtree(out, ignore_errors=True)
    want = {(p.in_shard, p.in_key): p for ps in plan.photos.values() for p in ps}
    sinks = {}
    for split in layout.SPLITS:
        (out / split).mkdir(parents=True)
        per_shard = -(-len(plan.photos[split]) // plan.nshards[split])
        sinks[split] = wds.ShardWriter(str(out / split / "%d.tar"), maxcount=per_shard, verbose=0)
    n = 0
    for shard in sorted({s for s, _ in want}):
        with open(run / "shards" / shard, "rb") as f:
            for key, parts in shard_reader.iter_samples(f):
                p = want.get((shard, key))
                if p is None:
                    continue
                sinks[p.group].write({"__key__": p.key, "jpg": shard_reader.image_bytes(parts), "cls": str(p.label),
                                      "json": json.dumps({"uid": p.uid, "group": p.group})})
                n += 1
    for sink in sinks.values():
        sink.close()
    return n


def main() -> None:
    argv = sys.argv[1:]
    beam_args = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="a curated run (with proposals.parquet)")
    ap.add_argument("--times", type=int, default=20, help="copies of the run's photos (default: %(default)s)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--work", default="/tmp/bench-release", help="scratch folder")
    args = ap.parse_args(argv)
    from pipeline import release as pipeline_release
    from pipeline.options import pipeline_options

    work = Path(args.work)
    run = work / "run"
    n_all = replicate(Path(args.run), run, args.times)
    cfg = config.load(run)
    plan = release.plan(run, cfg, verified=False)
    n = sum(len(v) for v in plan.photos.values())
    size = sum(p.bytes or 0 for v in plan.photos.values() for p in v)
    print(f"{n_all} clean photos replicated, {n} released ({size / 2**20:.1f} MiB of images), "
          f"{plan.nshards} shards; beam args {beam_args or '(defaults)'}")
    options = pipeline_options(beam_args)
    engine = "in-process" if pipeline_release.in_process(options) else "beam"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    print(f"# bench/release.py at {commit}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, "
          f"Python {platform.python_version()}; the CLI's path here: {engine}")

    def release_side(use_beam):
        return lambda: pipeline_release.run_release(run, cfg, options, name="bench", version="1", verified=False,
                                                    say=lambda s: None, use_beam=use_beam)

    sides = {"release": release_side(None)}
    if engine == "in-process":
        sides["beam"] = release_side(True)
    sides["plain"] = lambda: plain(run, plan, work / "plain") == n or sys.exit("plain wrote another count")
    times: dict[str, list[float]] = {k: [] for k in sides}
    for r in range(args.rounds):
        order = list(sides)[r % len(sides):] + list(sides)[:r % len(sides)]
        for side in order:
            t = time.perf_counter()
            sides[side]()
            times[side].append(time.perf_counter() - t)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s ({n / v[-1]:.0f} img/s)" for k, v in times.items()))
    rate = {k: n / statistics.median(v) for k, v in times.items()}
    per_round = {k: [round(times["plain"][i] / times[k][i], 2) for i in range(args.rounds)] for k in sides if k != "plain"}
    print("median: " + ", ".join(f"{k} {v:.0f} img/s" for k, v in rate.items())
          + f"; load {os.getloadavg()[0]:.1f}")
    for k in per_round:
        print(f"ratio {k} / plain: {rate[k] / rate['plain']:.2f} (per round {per_round[k]})")


if __name__ == "__main__":
    main()
