"""Background assignment: one background per clean photo, with a confidence and how it was chosen.

Two views of the same photos, per class:

* zero-shot — the model's probabilities over the background vocabulary, from prompts that name
  the photo's class too (``a photo of a {class} on {background}.``: a caption names the scene
  with its subject far more often than alone), or the generic prompts the score stage used;
* clusters — k-means on the image embeddings with the class's text direction projected out,
  so what is left is mostly the scene. Each cluster is named by the vocabulary label its
  members lean to on average; a cluster no label fits (mean probability below
  ``min_cluster_fit``) is flagged ``cluster_unnamed``: a background outside the vocabulary.

``method`` picks the final label: ``zero-shot``, ``cluster`` (the cluster's name), or ``hybrid``
(zero-shot where it is confident, otherwise the cluster's name).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from scipy.cluster.vq import kmeans2

UNNAMED = "cluster_unnamed"


@dataclass(frozen=True)
class Settings:
    method: str = "zero-shot"       # zero-shot | cluster | hybrid
    min_confidence: float = 0.5     # hybrid: below this, the cluster's name is used
    min_cluster_size: int = 10      # k = photos // this, at most the vocabulary size
    max_clusters: int | None = None
    min_cluster_fit: float = 0.35
    seed: int = 0

    @classmethod
    def from_config(cls, spec) -> "Settings":
        return cls(method=spec.method, min_confidence=spec.min_confidence, min_cluster_size=spec.min_cluster_size,
                   max_clusters=spec.max_clusters, min_cluster_fit=spec.min_cluster_fit, seed=spec.seed)


def scene_features(embeddings: np.ndarray, class_direction: np.ndarray | None) -> np.ndarray:
    """Unit image embeddings with the class's text direction removed (what is left is the scene)."""
    x = np.asarray(embeddings, dtype=np.float32)
    if class_direction is not None:
        t = np.asarray(class_direction, dtype=np.float32)
        t = t / (np.linalg.norm(t) or 1.0)
        x = x - np.outer(x @ t, t)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1.0, norms)


def cluster(features: np.ndarray, n_backgrounds: int, settings: Settings) -> np.ndarray:
    """Cluster ids (0..k-1) per photo; deterministic for a seed."""
    n = len(features)
    k = max(1, min(n_backgrounds, settings.max_clusters or n_backgrounds, n // max(1, settings.min_cluster_size)))
    if k == 1:
        return np.zeros(n, dtype=np.int32)
    rng = np.random.default_rng(settings.seed)
    with warnings.catch_warnings():
        # k is an upper bound: a cluster left empty simply does not appear in the labels.
        warnings.simplefilter("ignore", UserWarning)
        _, labels = kmeans2(features.astype(np.float64), k, minit="++", seed=rng)
    return _relabel_by_size(labels)


def _relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Cluster 0 is the largest: ids then mean the same thing on every run."""
    ids, counts = np.unique(labels, return_counts=True)
    order = ids[np.lexsort((ids, -counts))]
    remap = {int(old): new for new, old in enumerate(order)}
    return np.array([remap[int(x)] for x in labels], dtype=np.int32)


def name_clusters(labels: np.ndarray, background_p: np.ndarray, names: list[str],
                  min_fit: float) -> dict[int, tuple[str, float, bool]]:
    """Per cluster: (nearest vocabulary label, its mean probability, whether it fits)."""
    out = {}
    for c in np.unique(labels):
        mean = background_p[labels == c].mean(axis=0)
        best = int(np.argmax(mean))
        out[int(c)] = (names[best], float(mean[best]), bool(mean[best] >= min_fit))
    return out


def assign_class(uids: list[str], embeddings: np.ndarray, background_p: np.ndarray, names: list[str],
                 class_direction: np.ndarray | None, settings: Settings) -> list[dict]:
    """One row per photo of one class: background, confidence, method, cluster, flag."""
    background_p = np.asarray(background_p, dtype=np.float32)
    zs = background_p.argmax(axis=1)
    zs_conf = background_p.max(axis=1)
    labels = cluster(scene_features(embeddings, class_direction), len(names), settings)
    clusters = name_clusters(labels, background_p, names, settings.min_cluster_fit)
    rows = []
    for i, uid in enumerate(uids):
        c = int(labels[i])
        c_name, c_fit, fits = clusters[c]
        use_cluster = settings.method == "cluster" or (settings.method == "hybrid" and zs_conf[i] < settings.min_confidence)
        if use_cluster:
            background, method = c_name, "cluster"
            confidence = float(background_p[i, names.index(c_name)])
        else:
            background, method, confidence = names[zs[i]], "zero-shot", float(zs_conf[i])
        rows.append(dict(uid=uid, background=background, confidence=confidence, method=method, cluster=c,
                         zero_shot=names[zs[i]], cluster_name=c_name, flag=None if fits else UNNAMED))
    return rows


def confusion(assigned: list[str], truth: list[str]) -> dict[tuple[str, str], int]:
    """(true, assigned) → count, for reporting assignment accuracy against ground truth."""
    out: dict[tuple[str, str], int] = {}
    for a, t in zip(assigned, truth):
        out[(t, a)] = out.get((t, a), 0) + 1
    return out
