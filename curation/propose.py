"""Pair proposal: per class, the (common, counter) background pair where accuracy drops most.

Input is per-photo evidence — class, background group, and whether a model got the photo right —
reduced to counts per (class, background). Two rules:

* ``paper``: keep a class when its accuracy varies by more than ``min_accuracy_range`` points
  across its groups; common = highest-accuracy group, counter = lowest (CounterAnimal §3).
* ``strict`` (default): only groups of ``min_group_size`` photos or more; common (the highest
  Wilson lower bound) must also hold ``min_common_share`` of the class's photos; counter is the
  lowest accuracy, ties broken by the lowest mean p(true class); the drop must be larger than the
  range threshold and significant: its Newcombe interval excludes zero and the one-sided two-proportion test
  holds after correction across classes; with several models, all must keep the same pair.

Every class gets a row, kept or dropped, with the reason in words.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Iterable

from curation import stats


@dataclass(frozen=True)
class GroupCount:
    class_idx: int
    class_name: str
    background: str
    n: int
    k: int              # photos the model got right
    p_sum: float = 0.0  # sum over the photos of the model's probability for the true class

    @property
    def acc(self) -> float:
        return self.k / self.n if self.n else 0.0

    @property
    def mean_p(self) -> float:
        return self.p_sum / self.n if self.n else 0.0


@dataclass(frozen=True)
class Rule:
    kind: str = "strict"               # strict | paper
    min_accuracy_range: float = 5.0    # points
    min_group_size: int = 20
    min_common_share: float = 0.1
    alpha: float = 0.05
    correction: str = "holm"

    @classmethod
    def from_config(cls, thresholds) -> "Rule":
        return cls(kind=thresholds.rule, min_accuracy_range=thresholds.min_accuracy_range,
                   min_group_size=thresholds.min_group_size, min_common_share=thresholds.min_common_share,
                   alpha=thresholds.alpha, correction=thresholds.correction)


def count_groups(rows: Iterable[tuple]) -> list[GroupCount]:
    """(class_idx, class_name, background, correct[, p_true]) per photo → counts per (class, background)."""
    n: dict[tuple, int] = defaultdict(int)
    k: dict[tuple, int] = defaultdict(int)
    p: dict[tuple, float] = defaultdict(float)
    for class_idx, class_name, background, correct, *p_true in rows:
        key = (int(class_idx), class_name, background)
        n[key] += 1
        k[key] += bool(correct)
        p[key] += float(p_true[0]) if p_true and p_true[0] is not None else 0.0
    return [GroupCount(*key, n=n[key], k=k[key], p_sum=p[key]) for key in sorted(n)]


def propose(groups: list[GroupCount], rule: Rule, model_id: str | None = None, source: str = "model") -> list[dict]:
    """One proposals row per class (schemas.PROPOSALS fields)."""
    by_class: dict[tuple[int, str], list[GroupCount]] = defaultdict(list)
    for g in groups:
        by_class[(g.class_idx, g.class_name)].append(g)
    rows = [_choose(cls, gs, rule) for cls, gs in sorted(by_class.items())]
    for row in rows:
        row.update(model_id=model_id, source=source)
    tested = [r for r in rows if r["p_value"] is not None]
    for r, p_adj in zip(tested, stats.adjust([r["p_value"] for r in tested], rule.correction)):
        r["p_adjusted"] = p_adj
    for r in rows:
        _decide(r, rule)
    return rows


def _by_accuracy(g: GroupCount) -> tuple:
    # Ties: the larger group wins, then the background name, so results never depend on input order.
    return (g.acc, g.n, g.background)


def _choose(cls: tuple[int, str], groups: list[GroupCount], rule: Rule) -> dict:
    row = _empty_row(*cls)
    if rule.kind == "paper":   # every group counts; the range is best minus worst
        eligible = frequent = [g for g in groups if g.n > 0]
    else:
        eligible = [g for g in groups if g.n >= rule.min_group_size]
        total = sum(g.n for g in eligible)
        frequent = [g for g in eligible if total and g.n / total >= rule.min_common_share]
    if len(eligible) < 2 or not frequent:
        size = "" if rule.kind == "paper" else f" with ≥ {rule.min_group_size} photos"
        row["reason"] = f"fewer than two background groups{size} ({len(eligible)})"
        return row
    if rule.kind == "paper":
        common = max(frequent, key=_by_accuracy)
        counter = min((g for g in eligible if g is not common), key=_by_accuracy)
    else:
        # Common: the surest high group (highest Wilson lower bound), so a small group that is high
        # by chance does not beat a large frequent one. Counter: the lowest accuracy; among groups
        # equally low (often several at 0%), the one where the model is furthest from the true
        # class (lowest mean probability for it), a steadier measure than a count of zero.
        common = max(frequent, key=lambda g: (stats.wilson(g.k, g.n, rule.alpha)[0], g.n, g.background))
        counter = min((g for g in eligible if g is not common), key=lambda g: (g.acc, g.mean_p, -g.n, g.background))
    lo_c, hi_c = stats.wilson(common.k, common.n, rule.alpha)
    lo_k, hi_k = stats.wilson(counter.k, counter.n, rule.alpha)
    d_lo, d_hi = stats.drop_interval(common.k, common.n, counter.k, counter.n, rule.alpha)
    row.update(common=common.background, counter=counter.background, n_common=common.n, n_counter=counter.n,
               acc_common=common.acc, acc_common_lo=lo_c, acc_common_hi=hi_c,
               acc_counter=counter.acc, acc_counter_lo=lo_k, acc_counter_hi=hi_k,
               drop=common.acc - counter.acc, drop_lo=d_lo, drop_hi=d_hi,
               p_value=stats.drop_p_value(common.k, common.n, counter.k, counter.n))
    return row


def _decide(row: dict, rule: Rule) -> None:
    if row["drop"] is None:
        return
    points = 100 * row["drop"]
    pair = f"{row['common']} → {row['counter']}: {100 * row['acc_common']:.1f}% → {100 * row['acc_counter']:.1f}%"
    if points <= rule.min_accuracy_range:
        row["reason"] = f"{pair}, range {points:.1f} points ≤ {rule.min_accuracy_range:g}"
        return
    if rule.kind == "paper":
        row.update(decision="kept", reason=f"{pair}, range {points:.1f} points > {rule.min_accuracy_range:g}")
        return
    if row["p_adjusted"] >= rule.alpha or row["drop_lo"] <= 0:
        row["reason"] = (f"{pair}, drop {points:.1f} points not significant "
                         f"(interval [{100 * row['drop_lo']:.1f}, {100 * row['drop_hi']:.1f}], "
                         f"p={row['p_adjusted']:.3g} after {rule.correction})")
        return
    row.update(decision="kept", reason=f"{pair}, drop {points:.1f} points "
                                       f"[{100 * row['drop_lo']:.1f}, {100 * row['drop_hi']:.1f}], "
                                       f"p={row['p_adjusted']:.3g} after {rule.correction}")


def agree_across_models(rows_by_model: dict[str, list[dict]]) -> list[dict]:
    """One consensus row per class (model_id 'all'): kept only if every model kept the same pair."""
    models = sorted(rows_by_model)
    per_class: dict[int, dict[str, dict]] = defaultdict(dict)
    for model in models:
        for r in rows_by_model[model]:
            per_class[r["class_idx"]][model] = r
    out = []
    for class_idx in sorted(per_class):
        rows = per_class[class_idx]
        first = rows[models[0]]
        merged = dict(first, model_id="all")
        pairs = {(r["common"], r["counter"]) for r in rows.values()}
        kept = all(r["decision"] == "kept" for r in rows.values()) and len(rows) == len(models)
        if kept and len(pairs) == 1:
            # The weakest evidence across models stands for the consensus.
            weakest = min(rows.values(), key=lambda r: r["drop_lo"])
            merged.update({k: weakest[k] for k in weakest if k.startswith(("acc_", "drop", "p_", "n_"))})
            merged["reason"] = f"all {len(models)} models keep {first['common']} → {first['counter']}"
        elif not any(r["decision"] == "kept" for r in rows.values()):
            merged.update(decision="dropped", reason=f"no model keeps a pair ({first['reason']})")
        else:
            disagree = ", ".join(f"{m}: {r['decision']} {r['common']}→{r['counter']}" for m, r in sorted(rows.items()))
            merged.update(decision="dropped", reason=f"models disagree ({disagree})")
        out.append(merged)
    return out


def _empty_row(class_idx: int, class_name: str) -> dict:
    return dict(class_idx=class_idx, class_name=class_name, source="model", model_id=None, common=None,
                counter=None, n_common=None, n_counter=None, acc_common=None, acc_common_lo=None,
                acc_common_hi=None, acc_counter=None, acc_counter_lo=None, acc_counter_hi=None, drop=None,
                drop_lo=None, drop_hi=None, p_value=None, p_adjusted=None, decision="dropped", reason="")


@dataclass(frozen=True)
class AttributeCount:
    """Photos of a class with (present=True) or without an extra attribute, and how many the model got right."""
    class_idx: int
    class_name: str
    attribute: str
    present: bool
    n: int
    k: int


def attribute_deltas(groups: list[GroupCount], attributes: list[str],
                     extra: Iterable[AttributeCount] = ()) -> list[dict]:
    """Seed 2's detector: δ(class, a) = acc(a present) − acc(a absent), ranked within each class.

    The backgrounds are attributes whose presence is the photo's group, so the counts per
    (class, background) are all they take; ``extra`` carries the config's other attributes
    (curation/attributes.py), counted with and without. The most positive δ marks what the model
    leans on for that class (a candidate spurious feature); the most negative, its counter.
    """
    by_class: dict[tuple[int, str], list[dict]] = defaultdict(list)
    cells: dict[tuple[int, str], dict[str, GroupCount]] = defaultdict(dict)
    for g in groups:
        cells[(g.class_idx, g.class_name)][g.background] = g
    for cls, bg in cells.items():
        total_n, total_k = sum(g.n for g in bg.values()), sum(g.k for g in bg.values())
        for a in attributes:
            if a in bg:
                by_class[cls].append(_delta(cls, a, bg[a].n, bg[a].k, total_n - bg[a].n, total_k - bg[a].k))
    split: dict[tuple, dict[bool, AttributeCount]] = defaultdict(dict)
    for c in extra:
        split[(c.class_idx, c.class_name, c.attribute)][c.present] = c
    for (class_idx, class_name, a), sides in split.items():
        yes, no = sides.get(True), sides.get(False)
        by_class[(class_idx, class_name)].append(
            _delta((class_idx, class_name), a, yes.n if yes else 0, yes.k if yes else 0,
                   no.n if no else 0, no.k if no else 0))
    out = []
    for cls in sorted(by_class):
        ranked = sorted((r for r in by_class[cls] if r is not None), key=lambda r: (-r["delta"], r["attribute"]))
        for rank, r in enumerate(ranked, 1):
            r["rank"] = rank
        out.extend(ranked)
    return out


def _delta(cls: tuple[int, str], attribute: str, n_present: int, k_present: int,
           n_absent: int, k_absent: int) -> dict | None:
    if not n_present or not n_absent:
        return None          # never present, or never absent: no estimate
    return dict(class_idx=cls[0], class_name=cls[1], attribute=attribute, n_present=n_present,
                acc_present=k_present / n_present, n_absent=n_absent, acc_absent=k_absent / n_absent,
                delta=k_present / n_present - k_absent / n_absent,
                p_value=stats.drop_p_value(k_present, n_present, k_absent, n_absent))
