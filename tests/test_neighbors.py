"""The label-noise neighbours searched in cells: exact while every cell is probed, close to exact beyond."""
from __future__ import annotations

import numpy as np

from curation import clean, neighbors


def photos(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    cls = rng.integers(6, size=n)
    x = rng.normal(size=(6, 64))[cls] + 0.8 * rng.normal(size=(n, 64))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    labels = np.where(rng.random(n) < 0.05, rng.integers(6, size=n), cls)
    return [f"u{i:05d}" for i in range(n)], x, labels


def test_with_every_cell_probed_the_search_is_exact():
    uids, x, labels = photos(1200)
    exact = clean.neighbor_shares(x, labels, k=5)
    for cell_size in (10_000, 400):                 # one cell; three cells, all probed
        assert np.array_equal(neighbors.shares(uids, x, labels, 5, cell_size=cell_size), exact)


def test_beyond_the_probed_cells_it_stays_close_and_costs_a_bounded_share_of_the_pairs():
    uids, x, labels = photos(3000, seed=1)
    exact = clean.neighbor_shares(x, labels, k=5)
    found = neighbors.shares(uids, x, labels, 5, cell_size=150, n_probe=4)     # 20 cells, 4 probed
    assert neighbors.n_cells(3000, 150) == 20
    assert (found == exact).mean() > 0.9
    assert ((found <= 0) == (exact <= 0)).mean() > 0.97          # the label_noise rule's side of the threshold


def test_probe_lists_the_home_cell_first_and_cell_search_excludes_the_photo_itself():
    uids, x, labels = photos(50, seed=2)
    centroids = neighbors.train_cells(x, 3)
    cells = neighbors.probe(x, centroids, 2)
    assert cells.shape == (50, 2) and np.array_equal(cells[:, 0], np.argmax(x @ centroids.T, axis=1))
    sims, cls, nbrs = neighbors.cell_search(uids[:5], x[:5], uids, x, labels, k=3)
    assert all(u not in row for u, row in zip(uids[:5], nbrs)) and (np.diff(sims, axis=1) <= 0).all()
