"""Pair proposal: per class, the (common, counter) background pair where accuracy drops most.

Input is per-photo evidence — class, background group, and whether a model got the photo right —
reduced to counts per (class, background). Two rules:

* ``paper``: among groups of at least ``min_group_size`` photos, keep a class when its accuracy
  varies by more than ``min_accuracy_range`` points; common = highest-accuracy group, counter =
  lowest, ties to the larger group at both ends, the range compared in exact integers
  (CounterAnimal §3). No test: the paper's rule as data.
* ``strict`` (default): only groups of the class's floor or more (``min_group_size`` where the config
  sets it; otherwise 15 photos, or 5% of the class's where fewer, at least 8); common (the highest
  Wilson lower bound) must also hold ``min_common_share`` of the class's photos; counter is the
  lowest accuracy, ties broken by the lowest mean p(true class). The pair is chosen from the data,
  so it is tested as chosen: a permutation test of the best-minus-worst statistic, with the whole
  choice re-run on every draw (curation/stats.permutation_p_value), then Holm (or BH) across
  classes. Its drop interval is simultaneous over every pair of the class's groups, so it holds
  for the pair picked, and a class is kept only when both hold: the test rejects and the pair's
  own interval lies above zero (the test can reject "every group alike" on an unusually good best
  group while the published pair, its counter a small group, has a drop it cannot back). With
  photos split in two folds, the held-out drop (pair chosen on one fold, measured on the other,
  both ways) is reported beside the in-sample one, which the choice inflates.

Why a permutation test and not sample splitting for the decision: splitting halves the photos
the test sees, and the rare groups the counter comes from are the smallest; the permutation test
uses every photo and is exact given the group sizes (no normal approximation at 0%).

A class is ``kept``, ``dropped`` (no drop above the range, or its interval says the drop is
smaller than the range), or ``undecided``: its groups are too small to tell, and the row says how
many more photos of which group would decide it at ``power``. Every class gets a row.
"""
from __future__ import annotations

import dataclasses
import math
from collections import defaultdict
from dataclasses import dataclass
from fractions import Fraction
from typing import Iterable

import numpy as np

from curation import stats
from curation.config import Thresholds


@dataclass(frozen=True)
class GroupCount:
    class_idx: int
    class_name: str
    background: str
    n: int
    k: int              # photos the model got right
    p_sum: float = 0.0  # sum over the photos of the model's probability for the true class
    folds: tuple = ()   # ((n, k) of fold 0, (n, k) of fold 1): photos split by uid, for the held-out drop

    @property
    def acc(self) -> float:
        return self.k / self.n if self.n else 0.0

    @property
    def mean_p(self) -> float:
        return self.p_sum / self.n if self.n else 0.0

    def fold(self, f: int) -> "GroupCount":
        n, k = self.folds[f]
        return GroupCount(self.class_idx, self.class_name, self.background, n, k)


@dataclass(frozen=True)
class Rule:
    kind: str = "strict"               # strict | paper
    min_accuracy_range: float = 5.0    # points
    min_group_size: int = Thresholds.RULE_GROUP_SIZE["strict"]
    # > 0: a class's floor is this share of its photos, between smallest_group and min_group_size
    # (the strict rule's default; Thresholds says why). 0: min_group_size for every class.
    group_share: float = 0.0
    smallest_group: int = Thresholds.STRICT_SMALLEST_GROUP
    min_common_share: float = 0.1
    alpha: float = 0.05
    correction: str = "holm"
    power: float = 0.8                 # for "how many more photos would decide it"

    @classmethod
    def from_config(cls, thresholds) -> "Rule":
        return cls(kind=thresholds.rule, min_accuracy_range=thresholds.min_accuracy_range,
                   min_group_size=thresholds.group_size(), group_share=thresholds.group_share(),
                   min_common_share=thresholds.min_common_share,
                   alpha=thresholds.alpha, correction=thresholds.correction, power=thresholds.power)

    def floor(self, class_photos: float) -> int:
        """The fewest photos a group of a class with ``class_photos`` photos needs to count."""
        if not self.group_share:
            return self.min_group_size
        share = math.ceil(round(self.group_share * class_photos, 6))
        return min(self.min_group_size, max(self.smallest_group, share))

    def fixed(self, floor: int) -> "Rule":
        """This rule with a fixed floor (for one class, or for effective counts)."""
        return dataclasses.replace(self, min_group_size=floor, group_share=0.0)

    def draws(self, tested: int) -> int:
        """Permutation draws per class: enough resolution that a clear class survives the correction."""
        return max(2000, math.ceil(20 * max(1, tested) / self.alpha))

    def above_range(self, a: GroupCount, b: GroupCount) -> bool:
        """acc(a) − acc(b) > min_accuracy_range points, in exact integers (16/20 − 15/20 is 5, not > 5)."""
        if not a.n or not b.n:
            return False
        return Fraction(100 * (a.k * b.n - b.k * a.n), a.n * b.n) > Fraction(str(self.min_accuracy_range))


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
    chosen = [(cls, gs, _choose(cls, gs, rule)) for cls, gs in sorted(by_class.items())]
    tested = [(gs, row) for _, gs, row in chosen if row["common"] is not None]
    if rule.kind == "strict":
        draws = rule.draws(len(tested))
        for gs, row in tested:
            row["p_value"] = _selection_p_value(gs, row, rule, draws)
        for (_, row), p_adj in zip(tested, stats.adjust([row["p_value"] for _, row in tested], rule.correction)):
            row["p_adjusted"] = p_adj
    rows = [row for _, _, row in chosen]
    for (cls, gs, row) in chosen:
        _decide(row, gs, rule, len(tested))
        row.update(model_id=model_id, source=source)
    if rule.kind == "paper":
        # The paper's pairs are data; say how many the default rule would also keep.
        strict = {r["class_idx"]: r for r in propose(groups, Rule(group_share=Thresholds.STRICT_GROUP_SHARE),
                                                          model_id, source)}
        for row in rows:
            s = strict[row["class_idx"]]
            row["strict_decision"] = s["decision"]
            if row["decision"] == "kept":
                row["reason"] += (f"; the strict rule {'also keeps it' if s['decision'] == 'kept' else 'does not'}"
                                  f" ({s['reason']})")
    return rows


def _class_floor(rule: Rule, groups: list[GroupCount]) -> int:
    """The floor of one class's groups: of its photos in the counts."""
    return rule.floor(sum(g.n for g in groups))


def _eligible(groups: list[GroupCount], rule: Rule) -> tuple[list[GroupCount], list[GroupCount]]:
    """(groups large enough to count, those of them frequent enough to be common)."""
    floor = _class_floor(rule, groups)
    eligible = sorted((g for g in groups if g.n >= floor and g.n > 0), key=lambda g: g.background)
    if rule.kind == "paper":
        return eligible, eligible
    total = sum(g.n for g in eligible)
    return eligible, [g for g in eligible if total and g.n / total >= rule.min_common_share]


def _pick(eligible: list[GroupCount], frequent: list[GroupCount], rule: Rule) -> tuple[GroupCount, GroupCount]:
    if rule.kind == "paper":
        # Ties go to the larger group at both ends, then the name, so input order never matters.
        common = max(frequent, key=lambda g: (g.acc, g.n, g.background))
        counter = min((g for g in eligible if g is not common), key=lambda g: (g.acc, -g.n, g.background))
        return common, counter
    # Common: the surest high group (highest Wilson lower bound), so a small group that is high by
    # chance does not beat a large frequent one. Counter: the lowest accuracy; among groups equally
    # low (often several at 0%), the one where the model is furthest from the true class (lowest
    # mean probability for it), then the larger group.
    common = max(frequent, key=lambda g: (stats.wilson(g.k, g.n, rule.alpha)[0], g.n, g.background))
    counter = min((g for g in eligible if g is not common), key=lambda g: (g.acc, g.mean_p, -g.n, g.background))
    return common, counter


def _choose(cls: tuple[int, str], groups: list[GroupCount], rule: Rule) -> dict:
    row = _empty_row(*cls)
    eligible, frequent = _eligible(groups, rule)
    row["n_groups"] = len(eligible)
    if len(eligible) < 2 or not frequent:
        floor = _class_floor(rule, groups)
        row["reason"] = f"fewer than two background groups with ≥ {floor} photos ({len(eligible)})"
        short = min((g for g in groups if 0 < g.n < floor), key=lambda g: (-g.n, g.background), default=None)
        if short and rule.kind == "paper":     # the strict rule says what would decide it (_needs)
            row["reason"] += f"; the largest below, {short.background}, has {short.n}"
        return row
    common, counter = _pick(eligible, frequent, rule)
    lo_c, hi_c = stats.wilson(common.k, common.n, rule.alpha)
    lo_k, hi_k = stats.wilson(counter.k, counter.n, rule.alpha)
    if rule.kind == "paper":
        d_lo, d_hi = stats.drop_interval(common.k, common.n, counter.k, counter.n, rule.alpha)
    else:
        d_lo, d_hi = stats.simultaneous_drop_interval(common.k, common.n, counter.k, counter.n, len(eligible),
                                                      rule.alpha)
    row.update(common=common.background, counter=counter.background, n_common=common.n, n_counter=counter.n,
               acc_common=common.acc, acc_common_lo=lo_c, acc_common_hi=hi_c,
               acc_counter=counter.acc, acc_counter_lo=lo_k, acc_counter_hi=hi_k,
               drop=common.acc - counter.acc, drop_lo=d_lo, drop_hi=d_hi,
               above_range=rule.above_range(common, counter))
    if rule.kind == "strict":
        row["test"] = f"permutation, best minus worst of {len(eligible)} groups as chosen"
        row.update(_held_out(groups, rule))
    return row


def _selection_statistic(eligible: list[GroupCount], rule: Rule):
    """The strict rule's choice as a function of counts: (draws, groups) → best minus worst accuracy."""
    n = np.asarray([g.n for g in eligible], dtype=float)
    frequent = np.asarray([g.n / n.sum() >= rule.min_common_share for g in eligible])

    def statistic(counts: np.ndarray) -> np.ndarray:
        acc = counts / n
        lower = np.where(frequent, stats.wilson_lower(counts, n, rule.alpha), -np.inf)
        # Ties in the lower bound go to the larger group, as _pick does (lexsort: last key first).
        order = np.lexsort((np.broadcast_to(n, counts.shape), lower), axis=1)
        common = order[:, -1]
        rest = acc.copy()
        rest[np.arange(len(counts)), common] = np.inf
        return acc[np.arange(len(counts)), common] - rest.min(axis=1)

    return statistic


def _selection_p_value(groups: list[GroupCount], row: dict, rule: Rule, draws: int) -> float:
    eligible, _ = _eligible(groups, rule)
    seed = [row["class_idx"], sum(g.n for g in eligible), sum(g.k for g in eligible)]
    p, _ = stats.permutation_p_value([g.n for g in eligible], [g.k for g in eligible],
                                     _selection_statistic(eligible, rule), row["drop"], max_draws=draws, seed=seed)
    return p


def _held_out(groups: list[GroupCount], rule: Rule) -> dict:
    """Cross-fitted drop: choose the pair on one fold, measure it on the other, both ways, average."""
    if not groups or any(len(g.folds) != 2 for g in groups):
        return {}
    half = rule.fixed(max(1, _class_floor(rule, groups) // 2))
    estimates, variances = [], []
    z = stats.z_two_sided(rule.alpha)
    for f in (0, 1):
        pick_on = [g.fold(f) for g in groups]
        eligible, frequent = _eligible(pick_on, half)
        if len(eligible) < 2 or not frequent:
            return {}
        common, counter = _pick(eligible, frequent, half)
        other = {g.background: g.fold(1 - f) for g in groups}
        c, k = other[common.background], other[counter.background]
        if not c.n or not k.n:
            return {}
        lo, hi = stats.drop_interval(c.k, c.n, k.k, k.n, rule.alpha)
        estimates.append(c.acc - k.acc)
        variances.append(((hi - lo) / (2 * z)) ** 2)
    est = sum(estimates) / 2
    se = math.sqrt(sum(variances)) / 2
    return dict(drop_held_out=est, drop_held_out_lo=max(-1.0, est - z * se), drop_held_out_hi=min(1.0, est + z * se))


def _decide(row: dict, groups: list[GroupCount], rule: Rule, tested: int) -> None:
    above = row.pop("above_range", False)
    if row["drop"] is None:
        if rule.kind == "strict":
            _needs(row, groups, rule, tested)
        return
    points = 100 * row["drop"]
    pair = f"{row['common']} → {row['counter']}: {100 * row['acc_common']:.1f}% → {100 * row['acc_counter']:.1f}%"
    if not above:
        row["reason"] = f"{pair}, range {points:.1f} points ≤ {rule.min_accuracy_range:g}"
        return
    if rule.kind == "paper":
        row.update(decision="kept", reason=f"{pair}, range {points:.1f} points > {rule.min_accuracy_range:g}")
        return
    interval = f"[{100 * row['drop_lo']:.1f}, {100 * row['drop_hi']:.1f}] over all pairs"
    if row["p_adjusted"] < rule.alpha and row["drop_lo"] > 0:
        row.update(decision="kept", reason=f"{pair}, drop {points:.1f} points {interval}, "
                                           f"p={row['p_adjusted']:.3g} after {rule.correction} (chosen pair tested as chosen)")
        return
    if row["p_adjusted"] < rule.alpha:
        # The groups differ, but not this pair: the test rejects "all groups alike" (often because the
        # best group is unusually good), while what is published is this pair's drop, and its
        # interval, selection accounted for, reaches zero. Kept, it would print a drop it cannot back.
        row["reason"] = (f"{pair}, drop {points:.1f} points: the groups differ (p={row['p_adjusted']:.3g} after "
                         f"{rule.correction}), but this pair's interval {interval} reaches zero")
    else:
        row["reason"] = (f"{pair}, drop {points:.1f} points not significant once the choice is accounted for "
                         f"({interval}, p={row['p_adjusted']:.3g} after {rule.correction})")
    if 100 * row["drop_hi"] <= rule.min_accuracy_range:
        return      # the drop is surely within the range: more photos would not change that
    _needs(row, groups, rule, tested)


def _needs(row: dict, groups: list[GroupCount], rule: Rule, tested: int) -> None:
    """For a class its groups cannot decide: the fewest extra photos (of one group, plus the common
    if it is short too) that would tell its best group from a lower one at ``rule.power``."""
    present = [g for g in groups if g.n > 0]
    if not present:
        return
    eligible, frequent = _eligible(groups, rule)
    best = (max(frequent, key=lambda g: (stats.wilson(g.k, g.n, rule.alpha)[0], g.n, g.background)) if frequent
            else max(present, key=lambda g: (g.n, g.acc, g.background)))
    k_groups = max(2, len(eligible) + (best not in eligible))
    level = rule.alpha / max(1, tested) / (k_groups * (k_groups - 1) / 2)
    options = []
    for g in present:
        if g is best or not rule.above_range(best, g):
            continue
        need = _with_floor(rule, groups, stats.photos_per_group(best.acc, g.acc, level, rule.power), g, best)
        extra_g, extra_best = max(0, need - g.n), max(0, need - best.n)
        if extra_g or extra_best:
            options.append((extra_g + extra_best, g.background, g, need, extra_g, extra_best))
    if not options:
        if len(present) == 1:
            floor = _with_floor(rule, present, 0, GroupCount(best.class_idx, best.class_name, "", 0, 0))
            row.update(decision="undecided", needs=f"collect ≥ {floor} photos of "
                       f"{row['class_name']} on another background (all {best.n} are on {best.background})",
                       needs_background=None, needs_n=floor)
        return
    _, _, g, need, extra_g, extra_best = min(options)
    text = (f"collect ≈{extra_g} more photos of {row['class_name']} on {g.background} (now {g.n})"
            if extra_g else "")
    if extra_best:
        text += (" and " if text else "collect ") + f"≈{extra_best} more on {best.background} (now {best.n})"
    text += (f" to tell {100 * g.acc:.0f}% on {g.background} from {100 * best.acc:.0f}% on {best.background} "
             f"at {100 * rule.power:.0f}% power")
    row.update(decision="undecided", needs=text, needs_background=g.background if extra_g else best.background,
               needs_n=extra_g + extra_best)
    row["reason"] += ("; " if row["reason"] else "") + "undecided: " + text


def _with_floor(rule: Rule, groups: list[GroupCount], need: int, *short: GroupCount) -> int:
    """``need`` photos per group, raised to the class's floor once the photos collected for the
    ``short`` groups are counted in the class (the floor grows with the class under a share)."""
    total = sum(g.n for g in groups)
    while True:
        raised = max(need, rule.floor(total + sum(max(0, need - g.n) for g in short)))
        if raised == need:
            return need
        need = raised


def agree_across_models(rows_by_model: dict[str, list[dict]]) -> list[dict]:
    """One consensus row per class (model_id 'all'): kept only if every model kept the same pair.

    The numbers are the first model's in the mapping's order (the caller passes the config's order,
    so it is the decision model), never a mix of several models'; the reason names each verdict.
    """
    models = list(rows_by_model)
    per_class: dict[int, dict[str, dict]] = defaultdict(dict)
    for model in models:
        for r in rows_by_model[model]:
            per_class[r["class_idx"]][model] = r
    out = []
    for class_idx in sorted(per_class):
        rows = per_class[class_idx]
        first = rows[models[0]] if models[0] in rows else next(iter(rows.values()))
        merged = dict(first, model_id="all")
        pairs = {(r["common"], r["counter"]) for r in rows.values()}
        kept = all(r["decision"] == "kept" for r in rows.values()) and len(rows) == len(models)
        if kept and len(pairs) == 1:
            merged["reason"] = (f"all {len(models)} models keep {first['common']} → {first['counter']} "
                                f"(figures: {first['model_id']})")
        elif not any(r["decision"] == "kept" for r in rows.values()):
            merged.update(decision=first["decision"] if first["decision"] == "undecided" else "dropped",
                          reason=f"no model keeps a pair ({first['reason']})")
        else:
            disagree = ", ".join(f"{m}: {r['decision']} {r['common']}→{r['counter']}" for m, r in sorted(rows.items()))
            merged.update(decision="dropped", reason=f"models disagree ({disagree})")
        out.append(merged)
    return out


def _empty_row(class_idx: int, class_name: str) -> dict:
    return dict(class_idx=class_idx, class_name=class_name, source="model", model_id=None, common=None,
                counter=None, n_common=None, n_counter=None, acc_common=None, acc_common_lo=None,
                acc_common_hi=None, acc_counter=None, acc_counter_lo=None, acc_counter_hi=None, drop=None,
                drop_lo=None, drop_hi=None, p_value=None, p_adjusted=None, decision="dropped", reason="",
                n_groups=0, test=None, drop_held_out=None, drop_held_out_lo=None, drop_held_out_hi=None,
                needs=None, needs_background=None, needs_n=None, strict_decision=None, flags_policy=None)


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
