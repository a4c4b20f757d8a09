"""Score-stage throughput against its limit, side by side in one run.

    python bench/score.py [--vit-images 96] [--tiny-images 4096] [--rounds 3] [--threads 1] [--clip-retrieval]

For each model (ViT-B-32 with random weights from a local file; the reference small model's
config, ca-tiny), on the same JPEG shards (512x384, as fetch stores them by default):
  raw          the model's forward alone on the same images already decoded and preprocessed in
               memory (the limit for this machine), same batch size;
  decode       decoding + preprocessing alone, one thread: full-size decode (score.decode: exact)
  decode_draft   ... and libjpeg's scaled decode (score.decode: draft);
  stage        the score stage (Beam DirectRunner, RunInference) from shards to written scores files,
               score.decode: exact; without the one-time model load + text bank (Beam's own metric);
  stage_draft  the same with score.decode: draft;
  stage_small  exact decoding of the same pictures fetched smaller (fetch.image_size 128: 128x96 JPEGs),
               the "resize at fetch time" alternative (ca-tiny only);
  stage_before with --before FILE: that version of pipeline/score.py on the same shards (exact);
  fixed        the stage on 32 images (4 shards): its fixed cost (pipeline start, bundles, plan, finish),
               subtracted to give each stage side's per-image rate "past the fixed cost".
Each side also reports the CPU time this process spent per image (all its threads; for stage sides
including the model load + text bank, which dominates for ViT-B-32 on few images): on a machine
shared with other jobs, wall-clock ratios say how much CPU the stage got; CPU per image says what
it needs: with the machine's 2 cores free, a stage side runs at most at 2 / (its CPU per image),
so 2 x (raw CPU) / (stage CPU) bounds the stage / raw ratio there (and the model thread bounds it too).
Sides run in a rotated order each round so the shared machine's noise hits all of them; medians.
With --clip-retrieval, clip-retrieval's `clip_inference` runs on the same shards and ViT-B-32
file from .venv-clipretrieval (see bench/RESULTS.md for how it is installed and what it needs).
"""
from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import numpy as np  # noqa: E402
import open_clip  # noqa: E402
import pyarrow as pa  # noqa: E402
import torch  # noqa: E402
import webdataset as wds  # noqa: E402
from PIL import Image  # noqa: E402

from curation import atomic, clip_models, config  # noqa: E402
from pipeline import clean as clean_stage  # noqa: E402
from pipeline import score as score_stage  # noqa: E402
from pipeline.options import pipeline_options  # noqa: E402
from schemas.validate import conform  # noqa: E402
from tests.support.score_run import jpeg, picture  # noqa: E402

WORK = ROOT / ".cache" / "bench" / "score"
BATCH = 32


def checkpoint(name: str) -> Path:
    """Random weights for the config as it is now (the file name carries a hash of the config)."""
    digest = hashlib.sha256(json.dumps(open_clip.get_model_config(name), sort_keys=True).encode()).hexdigest()[:8]
    path = WORK / f"{name}-{digest}-random.pt"
    if not path.exists():
        torch.manual_seed(0)
        model = open_clip.create_model(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return path


def build_run(run: Path, n: int, model: str, ckpt: Path, per_shard: int, longest: int = 512) -> list[bytes]:
    """n JPEGs (512x384, or fetched at a smaller longest side) in shards of per_shard, all clean; one model."""
    shutil.rmtree(run, ignore_errors=True)
    size = (longest, longest * 3 // 4)
    images = [jpeg(picture(i, (512, 384)).resize(size, Image.Resampling.LANCZOS) if longest != 512
                   else picture(i, (512, 384)), quality=90) for i in range(n)]
    classes = [(296, "ice bear"), (130, "flamingo"), (23, "vulture")]
    (run / "shards").mkdir(parents=True)
    for s in range(0, n, per_shard):
        name = f"{s // per_shard:05d}"
        rows = []
        with wds.TarWriter(str(run / "shards" / f"{name}.tar")) as tar:
            for i in range(s, min(n, s + per_shard)):
                key, (idx, cname) = f"{i:09d}", classes[i % 3]
                tar.write({"__key__": key, "jpg": images[i],
                           "json": json.dumps({"uid": f"u{i:06d}", "class_idx": idx}).encode()})
                rows.append({"uid": f"u{i:06d}", "class_idx": idx, "class_name": cname, "chunk": s // per_shard,
                             "shard": f"{name}.tar", "key": key, "status": "ok", "flags": []})
        atomic.write_parquet(run / "samples" / f"{name}.parquet", conform(pa.Table.from_pylist(rows), "samples"))
    cfg = config.RunConfig(
        name="bench", classes=[config.ClassSpec(name=c, imagenet_idx=i) for i, c in classes],
        backgrounds=["grass", "water", "sky", "snow"], label_space="classes",
        models=[config.ModelSpec(name=model, pretrained=str(ckpt), id=model)],
        score=config.ScoreSpec(batch_size=BATCH))
    atomic.write_text(run / "config.yaml", config.dump(cfg))
    return images


def raw_forward(clip, pixels: torch.Tensor) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(pixels), BATCH):
            clip.model.encode_image(pixels[i:i + BATCH])
    return len(pixels) / (time.perf_counter() - start)


def decode_only(clip, images: list[bytes], draft: int | None = None) -> tuple[float, torch.Tensor]:
    """The stage's own decode function, one thread."""
    samples = [score_stage.ImageSample("u", 0, "s", "k", b) for b in images]
    per_image, normalize = score_stage.split_preprocess(clip.preprocess)
    start = time.perf_counter()
    pixels = torch.cat([score_stage.to_batch([score_stage.decode(per_image, normalize, draft, s)
                                              for s in samples[i:i + BATCH]], normalize)
                        for i in range(0, len(samples), BATCH)])
    return len(images) / (time.perf_counter() - start), pixels


def stage(run: Path, decode: str, beam_args: list[str], module=score_stage) -> dict:
    shutil.rmtree(run / "scores", ignore_errors=True)
    cfg = config.load(run)
    cfg.score.decode = decode
    return module.run_score(run, cfg, pipeline_options(beam_args), say=lambda s: None)


def load_before(path: str):
    """Another version of pipeline/score.py (e.g. `git show REV:pipeline/score.py > FILE`) as a module."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("score_before", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["score_before"] = module      # Beam pickles its DoFns by reference
    spec.loader.exec_module(module)
    return module


def clip_retrieval(run: Path, ckpt: Path, n_shards: int) -> float | None:
    exe = ROOT / ".venv-clipretrieval" / "bin" / "clip-retrieval"
    if not exe.exists():
        return None
    out = run / "clip_retrieval_out"
    shutil.rmtree(out, ignore_errors=True)
    shards = str(run / "shards" / (f"{{00000..{n_shards - 1:05d}}}.tar" if n_shards > 1 else "00000.tar"))
    cmd = [str(exe), "inference", "--input_dataset", shards, "--output_folder", str(out),
           "--input_format", "webdataset", "--enable_text", "False", "--enable_metadata", "False",
           "--clip_model", f"open_clip:ViT-B-32/{ckpt}", "--batch_size", str(BATCH), "--num_prepro_workers", "2",
           "--enable_wandb", "False", "--use_jit", "False", "--write_batch_size", "100000"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=out.parent,
                              env={**os.environ, "HF_HUB_OFFLINE": "1"})
    except subprocess.TimeoutExpired:
        print("clip_inference did not finish in 600 s", file=sys.stderr)
        return None
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        print("clip_inference failed:", proc.stderr[-2000:], file=sys.stderr)
        return None
    return seconds


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vit-images", type=int, default=96)
    ap.add_argument("--tiny-images", type=int, default=4096)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clip-retrieval", action="store_true")
    ap.add_argument("--decode-threads", type=int, default=None, help="override score.decode_threads")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both sides (score.num_threads)")
    ap.add_argument("--models", default="ViT-B-32,ca-tiny", help="comma-separated: ViT-B-32, ca-tiny")
    ap.add_argument("--before", help="another pipeline/score.py, run as side stage_before (exact decode)")
    args = ap.parse_args()
    before = load_before(args.before) if args.before else None
    if args.threads:
        torch.set_num_threads(args.threads)
    wanted = args.models.split(",")
    models = [(m, n) for m, n in (("ViT-B-32", args.vit_images), ("ca-tiny", args.tiny_images))
              if m in wanted and m in open_clip.list_models()]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), batch {BATCH}")
    for name, n in models:
        ckpt = checkpoint(name)
        n_shards = 4    # clip_inference needs at least as many shards as its preprocessing workers
        runs = {"": (WORK / f"run-{name}", n, 512), "fixed": (WORK / f"run-{name}-32", 32, 512)}
        if name == "ca-tiny":
            runs["small"] = (WORK / f"run-{name}-fetch128", n, 128)
        for kind, (run, count, longest) in runs.items():
            images = build_run(run, count, name, ckpt, per_shard=-(-count // n_shards), longest=longest)
            if not kind:
                full_images = images
            cfg = config.load(run)
            cfg.score.decode_threads = args.decode_threads or cfg.score.decode_threads
            cfg.score.num_threads = args.threads
            atomic.write_text(run / "config.yaml", config.dump(cfg))
            clean_stage.run_clean(run, config.load(run), pipeline_options([]), say=lambda s: None)
        clip = clip_models.load(name, str(ckpt))
        draft = score_stage.draft_size(clip)
        pixels = decode_only(clip, full_images)[1]     # the raw side's input, decoded once

        def run_stage(kind: str, decode: str, module=score_stage) -> tuple[float, float]:
            """Seconds without the model load (Beam's metric), and with it."""
            c = stage(runs[kind][0], decode, [], module)
            return c["seconds"] - c["model_load_s"], c["seconds"]

        sides = {
            "raw": lambda: raw_forward(clip, pixels),
            "decode": lambda: decode_only(clip, full_images)[0],
            "decode_draft": lambda: decode_only(clip, full_images, draft)[0],
            "stage": lambda: run_stage("", "exact"),
            "stage_draft": lambda: run_stage("", "draft"),
            "fixed": lambda: run_stage("fixed", "exact"),    # the same stage on 32 images: its fixed cost
        }
        if "small" in runs:
            sides["stage_small"] = lambda: run_stage("small", "exact")
        if before:
            sides["stage_before"] = lambda: run_stage("", "exact", before)
        if args.clip_retrieval and name == "ViT-B-32":
            sides["cr"] = lambda: (lambda secs: n / secs if secs else None)(clip_retrieval(runs[""][0], ckpt, n_shards))
        res: dict[str, list] = {k: [] for k in sides}       # img/s (stage sides: seconds, then img/s below)
        e2e: dict[str, list] = {k: [] for k in sides}
        marginal: dict[str, list] = {k: [] for k in sides}
        cpu_ms: dict[str, list] = {k: [] for k in sides}   # CPU time of this process (all threads) per image
        loads = []
        for r in range(args.rounds):
            order = list(sides)
            order = order[r % len(order):] + order[:r % len(order)]
            secs = {}
            for k in order:
                cpu = time.process_time()
                v = sides[k]()
                cpu_ms[k].append((time.process_time() - cpu) * 1e3 / (32 if k == "fixed" else n))
                if isinstance(v, tuple):
                    secs[k] = v[0]
                    v, e2e[k] = n / v[0], e2e[k] + [n / v[1]]
                if v:
                    res[k].append(v)
            for k in secs:      # per-image rate once the fixed cost (pipeline start, bundles) is paid
                if k.startswith("stage"):
                    marginal[k].append((n - 32) / (secs[k] - secs["fixed"]))
            loads.append(os.getloadavg()[0])
            print(f"  {name} round {r + 1} (load {loads[-1]:.1f}): "
                  + ", ".join(f"{k} {v[-1]:.1f}" for k, v in res.items() if v and k != "fixed")
                  + f"; fixed cost {secs['fixed']:.2f} s")
        med = {k: float(np.median(v)) for k, v in res.items() if v}
        med_e2e = {k: float(np.median(v)) for k, v in e2e.items() if v}
        med_marg = {k: float(np.median(v)) for k, v in marginal.items() if v}
        print(f"{name}: {n} images, medians of {args.rounds} rounds (load {min(loads):.1f}-{max(loads):.1f}); "
              f"fixed cost (stage on 32 images) {n / med['fixed']:.2f} s")
        for k, v in med.items():
            if k == "fixed":
                continue
            extra = ""
            if k in med_marg:
                extra = (f"  /raw {v / med['raw']:.2f}; end to end incl. model load {med_e2e[k]:.1f} "
                         f"({med_e2e[k] / med['raw']:.2f}); past the fixed cost {med_marg[k]:.1f} "
                         f"({med_marg[k] / med['raw']:.2f})")
            if k != "cr":
                extra += f"; CPU {float(np.median(cpu_ms[k])):.2f} ms/image"
            print(f"  {k:13s} {v:8.1f} img/s{extra}")
        if "cr" in med:
            print(f"  stage e2e / clip_inference = {med_e2e['stage'] / med['cr']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
