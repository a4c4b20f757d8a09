"""Fetch benchmark: our fetch stage vs bare img2dataset on the same loopback URL list.

Both sides fetch the same photo-like JPEGs (400-800 px) from the same loopback server (its
own process), with the same settings: 1 worker process with 32 threads, shards of 1,000,
resize to 512 px max side (keep_ratio_largest, only if bigger), JPEG q95, no EXIF, a sha256 per
image. Each side runs as the command a user would run, timed from launch to exit:

    ours:  counteranimal curate RUN --stages fetch      (Beam DirectRunner, img2dataset per chunk)
    bare:  img2dataset.download(...)                    (its own process pool, 1 process)

Runs are interleaved (ours, bare, ours, bare, …) so drift on this shared machine hits both.
Usage: python bench/fetch.py [--images 2000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
WORK = ROOT / ".cache" / "bench" / "fetch"
SETTINGS = {"image_size": 512, "chunk_size": 1000, "thread_count": 32, "timeout": 10, "encode_quality": 95}


def make_photos(n: int) -> list[str]:
    from pipeline.imageserver import write_photos

    return write_photos(WORK / "photos", n, seed=7, sizes=(400, 800))


def start_server() -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.imageserver", str(WORK / "photos")],
                            stdout=subprocess.PIPE, text=True, cwd=ROOT)
    return proc, int(proc.stdout.readline())


def listing(names: list[str], port: int) -> Path:
    import schemas

    rows = [{"uid": hashlib.sha256(n.encode()).hexdigest()[:16], "url": f"http://127.0.0.1:{port}/img/{n}",
             "class_idx": 281, "class_name": "tabby cat", "source": "url_list", "source_id": str(i),
             "license": "cc-by", "attribution": "bench"} for i, n in enumerate(names)]
    table = schemas.conform(pa.Table.from_pylist(rows), "candidates").sort_by("uid")
    path = WORK / "candidates.parquet"
    pq.write_table(table, path)
    return path


def run_ours(candidates: Path, n: int) -> float:
    run = WORK / "ours"
    shutil.rmtree(run, ignore_errors=True)
    (run / "candidates").mkdir(parents=True)
    shutil.copy(candidates, run / "candidates" / "candidates.parquet")
    cfg = {"classes": [{"name": "tabby cat", "imagenet_idx": 281}], "backgrounds": ["grass"],
           "models": [{"name": "RN50"}], "fetch": {**SETTINGS, "allowed_networks": ["127.0.0.0/8"]}}
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "pipeline.cli", "curate", str(run), "--stages", "fetch"],
                   check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    ok = json.loads((run / "manifest.json").read_text())["stages"]["fetch"]["counts"]["ok"]
    assert ok == n, f"ours fetched {ok} of {n}"
    return seconds


def run_bare(candidates: Path, n: int) -> float:
    out = WORK / "bare"
    shutil.rmtree(out, ignore_errors=True)
    started = time.monotonic()
    subprocess.run([sys.executable, __file__, "_bare", str(candidates), str(out)], check=True, cwd=ROOT,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    ok = sum(json.loads(p.read_text())["successes"] for p in out.glob("*_stats.json"))
    assert ok == n, f"bare img2dataset fetched {ok} of {n}"
    return seconds


def bare_once(candidates: str, out: str) -> None:
    from img2dataset import download

    download(url_list=candidates, input_format="parquet", url_col="url", output_folder=out,
             output_format="webdataset", processes_count=1, thread_count=SETTINGS["thread_count"],
             image_size=SETTINGS["image_size"], resize_mode="keep_ratio_largest", resize_only_if_bigger=True,
             encode_quality=SETTINGS["encode_quality"], encode_format="jpg", timeout=SETTINGS["timeout"],
             number_sample_per_shard=SETTINGS["chunk_size"], extract_exif=False, compute_hash="sha256",
             save_additional_columns=["uid", "class_idx", "class_name", "license", "attribution"],
             user_agent_token="counteranimal")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    WORK.mkdir(parents=True, exist_ok=True)
    t = time.monotonic()
    names = make_photos(args.images)
    print(f"{len(names)} photos ready in {WORK / 'photos'} ({time.monotonic() - t:.0f}s)", flush=True)
    server, port = start_server()
    try:
        candidates = listing(names, port)
        timings: dict[str, list[float]] = {"ours": [], "bare": []}
        for i in range(args.repeats):
            for side, fn in (("ours", run_ours), ("bare", run_bare)):
                seconds = fn(candidates, len(names))
                timings[side].append(seconds)
                print(f"run {i + 1} {side}: {seconds:.1f}s, {len(names) / seconds:.1f} images/s", flush=True)
    finally:
        server.terminate()
        server.wait()
    rate = {side: len(names) / statistics.median(ts) for side, ts in timings.items()}
    pair_ratios = [b / o for o, b in zip(timings["ours"], timings["bare"])]
    print("\n| side | median images/s | runs (s) |\n| --- | --- | --- |")
    for side in ("ours", "bare"):
        print(f"| {side} | {rate[side]:.1f} | {', '.join(f'{s:.1f}' for s in timings[side])} |")
    print(f"\nratio ours/bare (median rates): {rate['ours'] / rate['bare']:.2f}; per interleaved pair: "
          f"{', '.join(f'{r:.2f}' for r in pair_ratios)}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_bare":
        bare_once(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sys.exit(main())
