"""The oracle: a model's zero-shot accuracy for every class on every background of the grid.

Per class, the oracle counter is its lowest-accuracy background and the oracle common its
highest (the paper's rule); the oracle drop is their difference with a Newcombe interval. For
biased classes the drop from the planted common is reported too. Discovery stages are judged
against this, not against the plant alone: a control class can have a real drop when another
class's common background pulls predictions toward that class.

    OUT/oracle.parquet              one row per (class, background): n, correct, accuracy, interval
    OUT/oracle.json                 per class: common, counter, drop + interval; summary figures

The oracle pair is itself chosen from the data (the best and the worst of K backgrounds), so
whether a class *has* a drop is judged on ``drop_selected_lo``: the drop's Newcombe interval at
the Bonferroni level over every pair of the K backgrounds (curation/stats.py
simultaneous_drop_interval). With the plain interval (``drop_lo``) a class whose backgrounds are
all alike would show a "significant" best-minus-worst gap most of the time on a 7-background grid.
    OUT/oracle_predictions.parquet  per grid image: predicted class and background
A model other than the world's reference model writes oracle-<model id>.* instead.
"""
from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from PIL import Image

from curation import atomic, clip_models
from curation.world.generate import read_world
from curation.stats import drop_interval, simultaneous_drop_interval, wilson

log = logging.getLogger(__name__)


def text_classifier(clip, names: list[str], templates: list[str]) -> torch.Tensor:
    """(len(names), dim) normalised text embeddings, averaged over templates (open_clip's recipe)."""
    with torch.no_grad():
        rows = []
        for name in names:
            emb = clip.model.encode_text(clip.tokenizer([t.format(name) for t in templates]), normalize=True)
            emb = emb.mean(0)
            rows.append(emb / emb.norm())
        return torch.stack(rows)


def encode_images(clip, paths: list[Path], batch_size: int = 256) -> torch.Tensor:
    feats = []
    with torch.no_grad():
        for start in range(0, len(paths), batch_size):
            batch = torch.stack([clip.preprocess(Image.open(p).convert("RGB")) for p in paths[start:start + batch_size]])
            feats.append(clip.model.encode_image(batch.to(clip.device), normalize=True).float().cpu())
    return torch.cat(feats)


def model_slug(model: str, pretrained: str | None) -> str:
    tag = Path(pretrained).stem if pretrained and clip_models.is_checkpoint_path(pretrained) else pretrained
    return re.sub(r"[^A-Za-z0-9._-]+", "_", f"{model}-{tag}" if tag else model)


def compute(world_dir: str | Path, model: str, pretrained: str | None, *, device: str = "cpu",
            reference: bool = False, threads: int | None = None) -> dict:
    """Score the grid with (model, pretrained); write the oracle files; return oracle.json's content."""
    with clip_models.torch_threads(threads):
        return _compute(Path(world_dir), model, pretrained, device, reference)


def _compute(world_dir: Path, model: str, pretrained: str | None, device: str, reference: bool) -> dict:
    world = read_world(world_dir)
    started = time.time()
    clip = clip_models.load(model, pretrained, device=device)
    truth = pq.read_table(world_dir / "ground_truth.parquet").to_pylist()
    grid = [r for r in truth if r["split"] == "grid"]
    classes, backgrounds = world["classes"], world["backgrounds"]

    image_feats = encode_images(clip, [world_dir / r["file"] for r in grid])
    class_text = text_classifier(clip, classes, world["class_templates"]).float().cpu()
    bg_text = text_classifier(clip, backgrounds, world["background_templates"]).float().cpu()
    pred_class = (image_feats @ class_text.T).argmax(1).numpy()
    pred_bg = (image_feats @ bg_text.T).argmax(1).numpy()
    true_class = np.array([classes.index(r["class_name"]) for r in grid])
    true_bg = np.array([backgrounds.index(r["background"]) for r in grid])
    correct = pred_class == true_class

    cells, per_class = [], {}
    for ci, cls in enumerate(classes):
        plant = world["plant"][cls]
        stats = {}
        for bi, bg in enumerate(backgrounds):
            mask = (true_class == ci) & (true_bg == bi)
            n, k = int(mask.sum()), int(correct[mask].sum())
            if not n:       # a class restricted to some backgrounds (class_backgrounds) has no cell elsewhere
                continue
            lo, hi = wilson(k, n)
            stats[bg] = (k, n)
            cells.append({"class_name": cls, "class_idx": world["class_idx"][cls], "background": bg, "n": n,
                          "correct": k, "accuracy": k / n, "accuracy_lo": lo, "accuracy_hi": hi,
                          "biased": plant["biased"], "planted_common": plant["common"],
                          "planted_counter": plant["counter"]})
        acc = {bg: k / n for bg, (k, n) in stats.items()}
        counter = min(acc, key=lambda b: (acc[b], b))
        common = max(acc, key=lambda b: (acc[b], b))
        drop, (lo, hi) = acc[common] - acc[counter], drop_interval(*stats[common], *stats[counter])
        entry = {"biased": plant["biased"], "planted_common": plant["common"], "planted_counter": plant["counter"],
                 "oracle_common": common, "oracle_counter": counter,
                 "acc_common": acc[common], "acc_counter": acc[counter],
                 "drop": drop, "drop_lo": lo, "drop_hi": hi,
                 **_selected_interval(stats[common], stats[counter], len(acc)),
                 "accuracy": {bg: round(a, 4) for bg, a in acc.items()}}
        if plant["biased"]:
            pdrop, (plo, phi) = acc[plant["common"]] - acc[counter], drop_interval(*stats[plant["common"]], *stats[counter])
            entry.update(acc_planted_common=acc[plant["common"]], planted_drop=pdrop, planted_drop_lo=plo,
                         planted_drop_hi=phi, counter_is_planted=counter == plant["counter"])
        per_class[cls] = entry

    biased = [c for c in classes if per_class[c]["biased"]]
    control = [c for c in classes if not per_class[c]["biased"]]
    control_drops = [per_class[c]["drop"] for c in control]
    summary = {
        "accuracy": float(correct.mean()),
        "class_balanced_accuracy": float(np.mean([correct[true_class == i].mean() for i in range(len(classes))])),
        "acc_planted_common": float(np.mean([per_class[c]["acc_planted_common"] for c in biased])) if biased else None,
        "acc_oracle_counter_biased": float(np.mean([per_class[c]["acc_counter"] for c in biased])) if biased else None,
        "mean_planted_drop_biased": float(np.mean([per_class[c]["planted_drop"] for c in biased])) if biased else None,
        "mean_oracle_drop_biased": float(np.mean([per_class[c]["drop"] for c in biased])) if biased else None,
        "counter_is_planted": sum(per_class[c]["counter_is_planted"] for c in biased),
        "n_biased": len(biased),
        "control_drop_mean": float(np.mean(control_drops)) if control else None,
        "control_drop_min": float(min(control_drops)) if control else None,
        "control_drop_max": float(max(control_drops)) if control else None,
        "background_accuracy": float((pred_bg == true_bg).mean()),
        "grid_images": len(grid),
        "seconds": round(time.time() - started, 1),
    }
    result = {"model": model, "pretrained": pretrained, "reference": reference, "classes": per_class,
              "summary": summary}

    stem = "oracle" if reference else f"oracle-{model_slug(model, pretrained)}"
    atomic.write_parquet(world_dir / f"{stem}.parquet", pa.Table.from_pylist(cells))
    atomic.write_parquet(world_dir / f"{stem}_predictions.parquet", pa.table({
        "uid": [r["uid"] for r in grid],
        "class_name": [r["class_name"] for r in grid],
        "background": [r["background"] for r in grid],
        "pred_class": [classes[i] for i in pred_class],
        "correct": correct,
        "pred_background": [backgrounds[i] for i in pred_bg],
    }))
    atomic.write_text(world_dir / f"{stem}.json", json.dumps(result, indent=2))
    return result


def _selected_interval(common: tuple[int, int], counter: tuple[int, int], n_backgrounds: int) -> dict:
    lo, hi = simultaneous_drop_interval(*common, *counter, n_backgrounds)
    return {"drop_selected_lo": lo, "drop_selected_hi": hi}


def read_oracle(world_dir: str | Path, stem: str = "oracle") -> dict:
    """oracle.json; an oracle written before ``drop_selected_lo`` existed gets it from oracle.parquet."""
    world_dir = Path(world_dir)
    result = json.loads((world_dir / f"{stem}.json").read_text())
    if any("drop_selected_lo" not in e for e in result["classes"].values()):
        cells = {(c["class_name"], c["background"]): (c["correct"], c["n"])
                 for c in pq.read_table(world_dir / f"{stem}.parquet").to_pylist() if c["n"]}
        for cls, e in result["classes"].items():
            k = sum(1 for (c, _) in cells if c == cls)
            e.update(_selected_interval(cells[(cls, e["oracle_common"])], cells[(cls, e["oracle_counter"])], k))
    return result
