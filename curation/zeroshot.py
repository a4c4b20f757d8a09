"""CLIP zero-shot scoring as plain functions: text banks, image embeddings, per-image results.

The label space is the 1,000 ImageNet-1K class names (the paper's "1 vs 1000") or the run's own
class list; class prompts are the configured templates or open_clip's 80 OpenAI ImageNet
templates (``prompts.ensemble: openai``), averaged per label as in CLIP. Probabilities use the
model's own logit scale (100 for the released CLIP weights).

"1 vs k" (the paper's "1 vs 20"): per class, the k labels whose text embeddings are closest to
the class's images on average; an image is right when its class wins among those k labels.
Because mean cosine similarity is linear in the image embeddings, the per-class ranking needs only
the class's mean embedding.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from curation.config import RunConfig
from curation.label_space import label_names, true_labels  # noqa: F401  (re-exported: zeroshot.true_labels)

TOP_N = 5


@dataclass
class TextBank:
    """Everything a worker computes once per model: normalised text embeddings and the scale."""
    label_names: list[str]
    labels: np.ndarray          # (n_labels, d) float32, rows L2-normalised
    background_names: list[str]
    backgrounds: np.ndarray     # (n_backgrounds, d)
    logit_scale: float


def class_templates(cfg: RunConfig) -> list[Callable[[str], str]]:
    if cfg.prompts.ensemble == "openai":
        from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

        return list(OPENAI_IMAGENET_TEMPLATES)
    return [t.format for t in cfg.prompts.classes]


@torch.inference_mode()
def encode_texts(clip, names: Sequence[str], templates: Sequence[Callable[[str], str]],
                 batch_size: int = 256) -> np.ndarray:
    """One embedding per name: the normalised mean of its normalised template embeddings."""
    texts = [t(n) for n in names for t in templates]
    out = []
    for i in range(0, len(texts), batch_size):
        tokens = clip.tokenizer(texts[i:i + batch_size]).to(clip.device)
        emb = clip.model.encode_text(tokens).float()
        out.append(torch.nn.functional.normalize(emb, dim=-1))
    emb = torch.cat(out).reshape(len(names), len(templates), -1).mean(dim=1)
    return torch.nn.functional.normalize(emb, dim=-1).cpu().numpy()


def build_text_bank(clip, cfg: RunConfig) -> TextBank:
    names = label_names(cfg)
    bg_templates = [t.format for t in cfg.prompts.backgrounds]
    return TextBank(
        label_names=names,
        labels=encode_texts(clip, names, class_templates(cfg)),
        background_names=list(cfg.backgrounds),
        backgrounds=encode_texts(clip, cfg.backgrounds, bg_templates),
        logit_scale=float(clip.model.logit_scale.exp().item()),
    )


def class_background_bank(clip, class_names: Sequence[str], backgrounds: Sequence[str],
                          templates: Sequence[str]) -> np.ndarray:
    """(classes, backgrounds, d): background text embeddings whose prompts name the class too."""
    names = [(c, b) for c in class_names for b in backgrounds]
    fill = [lambda cb, t=t: t.format(**{"class": cb[0], "background": cb[1]}) for t in templates]
    emb = encode_texts(clip, names, fill)
    return emb.reshape(len(class_names), len(backgrounds), -1)


@torch.inference_mode()
def encode_images(clip, pixels: torch.Tensor) -> np.ndarray:
    """L2-normalised float32 image embeddings for a preprocessed batch."""
    emb = clip.model.encode_image(pixels.to(clip.device, dtype=clip.dtype)).float()
    return torch.nn.functional.normalize(emb, dim=-1).cpu().numpy()


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def probabilities(embeddings: np.ndarray, texts: np.ndarray, logit_scale: float) -> np.ndarray:
    """Zero-shot distribution over ``texts`` for unit image embeddings (rows), as CLIP computes it."""
    return _softmax(logit_scale * (np.asarray(embeddings, dtype=np.float32) @ np.asarray(texts, dtype=np.float32).T))


def score_images(embeddings: np.ndarray, truth: Sequence[int], bank: TextBank) -> list[dict]:
    """Per-image zero-shot results (see schemas.tables.SCORES) for normalised embeddings."""
    sims = embeddings @ bank.labels.T                        # (n, n_labels) cosine similarities
    probs = _softmax(bank.logit_scale * sims)
    bg_probs = probabilities(embeddings, bank.backgrounds, bank.logit_scale)
    rows = []
    for i, t in enumerate(truth):
        p = probs[i]
        order = np.argsort(-p, kind="stable")
        top1 = int(order[0])
        best_other = p[order[1]] if top1 == t else p[top1]
        bg_logits = embeddings[i] @ bank.backgrounds.T
        subject = bank.logit_scale * np.concatenate([[sims[i, t]], bg_logits])
        animal = bank.logit_scale * np.concatenate([[sims[i, top1]], bg_logits])
        rows.append({
            "true_label": int(t),
            "top1": top1,
            "top1_name": bank.label_names[top1],
            "correct": top1 == t,
            "p_true": float(p[t]),
            "true_rank": int(np.nonzero(order == t)[0][0]) + 1,
            "margin": float(p[t] - best_other),
            "top5": [int(j) for j in order[:TOP_N]],
            "top5_p": [float(p[j]) for j in order[:TOP_N]],
            "background": bank.background_names[int(np.argmax(bg_probs[i]))],
            "background_p": [float(x) for x in bg_probs[i]],
            "p_subject": float(_softmax(subject)[0]),
            "p_animal": float(_softmax(animal)[0]),
            "embedding": embeddings[i].astype(np.float16),
        })
    return rows


def closest_labels(embeddings: np.ndarray, truth: np.ndarray, label_emb: np.ndarray, k: int) -> dict[int, np.ndarray]:
    """Per true label: the k labels with the highest mean cosine similarity to its images.

    The class's own label is always among them (the paper's protocol compares it with its 20 nearest
    competitors), so when it is not in the top k it replaces the k-th.
    """
    return {int(t): labels_for_class(int(t), *class_sum(embeddings[truth == t]), label_emb, k) for t in np.unique(truth)}


def class_sum(embeddings: np.ndarray) -> tuple[np.ndarray, int]:
    """(sum in float64, count) of a class's image embeddings. The scores store float16 values, all
    multiples of 2^-24 below 1, so the float64 sum is exact: partial sums over shards, added in any
    order on any runner, give the same total (the score stage combines them per class)."""
    return np.asarray(embeddings, dtype=np.float64).sum(axis=0), len(embeddings)


def labels_for_class(t: int, total: np.ndarray, count: int, label_emb: np.ndarray, k: int) -> np.ndarray:
    """closest_labels for one class, from class_sum's total and count."""
    k = min(k, len(label_emb))
    mean_sim = (total / count).astype(np.float32) @ label_emb.T
    top = np.argsort(-mean_sim, kind="stable")[:k]
    if t not in top:
        top[-1] = t
    return top


def top1_among(embeddings: np.ndarray, truth: np.ndarray, sets: dict[int, np.ndarray],
               label_emb: np.ndarray) -> np.ndarray:
    """Per image: the top-1 label among its class's label set (closest_labels)."""
    top1 = np.empty(len(truth), dtype=np.int32)
    for t in np.unique(truth):
        rows = np.nonzero(truth == t)[0]
        labels = sets[int(t)]
        sims = embeddings[rows].astype(np.float32) @ label_emb[labels].T
        top1[rows] = labels[np.argmax(sims, axis=1)]
    return top1


def one_vs_k(embeddings: np.ndarray, truth: np.ndarray, label_emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image: (top-1 label among its class's k closest labels, whether that is its class)."""
    top1 = top1_among(embeddings, truth, closest_labels(embeddings, truth, label_emb, k), label_emb)
    return top1, top1 == truth
