"""Small, exact statistics for accuracies of groups: intervals, tests, multiple testing.

All functions take counts (k correct out of n) so they work the same on 10 photos or 10 million.
"""
from __future__ import annotations

import functools
import math

import numpy as np
from scipy import stats as _st


@functools.lru_cache(maxsize=256)
def _isf(q: float) -> float:
    # isf, not ppf(1 - q): that is inf once q is below float precision. Cached: scipy's call costs
    # ~0.3 ms, and pair selection asks for the same few quantiles thousands of times.
    return float(_st.norm.isf(q))


def z_two_sided(alpha: float) -> float:
    """The normal quantile of a two-sided (1 − alpha) interval."""
    return _isf(alpha / 2)


def wilson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n (good at small n and near 0 or 1)."""
    if n <= 0:
        return (0.0, 1.0)
    z = z_two_sided(alpha)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # The interval always contains p (rounding can push an end past it when k is 0 or n).
    return (float(max(0.0, min(p, centre - half))), float(min(1.0, max(p, centre + half))))


def drop_interval(k1: int, n1: int, k2: int, n2: int, alpha: float = 0.05) -> tuple[float, float]:
    """Newcombe's hybrid score interval for p1 − p2 (built from the two Wilson intervals)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, alpha)
    l2, u2 = wilson(k2, n2, alpha)
    d = p1 - p2
    lo = d - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    hi = d + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return (max(-1.0, lo), min(1.0, hi))


def drop_p_value(k1: int, n1: int, k2: int, n2: int) -> float:
    """One-sided p-value that accuracy 1 exceeds accuracy 2 (pooled two-proportion z-test)."""
    if n1 == 0 or n2 == 0:
        return 1.0
    pooled = (k1 + k2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0 if k1 / n1 <= k2 / n2 else 0.0
    return float(_st.norm.sf((k1 / n1 - k2 / n2) / se))


def adjust(p_values: list[float], method: str = "holm") -> list[float]:
    """Adjust p-values for testing many classes at once: holm (FWER), bh (FDR) or none."""
    p = np.asarray(p_values, dtype=float)
    if method == "none" or p.size == 0:
        return p.tolist()
    if method == "bh":
        return _st.false_discovery_control(p, method="bh").tolist()
    if method != "holm":
        raise ValueError(f"unknown correction {method!r}")
    order = np.argsort(p)
    m = p.size
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return adjusted.tolist()


def wilson_lower(k: np.ndarray, n: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Vectorised Wilson lower bound (the same numbers as ``wilson(k, n)[0]``), for many draws at once."""
    k, n = np.asarray(k, dtype=float), np.asarray(n, dtype=float)
    z = z_two_sided(alpha)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z * z / n
        centre = (p + z * z / (2 * n)) / denom
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return np.where(n > 0, np.maximum(0.0, np.minimum(p, centre - half)), 0.0)


def permutation_p_value(n: list[int], k: list[int], statistic, observed: float, *, max_draws: int,
                        seed: int, batch: int = 250, enough: int = 20) -> tuple[float, int]:
    """Exact conditional (permutation) test that some groups differ, for a statistic chosen from the data.

    Under the null every photo of the class is equally likely to be right whatever its group, so,
    given the group sizes and the total right, the right photos fall into the groups as a
    multivariate hypergeometric draw. ``statistic`` maps a (draws, groups) array of counts to one
    value per draw and must apply the *whole* selection (which group is best, which worst), so
    the p-value accounts for the choice. Draws stop early once ``enough`` draws reach the observed
    value (Besag & Clifford's sequential p-value, h / draws); otherwise p = (hits + 1) / (draws + 1).
    Returns (p, draws made). Deterministic in ``seed``.
    """
    rng = np.random.default_rng(seed)
    sizes = np.asarray(n, dtype=np.int64)
    total = int(np.sum(k))
    hits = draws = 0
    while draws < max_draws:
        size = min(batch, max_draws - draws)
        counts = rng.multivariate_hypergeometric(sizes, total, size=size, method="marginals")
        values = statistic(counts)
        hits += int(np.sum(values >= observed - 1e-12))
        draws += size
        batch *= 4          # most classes stop in the first small batch; clear ones run to max_draws
        if hits >= enough:
            return hits / draws, draws
    return (hits + 1) / (draws + 1), draws


def simultaneous_drop_interval(k1: int, n1: int, k2: int, n2: int, n_groups: int,
                               alpha: float = 0.05) -> tuple[float, float]:
    """Newcombe interval for p1 − p2 at the Bonferroni level over every pair of ``n_groups`` groups.

    All pairs' intervals hold together with probability ≥ 1 − alpha, so the interval of the pair
    picked as best and worst holds too: it accounts for the choice (conservatively).
    """
    pairs = max(1, n_groups * (n_groups - 1) // 2)
    return drop_interval(k1, n1, k2, n2, alpha / pairs)


def photos_per_group(p1: float, p2: float, alpha: float, power: float) -> int:
    """Photos in each of two groups for a one-sided two-proportion test at ``alpha`` to detect p1 > p2
    with probability ``power`` (the normal-approximation formula; Fleiss, Statistical Methods, 4.14)."""
    if p1 <= p2:
        return 0
    za, zb = _isf(alpha), _isf(1 - power)
    pbar = (p1 + p2) / 2
    root = za * math.sqrt(2 * pbar * (1 - pbar)) + zb * math.sqrt(p1 * (1 - p1) + p2 * (1 - p2))
    return int(math.ceil((root / (p1 - p2)) ** 2))
