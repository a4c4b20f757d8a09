"""`annotate status` and `annotate pull`: read the project back, aggregate, write RUN/annotation/.

pull writes, each atomically:
  RUN/annotation/annotations.parquet  raw annotations mapped to uids (kept across hand deletions)
  RUN/annotation/verdicts.parquet     per photo: majority background / class / flags, agreement, status
  RUN/annotation/annotators.parquet   per annotator: volume, skips, accuracy on calibration tasks
  RUN/annotation/agreement.json       Krippendorff's alpha per question, counts
  RUN/groups/human.parquet            verified photos as background groups (method 'human')
then calls the pair-selection hook (annotation.reselect) so proposals show human beside model rows.
"""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Callable

import schemas
from annotation import config as lsconfig
from annotation import export, reselect, sync, votes
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
    return report


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
        atomic.write_text(out / "agreement.json", json.dumps(summary, indent=2))
    summary["reselected"] = reselect.rerun_selection(run, select, say)
    return summary


def read_verdicts(run: Path):
    return schemas.read(tasklib.annotation_dir(run) / "verdicts.parquet", "verdicts")
