"""Push a run's tasks to Label Studio: idempotent, batched, resumable.

Task identity is the sample uid (task data `uid`). Every push first asks the server which uids
its project already holds and imports only the missing ones, so pushing twice adds nothing, new
photos after a re-run are added without touching labelled tasks, and a push killed at any point
(client or server) is finished by running it again. A POST that failed midway is never retried
blindly: the push starts over from the server's view of the project.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Callable

import pyarrow as pa

import schemas
from annotation import config as lsconfig
from annotation import export, tasks as tasklib
from annotation.client import Connection, ServerDown
from curation import atomic
from curation.config import RunConfig
from curation.errors import UserError

log = logging.getLogger(__name__)


def project_file(run: Path) -> Path:
    return tasklib.annotation_dir(run) / "project.json"


def tasks_file(run: Path) -> Path:
    return tasklib.annotation_dir(run) / "tasks.parquet"


def project_title(run: Path, cfg: RunConfig) -> str:
    # The folder's path hash keeps two runs with the same name and folder name (a/run, b/run) apart:
    # a push that lost its project id finds the project by this title.
    path = Path(run).resolve()
    tag = hashlib.sha1(str(path).encode()).hexdigest()[:6]
    return cfg.annotation.project_title or f"counteranimal: {cfg.name} ({path.name}, {tag})"


@contextlib.contextmanager
def run_lock(run: Path):
    """One annotate command per run at a time (two pushes at once could both import a uid)."""
    path = tasklib.annotation_dir(run) / ".lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError("another annotate command is running on this run", where=str(run)) from None
        yield


def read_project(run: Path) -> dict:
    path = project_file(run)
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except ValueError as exc:
        raise UserError(f"unreadable ({exc})", where=str(path)) from None


def find_project(conn: Connection, run: Path) -> int:
    """The run's project id on this server, or a clear error when it was never pushed or is gone."""
    state = read_project(run)
    if not state.get("project_id") or state.get("url") != conn.url:
        raise UserError(f"this run has no Label Studio project on {conn.url}",
                        hint=f"Run `counteranimal annotate push {run}` first.")
    client = conn.client()
    conn.call("read the project", lambda: client.projects.get(id=state["project_id"]))
    return state["project_id"]


def ensure_project(conn: Connection, run: Path, cfg: RunConfig) -> int:
    """Find the run's project by its stored id (or title, after a crash before the id was saved), else create it."""
    client = conn.client()
    state = read_project(run)
    title = state.get("title") or project_title(run, cfg)
    label_config = lsconfig.labeling_config(cfg)
    project = None
    if state.get("project_id") and state.get("url") == conn.url:
        try:
            project = conn.call("read the project", lambda: client.projects.get(id=state["project_id"]))
        except UserError as exc:
            if "HTTP 404" not in str(exc):
                raise
            raise UserError(f"the run's project {state['project_id']} is gone from {conn.url} (deleted by hand?)",
                            where=str(project_file(run)),
                            hint="Delete that file to create a new project; pulled annotations stay in "
                                 "RUN/annotation/annotations.parquet.") from None
    if project is None:
        # Save the title first: a crash between create and saving the id is found again by title.
        atomic.write_text(project_file(run), json.dumps({"url": conn.url, "title": title, "project_id": None}))
        same = [p for p in conn.call("list projects", lambda: list(client.projects.list(title=title)))
                if p.title == title]
        if same:
            project = client.projects.get(id=min(p.id for p in same))
        else:
            created = conn.call("create the project", lambda: client.projects.create(
                title=title, label_config=label_config, description="Verify backgrounds and labels (counteranimal)",
                maximum_annotations=cfg.annotation.overlap, overlap_cohort_percentage=100,
                show_skip_button=True), retry=False)
            project = client.projects.get(id=created.id)
    if _normalize(project.label_config) != _normalize(label_config) or \
            project.maximum_annotations != cfg.annotation.overlap:
        conn.call("update the labeling config", lambda: client.projects.update(
            id=project.id, label_config=label_config, maximum_annotations=cfg.annotation.overlap,
            overlap_cohort_percentage=100))
    storage_id = _ensure_storage(conn, project.id, run, state.get("storage_id"))
    atomic.write_text(project_file(run), json.dumps({"url": conn.url, "title": title, "project_id": project.id,
                                                     "storage_id": storage_id}, indent=2))
    return project.id


def _normalize(xml: str | None) -> str:
    return " ".join((xml or "").split())


def _ensure_storage(conn: Connection, project_id: int, run: Path, storage_id: int | None) -> int:
    """A Local Files storage covering RUN/annotation/images lets the server serve the images (never synced)."""
    client = conn.client()
    path = str(tasklib.image_dir(run).resolve())
    for s in conn.call("list storages", lambda: client.import_storage.local.list(project=project_id)):
        if s.path and s.path.rstrip("/") == path:
            return s.id
    created = conn.call("create the local-files storage", lambda: client.import_storage.local.create(
        project=project_id, path=path, title="counteranimal images", use_blob_urls=False,
        regex_filter="^$", recursive_scan=False), retry=False)
    return created.id


def image_url(conn: Connection, run: Path, image: str) -> str:
    root = conn.files_root
    full = (tasklib.image_dir(run) / image).resolve()
    return f"/data/local-files/?d={full.relative_to(Path(root).resolve()).as_posix()}"


def check_files_root(conn: Connection, run: Path) -> None:
    images = tasklib.image_dir(run).resolve()
    if not conn.files_root:
        raise UserError("the server's local-files root is unknown",
                        hint="Set annotation.files_root (or LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT) to the "
                             "folder the server serves local files from; the run must lie under it.")
    root = Path(conn.files_root).resolve()
    if root == images or root not in images.parents:
        raise UserError(f"{images} is not inside the server's local-files root {root}, so annotators would not "
                        "see the images",
                        hint="Start the server with `counteranimal label-studio start --files-root DIR` for a DIR "
                             "that holds the run (or move the run under it).")


def task_payload(conn: Connection, run: Path, row: dict) -> dict:
    data = {"image": image_url(conn, run, row["image"]), "uid": row["uid"], "class_name": row["class_name"],
            "question": lsconfig.question(row["class_name"])}
    task = {"data": data}
    # Never the class verdict (annotators would echo the model's "no" where the drop is measured);
    # the background only when the curator asked for it (annotation.prefill_background).
    result = lsconfig.prediction_result(row["model_background"]) if row.get("prefilled") else []
    if result:
        task["predictions"] = [{"result": result, "score": float(row["score"]) if row["score"] is not None else None,
                                "model_version": row["model_id"] or "model"}]
    return task


def push(run: Path, cfg: RunConfig, conn: Connection, say: Callable[[str], None] = print,
         after_batch: Callable[[int], None] | None = None) -> dict:
    """Select tasks, extract their images, and bring the project up to date. Returns counts."""
    run = Path(run)
    started = time.monotonic()
    check_files_root(conn, run)
    with run_lock(run):
        selected = tasklib.extract_images(run, tasklib.select(run, cfg, say))
        project_id = ensure_project(conn, run, cfg)
        attempt = 0
        while True:
            try:
                counts = _push_once(conn, run, cfg, project_id, selected, say, after_batch)
                break
            except ServerDown:
                if attempt >= conn.retries:
                    raise
                # The import may or may not have landed: start over from the server's view.
                time.sleep(conn.backoff * 2 ** attempt)
                attempt += 1
    counts["seconds"] = round(time.monotonic() - started, 2)
    return counts


def _push_once(conn: Connection, run: Path, cfg: RunConfig, project_id: int, selected: pa.Table,
               say: Callable[[str], None], after_batch) -> dict:
    client = conn.client()
    on_server = export.export_tasks(conn, project_id)
    by_uid: dict[str, list[dict]] = {}
    for t in on_server:
        uid = (t.get("data") or {}).get("uid")
        if uid:
            by_uid.setdefault(uid, []).append(t)
    rows = selected.to_pylist()
    previously = _previous_task_ids(run)
    # Tasks pushed earlier whose photos this selection no longer picks (config.yaml edited, the run
    # re-curated) stay in the ledger: their annotations are human labels of this run's photos, and
    # pull must keep counting them (a photo's background does not change with the model's pair).
    chosen = {r["uid"] for r in rows}
    earlier = [r for r in _previous_rows(run) if r["uid"] not in chosen and r["task_id"] is not None]
    recreated = 0
    for r in rows:
        found = by_uid.get(r["uid"])
        if found:
            r["task_id"], r["status"] = min(t["id"] for t in found), "pushed"
        elif r["status"] != "no_image":
            recreated += r["uid"] in previously
            # Not on the server (never imported, or deleted by hand): import it (again).
            r["task_id"], r["status"] = None, "pending"
    duplicates = sum(len(ts) - 1 for ts in by_uid.values() if len(ts) > 1)
    if duplicates:
        log.warning("%d uids have more than one task in project %d; pull merges their annotations",
                    duplicates, project_id)
    _write_ledger(run, rows + earlier)

    # Tasks that exist but lost their prediction (an import cut short) get it back.
    fix = [r for r in rows if r["status"] == "pushed" and r.get("prefilled")
           and not by_uid[r["uid"]][0].get("total_predictions") and r["model_background"] is not None]
    if fix:
        request = [{**task_payload(conn, run, r)["predictions"][0], "task": r["task_id"]} for r in fix]
        conn.call("restore predictions", lambda: client.projects.import_predictions(id=project_id, request=request),
                  retry=False)

    todo = [r for r in rows if r["status"] == "pending"]
    added = 0
    for start in range(0, len(todo), cfg.annotation.batch_size):
        batch = todo[start:start + cfg.annotation.batch_size]
        payload = [task_payload(conn, run, r) for r in batch]
        response = conn.call(f"import {len(batch)} tasks", lambda: client.projects.import_tasks(
            id=project_id, request=payload, return_task_ids=True, commit_to_project=True), retry=False)
        ids = list(response.task_ids or [])
        if len(ids) != len(batch):
            raise UserError(f"Label Studio created {len(ids)} tasks for a batch of {len(batch)}; "
                            "re-run the push to reconcile")
        for r, task_id in zip(batch, ids):   # task ids come back in request order
            r["task_id"], r["status"] = task_id, "pushed"
        added += len(batch)
        _write_ledger(run, rows + earlier)
        say(f"annotate push: {added}/{len(todo)} new tasks imported")
        if after_batch:
            after_batch(added)
    status = Counter(r["status"] for r in rows)
    return {"project_id": project_id, "selected": len(rows), "added": added, "already": len(rows) - added -
            status["no_image"], "no_image": status["no_image"], "recreated": recreated,
            "duplicates_on_server": duplicates, "predictions_restored": len(fix), "kept_earlier": len(earlier),
            "roles": dict(Counter(r["role"] for r in rows)), "budget": cfg.annotation.budget,
            "round": max((r["batch"] or 0 for r in rows), default=0),
            "this_round": sum(1 for r in rows if (r["batch"] or 0) == max((x["batch"] or 0 for x in rows), default=0))}


def _previous_rows(run: Path) -> list[dict]:
    path = tasks_file(run)
    return schemas.read(path, "annotation_tasks").to_pylist() if path.exists() else []


def _previous_task_ids(run: Path) -> set[str]:
    path = tasks_file(run)
    if not path.exists():
        return set()
    table = schemas.read(path, "annotation_tasks")
    return {u for u, t in zip(table.column("uid").to_pylist(), table.column("task_id").to_pylist()) if t is not None}


def _write_ledger(run: Path, rows: list[dict]) -> None:
    table = schemas.conform(pa.Table.from_pylist(rows, schema=schemas.SCHEMAS["annotation_tasks"]),
                            "annotation_tasks")
    atomic.write_parquet(tasks_file(run), table)


def read_ledger(run: Path) -> pa.Table:
    path = tasks_file(run)
    if not path.exists():
        raise UserError("no tasks pushed yet", where=str(path), hint=f"Run `counteranimal annotate push {run}`.")
    return schemas.read(path, "annotation_tasks")
