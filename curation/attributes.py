"""Extra attributes for Seed 2's detector: which photos show an attribute the config names.

A photo of class c has attribute a when its embedding is closer to the prompt naming both
(``a photo of a {class} at night.``) than to the plain one (``a photo of a {class}.``): a two-way
zero-shot choice per photo and attribute, so no per-attribute threshold to tune.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from curation import zeroshot


def attribute_bank(clip, class_names: Sequence[str], attributes: Sequence[str], template: str,
                   baseline: str) -> np.ndarray:
    """(classes, 1 + attributes, d): per class the baseline prompt, then one prompt per attribute."""
    texts = []
    for c in class_names:
        texts.append(baseline.format(**{"class": c}))
        texts.extend(template.format(**{"class": c, "attribute": a}) for a in attributes)
    emb = zeroshot.encode_texts(clip, texts, [lambda t: t])
    return emb.reshape(len(class_names), 1 + len(attributes), -1)


def presence(embeddings: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """(photos, attributes) bool for one class's photos and its bank (baseline first)."""
    sims = np.asarray(embeddings, dtype=np.float32) @ np.asarray(bank, dtype=np.float32).T
    return sims[:, 1:] > sims[:, :1]
