"""Votes → verdicts: majority per photo (ties stay unresolved), agreement, annotator accuracy.

Plain functions over plain rows; nothing here talks to Label Studio. Agreement is Krippendorff's
alpha for nominal data, which allows a different number of annotators per photo.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Iterable

import pyarrow as pa

import schemas

BAD_FLAGS = ("several_animals", "not_prominent", "bad_photo")


def majority(values: Iterable[str | None]) -> tuple[str | None, float | None]:
    """(winner, share of votes) — winner None when nobody voted or the top count is tied."""
    counts = Counter(v for v in values if v is not None)
    if not counts:
        return None, None
    top = counts.most_common()
    total = sum(counts.values())
    if len(top) > 1 and top[0][1] == top[1][1]:
        return None, top[0][1] / total
    return top[0][0], top[0][1] / total


def krippendorff_alpha(units: Iterable[list[str]]) -> float | None:
    """Nominal Krippendorff's alpha over units (each a list of the values annotators gave it).

    Units with fewer than two values carry no pairing information and are left out. None when
    alpha is undefined (no pairable units, or every value is the same category).
    """
    coincidence: dict[tuple[str, str], float] = defaultdict(float)
    for values in units:
        values = [v for v in values if v is not None]
        m = len(values)
        if m < 2:
            continue
        counts = Counter(values)
        for c, nc in counts.items():
            for k, nk in counts.items():
                pairs = nc * (nk - 1) if c == k else nc * nk
                coincidence[(c, k)] += pairs / (m - 1)
    n_c: dict[str, float] = defaultdict(float)
    for (c, _k), v in coincidence.items():
        n_c[c] += v
    n = sum(n_c.values())
    if n <= 1:
        return None
    observed = sum(v for (c, k), v in coincidence.items() if c != k)
    expected = sum(n_c[c] * n_c[k] for c in n_c for k in n_c if c != k) / (n - 1)
    if expected == 0:
        return None
    return 1.0 - observed / expected


def verdicts(annotations: pa.Table, tasks: pa.Table, min_votes: int) -> pa.Table:
    """One verdict per task uid from its non-skipped annotations (schema `verdicts`)."""
    votes: dict[str, list[dict]] = defaultdict(list)
    for a in annotations.to_pylist():
        if not a["skipped"]:
            votes[a["uid"]].append(a)
    rows = []
    for t in tasks.to_pylist():
        if t["status"] != "pushed" and not votes.get(t["uid"]):
            continue
        vs = votes.get(t["uid"], [])
        background, bg_share = majority(v["background"] for v in vs)
        is_class, cls_share = majority(v["is_class"] for v in vs)
        flag_counts = Counter(f for v in vs for f in set(v["flags"] or []))
        flags = sorted(f for f, n in flag_counts.items() if n * 2 > len(vs))
        if len(vs) < min_votes:
            status = "pending"
        elif background is None or is_class is None:
            status = "tie"
        else:
            status = "verified"
        rows.append(dict(uid=t["uid"], class_idx=t["class_idx"], class_name=t["class_name"], role=t["role"],
                         n_votes=len(vs), background=background, background_agreement=bg_share,
                         is_class=is_class, is_class_agreement=cls_share, flags=flags,
                         model_background=t["model_background"], status=status, stratum=t.get("stratum"),
                         prediction_shown=any(bool(v.get("prediction_shown")) for v in vs) or bool(t.get("prefilled"))))
    if not rows:
        return schemas.SCHEMAS["verdicts"].empty_table()
    return schemas.conform(pa.Table.from_pylist(rows), "verdicts", "verdicts")


def human_groups(verdict_table: pa.Table, vocabulary: list[str]) -> pa.Table:
    """Verified photos that belong in a background group (schema `groups`, method 'human').

    A photo counts when its verdict is verified, it shows the class, no problem flag won a
    majority, and its background is in the run's vocabulary (not "other").
    """
    rows = []
    for v in verdict_table.to_pylist():
        if v["status"] != "verified" or v["is_class"] != "yes" or v["background"] not in vocabulary:
            continue
        if any(f in BAD_FLAGS for f in v["flags"] or []):
            continue
        rows.append(dict(uid=v["uid"], class_idx=v["class_idx"], class_name=v["class_name"],
                         background=v["background"], confidence=v["background_agreement"], method="human",
                         cluster=None, model_id=None))
    if not rows:
        return schemas.SCHEMAS["groups"].empty_table()
    return schemas.conform(pa.Table.from_pylist(rows), "groups", "human groups")


def annotator_table(annotations: pa.Table, tasks: pa.Table) -> pa.Table:
    """Per annotator: how many annotations, skips, and accuracy on tasks with known answers."""
    gold = {t["uid"]: t for t in tasks.to_pylist()
            if t["gold_background"] is not None or t["gold_is_class"] is not None}
    stats: dict[str, Counter] = defaultdict(Counter)
    for a in annotations.to_pylist():
        s = stats[a["annotator"]]
        s["n"] += 1
        if a["skipped"]:
            s["skipped"] += 1
            continue
        g = gold.get(a["uid"])
        if g is None:
            continue
        s["calibration"] += 1
        if g["gold_background"] is not None:
            s["bg_n"] += 1
            s["bg_ok"] += a["background"] == g["gold_background"]
        if g["gold_is_class"] is not None:
            s["cls_n"] += 1
            s["cls_ok"] += a["is_class"] == g["gold_is_class"]
    rows = [dict(annotator=who, n_annotations=s["n"], n_skipped=s["skipped"], n_calibration=s["calibration"],
                 background_accuracy=s["bg_ok"] / s["bg_n"] if s["bg_n"] else None,
                 is_class_accuracy=s["cls_ok"] / s["cls_n"] if s["cls_n"] else None)
            for who, s in sorted(stats.items())]
    if not rows:
        return schemas.SCHEMAS["annotators"].empty_table()
    return schemas.conform(pa.Table.from_pylist(rows), "annotators", "annotators")


def agreement(annotations: pa.Table) -> dict:
    """Krippendorff's alpha for background and class verdicts over all photos with two or more votes."""
    by_uid: dict[str, list[dict]] = defaultdict(list)
    for a in annotations.to_pylist():
        if not a["skipped"]:
            by_uid[a["uid"]].append(a)
    out = {}
    for field in ("background", "is_class"):
        units = [[v[field] for v in vs] for vs in by_uid.values()]
        out[field] = {"alpha": krippendorff_alpha(units),
                      "units": sum(1 for u in units if len([x for x in u if x is not None]) >= 2)}
    return out
