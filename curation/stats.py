"""Small, exact statistics for accuracies of groups: intervals, tests, multiple testing.

All functions take counts (k correct out of n) so they work the same on 10 photos or 10 million.
"""
from __future__ import annotations

import math

import numpy as np
from scipy import stats as _st


def wilson(k: int, n: int, alpha: float = 0.05) -> tuple[float, float]:
    """Wilson score interval for a proportion k/n (good at small n and near 0 or 1)."""
    if n <= 0:
        return (0.0, 1.0)
    z = _st.norm.isf(alpha / 2)    # not ppf(1 - alpha/2): that is inf once alpha/2 is below float precision
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
