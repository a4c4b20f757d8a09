"""Human-side group accuracies from a stratified sample, the verified pair, and when a class is settled.

Plain functions over plain rows; nothing here talks to Label Studio.

Per class the clean photos are split into strata (annotation/sampling.py): each model-assigned
background, the photos whose assignment is least sure, and the flagged photos. Each stratum is a
simple random sample without replacement (its photos are labelled in a seeded random order), so a
labelled photo of stratum h stands for w_h = N_h / n_h photos. A human background b is a domain
that cuts across strata; its accuracy (the model's top-1 on photos people put on b) is the
stratified ratio estimate

    acc_b = sum_i w_i z_i y_i / sum_i w_i z_i      (z_i = photo i is the class, on b; y_i = model right)

Its uncertainty is carried by Kish's effective sample size n_eff = (sum w)^2 / sum w^2 over the
group's labelled photos: the rounded (n_eff, acc * n_eff) are passed to `curation.propose.propose`
as the group's counts, so intervals, tests and the rule are the pipeline's own (an evenly
sampled or fully labelled class gives exactly the unweighted counts). The model's correctness is
never asked of people: it is the score stage's, on every photo.
"""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass

from curation import stats
from curation.propose import GroupCount, Rule, propose

OUT = "(not in a group)"   # a labelled photo that people say is not the class, is flagged, or is "other"


@dataclass(frozen=True)
class Photo:
    uid: str
    class_idx: int
    class_name: str
    stratum: str
    model_background: str | None
    confidence: float | None
    correct: bool
    p_true: float


@dataclass(frozen=True)
class GroupEstimate:
    class_idx: int
    class_name: str
    background: str
    n_labeled: int      # labelled photos people put on this background
    n_hat: float        # estimated photos of the class on this background (in the whole pool)
    acc: float          # weighted share the model gets right
    n_eff: float        # Kish effective sample size
    mean_p: float       # weighted mean p(true class)
    lo: float
    hi: float
    model_n: int        # photos the model assigned to this background


def estimate_class(pop: dict[str, list[Photo]], labels: dict[str, str], alpha: float = 0.05) -> list[GroupEstimate]:
    """Per human background of one class: the weighted estimate from the labelled photos.

    ``pop``: stratum → its photos. ``labels``: uid → human background, or OUT; photos without a
    resolved label (pending, tie) are non-response and left out of their stratum's n_h.
    """
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0, 0.0, 0])   # w, w*y, w^2, w*p, n
    model_n: dict[str, int] = defaultdict(int)
    cls = None
    for stratum, photos in pop.items():
        for p in photos:
            cls = cls or (p.class_idx, p.class_name)
            if p.model_background:
                model_n[p.model_background] += 1
        done = [p for p in photos if p.uid in labels]
        if not done:
            continue
        w = len(photos) / len(done)
        for p in done:
            b = labels[p.uid]
            if b == OUT:
                continue
            s = sums[b]
            s[0] += w
            s[1] += w * p.correct
            s[2] += w * w
            s[3] += w * p.p_true
            s[4] += 1
    out = []
    for b, (sw, swy, sw2, swp, n) in sorted(sums.items()):
        acc = swy / sw
        n_eff = sw * sw / sw2
        lo, hi = stats.wilson(round(acc * n_eff), max(1, round(n_eff)), alpha)
        out.append(GroupEstimate(cls[0], cls[1], b, n, sw, acc, n_eff, swp / sw, lo, hi, model_n.get(b, 0)))
    return out


def group_counts(estimates: list[GroupEstimate], min_group_size: int, min_labels: int) -> list[GroupCount]:
    """Effective counts of the groups that may form a pair: enough photos in the pool, enough labelled."""
    out = []
    for e in estimates:
        if e.n_hat < min_group_size or e.n_labeled < min_labels:
            continue
        n = max(1, round(e.n_eff))
        out.append(GroupCount(e.class_idx, e.class_name, e.background, n, round(e.acc * n), e.mean_p * n))
    return out


def human_pairs(estimates: list[GroupEstimate], rule: Rule, min_labels: int, model_id: str | None) -> list[dict]:
    """One proposals row per class (source 'human') from the weighted estimates, via curation.propose.

    The pool-size threshold is applied here to the estimated group sizes; propose() then sees
    effective counts only, so its own size floor is lowered to 1.
    """
    counts = group_counts(estimates, rule.min_group_size, min_labels)
    per_class = defaultdict(int)
    for c in counts:
        per_class[c.class_idx] += 1
    # A class with fewer than two groups big enough is not tested; its row says what it lacks (below).
    counts = [c for c in counts if per_class[c.class_idx] >= 2]
    rows = propose(counts, dataclasses.replace(rule, min_group_size=1), model_id=model_id, source="human")
    seen = {r["class_idx"] for r in rows}
    for e in estimates:     # classes with labels but no group large enough still get a row
        if e.class_idx not in seen:
            seen.add(e.class_idx)
            mine = [x for x in estimates if x.class_idx == e.class_idx]
            rows.append(dict(_empty(e.class_idx, e.class_name), model_id=model_id,
                             reason=f"fewer than two background groups with ≥ {rule.min_group_size} photos "
                                    f"(estimated) and ≥ {min_labels} labelled", **_too_small(mine, rule)))
    return sorted(rows, key=lambda r: r["class_idx"])


def _too_small(estimates: list[GroupEstimate], rule: Rule) -> dict:
    """A class whose people-labelled groups are all but one too small is a finding, not a silence
    (as propose says for the model's groups): undecided, with the photos the next-largest group lacks."""
    big = sorted(estimates, key=lambda e: (-e.n_hat, e.background))
    if len(big) < 2:
        return {}
    short = next((e for e in big[1:] if e.n_hat < rule.min_group_size), None)
    if short is None:
        return {}
    extra = int(rule.min_group_size - short.n_hat + 0.999)
    return dict(decision="undecided", needs_background=short.background, needs_n=extra,
                needs=f"collect ≈{extra} more photos of {short.class_name} on {short.background} "
                      f"(now ≈{short.n_hat:.0f}, by people's labels) to reach a group of {rule.min_group_size}")


def _empty(class_idx: int, class_name: str) -> dict:
    return dict(class_idx=class_idx, class_name=class_name, source="human", common=None, counter=None,
                n_common=None, n_counter=None, acc_common=None, acc_common_lo=None, acc_common_hi=None,
                acc_counter=None, acc_counter_lo=None, acc_counter_hi=None, drop=None, drop_lo=None,
                drop_hi=None, p_value=None, p_adjusted=None, decision="dropped", reason="no labels yet")


# -- when is a class settled -------------------------------------------------------------------------

OPEN, KEPT, NO_SHORTCUT, EXHAUSTED, OUT_OF_BUDGET = ("open", "settled: kept", "settled: dropped",
                                                     "settled: every photo labelled", "undecided within budget")
# Labels cannot decide the class: its groups, by people's labels, are too small; more photos could.
NEEDS_PHOTOS = "settled: needs more photos"


def uncertain_groups(row: dict, estimates: list[GroupEstimate], rule: Rule, min_labels: int) -> dict[str, str]:
    """Backgrounds of one class whose estimate could still change its pair or its significance → why.

    * a group that may be large enough but has too few labels to be measured, unless its interval
      already says it can be neither the counter nor the common;
    * a group that could swap places with the counter (or the common) by more than the rule's range:
      its interval reaches more than the range below the counter's accuracy, and the counter's reaches
      more than the range above its own (closer is a tie, which the oracle cannot tell apart either);
    * when the drop is above the range but not significant: the common and the counter themselves.
    """
    tol = rule.min_accuracy_range / 100
    by_bg = {e.background: e for e in estimates}
    out: dict[str, str] = {}
    eligible = [e for e in estimates if e.n_hat >= rule.min_group_size and e.n_labeled >= min_labels]
    common, counter = by_bg.get(row.get("common")), by_bg.get(row.get("counter"))
    for e in estimates:
        # Too few labels to measure, in a group that may be large enough: it matters when no pair is
        # known yet, or when it may turn out lower than the counter or higher than the common.
        if e.n_labeled < min_labels and e.n_hat >= 0.75 * rule.min_group_size and e not in (common, counter) and (
                counter is None or common is None or e.lo < counter.acc - tol or e.hi > common.acc + tol):
            out[e.background] = f"{e.n_labeled} labelled of ~{e.n_hat:.0f}"
    if counter is not None:
        for e in eligible:
            if e is not counter and e is not common and e.lo < counter.acc - tol and counter.hi > e.acc + tol:
                out.setdefault(e.background, f"may be below {counter.background}")
    if common is not None:
        for e in eligible:
            if e is not common and e is not counter and e.hi > common.acc + tol and common.lo < e.acc - tol and \
                    e.n_hat >= rule.min_common_share * sum(x.n_hat for x in eligible):
                out.setdefault(e.background, f"may be above {common.background}")
    if common is not None and counter is not None and row["decision"] != "kept" and \
            100 * (row["drop"] or 0) > rule.min_accuracy_range and \
            (row.get("drop_hi") is None or 100 * row["drop_hi"] > rule.min_accuracy_range):
        out.setdefault(common.background, "drop not significant yet")
        out.setdefault(counter.background, "drop not significant yet")
    return out


def class_state(row: dict, estimates: list[GroupEstimate], rule: Rule, min_labels: int,
                targetable: set[str], exhausted: bool, budget_left: bool) -> tuple[str, str]:
    """(state, why) for one class. ``targetable``: backgrounds still reachable by unlabelled photos."""
    if exhausted:
        return EXHAUSTED, f"every photo labelled; {row['decision']}"
    if not estimates:
        return (OPEN if budget_left else OUT_OF_BUDGET), "no labels yet"
    todo = {b: why for b, why in uncertain_groups(row, estimates, rule, min_labels).items() if b in targetable}
    if row["decision"] == "kept" and not todo:
        return KEPT, f"{row['common']} → {row['counter']} significant; no other group could change it"
    eligible = [e for e in estimates if e.n_hat >= rule.min_group_size and e.n_labeled >= min_labels]
    if row["decision"] == "undecided" and row.get("needs") and not todo:
        return NEEDS_PHOTOS, row["needs"]
    if row["decision"] != "kept" and not todo:
        if len(eligible) >= 2:
            spread = max(e.hi for e in eligible) - min(e.lo for e in eligible)
            if 100 * spread <= rule.min_accuracy_range:
                return NO_SHORTCUT, f"every group within {100 * spread:.1f} points: no drop above the range"
        return NO_SHORTCUT, f"dropped ({row['reason']}); no group left that could change it"
    why = "; ".join(f"{b}: {w}" for b, w in sorted(todo.items()))
    return (OPEN if budget_left else OUT_OF_BUDGET), why


def gain(photos_in_stratum: int, labelled: list[Photo], labels: dict[str, str], group: GroupEstimate,
         extra: int = 0) -> float:
    """Expected drop in the variance of ``group``'s accuracy from one more label in a stratum.

    A stratum's term in the linearised variance of a stratified ratio is N_h^2 s_h^2 / n_h (s_h^2: the
    variance of u = z (y - acc) / N_b over its labelled photos); one more label lowers it by about
    N_h^2 s_h^2 / (n_h (n_h + 1)). ``extra``: labels already planned there this round. A weak prior
    (half a photo at acc ± 0.5) keeps a stratum with no labels in that group worth a look.
    """
    n = len(labelled) + extra
    if group.n_hat <= 0:
        return 0.0
    u = [((labels.get(p.uid) == group.background) * (p.correct - group.acc)) / group.n_hat for p in labelled]
    mean = sum(u) / len(u) if u else 0.0
    ss = sum((x - mean) ** 2 for x in u) + 0.5 * (0.5 / group.n_hat) ** 2
    s2 = ss / max(1, len(labelled))
    return photos_in_stratum ** 2 * s2 / ((n + 1) * max(1, n))
