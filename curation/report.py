"""RUN/report/index.html: one self-contained page that says what a run found and what it lost.

Two steps, both plain functions: ``gather`` reads whatever artifacts the run has (every one but
the config is optional; absent ones are listed, not guessed), and ``render`` turns that into HTML
with inline CSS, inline SVG charts and base64 thumbnails, so the page opens anywhere offline.
``write`` does both and puts the page in place atomically.
"""
from __future__ import annotations

import datetime as _dt
import html
import json
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

import schemas
from curation import atomic, config, report_charts
from curation.errors import UserError

THUMBS_PER_SIDE = 12
TOP_REASONS = 5


# -- gather ------------------------------------------------------------------------------------

@dataclass
class RunData:
    run: Path
    config: config.RunConfig
    manifest: dict
    candidates: pa.Table | None = None
    source_rejects: pa.Table | None = None
    samples: pa.Table | None = None
    scores: pa.Table | None = None
    groups: pa.Table | None = None
    proposals: pa.Table | None = None
    group_stats: pa.Table | None = None
    attributes: pa.Table | None = None
    verdicts: pa.Table | None = None
    truth: dict[str, str] | None = None          # uid -> true background
    truth_source: str | None = None
    missing: list[tuple[str, str]] = field(default_factory=list)   # (artifact, what makes it)


# (attribute, path under RUN, schema, folder?, what writes it)
_ARTIFACTS = [
    ("candidates", "candidates", "candidates", True, "the sources stage of `counteranimal curate`"),
    ("source_rejects", "candidates_rejected.parquet", "source_rejects", False, "the sources stage"),
    ("samples", "samples", "samples", True, "the fetch and clean stages"),
    ("scores", "scores", "scores", True, "the score stage"),
    ("groups", "groups", "groups", True, "the backgrounds stage"),
    ("proposals", "proposals.parquet", "proposals", False, "the propose stage"),
    ("group_stats", "group_stats.parquet", "group_stats", False, "the propose stage"),
    ("attributes", "attributes.parquet", "attribute_deltas", False, "the propose stage"),
    ("verdicts", "annotation/verdicts.parquet", "verdicts", False, "`counteranimal annotate pull` (human review)"),
]
_SCORE_COLUMNS = ["uid", "model_id", "class_idx", "correct", "p_true", "top1_name", "background"]


def gather(run: str | Path, truth: str | Path | None = None) -> RunData:
    """Read the run's artifacts; only config.yaml is required."""
    run = Path(run)
    data = RunData(run=run, config=config.load(run), manifest=_read_manifest(run / "manifest.json"))
    for attr, rel, name, is_folder, maker in _ARTIFACTS:
        path = run / rel
        present = any(path.glob("*.parquet")) if is_folder else path.exists()
        if not present:
            data.missing.append((f"{rel}{'/' if is_folder else ''}", maker))
            continue
        table = schemas.read_folder(path, name) if is_folder else schemas.read(path, name)
        if attr == "scores":   # embeddings are large and not needed here
            table = table.select(_SCORE_COLUMNS)
        setattr(data, attr, table)
    truth_path = Path(truth) if truth else run / "truth.parquet"
    if truth_path.exists():
        data.truth = _truth_by_uid(_read_plain(truth_path, ["uid", "background"]), data.candidates)
        data.truth_source = str(truth_path)
    elif truth:
        raise UserError("ground-truth file not found", where=str(truth_path))
    return data


def _truth_by_uid(table: pa.Table, candidates: pa.Table | None) -> dict[str, str]:
    """uid -> true background. Keys may be the run's uids or the candidates' source ids (the planted
    world's ground_truth.parquet is keyed by the id its URL list carries)."""
    pairs = zip(table.column("uid").to_pylist(), table.column("background").to_pylist())
    if candidates is None:
        return {u: b for u, b in pairs if b}
    uids = set(candidates.column("uid").to_pylist())
    by_source = dict(zip(candidates.column("source_id").to_pylist(), candidates.column("uid").to_pylist()))
    return {(u if u in uids else by_source.get(u, u)): b for u, b in pairs if b}


def _read_manifest(path: Path) -> dict:
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"not valid JSON (line {exc.lineno}: {exc.msg})", where=str(path)) from None


def _read_plain(path: Path, required: list[str]) -> pa.Table:
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise UserError(f"not a readable parquet file ({exc})", where=str(path)) from None
    lacking = [c for c in required if c not in table.column_names]
    if lacking:
        raise UserError(f"missing column(s) {', '.join(lacking)} (have: {', '.join(table.column_names)})",
                        where=str(path))
    return table


# -- the views the page is made of ----------------------------------------------------------------

@dataclass(frozen=True)
class View:
    """Which proposals the page leads with: one model (or 'all', the consensus) and one label source."""
    model_id: str
    source: str              # model | human

    def __str__(self) -> str:
        return f"{self.model_id} ({self.source} labels)"

    def reference_model(self, data: RunData) -> str:
        """The single model whose scores and accuracies illustrate this view."""
        return self.model_id if self.model_id != "all" else data.config.models[0].model_id


def primary_proposals(data: RunData) -> tuple[list[dict], list[dict], View | None]:
    """(rows shown in the main table, kept first; the other rows; which view they are).

    Model rows lead (they cover every class; human rows, where present, are shown beside them);
    the cross-model consensus ('all') wins over a single model; otherwise the config's first model.
    """
    if data.proposals is None or data.proposals.num_rows == 0:
        return [], [], None
    rows = data.proposals.to_pylist()
    source = "model" if any(r["source"] == "model" for r in rows) else "human"
    models = [r["model_id"] for r in rows if r["source"] == source]
    configured = [m.model_id for m in data.config.models]
    model = "all" if "all" in models else next((m for m in configured if m in models), models[0])
    main = [r for r in rows if r["source"] == source and r["model_id"] == model]
    main.sort(key=lambda r: (r["decision"] != "kept", -(r["drop"] if r["drop"] is not None else -9), r["class_name"]))
    others = [r for r in rows if not (r["source"] == source and r["model_id"] == model)]
    return main, others, View(model or "", source)


def assigned_backgrounds(data: RunData) -> dict[str, tuple[int, str, str]]:
    """uid -> (class_idx, class_name, background) as grouped; a human's label wins over the model's."""
    out: dict[str, tuple[int, str, str]] = {}
    if data.groups is None:
        return out
    for r in data.groups.select(["uid", "class_idx", "class_name", "background", "method"]).to_pylist():
        if r["uid"] not in out or r["method"] == "human":
            out[r["uid"]] = (r["class_idx"], r["class_name"], r["background"])
    return out


def model_backgrounds(data: RunData) -> dict[str, str]:
    """uid -> the background the pipeline assigned before any human looked (for the confusion)."""
    out: dict[str, str] = {}
    if data.groups is None:
        return out
    for r in data.groups.select(["uid", "background", "method", "zero_shot"]).to_pylist():
        if r["method"] != "human":
            out.setdefault(r["uid"], r["background"])
        elif r["zero_shot"]:
            out.setdefault(r["uid"], r["zero_shot"])
    return out


def human_backgrounds(data: RunData) -> dict[str, str]:
    out: dict[str, str] = {}
    if data.groups is not None:
        for r in data.groups.select(["uid", "background", "method"]).to_pylist():
            if r["method"] == "human":
                out[r["uid"]] = r["background"]
    if data.verdicts is not None:
        for r in data.verdicts.select(["uid", "background", "status"]).to_pylist():
            if r["status"] == "verified" and r["background"]:
                out.setdefault(r["uid"], r["background"])
    return out


@dataclass
class Step:
    name: str
    count: int | None                     # None: the stage has not run
    lost: int = 0                         # lost on the way into this step
    reasons: list[tuple[str, int]] = field(default_factory=list)
    note: str = ""


def funnel(data: RunData, kept_rows: list[dict]) -> list[Step]:
    """candidates → fetched → clean → grouped → proposed → verified, with what each step lost and why."""
    steps: list[Step] = []
    if data.candidates is None:
        steps.append(Step("candidates", None, note="no candidates yet"))
    else:
        rejects = Counter(data.source_rejects.column("reason").to_pylist()) if data.source_rejects is not None else {}
        steps.append(Step("candidates", data.candidates.num_rows, sum(rejects.values()), _top(rejects),
                          "input rows that became photos to fetch"))
    samples = data.samples.select(["uid", "status", "reason", "flags"]).to_pylist() if data.samples is not None else None
    if samples is None:
        steps += [Step("fetched", None), Step("clean", None)]
    else:
        failed = Counter(r["reason"] or "unknown" for r in samples if r["status"] == "failed")
        have = {r["uid"] for r in samples}
        unfetched = sum(1 for u in data.candidates.column("uid").to_pylist() if u not in have) \
            if data.candidates is not None else 0
        if unfetched:
            failed["not fetched yet"] += unfetched
        steps.append(Step("fetched", sum(r["status"] != "failed" for r in samples), sum(failed.values()),
                          _top(failed), "downloaded and stored in a shard"))
        rejected = Counter(r["reason"] or "unknown" for r in samples if r["status"] == "rejected")
        flags = Counter(f for r in samples if r["status"] == "ok" for f in (r["flags"] or []))
        note = "decodable, big enough, not a duplicate"
        if flags:   # kept, but marked for a human to check (the paper's manual cleaning rules)
            note += "; flagged for review: " + ", ".join(f"{k} {v}" for k, v in flags.most_common())
        steps.append(Step("clean", sum(r["status"] == "ok" for r in samples), sum(rejected.values()),
                          _top(rejected), note))
    clean = {r["uid"] for r in samples if r["status"] == "ok"} if samples is not None else None
    assigned = assigned_backgrounds(data)
    if data.groups is None:
        steps.append(Step("grouped", None))
    else:
        grouped = set(assigned) if clean is None else set(assigned) & clean
        lost = Counter({"no background assigned": len(clean - grouped)}) if clean is not None else Counter()
        flags = Counter(f for f in data.groups.column("flag").to_pylist() if f)
        note = "one background per clean photo"
        if flags:
            note += "; flagged: " + ", ".join(f"{k} {v}" for k, v in flags.most_common())
        steps.append(Step("grouped", len(grouped), sum(lost.values()), _top(lost), note))
    proposed: set[str] = set()
    if data.proposals is None or data.groups is None:
        steps.append(Step("proposed", None))
    else:
        pairs = {r["class_idx"]: (r["common"], r["counter"]) for r in kept_rows}
        why_dropped = {r["class_idx"]: _reason_kind(r["reason"]) for r in primary_proposals(data)[0]
                       if r["decision"] != "kept"}
        lost = Counter()
        for uid, (class_idx, _, bg) in assigned.items():
            if clean is not None and uid not in clean:
                continue
            if class_idx in pairs and bg in pairs[class_idx]:
                proposed.add(uid)
            elif class_idx in pairs:
                lost["background neither common nor counter"] += 1
            else:
                lost[f"class dropped: {why_dropped.get(class_idx, 'no proposal row')}"] += 1
        steps.append(Step("proposed", len(proposed), sum(lost.values()), _top(lost),
                          f"photos in the common or counter group of {len(pairs)} kept class(es)"))
    steps.append(_verified_step(data, proposed))
    return steps


def _verified_step(data: RunData, proposed: set[str]) -> Step:
    """Proposed photos that annotators confirmed: enough votes, the class, a background, no problem flag."""
    human_grouped = {r["uid"] for r in data.groups.select(["uid", "method"]).to_pylist()
                     if r["method"] == "human"} if data.groups is not None else set()
    if data.verdicts is None and not human_grouped:
        return Step("verified", None)
    outcome: dict[str, str | None] = {u: None for u in human_grouped}     # None = verified
    for v in (data.verdicts.to_pylist() if data.verdicts is not None else []):
        if v["uid"] in human_grouped:
            continue
        if v["status"] != "verified":
            outcome[v["uid"]] = {"pending": "too few votes yet", "tie": "annotators split (tie)"}.get(
                v["status"], v["status"])
        elif v["is_class"] != "yes":
            outcome[v["uid"]] = f"not the class (annotators: {v['is_class']})"
        elif v["flags"]:
            outcome[v["uid"]] = "flagged: " + ", ".join(v["flags"])
        elif v["background"] not in data.config.backgrounds:
            outcome[v["uid"]] = "background outside the vocabulary"
        else:
            outcome[v["uid"]] = None
    universe = proposed or set(outcome)
    lost = Counter(outcome[u] if u in outcome else "awaiting human review" for u in universe)
    verified = lost.pop(None, 0)
    return Step("verified", verified, sum(lost.values()), _top(lost), "confirmed by annotators in Label Studio")


def _top(counter) -> list[tuple[str, int]]:
    items = sorted(((k, v) for k, v in dict(counter).items() if v), key=lambda kv: (-kv[1], kv[0]))
    if len(items) > TOP_REASONS:
        rest = sum(v for _, v in items[TOP_REASONS - 1:])
        items = items[:TOP_REASONS - 1] + [(f"{len(items) - TOP_REASONS + 1} other reasons", rest)]
    return items


def _reason_kind(reason: str) -> str:
    """A proposal's reason in a few words, to tally why classes were dropped."""
    for pattern, kind in [(r"not significant", "drop not significant"), (r"range .*≤", "accuracy range too small"),
                          (r"fewer than two", "too few background groups"), (r"disagree", "models disagree")]:
        if re.search(pattern, reason or ""):
            return kind
    return (reason or "no reason given")[:40]


def confusion(assigned: dict[str, str], truth: dict[str, str], order: list[str]) -> tuple[list[str], dict, int]:
    """(labels, {(true, assigned): n}, photos compared) over the photos both know."""
    cells: dict[tuple[str, str], int] = defaultdict(int)
    n = 0
    for uid, true_bg in truth.items():
        if uid in assigned:
            cells[(true_bg, assigned[uid])] += 1
            n += 1
    seen = {t for t, _ in cells} | {a for _, a in cells}
    labels = [b for b in order if b in seen] + sorted(seen - set(order))
    return labels, dict(cells), n


# -- render ------------------------------------------------------------------------------------

def render(data: RunData, per_side: int = THUMBS_PER_SIDE, now: str | None = None) -> str:
    main, others, view = primary_proposals(data)
    kept = [r for r in main if r["decision"] == "kept"]
    steps = funnel(data, kept)
    now = now or _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    cfg = data.config
    parts = [
        f"<header><h1>{_e(cfg.name)} <span class=muted>— curation report</span></h1>"
        f"<p class=muted>Run <code>{_e(data.run.resolve())}</code> · generated {_e(now)}</p></header>",
        _summary(data, main, kept, steps),
        _missing(data),
        _section("funnel", "Funnel: where the photos went", _funnel_html(steps)),
    ]
    if main:
        parts.append(_section("pairs", f"Proposed pairs <span class=muted>· {_e(view)}</span>",
                              _pairs_html(main, others, view, cfg)))
    if data.group_stats is not None and data.group_stats.num_rows:
        parts.append(_section("accuracy", "Accuracy per class and background", _heatmap_html(data, main, view)))
    if kept:
        parts.append(_section("grids", "Kept pairs: common and counter photos", _grids_html(data, kept, view,
                                                                                             per_side)))
    if data.attributes is not None and data.attributes.num_rows:
        parts.append(_section("attributes", "What the model leans on: δ per attribute", _attributes_html(data, main, view)))
    parts.append(_section("confusion", "Background assignment", _confusion_html(data)))
    parts.append(_section("settings", "Settings", _settings_html(data)))
    body = "\n".join(p for p in parts if p)
    return (f"<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
            f"<meta name=viewport content='width=device-width, initial-scale=1'>"
            f"<title>{_e(cfg.name)} — counteranimal report</title><style>{_CSS}</style></head>"
            f"<body><main>{body}</main><footer class=muted>counteranimal report · one self-contained file; "
            f"nothing is loaded from the network.</footer></body></html>\n")


def write(run: str | Path, truth: str | Path | None = None, per_side: int = THUMBS_PER_SIDE) -> Path:
    """Gather, render and atomically write RUN/report/index.html; returns its path."""
    data = gather(run, truth)
    path = Path(run) / "report" / "index.html"
    atomic.write_text(path, render(data, per_side))
    return path


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _pct(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f}"


def _code(text: str) -> str:
    """Escape ``text``, showing `backticked` parts as code."""
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", _e(text))


def _section(anchor: str, title: str, inner: str) -> str:
    return f"<section id={anchor}><h2>{title}</h2>{inner}</section>"


def _summary(data: RunData, main: list[dict], kept: list[dict], steps: list[Step]) -> str:
    counts = {s.name: s.count for s in steps}
    cards = [("classes", f"{len(data.config.classes)}", f"{len(data.config.backgrounds)} backgrounds"),
             ("clean photos", _n(counts.get("clean")),
              f"of {counts['candidates']:,} candidates" if counts.get("candidates") is not None else "no candidates table")]
    if main:
        cards.append(("kept pairs", f"{len(kept)}", f"of {len(main)} classes proposed"))
    measured = [r for r in kept if r["acc_common"] is not None and r["acc_counter"] is not None]
    if measured:   # the paper's headline numbers: mean of per-class accuracies
        common = sum(r["acc_common"] for r in measured) / len(measured)
        counter = sum(r["acc_counter"] for r in measured) / len(measured)
        cards.append(("class-balanced accuracy", f"{_pct(common)} → {_pct(counter)}",
                      f"common → counter, drop {_pct(common - counter)} points"))
    html_cards = "".join(f"<div class=card><div class=label>{_e(a)}</div><div class=big>{_e(b)}</div>"
                         f"<div class=muted>{_e(c)}</div></div>" for a, b, c in cards)
    return f"<div class=cards>{html_cards}</div>"


def _n(x: int | None) -> str:
    return "–" if x is None else f"{x:,}"


def _missing(data: RunData) -> str:
    if not data.missing:
        return ""
    items = "".join(f"<li><code>{_e(a)}</code> — made by {_code(m)}</li>" for a, m in data.missing)
    return (f"<aside class=missing id=missing><strong>Not in this run yet</strong> (the sections that need these "
            f"are left out):<ul>{items}</ul></aside>")


def _funnel_html(steps: list[Step]) -> str:
    top = max((s.count for s in steps if s.count), default=1)
    rows = []
    for s in steps:
        if s.count is None:
            rows.append(f"<tr class=absent><th>{_e(s.name)}</th><td colspan=3 class=muted>stage not run yet</td></tr>")
            continue
        width = 100 * s.count / top if top else 0
        reasons = "".join(f"<li>{_e(r)} <b>{v:,}</b></li>" for r, v in s.reasons)
        lost = (f"<span class=lost>−{s.lost:,}</span><ul class=reasons>{reasons}</ul>" if s.lost
                else "<span class=muted>none lost</span>")
        rows.append(f"<tr><th>{_e(s.name)}</th><td class=num>{s.count:,}</td>"
                    f"<td class=barcell><div class=fbar style='width:{width:.1f}%'></div>"
                    f"<div class=muted small>{_e(s.note)}</div></td><td>{lost}</td></tr>")
    return (f"<table class=funnel><thead><tr><th>step</th><th class=num>photos</th><th></th>"
            f"<th>lost on the way in, top reasons</th></tr></thead><tbody>{''.join(rows)}</tbody></table>")


def _pairs_html(main: list[dict], others: list[dict], view: View, cfg) -> str:
    t = cfg.thresholds
    rule = (f"Rule <b>{_e(t.rule)}</b>: range &gt; {t.min_accuracy_range:g} points"
            + ("" if t.rule == "paper" else
               f", groups ≥ {t.group_size()} photos, common ≥ {100 * t.min_common_share:g}% of the class, "
               f"drop significant at α = {t.alpha:g} ({_e(t.correction)} correction)") + ".")
    chart = report_charts.drop_chart(main, t.min_accuracy_range)
    table = _proposal_table(main)
    extra = ""
    human = [r for r in others if r["source"] == "human" and r["model_id"] == view.model_id]
    if human and view.source == "model":   # the same rule on the photos annotators verified
        human.sort(key=lambda r: (r["decision"] != "kept", -(r["drop"] if r["drop"] is not None else -9)))
        others = [r for r in others if r not in human]
        extra += (f"<h3>After human review <span class=muted>· {_e(view.model_id)} on human-verified "
                  f"backgrounds</span></h3>{_proposal_table(human, table_class='pairs human')}")
    if others:
        extra += (f"<details><summary>{len(others)} more rows (other models or label sources)</summary>"
                 f"{_proposal_table(others, show_model=True)}</details>")
    return f"<p class=muted>{rule} Intervals are 95% (Wilson; Newcombe for the drop).</p>{chart}{table}{extra}"


def _proposal_table(rows: list[dict], show_model: bool = False, table_class: str = "pairs") -> str:
    head = ("<tr>" + ("<th>model</th><th>source</th>" if show_model else "") +
            "<th>class</th><th>common</th><th>counter</th><th class=num>n</th><th class=num>acc common</th>"
            "<th class=num>acc counter</th><th class=num>drop</th><th class=num>p adj.</th><th>decision</th>"
            "<th>reason</th></tr>")
    body = []
    for r in rows:
        n = "–" if r["n_common"] is None else f"{r['n_common']} / {r['n_counter']}"
        pv = "–" if r["p_adjusted"] is None else f"{r['p_adjusted']:.2g}"
        model = f"<td>{_e(r['model_id'])}</td><td>{_e(r['source'])}</td>" if show_model else ""
        body.append(
            f"<tr class='{_e(r['decision'])}' data-class='{_e(r['class_name'])}'>{model}"
            f"<td><b>{_e(r['class_name'])}</b></td><td>{_e(r['common'] or '–')}</td><td>{_e(r['counter'] or '–')}</td>"
            f"<td class=num>{n}</td><td class=num>{_ci(r['acc_common'], r['acc_common_lo'], r['acc_common_hi'])}</td>"
            f"<td class=num>{_ci(r['acc_counter'], r['acc_counter_lo'], r['acc_counter_hi'])}</td>"
            f"<td class=num><b>{_ci(r['drop'], r['drop_lo'], r['drop_hi'])}</b></td><td class=num>{pv}</td>"
            f"<td><span class='pill {_e(r['decision'])}'>{_e(r['decision'])}</span></td>"
            f"<td class=reason>{_e(r['reason'])}</td></tr>")
    return f"<table class='{table_class}'><thead>{head}</thead><tbody>{''.join(body)}</tbody></table>"


def _ci(x, lo, hi) -> str:
    if x is None:
        return "–"
    ci = "" if lo is None else f" <span class=ci>[{_pct(lo, 0)}, {_pct(hi, 0)}]</span>"
    return f"{_pct(x)}{ci}"


def _heatmap_html(data: RunData, main: list[dict], view: View | None) -> str:
    rows = data.group_stats.to_pylist()
    model = view.reference_model(data) if view else data.config.models[0].model_id
    source = view.source if view else "model"
    metric = "top1" if any(r["metric"] == "top1" for r in rows) else rows[0]["metric"]
    pick = [r for r in rows if r["model_id"] == model and r["metric"] == metric and r["source"] == source] or \
        [r for r in rows if r["model_id"] == rows[0]["model_id"] and r["metric"] == metric]
    shown = pick[0]["model_id"] if pick else model
    cells = {(r["class_name"], r["background"]): r for r in pick}
    order = [b for b in data.config.backgrounds if any(bg == b for _, bg in cells)]
    order += sorted({bg for _, bg in cells} - set(order))
    classes = [r["class_name"] for r in main if any(c == r["class_name"] for c, _ in cells)]
    classes += sorted({c for c, _ in cells} - set(classes))
    pairs = {r["class_name"]: (r["common"], r["counter"]) for r in main if r["decision"] == "kept"}
    head = "".join(f"<th class=rot><div>{_e(b)}</div></th>" for b in order)
    body = []
    for c in classes:
        tds = []
        for b in order:
            r = cells.get((c, b))
            if r is None:
                tds.append("<td class=empty></td>")
                continue
            mark = ""
            if c in pairs and b == pairs[c][0]:
                mark = " common"
            elif c in pairs and b == pairs[c][1]:
                mark = " counter"
            tds.append(f"<td class='heat{mark}' style='background:{report_charts.heat_colour(r['acc'])}' "
                       f"title='{_e(c)} on {_e(b)}: {r['k']}/{r['n']} correct, 95% CI "
                       f"[{_pct(r['acc_lo'])}, {_pct(r['acc_hi'])}]'>{_pct(r['acc'], 0)}"
                       f"<small>n={r['n']}</small></td>")
        body.append(f"<tr><th>{_e(c)}</th>{''.join(tds)}</tr>")
    return (f"<p class=muted>Accuracy (%) of <code>{_e(shown)}</code> ({_e(metric)}) on each background group; "
            f"n = photos. Outlined: <span class='key common'>common</span> and <span class='key counter'>counter"
            f"</span> of kept pairs. Hover a cell for its interval.</p>"
            f"<div class=scroll><table class=heatmap><thead><tr><th></th>{head}</tr></thead>"
            f"<tbody>{''.join(body)}</tbody></table></div>")


def _attributes_html(data: RunData, main: list[dict], view: View | None, shown: int = 2) -> str:
    """Seed 2's detector per class: the attributes with the highest and the lowest δ."""
    rows = data.attributes.to_pylist()
    model = view.reference_model(data) if view else data.config.models[0].model_id
    pick = [r for r in rows if r["model_id"] == model] or [r for r in rows if r["model_id"] == rows[0]["model_id"]]
    by_class: dict[str, list[dict]] = {}
    for r in sorted(pick, key=lambda r: r["rank"]):
        by_class.setdefault(r["class_name"], []).append(r)
    order = [r["class_name"] for r in main if r["class_name"] in by_class]
    order += sorted(set(by_class) - set(order))

    def cell(items: list[dict]) -> str:
        return "<br>".join(f"{_e(r['attribute'])} <b>{100 * r['delta']:+.0f}</b> pts "
                           f"<span class=muted>({r['n_present']} vs {r['n_absent']} photos, p={r['p_value']:.2g})</span>"
                           for r in items)

    body = "".join(f"<tr><th>{_e(c)}</th><td>{cell(by_class[c][:shown])}</td>"
                   f"<td>{cell(by_class[c][::-1][:shown]) if len(by_class[c]) > shown else ''}</td></tr>"
                   for c in order)
    extra = data.config.prompts.attributes
    return (f"<p class=muted>δ(class, attribute) = accuracy with the attribute − accuracy without it, for "
            f"<code>{_e(pick[0]['model_id'] if pick else model)}</code>; attributes are the backgrounds"
            + (f" and the config's extra attributes ({_e(', '.join(extra))})" if extra else "")
            + ". A large positive δ is what the model leans on; a large negative δ, what it fails on. "
            "All ranks: <code>attributes.parquet</code>.</p>"
            f"<div class=scroll><table class=attrs><thead><tr><th>class</th><th>highest δ</th><th>lowest δ</th>"
            f"</tr></thead><tbody>{body}</tbody></table></div>")


def _grids_html(data: RunData, kept: list[dict], view: View, per_side: int) -> str:
    assigned = assigned_backgrounds(data)
    confidence = {}
    if data.groups is not None:
        for uid, conf in zip(data.groups.column("uid").to_pylist(), data.groups.column("confidence").to_pylist()):
            confidence[uid] = max(confidence.get(uid, -1.0), conf if conf is not None else -1.0)
    model = view.reference_model(data)
    scored = {}
    if data.scores is not None:
        for r in data.scores.to_pylist():
            if r["model_id"] == model:
                scored[r["uid"]] = r
    located = {}
    if data.samples is not None:
        for r in data.samples.select(["uid", "shard", "key", "status"]).to_pylist():
            if r["status"] == "ok":
                located[r["uid"]] = (r["shard"], r["key"])
    wanted: dict[tuple[int, str], list[str]] = defaultdict(list)
    for uid, (class_idx, _, bg) in assigned.items():
        if uid in located:
            wanted[(class_idx, bg)].append(uid)
    chosen = {}
    for key, uids in wanted.items():   # the most confidently grouped photos show the background best
        chosen[key] = sorted(uids, key=lambda u: (-confidence.get(u, -1.0), u))[:per_side]
    needed = {u for r in kept for side in ("common", "counter") for u in chosen.get((r["class_idx"], r[side]), [])}
    thumbs = report_charts.thumbnails(data.run / "shards", {u: located[u] for u in needed})
    out = [f"<p class=muted>Up to {per_side} photos per group, most confidently assigned first. Border: "
           f"<span class='key ok'>model right</span> <span class='key wrong'>model wrong</span> "
           f"(<code>{_e(model)}</code>).</p>"]
    for r in kept:
        sides = []
        for side, acc in (("common", r["acc_common"]), ("counter", r["acc_counter"])):
            uids = chosen.get((r["class_idx"], r[side]), [])
            n = r[f"n_{side}"]
            imgs = "".join(_thumb(u, thumbs.get(u), scored.get(u)) for u in uids) or \
                "<p class=muted>no stored photos</p>"
            stat = "" if n is None or acc is None else f" <span class=muted>· {n:,} photos, {_pct(acc)}% right</span>"
            sides.append(f"<div class='side {side}'><h4>{side}: {_e(r[side])}{stat}</h4>"
                         f"<div class=grid>{imgs}</div></div>")
        drop = "" if r["drop"] is None else f", drop {_pct(r['drop'])} [{_pct(r['drop_lo'])}, {_pct(r['drop_hi'])}]"
        out.append(f"<div class=pair id='pair-{r['class_idx']}'><h3>{_e(r['class_name'])} "
                   f"<span class=muted>{_e(r['common'])} → {_e(r['counter'])}{drop}</span></h3>"
                   f"<div class=sides>{''.join(sides)}</div></div>")
    return "".join(out)


def _thumb(uid: str, uri: str | None, score: dict | None) -> str:
    cls = "" if score is None else (" ok" if score["correct"] else " wrong")
    tip = uid if score is None else (f"{uid}: predicted {score['top1_name']}, p(true) {score['p_true']:.2f}")
    if uri is None:
        return f"<div class='thumb missingimg{cls}' title='{_e(tip)}'>image<br>missing</div>"
    return f"<img class='thumb{cls}' src='{uri}' alt='{_e(uid)}' title='{_e(tip)}' width=96 height=96>"


def _confusion_html(data: RunData) -> str:
    if data.groups is None:
        return "<p class=muted>No background groups yet.</p>"
    methods = Counter(data.groups.column("method").to_pylist())
    parts = [f"<p>Assigned by: {', '.join(f'{_e(k)} {v:,}' for k, v in methods.most_common())}.</p>"]
    assigned = model_backgrounds(data)
    refs = []
    if data.truth:
        refs.append((f"ground truth <code>{_e(Path(data.truth_source).name)}</code>", data.truth))
    humans = human_backgrounds(data)
    if humans:
        refs.append(("human labels", humans))
    if not refs:
        parts.append("<p class=muted>No ground truth (<code>--truth FILE</code> or <code>RUN/truth.parquet</code>) "
                     "and no human labels yet, so assignment accuracy cannot be measured.</p>")
    for name, truth in refs:
        labels, cells, n = confusion(assigned, truth, data.config.backgrounds)
        if not n:
            parts.append(f"<p class=muted>The {name} shares no photos with the groups.</p>")
            continue
        right = sum(v for (t, a), v in cells.items() if t == a)
        parts.append(f"<h3>Assigned vs {name}: {100 * right / n:.1f}% agree <span class=muted>"
                     f"({right:,} of {n:,} photos)</span></h3>" + report_charts.confusion_table(labels, cells))
    return "".join(parts)


def _settings_html(data: RunData) -> str:
    cfg = data.config
    models = ", ".join(f"<code>{_e(m.model_id)}</code>" for m in cfg.models)
    rows = [("models", models), ("label space", _e(cfg.label_space)),
            ("backgrounds", _e(", ".join(cfg.backgrounds))),
            ("class prompts", _e(" | ".join(cfg.prompts.classes))),
            ("config digest", f"<code>{_e(cfg.digest())}</code>")]
    stages = data.manifest.get("stages") or {}
    timing = "".join(f"<tr><td>{_e(name)}</td><td class=num>{_e(s.get('seconds', '–'))}</td>"
                     f"<td class=muted>{_e(s.get('finished_at', ''))}</td></tr>" for name, s in stages.items())
    table = "".join(f"<tr><th>{a}</th><td>{b}</td></tr>" for a, b in rows)
    out = f"<table class=kv>{table}</table>"
    if timing:
        out += (f"<h3>Stage timings</h3><table class=timings><thead><tr><th>stage</th><th class=num>seconds</th>"
                f"<th>finished</th></tr></thead><tbody>{timing}</tbody></table>")
    else:
        out += "<p class=muted>No manifest.json: stage timings unknown.</p>"
    return out


_CSS = """
:root{--ink:#1f2430;--muted:#6b7280;--line:#e5e7eb;--bg:#fafaf7;--kept:#0f766e;--drop:#9ca3af;--common:#2563eb;
--counter:#d97706;--ok:#16a34a;--wrong:#dc2626}
*{box-sizing:border-box}body{margin:0;background:var(--bg);color:var(--ink);
font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif}
main{max-width:1180px;margin:0 auto;padding:28px 32px 8px}footer{max-width:1180px;margin:0 auto;padding:16px 32px 40px}
h1{font-size:26px;margin:0 0 2px}h2{font-size:19px;margin:34px 0 10px;padding-bottom:6px;border-bottom:2px solid var(--line)}
h3{font-size:16px;margin:18px 0 8px}h4{font-size:14px;margin:0 0 6px}code{font-size:13px;background:#eef0f3;padding:1px 4px;
border-radius:4px}.muted{color:var(--muted);font-weight:normal}small,.small{font-size:12px}
.cards{display:flex;gap:14px;flex-wrap:wrap;margin:18px 0}.card{flex:1 1 200px;background:#fff;border:1px solid var(--line);
border-radius:10px;padding:12px 16px}.card .label{font-size:12px;text-transform:uppercase;letter-spacing:.05em;
color:var(--muted)}.card .big{font-size:26px;font-weight:650}
.missing{background:#fff7ed;border:1px solid #fed7aa;border-radius:10px;padding:10px 16px;margin:14px 0}
.missing ul{margin:6px 0 0;padding-left:20px}
table{border-collapse:collapse;background:#fff;width:100%}th,td{padding:6px 9px;border-bottom:1px solid var(--line);
text-align:left;vertical-align:top}thead th{font-size:12px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted)}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}.ci{color:var(--muted);font-size:12px}
.funnel th{width:110px}.funnel .barcell{width:45%}.fbar{height:14px;border-radius:3px;background:var(--kept);opacity:.8}
.funnel tr.absent th{color:var(--muted)}.lost{color:var(--wrong);font-weight:600}
.reasons{margin:2px 0 0;padding-left:18px;font-size:13px;color:#374151}
.pairs tr.dropped td{color:#4b5563}.pairs tr.dropped{background:#fbfbfb}.reason{font-size:12.5px;color:#4b5563;max-width:330px}
.pill{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff}
.pill.kept{background:var(--kept)}.pill.dropped{background:var(--drop)}
details{margin:12px 0}summary{cursor:pointer;color:var(--muted)}
svg.chart{display:block;margin:8px 0 18px;background:#fff;border:1px solid var(--line);border-radius:10px}
.scroll{overflow-x:auto}.heatmap{width:auto}.heatmap td.heat{text-align:center;min-width:54px;font-weight:600;
font-variant-numeric:tabular-nums}.heatmap td small{display:block;font-weight:normal;font-size:10.5px;opacity:.75}
.heatmap td.common{outline:3px solid var(--common);outline-offset:-3px}.heatmap td.counter{outline:3px solid var(--counter);
outline-offset:-3px}.heatmap th.rot{font-size:12px;text-transform:none;letter-spacing:0}
.key{padding:0 6px;border-radius:4px;border:2px solid}.key.common{border-color:var(--common)}
.key.counter{border-color:var(--counter)}.key.ok{border-color:var(--ok)}.key.wrong{border-color:var(--wrong)}
.pair{background:#fff;border:1px solid var(--line);border-radius:10px;padding:4px 16px 14px;margin:14px 0}
.sides{display:flex;gap:18px;flex-wrap:wrap}.side{flex:1 1 480px}.side.common h4{color:var(--common)}
.side.counter h4{color:var(--counter)}.grid{display:flex;flex-wrap:wrap;gap:5px}
.thumb{width:96px;height:96px;border-radius:6px;border:3px solid #d1d5db;object-fit:cover;background:#eee}
.thumb.ok{border-color:var(--ok)}.thumb.wrong{border-color:var(--wrong)}
.missingimg{display:flex;align-items:center;justify-content:center;text-align:center;font-size:11px;color:var(--muted)}
.confusion{width:auto}.confusion td{text-align:center;min-width:44px;font-variant-numeric:tabular-nums}
.confusion td.diag{font-weight:700}.kv{width:auto}.kv th{color:var(--muted);font-weight:500}.timings{width:auto}
"""
