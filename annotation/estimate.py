"""Human-side group accuracies from a stratified sample, the verified pair, and when a class is settled.

Plain functions over plain rows; nothing here talks to Label Studio.

Per class the clean photos are split into strata (annotation/loop.py): each model-assigned
background, the photos whose assignment is least sure, and the flagged photos. Each stratum is a
simple random sample without replacement (its photos are labelled in a seeded random order). A human
background b is a domain that cuts across strata; its accuracy is the model's top-1 on the photos
people put on b.

The model's correctness y is known on every photo (the score stage's); only where a photo belongs
needs a label. So each stratum is post-stratified by y: in the cell of its N_hy photos with
correctness y, the labelled ones give the share r_hyb on b, and

    right_b = sum_h N_h1 r_h1b,   wrong_b = sum_h N_h0 r_h0b,   acc_b = right_b / (right_b + wrong_b)

(a cell with no label yet borrows its stratum's shares). Five labels in a stratum of 30 that all say
"grass" thus give the accuracy of all 30 photos, not of the five. Two uncertainties remain: which
photo is where (the shares; labels remove it, ``sd_members``), and the group being a sample of
n_hat photos (no label removes that). Their sum sets the effective count n_eff; the rounded (n_eff,
acc * n_eff) are passed to `curation.propose.propose` as the group's counts, so intervals, tests and
the rule are the pipeline's own, and a fully labelled class gives exactly the unweighted counts.
The loop's stopping rule looks at ``sd_members`` only: it asks whether labelling every photo could
still change the pair.
"""
from __future__ import annotations

import dataclasses
import math
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
    n_eff: float        # effective count: acc's whole uncertainty, as a binomial's n
    mean_p: float       # weighted mean p(true class)
    lo: float
    hi: float
    model_n: int        # photos the model assigned to this background
    n_hat_hi: float = 0.0   # one-sided upper bound on n_hat (at the rule's alpha): a group estimated
                            # from a few labels may be larger than the size floor
    sd_members: float = 0.0  # the part of acc's uncertainty that labels remove (which photo is where)
    categories: int = 2      # where a labelled photo of the class can go: its backgrounds seen, and OUT
    class_photos: int = 0    # the class's photos in the pool, every stratum (what its size floor follows)


def estimate_class(pop: dict[str, list[Photo]], labels: dict[str, str], alpha: float = 0.05) -> list[GroupEstimate]:
    """Per human background of one class: the post-stratified estimate from the labelled photos.

    ``pop``: stratum → its photos. ``labels``: uid → human background, or OUT; photos without a
    resolved label (pending, tie) are non-response and left out of their cell's n.
    """
    model_n: dict[str, int] = defaultdict(int)
    n_label: dict[str, int] = defaultdict(int)
    cells: list[_Cell] = []
    cls = None
    for photos in pop.values():
        for p in photos:
            cls = cls or (p.class_idx, p.class_name)
            if p.model_background:
                model_n[p.model_background] += 1
            if labels.get(p.uid, OUT) != OUT:
                n_label[labels[p.uid]] += 1
        stratum_done = [p for p in photos if p.uid in labels]
        for y in (True, False):
            members = [p for p in photos if p.correct == y]
            if not members:
                continue
            done = [p for p in members if p.uid in labels]
            # A cell with no label yet borrows its stratum's shares (collapsed post-stratum).
            cells.append(_Cell(y, len(members), sum(p.p_true for p in members) / len(members),
                               _shares(done or stratum_done, labels), len(done or stratum_done)))
    backgrounds = sorted({b for c in cells for b in c.shares})
    categories = len(backgrounds) + 1        # and OUT
    z = stats.z_two_sided(2 * alpha)      # one-sided
    out = []
    for b in backgrounds:
        right = sum(c.N * c.shares.get(b, 0.0) for c in cells if c.y)
        wrong = sum(c.N * c.shares.get(b, 0.0) for c in cells if not c.y)
        n_hat = right + wrong
        if n_hat <= 0:
            continue
        var_right = sum(c.N * c.N * c.share_variance(b, categories) for c in cells if c.y)
        var_wrong = sum(c.N * c.N * c.share_variance(b, categories) for c in cells if not c.y)
        acc = right / n_hat
        # Linearised variance of right / (right + wrong), with the two sums independent.
        var_members = (wrong * wrong * var_right + right * right * var_wrong) / n_hat ** 4
        q = (right + 0.5) / (n_hat + 1)          # kept off 0 and 1, so 0 of 30 still has a variance
        n_eff = n_hat * q * (1 - q) / (q * (1 - q) + n_hat * var_members)
        lo, hi = stats.wilson(round(acc * n_eff), max(1, round(n_eff)), alpha)
        mean_p = sum(c.N * c.shares.get(b, 0.0) * c.mean_p for c in cells) / n_hat
        half = z * (var_right + var_wrong) ** 0.5
        out.append(GroupEstimate(cls[0], cls[1], b, n_label[b], n_hat, acc, n_eff, mean_p, lo, hi,
                                 model_n.get(b, 0), n_hat_hi=n_hat + half, sd_members=var_members ** 0.5,
                                 categories=categories, class_photos=sum(map(len, pop.values()))))
    return out


@dataclass(frozen=True)
class _Cell:
    """One stratum's photos the model got right (y) or wrong: how many, and where people put the
    labelled ones (shares of n labels)."""
    y: bool
    N: int
    mean_p: float
    shares: dict[str, float]
    n: int

    def share_variance(self, b: str, categories: int) -> float:
        """Variance of the share on ``b`` (without replacement), of the shrunk share (shrunk_share). A
        stratum without a single label yet is left out, as if it held none of the class's groups: that
        is the case only before round 0 is answered, or when only some strata are labelled on purpose
        (bench/annotate.py's "model's pair"), and counting its photos as wholly unknown would make
        every group unknown."""
        if self.n >= self.N or self.n == 0:
            return 0.0
        q = shrunk_share(self.shares.get(b, 0.0) * self.n, self.n, categories)
        return (1 - self.n / self.N) * q * (1 - q) / self.n


def shrunk_share(k: float, n: int, categories: int) -> float:
    """A cell's share on one background, k of n labels, under a Dirichlet prior of one photo's weight
    spread evenly over the categories (Perks): 5 of 5 on a background still leaves room for the
    others, and 0 of 20 leaves a little, without the half photo per background a Jeffreys prior would
    put into every big stratum."""
    return (k + 1 / categories) / (n + 1)


def _shares(done: list[Photo], labels: dict[str, str]) -> dict[str, float]:
    out: dict[str, float] = defaultdict(float)
    for p in done:
        if labels[p.uid] != OUT:
            out[labels[p.uid]] += 1 / len(done)
    return dict(out)


def _as_count(e: GroupEstimate, n: float, acc: float) -> GroupCount:
    n = max(1, round(n))
    return GroupCount(e.class_idx, e.class_name, e.background, n, round(acc * n), e.mean_p * n)


def class_rule(rule: Rule, estimates: list[GroupEstimate]) -> Rule:
    """The rule with one class's floor fixed: the floor of its photos in the pool, as the model's
    side counts them (photos people put out of every group still count in the class's size)."""
    return rule.fixed(rule.floor(max((e.class_photos for e in estimates), default=0)))


def group_counts(estimates: list[GroupEstimate], rule: Rule, min_labels: int) -> list[GroupCount]:
    """Effective counts of the groups that may form a pair: enough photos in the pool (the class's
    floor), enough labelled."""
    by_class: dict[int, list[GroupEstimate]] = defaultdict(list)
    for e in estimates:
        by_class[e.class_idx].append(e)
    floors = {c: class_rule(rule, es).min_group_size for c, es in by_class.items()}
    return [_as_count(e, e.n_eff, e.acc) for e in estimates
            if e.n_hat >= floors[e.class_idx] and e.n_labeled >= min_labels]


def human_pairs(estimates: list[GroupEstimate], rule: Rule, min_labels: int, model_id: str | None) -> list[dict]:
    """One proposals row per class (source 'human') from the weighted estimates, via curation.propose.

    The pool-size threshold is applied here to the estimated group sizes; propose() then sees
    effective counts only, so its own size floor is lowered to 1.
    """
    counts = group_counts(estimates, rule, min_labels)
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
            floor = class_rule(rule, mine).min_group_size
            rows.append(dict(_empty(e.class_idx, e.class_name), model_id=model_id,
                             reason=f"fewer than two background groups with ≥ {floor} photos "
                                    f"(estimated) and ≥ {min_labels} labelled", **_too_small(mine, rule)))
    return sorted(rows, key=lambda r: r["class_idx"])


def _too_small(estimates: list[GroupEstimate], rule: Rule) -> dict:
    """A class whose people-labelled groups are all but one too small is a finding, not a silence
    (as propose says for the model's groups): undecided, with the photos the next-largest group lacks."""
    rule = class_rule(rule, estimates)
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


# A group still matters while the chance that it sits on the other side of the counter (or the
# common) by more than the rule's range, once every photo is labelled, is above this. Chosen on the
# tuning worlds (bench/annotate.py verify --tuning, and the four of --worlds' default): 0.25, 0.3,
# 0.35 and 0.4 tried; 0.35 kept the most oracle pairs there with the fewest labels.
SWAP_CHANCE = 0.35


def _below(a: GroupEstimate, b: GroupEstimate, margin: float) -> float:
    """P(a's accuracy < b's − margin) once every photo is labelled: only the uncertainty labels can
    remove (which photos are on which background) counts, normal on both sides."""
    sd = (a.sd_members ** 2 + b.sd_members ** 2) ** 0.5
    gap = b.acc - margin - a.acc
    if sd == 0:
        return float(gap > 0)
    return float(_norm_cdf(gap / sd))


def _norm_cdf(x: float) -> float:
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def uncertain_groups(row: dict, estimates: list[GroupEstimate], rule: Rule, min_labels: int) -> dict[str, str]:
    """Backgrounds of one class whose estimate could still change its pair or its significance → why.

    Each comparison is the chance that the two groups swap by more than the rule's range once every
    photo is labelled (from their membership doubt, ``sd_members``: what labels can still change), not
    a point estimate against an interval, which can never fire against a counter at 0% or a common
    at 100%. A group counts as possibly large enough while its estimated size's upper bound reaches
    the rule's floor.

    * a group that may be large enough but has too few labels to be measured, unless it can
      already be neither below the counter nor above the common;
    * a group that may lie below the counter (or above the common) by more than the rule's range
      with a chance above SWAP_CHANCE (closer is a tie, which the oracle cannot tell apart either);
    * when the drop is above the range but not significant: the common and the counter themselves.
    """
    rule = class_rule(rule, estimates)
    tol = rule.min_accuracy_range / 100
    by_bg = {e.background: e for e in estimates}
    out: dict[str, str] = {}
    common, counter = by_bg.get(row.get("common")), by_bg.get(row.get("counter"))
    total = sum(e.n_hat for e in estimates if e.n_hat >= rule.min_group_size)
    for e in estimates:
        if e is common or e is counter or e.n_hat_hi < rule.min_group_size:
            continue
        below = counter is not None and _below(e, counter, tol) > SWAP_CHANCE
        above = common is not None and e.n_hat_hi >= rule.min_common_share * total and \
            _below(common, e, tol) > SWAP_CHANCE
        if e.n_labeled < min_labels and (counter is None or common is None or below or above):
            out[e.background] = f"{e.n_labeled} labelled of ~{e.n_hat:.0f}"
        elif below:
            out[e.background] = f"may be below {counter.background}"
        elif above:
            out[e.background] = f"may be above {common.background}"
    if common is not None and counter is not None and row["decision"] != "kept" and \
            100 * (row["drop"] or 0) > rule.min_accuracy_range and \
            (row.get("drop_hi") is None or 100 * row["drop_hi"] > rule.min_accuracy_range) and \
            _labels_could_keep(row, estimates, rule):
        out.setdefault(common.background, "drop not significant yet")
        out.setdefault(counter.background, "drop not significant yet")
    return out


def _labels_could_keep(row: dict, estimates: list[GroupEstimate], rule: Rule) -> bool:
    """Whether labelling every photo could still make the class's drop significant. Labels remove only
    the doubt about which photo is on which background; the groups' sizes bound the test. So: the
    class's groups at their estimated sizes with every photo counted, the common and the counter
    one membership s.d. further apart, through the rule (one class, so no correction across classes:
    an optimistic bound, which errs on labelling more)."""
    rule = class_rule(rule, estimates)
    counts = []
    for e in estimates:
        if e.n_hat < rule.min_group_size:
            continue
        acc = e.acc
        if e.background == row["common"]:
            acc = min(1.0, acc + e.sd_members)
        elif e.background == row["counter"]:
            acc = max(0.0, acc - e.sd_members)
        counts.append(_as_count(e, e.n_hat, acc))
    if len(counts) < 2:
        return True
    (best,) = propose(counts, dataclasses.replace(rule, min_group_size=1), source="human")
    return best["decision"] == "kept"


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
    floor = class_rule(rule, estimates).min_group_size
    eligible = [e for e in estimates if e.n_hat >= floor and e.n_labeled >= min_labels]
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


def gain(photos: list[Photo], labels: dict[str, str], group: GroupEstimate, extra: int = 0) -> float:
    """Expected drop in the variance of ``group``'s accuracy from one more label in a stratum.

    The stratum's part of that variance is, per cell (the photos the model got right, and wrong),
    (c N_y)^2 q (1 - q) / n_y: c the ratio's derivative (wrong / N_b^2 for the right cell, right /
    N_b^2 for the wrong one), q the cell's shrunk share on the group's background, n_y its labels.
    One more label adds N_y / N_h of a label to each cell. ``extra``: labels already planned in the
    stratum this round.
    """
    if group.n_hat <= 0:
        return 0.0
    right = group.acc * group.n_hat
    wrong = group.n_hat - right
    total = 0.0
    for y, c in ((True, wrong), (False, right)):
        members = [p for p in photos if p.correct == y]
        if not members:
            continue
        done = [p for p in members if p.uid in labels]
        n = len(done) + extra * len(members) / len(photos)
        k = sum(labels[p.uid] == group.background for p in done)
        q = shrunk_share(k, len(done), group.categories)
        coef = (c * len(members) / group.n_hat ** 2) ** 2 * q * (1 - q)
        step = len(members) / len(photos)
        total += coef * (1 / max(n, 0.5) - 1 / (max(n, 0.5) + step))
    return total
