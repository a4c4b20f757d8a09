"""Evaluation throughput against the raw forward, side by side in one run.

    python bench/evaluate.py [--models ViT-B-32,ca-tiny] [--vit-images 128] [--tiny-images 2048] [--rounds 3]
                             [--threads N] [--batch-size 64]

For each model (ViT-B-32 with random weights from a local file; the planted world's ca-tiny config),
on the same release folder (JPEGs 512x384 as fetch stores them, 4 WebDataset shards per split, in
curation/release_layout.py's layout):
  raw       the model's forward alone (encode_image) on the same images already decoded and
            preprocessed in memory, in the same batches (per split): no reading, no decoding, no
            preprocessing; the model's limit on this machine;
  loop      the same work as evaluate's image loop written as a plain loop in one thread: read the
            shards (release_reader), decode + open_clip's preprocess each image, forward + normalise
            each batch (per split): what the evaluation costs without its decode threads;
  evaluate  `curation.evaluate.evaluate`'s image loop (read the shards, decode in threads, forward),
            its ``images_seconds``;
  whole     the whole call: + text bank, 1 vs N and 1 vs k, metrics, 1,000 bootstrap replicates.
Each side also reports this process's CPU time per image (all threads): on a machine shared with
other jobs, wall-clock ratios say how much CPU a side got, CPU per image what it needs.
Sides run in a rotated order each round so the machine's noise hits all of them; medians.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import open_clip  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from curation import clip_models, evaluate, release_layout as layout  # noqa: E402
from curation.release_reader import open_dataset  # noqa: E402
from tests.support.score_run import jpeg, picture  # noqa: E402

WORK = ROOT / ".cache" / "bench" / "evaluate"
CLASSES = ["duck", "goose", "hen", "ostrich", "peafowl", "pelican", "flamingo", "king penguin", "vulture",
           "toucan", "American bullfrog", "lion"]


def write_release(folder: Path, n: int) -> Path:
    """n photos (half common, half counter) of 12 classes, 4 shards per split; reused when present."""
    if (folder / "done").is_file() and int((folder / "done").read_text()) == n:
        return folder
    for split_i, split in enumerate(layout.SPLITS):
        (folder / split).mkdir(parents=True, exist_ok=True)
        ids = list(range(split_i, n, 2))
        for s in range(layout.MIN_SHARDS):
            with tarfile.open(folder / split / layout.shard_name(s), "w", format=tarfile.USTAR_FORMAT) as tar:
                for i in ids[s::layout.MIN_SHARDS]:
                    label = i % len(CLASSES)
                    meta = {"uid": f"u{i:06d}", "class_idx": label, "class_name": CLASSES[label], "group": split,
                            "background": "grass" if split == "common" else "sky"}
                    for ext, data in (("cls", str(label).encode()), ("jpg", jpeg(picture(i, (512, 384)))),
                                      ("json", json.dumps(meta).encode())):
                        info = tarfile.TarInfo(f"u{i:06d}.{ext}")
                        info.size = len(data)
                        tar.addfile(info, io.BytesIO(data))
        (folder / split / layout.NSHARDS).write_text(f"{layout.MIN_SHARDS}\n")
    (folder / layout.CLASSNAMES).write_text("".join(c + "\n" for c in CLASSES))
    (folder / layout.TEMPLATES).write_text("a photo of a {c}.\n")
    (folder / "done").write_text(str(n))
    return folder


def model_file(name: str) -> str:
    path = WORK / f"{name}-random.pt"
    if not path.is_file():
        torch.manual_seed(0)
        WORK.mkdir(parents=True, exist_ok=True)
        torch.save(open_clip.create_model(name).state_dict(), path)
    return str(path)


def raw_side(clip, pixels: dict[str, list[torch.Tensor]], batch_size: int) -> float:
    """The forward alone, in the batches evaluate makes (per split, batch_size at a time)."""
    with torch.inference_mode():
        for split_pixels in pixels.values():
            for i in range(0, len(split_pixels), batch_size):
                clip.model.encode_image(torch.stack(split_pixels[i:i + batch_size]))
    return 0.0


def loop_side(clip, ds, batch_size: int) -> float:
    """Read, decode, preprocess and forward in one thread, batch after batch (no overlap)."""
    from curation import zeroshot

    for split in ds.splits:
        batch = []
        for sample in ds.samples(split):
            batch.append(clip.preprocess(Image.open(io.BytesIO(sample.image)).convert("RGB")))
            if len(batch) == batch_size:
                zeroshot.encode_images(clip, torch.stack(batch))
                batch = []
        if batch:
            zeroshot.encode_images(clip, torch.stack(batch))
    return 0.0


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, out


def bench_model(name: str, n: int, rounds: int, batch_size: int) -> dict:
    release = write_release(WORK / f"release-{n}", n)
    clip = clip_models.load(name, model_file(name))
    ds = open_dataset(release)
    pixels = {split: [clip.preprocess(Image.open(io.BytesIO(s.image)).convert("RGB")) for s in ds.samples(split)]
              for split in ds.splits}
    assert sum(map(len, pixels.values())) == n
    sides = {
        "raw": lambda: raw_side(clip, pixels, batch_size),
        "loop": lambda: loop_side(clip, ds, batch_size),
        "evaluate": lambda: evaluate.evaluate(ds, clip, batch_size=batch_size, progress=False),
    }
    runs: dict[str, list] = {"raw": [], "loop": [], "evaluate": [], "whole": []}
    raw_side(clip, {"warm-up": pixels["common"][:batch_size]}, batch_size)
    for r in range(rounds):
        order = list(sides)[r % len(sides):] + list(sides)[:r % len(sides)]
        for side in order:
            wall, cpu, out = timed(sides[side])
            if side == "evaluate":
                runs["evaluate"].append((out["images_seconds"], cpu))
                runs["whole"].append((wall, cpu))
            else:
                runs[side].append((wall, cpu))
    med = {k: statistics.median(w for w, _ in v) for k, v in runs.items()}
    cpu = {k: statistics.median(c for _, c in v) for k, v in runs.items()}
    per_round = {base: [round(runs[base][i][0] / runs["evaluate"][i][0], 2) for i in range(rounds)]
                 for base in ("raw", "loop")}
    return {"model": name, "images": n, "torch_threads": torch.get_num_threads(), "batch_size": batch_size,
            "decode_threads": max(2, (os.cpu_count() or 2) - 1), "load": round(os.getloadavg()[0], 1),
            "img_s": {k: round(n / v, 1) for k, v in med.items()},
            "ratio_to_raw": {k: round(med["raw"] / v, 2) for k, v in med.items()},
            "ratio_to_loop": {k: round(med["loop"] / v, 2) for k, v in med.items()},
            "ratio_per_round": per_round,
            "cpu_ms_per_image": {k: round(1000 * v / n, 2) for k, v in cpu.items()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="ViT-B-32,ca-tiny")
    p.add_argument("--vit-images", type=int, default=128)
    p.add_argument("--tiny-images", type=int, default=2048)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's own)")
    p.add_argument("--batch-size", type=int, default=evaluate.BATCH_SIZE)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    print(f"# bench/evaluate.py at {commit}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"{platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}, torch {torch.__version__}")
    for name in args.models.split(","):
        n = args.vit_images if name.startswith("ViT") else args.tiny_images
        r = bench_model(name, n, args.rounds, args.batch_size)
        print(json.dumps(r))
        print(f"| {name} ({r['torch_threads']} torch threads), {n} images, load {os.getloadavg()[0]:.1f} "
              "| img/s | / raw | / plain loop | CPU ms/image |\n| --- | --- | --- | --- | --- |")
        for side, label in (("raw", "raw forward (decoded pixels in memory)"),
                            ("loop", "plain loop (read, decode, preprocess, forward; one thread)"),
                            ("evaluate", "evaluate, image loop"), ("whole", "evaluate, whole call")):
            print(f"| {label} | {r['img_s'][side]} | **{r['ratio_to_raw'][side]}** | {r['ratio_to_loop'][side]} "
                  f"| {r['cpu_ms_per_image'][side]} |")
        print(f"per round, raw / evaluate: {r['ratio_per_round']['raw']}; "
              f"plain loop / evaluate: {r['ratio_per_round']['loop']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
