"""Read a project back: every task with its annotations, mapped to sample uids.

One JSON export (`download_all_tasks`) is the fastest whole-project read the community server
offers. Raw annotations are merged with the previous pull, so annotations on tasks that someone
deleted by hand are kept (marked on_server = false) rather than lost.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

import schemas
from annotation import config as lsconfig
from annotation import tasks as tasklib
from annotation.client import Connection
from curation import atomic
from curation.errors import UserError


def annotations_file(run: Path) -> Path:
    return tasklib.annotation_dir(run) / "annotations.parquet"


def export_tasks(conn: Connection, project_id: int) -> list[dict]:
    """All tasks of the project, with annotations, as Label Studio's JSON export gives them."""
    client = conn.client(timeout=600.0)
    raw = conn.call("export the project", lambda: b"".join(client.projects.exports.download_sync(
        id=project_id, download_all_tasks=True, export_type="JSON")))
    try:
        tasks = json.loads(raw)
    except ValueError as exc:
        raise UserError(f"Label Studio at {conn.url} sent an export of project {project_id} that is not JSON "
                        f"({exc})") from None
    return tasks if isinstance(tasks, list) else []


def annotator_emails(conn: Connection) -> dict[int, str]:
    client = conn.client()
    return {u.id: u.email or u.username or f"user-{u.id}" for u in conn.call("list users", client.users.list)}


def raw_annotations(exported: list[dict], emails: dict[int, str]) -> pa.Table:
    """One row per annotation (skips included) of tasks that carry a uid."""
    rows = []
    for task in exported:
        uid = (task.get("data") or {}).get("uid")
        if not uid:
            continue
        shown = bool(task.get("predictions") or task.get("total_predictions"))
        for a in task.get("annotations") or []:
            values = lsconfig.parse_result(a.get("result"))
            who = a.get("completed_by")
            who = who.get("email") if isinstance(who, dict) else emails.get(who, f"user-{who}")
            rows.append(dict(annotation_id=a["id"], task_id=task["id"], uid=uid, annotator=who,
                             skipped=bool(a.get("was_cancelled")), background=values["background"],
                             is_class=values["is_class"], flags=values["flags"], lead_time=a.get("lead_time"),
                             created_at=a.get("created_at"), updated_at=a.get("updated_at"), on_server=True,
                             prediction_shown=shown))
    if not rows:
        return schemas.SCHEMAS["annotations"].empty_table()
    return schemas.conform(pa.Table.from_pylist(rows), "annotations", "exported annotations")


def merge_with_previous(run: Path, fresh: pa.Table, tasks_on_server: set[int]) -> tuple[pa.Table, int]:
    """Fresh annotations, plus earlier-pulled ones whose task no longer exists. Returns (table, kept)."""
    path = annotations_file(run)
    if not path.exists():
        return fresh, 0
    old = schemas.read(path, "annotations")
    gone = pc.invert(pc.is_in(old.column("task_id"), pa.array(sorted(tasks_on_server), pa.int64())))
    kept = old.filter(gone)
    kept = schemas.conform(kept.drop_columns(["on_server"]).append_column(
        "on_server", pa.array([False] * kept.num_rows, pa.bool_())), "annotations", str(path))
    if kept.num_rows == 0:
        return fresh, 0
    return pa.concat_tables([fresh, kept]), kept.num_rows


def write_annotations(run: Path, table: pa.Table) -> Path:
    path = annotations_file(run)
    atomic.write_parquet(path, table)
    return path


def progress(ledger: pa.Table, exported: list[dict], emails: dict[int, str], overlap: int) -> dict:
    """Where labelling stands: per class and per annotator, plus what changed by hand on the server."""
    on_server: dict[str, list[dict]] = defaultdict(list)
    for t in exported:
        uid = (t.get("data") or {}).get("uid")
        if uid:
            on_server[uid].append(t)
    per_class: dict[str, Counter] = defaultdict(Counter)
    per_annotator: Counter = Counter()
    missing = []
    for r in ledger.to_pylist():
        if r["status"] != "pushed":
            continue
        c = per_class[r["class_name"]]
        c["tasks"] += 1
        found = on_server.get(r["uid"])
        if not found:
            missing.append(r["uid"])
            c["deleted"] += 1
            continue
        done = [a for t in found for a in t.get("annotations") or [] if not a.get("was_cancelled")]
        c["annotations"] += len(done)
        c["started"] += bool(done)
        c["complete"] += len(done) >= overlap
    for t in exported:
        for a in t.get("annotations") or []:
            who = a.get("completed_by")
            who = who.get("email") if isinstance(who, dict) else emails.get(who, f"user-{who}")
            per_annotator[who] += 1
    known = set(ledger.column("uid").to_pylist())
    unknown = sum(len(ts) for uid, ts in on_server.items() if uid not in known)
    unknown += sum(1 for t in exported if not (t.get("data") or {}).get("uid"))
    duplicates = sum(len(ts) - 1 for ts in on_server.values() if len(ts) > 1)
    return {"per_class": {k: dict(v) for k, v in sorted(per_class.items())},
            "per_annotator": dict(sorted(per_annotator.items())),
            "deleted_by_hand": sorted(missing), "unknown_tasks": unknown, "duplicate_tasks": duplicates,
            "tasks": sum(c["tasks"] for c in per_class.values()),
            "complete": sum(c["complete"] for c in per_class.values())}
