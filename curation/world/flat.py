"""Flat background sets: per class, backgrounds on which a trained model is about equally accurate.

A null world trained balanced is still not flat for a small model: it recognises a class far
better on some backgrounds than on others (bench/RESULTS.md, issue 11), so every class has a real
oracle drop and a false-positive check has nothing to count. Restricting a control class's pool
and grid to a set on which the model's grid accuracies lie within ``spread`` of each other
(``WorldSpec.class_backgrounds``) gives classes with no drop to find. The set is chosen on one grid;
judge on a fresh one (``grid_draw``), or the choice itself makes the class look flat.
"""
from __future__ import annotations


def flat_set(accuracy: dict[str, float], spread: float, min_size: int = 3) -> list[str] | None:
    """A set of ≥ min_size backgrounds whose accuracies lie within ``spread`` (a share): of those,
    the one whose mean is nearest 50% (where chance manufactures drops most easily, and a class near
    0% or 100% everywhere is a weak test), then the largest; None when no such set exists."""
    ranked = sorted(accuracy, key=lambda b: (accuracy[b], b))
    best, best_key = None, None
    for i in range(len(ranked)):
        j = i
        while j + 1 < len(ranked) and accuracy[ranked[j + 1]] - accuracy[ranked[i]] <= spread + 1e-12:
            j += 1
        window = ranked[i:j + 1]
        if len(window) < min_size:
            continue
        mean = sum(accuracy[b] for b in window) / len(window)
        key = (-round(abs(mean - 0.5), 9), len(window))
        if best_key is None or key > best_key:
            best, best_key = sorted(window), key
    return best


def flat_sets(oracle_classes: dict[str, dict], spread: float, min_size: int = 3) -> dict[str, list[str]]:
    """Per control class of an oracle (read_oracle(...)["classes"]) with a flat set, that set."""
    out = {}
    for cls, entry in oracle_classes.items():
        if entry["biased"]:
            continue
        chosen = flat_set(entry["accuracy"], spread, min_size)
        if chosen:
            out[cls] = chosen
    return out
