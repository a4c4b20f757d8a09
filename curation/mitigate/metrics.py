"""Average accuracy, worst-group accuracy (groups = class × background) and the common → counter drop."""
from __future__ import annotations

import numpy as np


def evaluate(pred: np.ndarray, y: np.ndarray, b: np.ndarray, pairs: dict[int, tuple[int, int]],
             classes: list[str], backgrounds: list[str], min_group: int = 1) -> dict:
    """Metrics over one split. Groups smaller than min_group are left out of the worst group (too noisy).

    common / counter are class-balanced (the mean over classes with a pair of the accuracy on the
    class's common group and on its counter group, both present); drop = common − counter, in points.
    """
    correct = pred == y
    groups = {}
    for c, g in sorted(set(zip(y.tolist(), b.tolist()))):
        mask = (y == c) & (b == g)
        groups[f"{classes[c]}|{backgrounds[g]}"] = {"n": int(mask.sum()), "acc": float(correct[mask].mean())}
    counted = {k: v for k, v in groups.items() if v["n"] >= min_group}
    worst = min(counted, key=lambda k: (counted[k]["acc"], k)) if counted else None
    common, counter = [], []
    for c, (gc, gk) in sorted(pairs.items()):
        mc, mk = (y == c) & (b == gc), (y == c) & (b == gk)
        if mc.any() and mk.any():
            common.append(correct[mc].mean())
            counter.append(correct[mk].mean())
    out = {
        "n": int(len(y)),
        "avg_acc": 100 * float(correct.mean()) if len(y) else float("nan"),
        "worst_group_acc": 100 * counted[worst]["acc"] if worst else float("nan"),
        "worst_group": worst,
        "groups_counted": len(counted),
        "common_acc": 100 * float(np.mean(common)) if common else float("nan"),
        "counter_acc": 100 * float(np.mean(counter)) if counter else float("nan"),
        "pairs": len(common),
        "groups": groups,
    }
    out["drop"] = out["common_acc"] - out["counter_acc"]
    return out


def better(a: dict, b: dict | None) -> bool:
    """Model selection: higher worst-group accuracy on validation, then higher average accuracy."""
    if b is None:
        return True
    return (a["worst_group_acc"], a["avg_acc"]) > (b["worst_group_acc"], b["avg_acc"])
