"""Each loss term of curation/mitigate/losses.py against the paper's formula written out as plain loops."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from curation.mitigate import losses


def _unit(*shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(*shape, generator=g, dtype=torch.float64), dim=-1)


def _dot(u, v) -> float:
    return float(sum(a * b for a, b in zip(u.tolist(), v.tolist())))


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


@pytest.fixture
def batch():
    z = _unit(9, 5, seed=1)
    y = torch.tensor([0, 0, 1, 1, 1, 2, 0, 2, 1])
    b = torch.tensor([0, 1, 0, 0, 2, 1, 0, 2, 1])
    return z, y, b


def test_clip_loss_matches_the_formula(batch):
    z, y, _ = batch
    class_emb = _unit(3, 5, seed=2)
    scale = torch.tensor(7.0, dtype=torch.float64)
    s = float(scale)
    n = len(y)
    i2t = 0.0
    for j in range(n):
        denom = sum(math.exp(s * _dot(z[j], class_emb[c])) for c in range(3))
        i2t += -math.log(math.exp(s * _dot(z[j], class_emb[int(y[j])])) / denom)
    i2t /= n
    t2i_per_class = []
    for c in sorted(set(y.tolist())):
        denom = sum(math.exp(s * _dot(class_emb[c], z[k])) for k in range(n))
        t2i_per_class.append(_mean(-math.log(math.exp(s * _dot(class_emb[c], z[j])) / denom)
                                   for j in range(n) if int(y[j]) == c))
    expected = 0.5 * (i2t + _mean(t2i_per_class))
    assert float(losses.clip_loss(z, y, class_emb, scale)) == pytest.approx(expected, rel=1e-9)


def test_image_class_loss_matches_the_formula(batch):
    z, y, _ = batch
    n = len(y)
    expected = _mean(
        -_mean(_dot(z[j], z[k]) for k in range(n) if k != j and y[k] == y[j])
        + _mean(_dot(z[j], z[k]) for k in range(n) if y[k] != y[j])
        for j in range(n))
    assert float(losses.image_class_loss(z, y)) == pytest.approx(expected, rel=1e-9)


def test_image_class_loss_excludes_the_image_itself():
    # Two images of one class pointing the same way: the only positive pair is perfect (cos 1), the
    # negative is orthogonal, so the loss is exactly -1. Counting j itself would change nothing here,
    # but a third, orthogonal image of the class must give -(1 + 0)/2 for the first two, not -(1+1+0)/3.
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0, 0, 0])
    # j=0: positives {1, 2} -> mean(1, 0) = 0.5; j=1 likewise; j=2: positives {0, 1} -> 0; no negatives.
    assert float(losses.image_class_loss(z, y)) == pytest.approx(-(0.5 + 0.5 + 0.0) / 3)


def test_language_class_loss_matches_the_formula():
    prompts = _unit(3, 4, 6, seed=3)          # (classes, templates, d)
    C, M = 3, 4
    rows = [(c, m) for c in range(C) for m in range(M)]
    expected = _mean(
        -_mean(_dot(prompts[c, m], prompts[c, m2]) for m2 in range(M) if m2 != m)
        + _mean(_dot(prompts[c, m], prompts[c2, m2]) for c2 in range(C) if c2 != c for m2 in range(M))
        for c, m in rows)
    assert float(losses.language_class_loss(prompts)) == pytest.approx(expected, rel=1e-9)


def test_language_class_loss_labels_follow_the_rows():
    # Prompts of a class all equal, classes orthogonal: the paper's loss is its minimum, -1 (positives
    # cos 1, negatives cos 0). The released code's class-major labels on template-major rows would not be.
    prompts = torch.zeros(3, 2, 3, dtype=torch.float64)
    for c in range(3):
        prompts[c, :, c] = 1.0
    assert float(losses.language_class_loss(prompts)) == pytest.approx(-1.0)


def test_spurious_image_loss_matches_the_formula(batch):
    z, y, b = batch
    n = len(y)
    expected = _mean(
        -_mean(_dot(z[j], z[k]) for k in range(n) if y[k] == y[j] and b[k] != b[j])
        + _mean(_dot(z[j], z[k]) for k in range(n) if y[k] != y[j] and b[k] == b[j])
        for j in range(n))
    assert float(losses.spurious_image_loss(z, y, b)) == pytest.approx(expected, rel=1e-9)


def test_spurious_language_loss_matches_the_formula():
    prompts, attrs = _unit(3, 4, 6, seed=4), _unit(2, 3, 6, seed=5)
    expected = _mean(abs(_dot(prompts[c, m], attrs[a, k]))
                     for c in range(3) for m in range(4) for a in range(2) for k in range(3))
    assert float(losses.spurious_language_loss(prompts, attrs)) == pytest.approx(expected, rel=1e-9)


def test_spurious_crossmodal_loss_matches_the_formula(batch):
    z, _, _ = batch
    attrs = _unit(2, 3, 5, seed=8)
    expected = _mean(abs(_dot(z[j], attrs[a, k])) for j in range(len(z)) for a in range(2) for k in range(3))
    assert float(losses.spurious_crossmodal_loss(z, attrs)) == pytest.approx(expected, rel=1e-9)


def test_total_weighs_and_switches_terms(batch):
    z, y, b = batch
    prompts, attrs = _unit(3, 4, 5, seed=6), _unit(3, 2, 5, seed=7)
    scale = torch.tensor(5.0, dtype=torch.float64)
    full = losses.Batch(z=z, y=y, prompt_emb=prompts, scale=scale, b=b, attribute_emb=attrs)
    w = losses.Weights(clip=1.0, vc=0.5, lc=2.0, vs=0.0, ls=3.0)
    value, parts = losses.total(full, w)
    class_emb = F.normalize(prompts.mean(1), dim=-1)
    expected = (losses.clip_loss(z, y, class_emb, scale) + 0.5 * losses.image_class_loss(z, y)
                + 2.0 * losses.language_class_loss(prompts) + 3.0 * losses.spurious_language_loss(prompts, attrs))
    assert float(value) == pytest.approx(float(expected), rel=1e-9)
    assert set(parts) == {"clip", "vc", "lc", "ls"}      # vs switched off by its weight
    only = losses.total(full, losses.Weights.only_clip())
    assert set(only[1]) == {"clip"}
