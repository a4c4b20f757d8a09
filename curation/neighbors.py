"""A photo's nearest photos in the run without comparing every pair: a search in cells (an inverted file).

The label-noise flag (curation/clean.py) asks, per photo, which share of its k nearest other photos
(cosine on unit image embeddings) carry its class. Comparing all pairs costs n² · d and needs every
embedding in one place. Here:

1. cells: k-means centroids (``n_cells(n)``: about CELL_SIZE photos each), trained on a sample of
   fixed size chosen by uid hash (``sample_key``: the same sample on every runner);
2. each photo lives in its nearest cell and is looked for in its PROBE nearest cells (``probe``);
3. per cell, its queries against the photos living there (``cell_search``), k best each;
4. per photo, the k best over its probed cells (``merge``), ties broken by uid.

Per photo that is about PROBE · CELL_SIZE comparisons whatever the run's size: linear in photos.
With PROBE or fewer cells (runs up to PROBE · CELL_SIZE photos) every cell is probed and the search
is exact. Beyond, a neighbour in a cell that is not probed is missed; bench/scale.py measures how
often. ``shares`` runs the four steps in one process; pipeline/score.py runs them as Beam steps.
"""
from __future__ import annotations

import zlib

import numpy as np

CELL_SIZE = 2048      # photos per cell on average
PROBE = 4             # cells a photo is looked for in
TRAIN_PER_CELL = 40   # sample photos per centroid
MAX_TRAIN = 65536     # the sample's size at most (its k-means cost does not grow with the run)
KMEANS_ITERATIONS = 10


def n_cells(n: int, cell_size: int = CELL_SIZE) -> int:
    return max(1, min(round(n / cell_size), MAX_TRAIN // TRAIN_PER_CELL))


def sample_key(uid: str) -> int:
    """The sample is the photos with the smallest keys: the same on every runner and in any order."""
    return zlib.crc32(uid.encode())


def train_cells(sample: np.ndarray, cells: int, seed: int = 0, iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """(cells, d) unit centroids from ``sample`` (m, d) by spherical k-means; one cell: a single (unused) centroid.

    Written with matrix products rather than scipy's kmeans2, whose k-means++ start costs cells² · m · d
    (22 s at 195 cells, the cells of 4·10^5 photos): here a start from distinct sample photos drawn
    with ``seed``, then ``iterations`` rounds of assign (largest cosine) and update (the cell's mean,
    normalised), m · cells · d each. A cell left empty keeps its centroid (never anyone's nearest).
    Oversized cells are split afterwards, so there may be a few more centroids than ``cells``.
    """
    sample = np.asarray(sample, dtype=np.float32)
    if cells <= 1 or len(sample) <= cells:
        return np.zeros((1, sample.shape[1] if sample.ndim == 2 else 1), np.float32)
    rng = np.random.default_rng(seed)
    centroids = _kmeans(sample, cells, rng, iterations)
    # A cell holding several dense clusters would cost its size² to search: split every cell whose
    # share of the sample is over twice the average into cells of about the average, so the search's
    # work per photo stays bounded as the run grows.
    home = np.argmax(sample @ centroids.T, axis=1)
    average = len(sample) / cells
    parts = []
    for c in range(len(centroids)):
        members = sample[home == c]
        if len(members) > 2 * average:
            parts.append(_kmeans(members, int(np.ceil(len(members) / average)), rng, iterations))
        else:
            parts.append(centroids[c:c + 1])
    return np.concatenate(parts)


def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator, iterations: int) -> np.ndarray:
    centroids = _unit(x[rng.choice(len(x), k, replace=False)])
    for _ in range(iterations):
        home = np.argmax(x @ centroids.T, axis=1)
        sums = np.zeros_like(centroids, dtype=np.float64)
        np.add.at(sums, home, x)
        filled = np.bincount(home, minlength=k) > 0
        centroids[filled] = _unit(sums[filled]).astype(np.float32)
    return centroids


def _unit(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms == 0, 1, norms)


def probe(embeddings: np.ndarray, centroids: np.ndarray, n_probe: int = PROBE) -> np.ndarray:
    """(n, min(n_probe, cells)) cell ids per photo, nearest first (column 0: the cell it lives in).

    Only the n_probe best are ordered (a partition, then a sort of those): a full sort of every row
    cost n · cells · log(cells) and was most of the probe at 4·10^5 photos."""
    sims = np.asarray(embeddings, np.float32) @ centroids.T
    n_probe = min(n_probe, len(centroids))
    top = np.argpartition(-sims, n_probe - 1, axis=1)[:, :n_probe] if n_probe < sims.shape[1] else \
        np.tile(np.arange(sims.shape[1]), (len(sims), 1))
    best = np.take_along_axis(sims, top, axis=1)
    order = np.lexsort((top, -best), axis=1)             # by similarity, ties to the lower cell id
    return np.take_along_axis(top, order, axis=1)


def cell_search(q_uids: list[str], q_emb: np.ndarray, d_uids: list[str], d_emb: np.ndarray, d_classes: np.ndarray,
                k: int) -> tuple[np.ndarray, np.ndarray, list[list[str]]]:
    """Each query's k most similar photos of one cell, itself excluded: (sims, classes, uids), best first."""
    q = np.asarray(q_emb, np.float32)
    d = np.asarray(d_emb, np.float32)
    sims = q @ d.T
    col = {u: i for i, u in enumerate(d_uids)}
    for r, u in enumerate(q_uids):
        if u in col:
            sims[r, col[u]] = -np.inf
    k = min(k, len(d_uids))
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < len(d_uids) else np.tile(np.arange(len(d_uids)),
                                                                                         (len(q_uids), 1))
    best = np.take_along_axis(sims, top, axis=1)
    order = np.argsort(-best, axis=1, kind="stable")
    top, best = np.take_along_axis(top, order, axis=1), np.take_along_axis(best, order, axis=1)
    return best, np.asarray(d_classes)[top], [[d_uids[j] for j in row] for row in top]


def merge(found: list[tuple[np.ndarray, np.ndarray, list[str]]], k: int) -> np.ndarray:
    """One photo's k best neighbours' classes over its probed cells (best first; ties: smaller uid)."""
    items = sorted(((-float(s), u, int(c)) for sims, classes, uids in found
                    for s, c, u in zip(sims, classes, uids) if np.isfinite(s)))
    return np.asarray([c for _, _, c in items[:k]], dtype=np.int64)


def share(own_class: int, neighbour_classes: np.ndarray) -> float:
    return float((neighbour_classes == own_class).mean()) if len(neighbour_classes) else 0.0


def shares(uids: list[str], embeddings: np.ndarray, classes: np.ndarray, k: int,
           cell_size: int = CELL_SIZE, n_probe: int = PROBE) -> np.ndarray:
    """Per photo: the share of its k nearest other photos with its class, by the four steps, in one process."""
    n = len(uids)
    out = np.zeros(n, np.float32)
    if n < 2 or k <= 0:
        return out
    emb = np.asarray(embeddings, np.float32)
    classes = np.asarray(classes)
    cells = n_cells(n, cell_size)
    order = sorted(range(n), key=lambda i: (sample_key(uids[i]), uids[i]))[:min(n, cells * TRAIN_PER_CELL)]
    centroids = train_cells(emb[order], cells)
    probed = probe(emb, centroids, n_probe)
    found: list[list] = [[] for _ in range(n)]
    for cell in range(len(centroids)):
        data = np.nonzero(probed[:, 0] == cell)[0]
        queries = np.nonzero((probed == cell).any(axis=1))[0]
        if not len(data) or not len(queries):
            continue
        for start in range(0, len(queries), 4096):       # the similarity block stays small
            q = queries[start:start + 4096]
            sims, cls, nbrs = cell_search([uids[i] for i in q], emb[q], [uids[i] for i in data], emb[data],
                                          classes[data], k)
            for r, i in enumerate(q):
                found[i].append((sims[r], cls[r], nbrs[r]))
    for i in range(n):
        out[i] = share(int(classes[i]), merge(found[i], k))
    return out
