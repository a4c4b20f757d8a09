"""The reference model: a small open_clip model trained with open_clip's ClipLoss on split (a).

Split (a) is biased (each class mostly on its planted common background) and its captions name
only the animal or only the background, so the model picks up the background shortcut the way
web-trained CLIP does. The checkpoint is a plain open_clip state dict: after importing
curation.clip_models (which registers our configs), `open_clip.create_model_and_transforms(name,
pretrained=<file>)` loads it, and so does `curation.clip_models.load(name, <file>)`.

A second model for the same world (``TrainSettings.name``, e.g. ``background``) is written beside
it as OUT/model/<name>.pt, same config: trained on the balanced split (``balanced``) and/or with
``scene_caption_share`` of the animal captions naming the background, it judges backgrounds
without the reference model's shortcut, and serves as "another model" for evaluation.
"""
from __future__ import annotations

import json
import logging
import math
import platform
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from PIL import Image

from curation import atomic, clip_models
from curation.errors import UserError
from curation.world.generate import build_balanced_train, read_world

log = logging.getLogger(__name__)

REFERENCE_MODEL = "ca-tiny"


@dataclass
class TrainSettings:
    model: str = REFERENCE_MODEL
    pretrained: str | None = None   # start from these weights (a tag or file) instead of from scratch
    epochs: int | None = None       # None: the world's own train_epochs
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 20
    threads: int = 1               # one thread: fastest on a shared machine (no spin-waiting), and reproducible
    seed: int = 0
    name: str | None = None         # checkpoint name (OUT/model/<name>.pt); None: the model's name
    balanced: bool = False          # train on OUT/train-balanced (every class on every background)
    scene_caption_share: float | None = None   # re-caption animal photos; None: the split's own captions

    @property
    def checkpoint_name(self) -> str:
        return self.name or self.model

    @property
    def is_reference(self) -> bool:
        return self.checkpoint_name == REFERENCE_MODEL


def checkpoint_path(world_dir: str | Path, model: str = REFERENCE_MODEL) -> Path:
    """OUT/model/<model>.pt; ``model`` is the reference model's config name or a second model's name."""
    return Path(world_dir) / "model" / f"{model}.pt"


def model_info(world_dir: str | Path, name: str) -> dict:
    """The .json written beside OUT/model/<name>.pt (config name, settings, losses); UserError if none."""
    path = checkpoint_path(world_dir, name)
    if not path.is_file() or not path.with_suffix(".json").is_file():
        raise UserError(f"has no model named {name!r} ({path} is missing)", where=str(world_dir),
                        hint=f"Train it: `counteranimal world train {world_dir} --name {name} --balanced "
                             "--scene-caption-share 1.0`.")
    return json.loads(path.with_suffix(".json").read_text())


def recaption(rows: list[dict], share: float, seed: int) -> list[str]:
    """Captions with ``share`` of the animal photos captioned with their scene, the rest by class only."""
    from curation.world.generate import CLASS_TEMPLATES, SCENE_TEMPLATE

    rng = np.random.default_rng([seed, 21])
    out = []
    for r in rows:
        draw, template = rng.random(), int(rng.integers(len(CLASS_TEMPLATES)))
        if r["kind"] != "animal":
            out.append(r["caption"])
        elif draw < share:
            out.append(SCENE_TEMPLATE.format(r["class_name"], r["background"]))
        else:
            out.append(CLASS_TEMPLATES[template].format(r["class_name"]))
    return out


def load_images(paths: list[Path], preprocess) -> torch.Tensor:
    """Every image through the model's own preprocess, once (the data set fits in memory)."""
    return torch.stack([preprocess(Image.open(p).convert("RGB")) for p in paths])


def train(world_dir: str | Path, settings: TrainSettings = TrainSettings()) -> dict:
    """Train on OUT/train; write OUT/model/<model>.pt (+ .json with settings and losses)."""
    if not settings.is_reference and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", settings.checkpoint_name):
        raise UserError(f"model name {settings.checkpoint_name!r} must be letters, digits, '.', '_' or '-' "
                        "(it names the checkpoint file)")
    if settings.scene_caption_share is not None and not 0 <= settings.scene_caption_share <= 1:
        raise UserError(f"scene_caption_share must be in [0, 1], got {settings.scene_caption_share}")
    with clip_models.torch_threads(settings.threads):
        return _train(world_dir, settings)


def _train(world_dir: Path, settings: TrainSettings) -> dict:
    import open_clip

    world_dir = Path(world_dir)
    world = read_world(world_dir)
    if settings.epochs is None:
        settings = replace(settings, epochs=world["spec"]["train_epochs"])
    torch.manual_seed(settings.seed)
    started = time.time()

    clip = clip_models.load(settings.model, settings.pretrained)
    model, tokenizer = clip.model, clip.tokenizer
    split = build_balanced_train(world_dir) if settings.balanced else world_dir / "train.parquet"
    table = pq.read_table(split).to_pylist()
    if settings.scene_caption_share is not None:
        for r, caption in zip(table, recaption(table, settings.scene_caption_share, settings.seed)):
            r["caption"] = caption
    images = load_images([world_dir / r["file"] for r in table], clip.preprocess)
    captions = sorted({r["caption"] for r in table})
    caption_ids = torch.tensor([captions.index(r["caption"]) for r in table])
    tokens = tokenizer(captions)
    log.info("world train: %d images, %d captions, model %s (%.1fM parameters), loaded in %.1fs",
             len(table), len(captions), settings.model,
             sum(p.numel() for p in model.parameters()) / 1e6, time.time() - started)

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": settings.weight_decay},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=settings.lr,
                                  fused=True)   # fused: 10x faster steps over the 6M-entry token table
    steps_per_epoch = math.ceil(len(table) / settings.batch_size)
    total = steps_per_epoch * settings.epochs

    def lr_at(step: int) -> float:
        if step < settings.warmup_steps:
            return settings.lr * (step + 1) / settings.warmup_steps
        progress = (step - settings.warmup_steps) / max(1, total - settings.warmup_steps)
        return settings.lr * 0.5 * (1 + math.cos(math.pi * progress))

    loss_fn = open_clip.ClipLoss()
    order_rng = torch.Generator().manual_seed(settings.seed)
    model.train()
    losses, step = [], 0
    for epoch in range(settings.epochs):
        order = torch.randperm(len(table), generator=order_rng)
        epoch_loss = 0.0
        for start in range(0, len(order), settings.batch_size):
            idx = order[start:start + settings.batch_size]
            if len(idx) < 2:
                continue
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            # Few distinct captions: encode each once per batch, then gather per image.
            batch_caps, inverse = torch.unique(caption_ids[idx], return_inverse=True)
            image_features = model.encode_image(images[idx], normalize=True)
            text_features = model.encode_text(tokens[batch_caps], normalize=True)[inverse]
            loss = loss_fn(image_features, text_features, model.logit_scale.exp())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            epoch_loss += loss.item() * len(idx)
            step += 1
        losses.append(epoch_loss / len(table))
        log.info("world train: epoch %d/%d loss %.3f (%.0fs)", epoch + 1, settings.epochs, losses[-1],
                 time.time() - started)
    model.eval()

    path = checkpoint_path(world_dir, settings.checkpoint_name)
    with atomic.atomic_path(path) as tmp:
        torch.save({"state_dict": model.state_dict()}, tmp)
    info = {"model": settings.model, "name": settings.checkpoint_name, "checkpoint": str(path),
            "train_split": split.name, "settings": asdict(settings),
            "epoch_losses": [round(v, 4) for v in losses], "train_images": len(table),
            "seconds": round(time.time() - started, 1), "torch": torch.__version__,
            "machine": f"{platform.machine()} {torch.get_num_threads()} threads"}
    atomic.write_text(path.with_suffix(".json"), json.dumps(info, indent=2))
    return info

