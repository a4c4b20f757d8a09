"""A small fetched run for the clean and score tests: real JPEG shards in img2dataset's layout.

Images are synthetic (coloured shapes on textured grounds, 96-160 px) so a run stays small; the
planted faults are known by construction: exact duplicates (same bytes, also across classes),
near duplicates (the same picture resized and re-encoded), corrupt and truncated files, a tiny
image, an extreme aspect ratio, and a sample that the samples table lists but the shard lacks.
The model is a real open_clip model from a tiny named config with random weights saved to a
checkpoint file, loaded through clip_models.load like any other.
"""
from __future__ import annotations

import io
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import webdataset as wds
from PIL import Image, ImageDraw

from curation import atomic, config
from schemas.validate import conform

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "patch_size": 16, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
TINY_NAME = "ca-test-tiny"

# ImageNet-1K indices: ice bear, flamingo, vulture (three of the paper's classes).
CLASSES = [(296, "ice bear"), (130, "flamingo"), (23, "vulture")]


def tiny_checkpoint(folder: Path, seed: int = 0) -> Path:
    """Register the tiny config with open_clip and save random weights for it (once per folder)."""
    import open_clip
    import torch

    cfg_dir = folder / "model_configs"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    (cfg_dir / f"{TINY_NAME}.json").write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(cfg_dir)
    # Beam's multi_processing workers are fresh processes: they register the folder from the environment.
    from curation.clip_models import EXTRA_CONFIG_DIRS_ENV

    dirs = [d for d in os.environ.get(EXTRA_CONFIG_DIRS_ENV, "").split(os.pathsep) if d]
    os.environ[EXTRA_CONFIG_DIRS_ENV] = os.pathsep.join(dict.fromkeys([*dirs, str(cfg_dir)]))
    path = folder / f"{TINY_NAME}-seed{seed}.pt"
    if not path.exists():
        torch.manual_seed(seed)
        model = open_clip.create_model(TINY_NAME)
        torch.save(model.state_dict(), path)
    return path


def picture(seed: int, size: tuple[int, int] = (128, 112)) -> Image.Image:
    rng = random.Random(seed)
    base = np.random.default_rng(seed).integers(0, 255, (size[1] // 8 + 1, size[0] // 8 + 1, 3), dtype=np.uint8)
    img = Image.fromarray(base).resize(size, Image.Resampling.BILINEAR)
    draw = ImageDraw.Draw(img)
    for _ in range(3):
        x, y = rng.randrange(size[0] - 20), rng.randrange(size[1] - 20)
        draw.ellipse([x, y, x + rng.randrange(15, 60), y + rng.randrange(15, 60)],
                     fill=tuple(rng.randrange(256) for _ in range(3)))
    return img


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


@dataclass
class PlantedRun:
    run: Path
    checkpoint: Path
    truth: dict[str, str] = field(default_factory=dict)       # uid -> expected clean outcome
    dup_of: dict[str, str] = field(default_factory=dict)      # uid -> uid it duplicates
    across_classes: set[str] = field(default_factory=set)     # kept uids with a duplicate in another class
    images: dict[str, bytes] = field(default_factory=dict)    # uid -> stored bytes
    class_of: dict[str, int] = field(default_factory=dict)


def build_run(root: Path, checkpoint: Path, per_class: int = 4, shards: int = 2, models: list[dict] | None = None,
              label_space: str = "imagenet1k", ensemble: str = "none") -> PlantedRun:
    """Write RUN/config.yaml, RUN/shards/NNNNN.tar and RUN/samples/NNNNN.parquet with planted faults."""
    run = root
    pr = PlantedRun(run, checkpoint)
    samples: list[tuple[str, int, str, bytes | None, str]] = []   # uid, class_idx, name, bytes, expected

    def add(uid, cls, data, expected, dup=None):
        samples.append((uid, cls[0], cls[1], data, expected))
        pr.truth[uid] = expected
        pr.class_of[uid] = cls[0]
        if data is not None:
            pr.images[uid] = data
        if dup:
            pr.dup_of[uid] = dup

    n = 0
    for ci, cls in enumerate(CLASSES):
        for i in range(per_class):
            add(f"c{ci}-{i:02d}", cls, jpeg(picture(100 * ci + i)), "ok")
            n += 1
    a, b, c = CLASSES
    add("dup-exact", a, pr.images["c0-00"], "duplicate", "c0-00")                 # same bytes, same class
    add("dup-cross", b, pr.images["c0-01"], "duplicate", "c0-01")                 # same bytes, other class
    pr.across_classes.add("c0-01")
    add("dup-near", c, jpeg(picture(100 * 2 + 0).resize((96, 84), Image.Resampling.BICUBIC), quality=70),
        "near_duplicate", "c2-00")                                                # smaller re-encode: c2-00 kept
    add("bad-corrupt", a, b"<html><body>404: this is not a photo</body></html>", "undecodable")
    add("bad-truncated", b, jpeg(picture(999))[:1500], "truncated")
    add("bad-small", c, jpeg(picture(998, (40, 40))), "too_small")
    add("bad-aspect", a, jpeg(picture(997, (600, 100))), "aspect_ratio")
    add("bad-missing", b, None, "missing_in_shard")
    add("fetch-failed", c, None, "failed")

    order = sorted(samples, key=lambda s: s[0])
    (run / "shards").mkdir(parents=True, exist_ok=True)
    for s in range(shards):
        part = order[s::shards]
        name = f"{s:05d}"
        rows = []
        with wds.TarWriter(str(run / "shards" / f"{name}.tar")) as tar:
            for j, (uid, cls_idx, cls_name, data, expected) in enumerate(part):
                key = f"{name}{j:04d}"
                failed = expected == "failed"
                if data is not None:
                    meta = {"uid": uid, "class_idx": cls_idx, "class_name": cls_name, "key": key, "status": "success"}
                    tar.write({"__key__": key, "jpg": data, "json": json.dumps(meta).encode()})
                rows.append({"uid": uid, "class_idx": cls_idx, "class_name": cls_name, "chunk": s,
                             "shard": None if failed else f"{name}.tar", "key": None if failed else key,
                             "status": "failed" if failed else "ok", "reason": "http_404" if failed else None,
                             "flags": []})
        atomic.write_parquet(run / "samples" / f"{name}.parquet", conform(pa.Table.from_pylist(rows), "samples"))
    cfg = config.RunConfig(
        name="planted",
        classes=[config.ClassSpec(name=nm, imagenet_idx=idx) for idx, nm in CLASSES],
        backgrounds=["grass", "water", "sky", "snow"],
        label_space=label_space,
        prompts=config.PromptSpec(ensemble=ensemble),
        models=[config.ModelSpec(**m) for m in (models or [{"name": TINY_NAME, "pretrained": str(checkpoint),
                                                           "id": "tiny"}])],
        score=config.ScoreSpec(batch_size=4, num_threads=1, one_vs_k=5),
    )
    atomic.write_text(run / "config.yaml", config.dump(cfg))
    return pr
