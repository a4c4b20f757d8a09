"""`mitigate`: fine-tune only CLIP's projections with the spurious-aware losses, beside its baselines.

One entry point, `run(data, settings, out)`:
  1. load the model (curation.clip_models.load); find its image and text projections;
  2. encode every photo and every prompt ONCE up to the projections (frozen encoders), cached in OUT;
  3. methods, side by side on the same features and splits (Table 4 of Yang et al. 2023):
       zero-shot   the model as loaded;
       erm         a linear head on the frozen (projected) image features, cross-entropy;
       group-dro   the same head, Group DRO over groups = class × background (Sagawa et al. 2020);
       clip-ft     the projections + a fresh temperature, CLIP loss over class prompts only;
       spurious    the same with L_vc + L_lc + the spurious term (L_vs with background labels, or L_ls);
       spurious-ls the same with L_ls (class prompts pushed from background prompts) instead of L_vs;
     the trained projection methods sample group-balanced batches (settings.sampling); every trained
     method keeps the epoch with the best validation worst-group accuracy;
  4. write OUT/<model>-mitigated.pt (a full open_clip state_dict with the chosen method's trained
     projections and temperature written back), OUT/results.json, OUT/results.csv, OUT/plot.svg.
"""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from curation import atomic, clip_models
from curation.errors import UserError
from curation.mitigate import baselines, features, losses, metrics
from curation.mitigate.data import Data

log = logging.getLogger(__name__)

METHODS = ("zero-shot", "erm", "group-dro", "clip-ft", "spurious", "spurious-ls")
PROJECTION_METHODS = ("clip-ft", "spurious", "spurious-ls")
LABELS = {"zero-shot": "Zero-shot", "erm": "ERM (linear head)", "group-dro": "Group DRO (linear head)",
          "clip-ft": "CLIP-loss fine-tune", "spurious": "Spurious-aware (L_vs)",
          "spurious-ls": "Spurious-aware (L_ls)"}


@dataclass
class Settings:
    model: str = "ca-tiny"
    pretrained: str | None = None
    methods: tuple[str, ...] = METHODS
    weights: losses.Weights = field(default_factory=losses.Weights)   # of the spurious methods
    spurious: str = "auto"          # auto | image | language | both: which spurious term(s) `spurious` uses
    templates: str = "openai"       # openai (80 OpenAI ImageNet templates) | source (the run's / world's prompts)
    epochs: int = 30
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    head_lr: float = 1e-2           # ERM / Group DRO heads
    gdro_step: float = 0.01         # Group DRO's exponentiated-gradient step size
    sampling: str = "balanced"      # balanced (every group equally likely) | natural, for the projection methods
    min_group: int = 5              # groups smaller than this in a split are left out of its worst group
    save: str = "spurious"          # which method's projections go into the checkpoint
    device: str = "cpu"
    threads: int | None = None
    seed: int = 0
    progress: bool = True


def templates_for(data: Data, settings: Settings) -> tuple[list, list]:
    """Class and background templates as callables name -> prompt."""
    if settings.templates == "openai":
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

        classes = list(OPENAI_IMAGENET_TEMPLATES)
    elif settings.templates == "source":
        if not data.class_templates:
            raise UserError("templates 'source' was asked for, but the input names no class prompts.",
                            hint="Use --templates openai.")
        classes = [t.format for t in data.class_templates]
    else:
        raise UserError(f"unknown templates {settings.templates!r}; use openai or source.")
    bg = [t.format for t in data.background_templates] or [str("a photo of {}.").format, str("a photo of the {}.").format]
    return classes, bg


def encode(clip, sites, data: Data, settings: Settings, cache_dir: Path) -> dict:
    """Pre-projection features of every photo and prompt, cached in OUT by model, weights and photos/prompts."""
    class_t, bg_t = templates_for(data, settings)
    class_prompts = [t(c) for c in data.classes for t in class_t]
    bg_prompts = [t(b) for b in data.backgrounds for t in bg_t]
    weights_id = settings.pretrained or "random"
    if settings.pretrained and Path(settings.pretrained).is_file():
        st = Path(settings.pretrained).stat()
        weights_id = f"{Path(settings.pretrained).resolve()}:{st.st_size}:{st.st_mtime_ns}"

    def cached(what, parts, compute):
        key = hashlib.sha1(json.dumps([settings.model, weights_id, *parts]).encode()).hexdigest()[:16]
        path = cache_dir / f"features-{what}-{key}.pt"
        if path.is_file():
            return torch.load(path, weights_only=True)
        value = compute()
        with atomic.atomic_path(path) as tmp:
            torch.save(value, tmp)
        return value

    model, device = clip.model, clip.device

    def images() -> torch.Tensor:
        from tqdm import tqdm

        chunks, rows, batch, where = [], [], [], []
        bar = tqdm(total=len(data.uids), desc="mitigate: encoding photos", unit="img", disable=not settings.progress)

        def flush():
            if batch:
                pixels = torch.stack(batch).to(device=device, dtype=clip.dtype)
                chunks.append(features.image_features(model, sites[0], pixels))
                rows.extend(where)
                bar.update(len(batch))
                batch.clear()
                where.clear()

        for i, image in data.images(range(len(data.uids))):   # sources hand photos over in their own order
            batch.append(clip.preprocess(image))
            where.append(i)
            if len(batch) == 64:
                flush()
        flush()
        bar.close()
        if sorted(rows) != list(range(len(data.uids))):
            raise RuntimeError(f"the source gave {len(rows)} photos for {len(data.uids)} rows")
        out = torch.empty(len(rows), chunks[0].shape[1])
        out[torch.tensor(rows)] = torch.cat(chunks)
        return out

    def text(prompts: list[str], per: int) -> torch.Tensor:
        out = [features.text_features(model, sites[1], clip.tokenizer(prompts[i:i + 256]).to(device))
               for i in range(0, len(prompts), 256)]
        return torch.cat(out).reshape(len(prompts) // per, per, -1)

    return {"images": cached("images", [data.key, data.uids], images),
            "class_prompts": cached("text", [class_prompts], lambda: text(class_prompts, len(class_t))),
            "background_prompts": cached("text", [bg_prompts], lambda: text(bg_prompts, len(bg_t)))}


class Sampler:
    """Batches of training indices: group-balanced (a group uniformly, then a photo in it) or natural."""

    def __init__(self, train: np.ndarray, groups: np.ndarray, mode: str, batch_size: int, seed: int):
        if mode not in ("balanced", "natural"):
            raise UserError(f"unknown sampling {mode!r}; use balanced or natural.")
        self.train, self.mode, self.batch_size = train, mode, batch_size
        self.rng = np.random.default_rng(seed)
        self.members = [train[groups[train] == g] for g in np.unique(groups[train])]
        self.steps = max(1, int(np.ceil(len(train) / batch_size)))

    def epoch(self):
        if self.mode == "natural":
            order = self.rng.permutation(self.train)
            for s in range(self.steps):
                yield order[s * self.batch_size:(s + 1) * self.batch_size]
            return
        for _ in range(self.steps):
            picks = self.rng.integers(len(self.members), size=self.batch_size)
            yield np.array([m[self.rng.integers(len(m))] for m in (self.members[p] for p in picks)])


def predict(proj: features.Projections, feats: dict, idx: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        z = proj.embed_images(feats["images"][idx])
        c, m, d = feats["class_prompts"].shape
        t = proj.embed_texts(feats["class_prompts"].reshape(c * m, d)).reshape(c, m, -1)
        class_emb = F.normalize(t.mean(1), dim=-1)
        return (z @ class_emb.T).argmax(1).numpy()


def fit_projections(model, sites, feats: dict, data: Data, weights: losses.Weights, settings: Settings,
                    name: str) -> tuple[features.Projections, dict]:
    """Train the projections with `weights`; keep the epoch with the best validation worst-group accuracy."""
    from tqdm import tqdm

    torch.manual_seed(settings.seed)
    proj = features.Projections(model, sites, fresh_scale=True)
    opt = torch.optim.AdamW(proj.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    train, val = data.index("train"), data.index("val")
    groups = data.y * len(data.backgrounds) + data.b
    sampler = Sampler(train, groups, settings.sampling, settings.batch_size, settings.seed)
    X, P, A = feats["images"], feats["class_prompts"], feats["background_prompts"]
    c, m, d = P.shape
    y_all, b_all = torch.from_numpy(data.y), torch.from_numpy(data.b)
    best, best_state, history = None, None, []
    bar = tqdm(total=settings.epochs * sampler.steps, desc=f"mitigate: {name}", unit="step",
               disable=not settings.progress)
    for epoch in range(settings.epochs):
        for idx in sampler.epoch():
            idx_t = torch.from_numpy(idx)
            prompt_emb = proj.embed_texts(P.reshape(c * m, d)).reshape(c, m, -1)
            attr = proj.embed_texts(A.reshape(-1, A.shape[-1])).reshape(A.shape[0], A.shape[1], -1) if weights.ls > 0 or weights.xs > 0 else None
            batch = losses.Batch(z=proj.embed_images(X[idx_t]), y=y_all[idx_t], prompt_emb=prompt_emb,
                                 scale=proj.scale(), b=b_all[idx_t] if weights.vs > 0 else None, attribute_emb=attr)
            loss, parts = losses.total(batch, weights)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            proj.clamp_()
            bar.set_postfix({"loss": f"{loss.item():.3f}", **{k: f"{v:.3f}" for k, v in parts.items()}}, refresh=False)
            bar.update(1)
        score = metrics.evaluate(predict(proj, feats, val), data.y[val], data.b[val], data.pairs, data.classes,
                                 data.backgrounds, settings.min_group)
        history.append({"epoch": epoch + 1, "val_avg_acc": score["avg_acc"], "val_worst_group_acc": score["worst_group_acc"],
                        "loss": round(loss.item(), 4), **{k: round(v, 4) for k, v in parts.items()}})
        if metrics.better(score, best):
            best, best_state = score, copy.deepcopy(proj.state_dict())
    bar.close()
    proj.load_state_dict(best_state)
    return proj, {"best_epoch": max(history, key=lambda h: (h["val_worst_group_acc"], h["val_avg_acc"]))["epoch"],
                  "history": history}


def spurious_weights(data: Data, settings: Settings, method: str) -> losses.Weights:
    w = copy.copy(settings.weights)
    mode = "language" if method == "spurious-ls" else settings.spurious
    if mode == "auto":
        mode = "image" if len(data.backgrounds) > 1 else "language"
    if mode == "image":
        w.ls = 0.0
    elif mode == "language":
        w.vs = 0.0
    elif mode != "both":
        raise UserError(f"unknown spurious term {settings.spurious!r}; use auto, image, language or both.")
    return w


def run(data: Data, settings: Settings, out: str | Path) -> dict:
    """Every method of settings.methods on data; writes the checkpoint and the results into OUT."""
    unknown = [m for m in settings.methods if m not in METHODS]
    if unknown:
        raise UserError(f"unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}.")
    if settings.save and settings.save not in PROJECTION_METHODS:
        raise UserError(f"--save {settings.save!r}: only a projection method ({', '.join(PROJECTION_METHODS)}) "
                        f"gives an open_clip checkpoint.")
    counts = data.counts()
    for split in ("train", "val", "test"):
        if counts[split] == 0:
            raise UserError(f"the {split} part is empty ({counts}).",
                            hint="Groups need at least 3 photos each to be split; curate more photos per group.")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with clip_models.torch_threads(settings.threads):
        clip = clip_models.load(settings.model, settings.pretrained, device=settings.device)
        model = clip.model
        sites = features.find_sites(model)
        feats = encode(clip, sites, data, settings, out)
        model = model.float().cpu()    # training runs on the cached features; the projections train in fp32
        test, val, train = data.index("test"), data.index("val"), data.index("train")
        results, saved = {}, None

        def judge(pred_test, pred_val, extra=None):
            return {"test": metrics.evaluate(pred_test, data.y[test], data.b[test], data.pairs, data.classes,
                                             data.backgrounds, settings.min_group),
                    "val": metrics.evaluate(pred_val, data.y[val], data.b[val], data.pairs, data.classes,
                                            data.backgrounds, settings.min_group), **(extra or {})}

        zero = features.Projections(model, sites, fresh_scale=False)
        for method in settings.methods:
            t0 = time.time()
            if method == "zero-shot":
                results[method] = judge(predict(zero, feats, test), predict(zero, feats, val))
            elif method in ("erm", "group-dro"):
                with torch.no_grad():
                    z = zero.embed_images(feats["images"])
                head, info = baselines.fit_head(z, data, method, settings)
                results[method] = judge(baselines.predict_head(head, z[test]), baselines.predict_head(head, z[val]), info)
            else:
                weights = losses.Weights.only_clip() if method == "clip-ft" else spurious_weights(data, settings, method)
                proj, info = fit_projections(model, sites, feats, data, weights, settings, method)
                results[method] = judge(predict(proj, feats, test), predict(proj, feats, val),
                                        {**info, "weights": asdict(weights)})
                if method == settings.save:
                    saved = proj
            results[method]["seconds"] = round(time.time() - t0, 1)

        checkpoint = None
        if saved is not None:
            checkpoint = out / f"{settings.model}-mitigated.pt"
            with atomic.atomic_path(checkpoint) as tmp:
                torch.save({"state_dict": features.state_dict_with(model, saved)}, tmp)
    summary = {
        "source": data.source, "model": settings.model, "pretrained": settings.pretrained,
        "classes": data.classes, "backgrounds": data.backgrounds, "counts": counts,
        "pairs": {data.classes[c]: [data.backgrounds[a], data.backgrounds[k]] for c, (a, k) in sorted(data.pairs.items())},
        "projections": [asdict(s) for s in sites], "checkpoint": str(checkpoint) if checkpoint else None,
        "settings": {**asdict(settings), "methods": list(settings.methods)},
        "results": results, "seconds": round(time.time() - started, 1), "torch": torch.__version__,
    }
    from curation.mitigate import report

    report.write(out, summary)
    return summary
