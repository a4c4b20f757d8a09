"""`annotate status` and `annotate pull`: read the project back, aggregate, write RUN/annotation/.

pull writes, each atomically:
  RUN/annotation/annotations.parquet  raw annotations mapped to uids (kept across hand deletions)
  RUN/annotation/verdicts.parquet     per photo: majority background / class / flags, agreement, status
  RUN/annotation/annotators.parquet   per annotator: volume, skips, accuracy on calibration tasks
  RUN/annotation/agreement.json       Krippendorff's alpha per question, counts
  RUN/groups/human.parquet            verified photos as background groups (method 'human')
  RUN/annotation/estimates.parquet    per class × human background: estimated accuracy, interval (estimate.py)
  RUN/annotation/verification.parquet per class: labels spent, verified pair beside the model's, loop state
then calls the pair-selection hook (annotation.reselect) so proposals show human beside model rows.

The verified pair is the one in verification.parquet: the post-stratified estimate of
annotation/estimate.py (labels for where photos belong, the model's correctness on every photo).
proposals.parquet's source 'human' rows are the same pairs (pipeline/propose.py verified_rows);
RUN/groups/human.parquet lists the labelled photos themselves.
"""
from __future__ import annotations

import json
from collections import Counter
import pyarrow as pa
from pathlib import Path
from typing import Callable

import schemas
from annotation import config as lsconfig
from annotation import export, loop, reselect, simulate, sync, votes
from annotation import tasks as tasklib
from annotation.client import Connection
from curation import atomic
from curation.config import RunConfig


def status(run: Path, cfg: RunConfig, conn: Connection) -> dict:
    run = Path(run)
    ledger = sync.read_ledger(run)
    project_id = sync.find_project(conn, run)
    exported = export.export_tasks(conn, project_id)
    report = export.progress(ledger, exported, export.annotator_emails(conn), cfg.annotation.overlap)
    report["project_id"] = project_id
    report["url"] = f"{conn.url}/projects/{project_id}/data"
    # The loop as of the last pull (labels on the server since then count after the next pull).
    lv = loop.load_state(run, cfg, ledger=ledger.to_pylist())
    path = tasklib.annotation_dir(run) / "annotations.parquet"
    annotators = schemas.read(path, "annotations").column("annotator").to_pylist() if path.exists() else []
    simulated = any(simulate.is_simulated(a) for a in annotators)
    report.update(classes=verification_rows(run, cfg, lv, simulated), sent=lv.sent, budget=lv.budget,
                  outstanding=lv.outstanding, simulated=simulated)
    return report


def _model_pairs(run: Path, cfg: RunConfig) -> dict[int, dict]:
    """The decisive model rows of proposals.parquet (the consensus when several models must agree)."""
    path = Path(run) / "proposals.parquet"
    if not path.exists():
        return {}
    rows = [r for r in schemas.read(path, "proposals").to_pylist() if r["source"] == "model"]
    want = "all" if len(cfg.models) > 1 and cfg.thresholds.require_all_models else cfg.models[0].model_id
    return {r["class_idx"]: r for r in rows if r["model_id"] == want}


def verification_rows(run: Path, cfg: RunConfig, lv: loop.LoopView, simulated: bool) -> list[dict]:
    """Per class: labels spent, the verified pair beside the model's, the loop's state, what changed."""
    model = _model_pairs(run, cfg)
    out = []
    for class_idx, cv in sorted(lv.classes.items()):
        m, h = model.get(class_idx, {}), cv.row
        out.append(dict(class_idx=class_idx, class_name=cv.class_name, photos=cv.photos, labeled=cv.labeled,
                        tasks=cv.tasks, model_common=m.get("common"), model_counter=m.get("counter"),
                        model_decision=m.get("decision"), human_common=h.get("common"),
                        human_counter=h.get("counter"), human_drop=h.get("drop"), human_drop_lo=h.get("drop_lo"),
                        human_drop_hi=h.get("drop_hi"), human_decision=h["decision"],
                        human_reason=h.get("reason") or "", state=cv.state, state_why=cv.why,
                        changed=changed(m, h, cv), moved=cv.moved, simulated=simulated))
    return out


def changed(m: dict, h: dict, cv) -> str:
    """What the human labels changed about the model's pair, and why, in words."""
    if not m:
        return "no model proposal"
    if not cv.labeled:
        return "nothing labelled yet"
    by_bg = {e.background: e for e in cv.estimates}
    parts = []
    for end in ("common", "counter"):
        a, b = m.get(end), h.get(end)
        if a == b:
            continue
        if b is None:
            parts.append(f"no human {end} yet (model: {a})")
            continue
        e = by_bg.get(b)
        extra = (f": on human labels {b} is {100 * e.acc:.0f}% over ≈{e.n_hat:.0f} photos "
                 f"({e.n_labeled} labelled; the model put {e.model_n} there)") if e else ""
        parts.append(f"{end} {a or '–'} → {b}{extra}")
    if (m.get("decision") == "kept") != (h.get("decision") == "kept"):
        parts.append(f"model {m.get('decision')}, human {h.get('decision')} ({h.get('reason') or 'no pair'})")
    return "; ".join(parts) or "same pair and decision"


def estimate_table(lv: loop.LoopView) -> pa.Table:
    rows = [dict(class_idx=e.class_idx, class_name=e.class_name, background=e.background, n_labeled=e.n_labeled,
                 n_hat=e.n_hat, model_n=e.model_n, acc=e.acc, acc_lo=e.lo, acc_hi=e.hi, n_eff=e.n_eff)
            for cv in lv.classes.values() for e in cv.estimates]
    return _table(rows, "human_estimates")


def _table(rows: list[dict], name: str) -> pa.Table:
    if not rows:
        return schemas.SCHEMAS[name].empty_table()
    return schemas.conform(pa.Table.from_pylist(rows), name, name)


def pull(run: Path, cfg: RunConfig, conn: Connection,
         select: reselect.Selection | None = None, say: Callable[[str], None] = print) -> dict:
    run = Path(run)
    ledger = sync.read_ledger(run)
    with sync.run_lock(run):
        project_id = sync.find_project(conn, run)
        exported = export.export_tasks(conn, project_id)
        emails = export.annotator_emails(conn)
        fresh = export.raw_annotations(exported, emails)
        table, kept_offline = export.merge_with_previous(run, fresh, {t["id"] for t in exported})
        export.write_annotations(run, table)

        min_votes = cfg.annotation.min_votes or cfg.annotation.overlap
        verdict_table = votes.verdicts(table, ledger, min_votes)
        out = tasklib.annotation_dir(run)
        atomic.write_parquet(out / "verdicts.parquet", verdict_table)
        atomic.write_parquet(out / "annotators.parquet", votes.annotator_table(table, ledger))
        agreement = votes.agreement(table)
        groups = votes.human_groups(verdict_table, list(cfg.backgrounds))
        atomic.write_parquet(Path(run) / "groups" / "human.parquet", groups)
        progress = export.progress(ledger, exported, emails, cfg.annotation.overlap)
        summary = {"project_id": project_id, "annotations": table.num_rows,
                   "kept_from_deleted_tasks": kept_offline,
                   "verdicts": dict(Counter(verdict_table.column("status").to_pylist())),
                   "human_group_rows": groups.num_rows, "agreement": agreement,
                   "deleted_by_hand": len(progress["deleted_by_hand"]),
                   "unknown_tasks": progress["unknown_tasks"], "duplicate_tasks": progress["duplicate_tasks"],
                   "vocabulary": lsconfig.vocabulary(cfg)}
        lv = loop.load_state(run, cfg, ledger=ledger.to_pylist())
        simulated = any(simulate.is_simulated(a) for a in table.column("annotator").to_pylist())
        rows = verification_rows(run, cfg, lv, simulated)
        atomic.write_parquet(out / "estimates.parquet", estimate_table(lv))
        atomic.write_parquet(out / "verification.parquet", _table(rows, "verification"))
        summary.update(simulated=simulated, sent=lv.sent, budget=lv.budget, outstanding=lv.outstanding,
                       classes=rows)
        atomic.write_text(out / "agreement.json", json.dumps({k: v for k, v in summary.items() if k != "classes"},
                                                             indent=2))
    summary["reselected"] = reselect.rerun_selection(run, select, say)
    return summary


def read_verdicts(run: Path):
    return schemas.read(tasklib.annotation_dir(run) / "verdicts.parquet", "verdicts")
