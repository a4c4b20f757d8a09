"""The active verification loop: which photos to label next, and where each class stands.

    population (every clean, scored photo, in strata) ─┐
    ledger (photos already sent)                       ├─▶ estimates ─▶ human pair ─▶ state per class
    verdicts (the last pull)                           ┘                             └▶ next batch

Strata per class: each model-assigned background; "unsure", the photos whose assignment is
least sure (the lowest ``annotation.unsure_share`` of the class's confidences), so a photo the
model misplaced can land in any group; and "flagged", the photos the clean stage flagged for
review (often not the class at all). Within a stratum photos are taken in a seeded random order, so the
labelled ones are a simple random sample and the estimate in annotation/estimate.py holds.

Round 0 (coverage) labels ``annotation.initial_per_stratum`` photos of every stratum. Each later
round gives every open class an equal share of ``annotation.round_size`` and spends it, one photo
at a time, on the stratum whose next label most lowers the variance of the groups that could
still change the pair (estimate.uncertain_groups). ``annotation.budget`` caps the photos sent.
A new round is planned only once the previous round's tasks are all resolved in a pull, so
pushing twice sends nothing twice, and a push cut short is finished by pushing again.
"""
from __future__ import annotations

import hashlib
import heapq
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

import schemas
from annotation import estimate
from annotation.estimate import OUT, GroupEstimate, Photo
from annotation.votes import BAD_FLAGS
from curation.config import RunConfig
from curation.propose import Rule

FLAGGED, UNSURE = "flagged", "unsure"


def order_key(seed: int, uid: str) -> str:
    return hashlib.sha1(f"{seed}:{uid}".encode()).hexdigest()


def population(run: Path, cfg: RunConfig) -> dict[int, dict[str, list[Photo]]]:
    """class_idx → stratum → photos, each stratum in its seeded labelling order."""
    run = Path(run)
    samples = {r["uid"]: r for r in schemas.read_folder(run / "samples", "samples")
               .select(["uid", "status", "flags"]).to_pylist()}
    groups = schemas.read_folder(run / "groups", "groups")
    groups = groups.filter(pc.not_equal(groups.column("method"), "human"))
    best: dict[str, dict] = {}
    for r in groups.select(["uid", "class_idx", "class_name", "background", "confidence"]).to_pylist():
        old = best.get(r["uid"])
        if old is None or (r["confidence"] or -1.0) > (old["confidence"] or -1.0):
            best[r["uid"]] = r
    scores = _scores(run, cfg.models[0].model_id)
    by_class: dict[int, list[dict]] = defaultdict(list)
    for uid, g in best.items():
        s = samples.get(uid)
        if s is None or s["status"] != "ok" or uid not in scores:
            continue
        by_class[g["class_idx"]].append(g)
    spec = cfg.annotation
    out: dict[int, dict[str, list[Photo]]] = {}
    for class_idx, rows in sorted(by_class.items()):
        rows.sort(key=lambda r: (r["confidence"] if r["confidence"] is not None else -1.0, r["uid"]))
        n_unsure = int(round(spec.unsure_share * len(rows)))
        strata: dict[str, list[Photo]] = defaultdict(list)
        for i, r in enumerate(rows):
            correct, p_true = scores[r["uid"]]
            if samples[r["uid"]].get("flags"):
                stratum = FLAGGED
            elif i < n_unsure or r["confidence"] is None:
                stratum = UNSURE
            else:
                stratum = r["background"]
            strata[stratum].append(Photo(r["uid"], class_idx, r["class_name"], stratum, r["background"],
                                         r["confidence"], correct, p_true))
        out[class_idx] = {h: sorted(ps, key=lambda p: order_key(spec.seed, p.uid)) for h, ps in sorted(strata.items())}
    return out


def _scores(run: Path, model_id: str) -> dict[str, tuple[bool, float]]:
    out = {}
    for path in sorted(p for p in (run / "scores").glob("*.parquet") if not p.name.startswith(".")):
        try:
            t = pq.read_table(path, columns=["uid", "model_id", "correct", "p_true"])
        except (OSError, ValueError) as exc:
            raise schemas.SchemaError(str(path), f"not a readable scores file ({exc})") from None
        t = t.filter(pc.equal(t.column("model_id"), model_id))
        for uid, ok, p in zip(*(t.column(c).to_pylist() for c in ("uid", "correct", "p_true"))):
            out[uid] = (bool(ok), float(p or 0.0))
    return out


def resolved_labels(verdict_rows: list[dict], vocabulary: list[str]) -> dict[str, str]:
    """uid → human background, or OUT (not the class, a problem flag, "other"); ties/pending left out."""
    out = {}
    for v in verdict_rows:
        if v["is_class"] is not None and v["is_class"] != "yes":
            out[v["uid"]] = OUT
        elif v["status"] != "verified":
            continue
        elif any(f in BAD_FLAGS for f in v["flags"] or []) or v["background"] not in vocabulary:
            out[v["uid"]] = OUT
        else:
            out[v["uid"]] = v["background"]
    return out


@dataclass
class ClassView:
    class_idx: int
    class_name: str
    photos: int
    tasks: int
    labeled: int
    estimates: list[GroupEstimate]
    row: dict
    state: str = estimate.OPEN
    why: str = ""
    targets: dict = field(default_factory=dict)    # background → why it still matters
    moved: int = 0            # labelled photos people put on another background than the model did


@dataclass
class LoopView:
    classes: dict[int, ClassView]
    sent: int
    budget: int | None
    outstanding: int          # tasks sent whose verdict is not resolved yet
    labels: dict[str, str]


def view(pop: dict[int, dict[str, list[Photo]]], ledger: list[dict], labels: dict[str, str],
         outstanding: set[str], cfg: RunConfig) -> LoopView:
    """Estimates, the human pair and the state of every class, from what is labelled so far."""
    rule = Rule.from_config(cfg.thresholds)
    spec = cfg.annotation
    sent_uids = {r["uid"] for r in ledger if r["status"] != "no_image"}
    estimates: list[GroupEstimate] = []
    per_class_est: dict[int, list[GroupEstimate]] = {}
    for class_idx, strata in pop.items():
        ests = estimate.estimate_class(strata, labels, rule.alpha)
        per_class_est[class_idx] = ests
        estimates.extend(ests)
    rows = {r["class_idx"]: r for r in estimate.human_pairs(estimates, rule, spec.min_group_labels,
                                                           cfg.models[0].model_id)}
    budget_left = spec.budget is None or len(sent_uids) < spec.budget
    classes = {}
    for class_idx, strata in pop.items():
        photos = [p for ps in strata.values() for p in ps]
        name = photos[0].class_name
        row = rows.get(class_idx) or dict(estimate._empty(class_idx, name))
        cv = ClassView(class_idx, name, len(photos), sum(p.uid in sent_uids for p in photos),
                       sum(p.uid in labels for p in photos), per_class_est[class_idx], row)
        cv.moved = sum(1 for p in photos if labels.get(p.uid, OUT) not in (OUT, p.model_background))
        reach = _reachable(strata, sent_uids, labels)
        exhausted = all(p.uid in sent_uids and p.uid not in outstanding for p in photos)
        cv.state, cv.why = estimate.class_state(row, cv.estimates, rule, spec.min_group_labels, reach,
                                                exhausted, budget_left)
        cv.targets = {b: w for b, w in estimate.uncertain_groups(row, cv.estimates, rule,
                                                                 spec.min_group_labels).items() if b in reach}
        classes[class_idx] = cv
    return LoopView(classes, len(sent_uids), spec.budget, len(outstanding & sent_uids), labels)


def _reachable(strata: dict[str, list[Photo]], sent: set[str], labels: dict[str, str]) -> set[str]:
    """Backgrounds that the photos not sent yet would still add about one photo or more to: per
    stratum, its unsent photos times the share of its labelled photos people put on the background
    (a half-photo prior for the stratum's own model background)."""
    expected: dict[str, float] = defaultdict(float)
    for h, photos in strata.items():
        left = sum(p.uid not in sent for p in photos)
        if not left:
            continue
        seen = [labels[p.uid] for p in photos if p.uid in labels]
        counts: dict[str, float] = defaultdict(float)
        for b in seen:
            if b != OUT:
                counts[b] += 1
        own = {p.model_background for p in photos if p.model_background}
        for b in own:
            counts[b] += 0.5
        for b, k in counts.items():
            expected[b] += left * k / (len(seen) + 0.5 * len(own))
    return {b for b, e in expected.items() if e >= 1.0}


def next_batch(pop: dict[int, dict[str, list[Photo]]], lv: LoopView, ledger: list[dict],
               cfg: RunConfig) -> list[tuple[Photo, str]]:
    """(photo, role) to send next: coverage first, then the open classes' most useful photos."""
    spec = cfg.annotation
    sent = {r["uid"] for r in ledger}
    room = None if spec.budget is None else max(0, spec.budget - len(sent))
    if room == 0:
        return []
    coverage = []
    for class_idx, strata in pop.items():
        for h, photos in strata.items():
            want = min(len(photos), spec.initial_per_stratum)
            have = sum(p.uid in sent for p in photos)
            fresh = [p for p in photos if p.uid not in sent][:max(0, want - have)]
            coverage.extend(fresh)
    if coverage:
        return [(p, "coverage") for p in _fit(coverage, room)]
    open_classes = [c for c in lv.classes.values() if c.state == estimate.OPEN and c.targets]
    if not open_classes:
        return []
    total = spec.round_size if room is None else min(spec.round_size, room)
    quota = max(1, total // len(open_classes))
    chosen: list[Photo] = []
    for cv in sorted(open_classes, key=lambda c: c.class_idx):
        chosen.extend(_spend(pop[cv.class_idx], cv, sent, lv.labels, quota))
    return [(p, "active") for p in _fit(chosen, room)]


def _fit(photos: list[Photo], room: int | None) -> list[Photo]:
    """At most ``room`` photos, spread over classes and strata in turn (so a cut budget stays stratified)."""
    if room is None or len(photos) <= room:
        return photos
    by_cell: dict[tuple, list[Photo]] = defaultdict(list)
    for p in photos:
        by_cell[(p.class_idx, p.stratum)].append(p)
    out, queues = [], [list(v) for _, v in sorted(by_cell.items())]
    while len(out) < room:
        for q in queues:
            if q and len(out) < room:
                out.append(q.pop(0))
    return out


def _spend(strata: dict[str, list[Photo]], cv: ClassView, sent: set[str], labels: dict[str, str],
           quota: int) -> list[Photo]:
    """Greedy: each photo of the quota goes to the stratum whose next label most lowers the variance of
    the class's uncertain groups (estimate.gain), recomputed as the stratum's count grows."""
    by_bg = {e.background: e for e in cv.estimates}
    targets = [by_bg[b] for b in cv.targets if b in by_bg]
    heap, state = [], {}
    for h, photos in strata.items():
        fresh = [p for p in photos if p.uid not in sent]
        if not fresh:
            continue
        state[h] = [fresh, 0]
        heapq.heappush(heap, (-_gain(photos, labels, targets, 0), h))
    out = []
    while heap and len(out) < quota:
        _, h = heapq.heappop(heap)
        fresh, taken = state[h]
        out.append(fresh[taken])
        state[h][1] = taken = taken + 1
        if taken < len(fresh):
            heapq.heappush(heap, (-_gain(strata[h], labels, targets, taken), h))
    return out


def _gain(photos: list[Photo], labels: dict[str, str], targets: list[GroupEstimate], extra: int) -> float:
    return sum(estimate.gain(photos, labels, t, extra) for t in targets)


def outstanding(ledger: list[dict], verdict_rows: list[dict], annotation_rows: list[dict], overlap: int,
                labels: dict[str, str]) -> set[str]:
    """Photos sent whose label is not settled yet: fewer than ``overlap`` answers (skips count) and no
    resolved verdict. A tie with every vote in is done (the photo is left out, as non-response)."""
    answers: dict[str, int] = defaultdict(int)
    for a in annotation_rows:
        answers[a["uid"]] += 1
    status = {v["uid"]: v["status"] for v in verdict_rows}
    return {r["uid"] for r in ledger if r["status"] == "pushed" and r["uid"] not in labels
            and status.get(r["uid"]) != "tie" and answers[r["uid"]] < overlap}


def load_state(run: Path, cfg: RunConfig, pop: dict[int, dict[str, list[Photo]]] | None = None,
               ledger: list[dict] | None = None) -> LoopView:
    """The loop's view from the files the last pull wrote (RUN/annotation/verdicts, annotations)."""
    from annotation import tasks as tasklib

    run = Path(run)
    pop = population(run, cfg) if pop is None else pop
    if ledger is None:
        path = tasklib.annotation_dir(run) / "tasks.parquet"
        ledger = schemas.read(path, "annotation_tasks").to_pylist() if path.exists() else []
    out = tasklib.annotation_dir(run)
    verdict_rows = schemas.read(out / "verdicts.parquet", "verdicts").to_pylist() \
        if (out / "verdicts.parquet").exists() else []
    annotation_rows = schemas.read(out / "annotations.parquet", "annotations").select(["uid"]).to_pylist() \
        if (out / "annotations.parquet").exists() else []
    labels = resolved_labels(verdict_rows, list(cfg.backgrounds))
    waiting = outstanding(ledger, verdict_rows, annotation_rows, cfg.annotation.min_votes or cfg.annotation.overlap,
                          labels)
    return view(pop, ledger, labels, waiting, cfg)
