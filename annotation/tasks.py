"""Which photos go to annotators, and their images on local disk.

The active loop (annotation/loop.py) decides: round 0 is a stratified sample of every
(class, model-assigned background) group, the least sure assignments and the flagged photos;
later rounds go where labels would most change a class's pair, within annotation.budget. A small
seeded random calibration set from RUN/annotation/gold.parquet (known answers) rides along each
round to measure annotator accuracy. The ledger (RUN/annotation/tasks.parquet) keeps every photo
ever chosen; a new round is added only once the last one is labelled and pulled.
"""
from __future__ import annotations

import hashlib
import re
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

import schemas
from curation import atomic
from curation.config import RunConfig
from curation.errors import UserError

ROLES = ("coverage", "active", "calibration")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")


def annotation_dir(run: Path) -> Path:
    return Path(run) / "annotation"


def image_dir(run: Path) -> Path:
    return annotation_dir(run) / "images"


def select(run: Path, cfg: RunConfig, say=lambda s: None) -> pa.Table:
    """The ledger after this push: every photo chosen before, plus the next round when one is due."""
    from annotation import loop

    run = Path(run)
    if not (run / "groups").is_dir() or not any((run / "groups").glob("model-*.parquet")):
        raise UserError("no background groups to verify", where=str(run / "groups"),
                        hint="Run the curation pipeline (`counteranimal curate RUN`) first.")
    previous = _previous(run)
    if any(r["status"] == "pending" for r in previous):
        return _table(previous)              # a push cut short: finish sending what it chose
    pop = loop.population(run, cfg)
    state = loop.load_state(run, cfg, pop, previous)
    if state.outstanding:
        say(f"annotate push: {state.outstanding} tasks of round {_last_batch(previous)} are not labelled and pulled "
            "yet; no new round until they are (`annotate pull`)")
        return _table(previous)
    batch = loop.next_batch(pop, state, previous, cfg)
    if not batch:
        return _table(previous)
    round_no = _last_batch(previous) + 1 if previous else 0
    samples = {r["uid"]: r for r in schemas.read_folder(run / "samples", "samples").to_pylist()}
    model_groups = _model_groups(run)
    correct = _model_correct(run, cfg)
    gold = _gold(run)
    rows = list(previous)
    chosen = {r["uid"] for r in rows}

    def add(uid: str, role: str, class_idx: int, class_name: str, stratum: str | None) -> None:
        if uid in chosen:
            return
        chosen.add(uid)
        sm = samples.get(uid, {})
        g = model_groups.get(uid, {})
        known = gold.get(uid, {})
        rows.append(dict(uid=uid, class_idx=class_idx, class_name=class_name, role=role,
                         shard=sm.get("shard"), key=sm.get("key"), image=None,
                         model_background=g.get("background"), model_is_class=correct.get(uid),
                         score=g.get("confidence"), model_id=g.get("model_id"), flags=sm.get("flags") or [],
                         gold_background=known.get("background"), gold_is_class=known.get("is_class"),
                         task_id=None, status="pending", stratum=stratum, batch=round_no,
                         prefilled=bool(cfg.annotation.prefill_background and g.get("background"))))

    for photo, role in batch:
        add(photo.uid, role, photo.class_idx, photo.class_name, photo.stratum)
    want = round(cfg.annotation.calibration_share * len(batch))
    room = None if cfg.annotation.budget is None else cfg.annotation.budget - len(rows)
    want = want if room is None else max(0, min(want, room))
    candidates = [u for u in gold if u not in chosen and u in samples and samples[u]["status"] == "ok"]
    # Rank by a seeded hash: stable across re-runs, so calibration tasks already pushed stay chosen.
    candidates.sort(key=lambda u: hashlib.sha1(f"{cfg.annotation.seed}:{u}".encode()).hexdigest())
    for uid in candidates[:want]:
        add(uid, "calibration", samples[uid]["class_idx"], samples[uid]["class_name"], None)
    roles = Counter(r["role"] for r in rows if r["batch"] == round_no)
    say(f"annotate push: round {round_no}: {sum(roles.values())} photos chosen "
        f"({', '.join(f'{n} {r}' for r, n in sorted(roles.items()))})")
    return _table(rows)


def _previous(run: Path) -> list[dict]:
    path = annotation_dir(run) / "tasks.parquet"
    return schemas.read(path, "annotation_tasks").to_pylist() if path.exists() else []


def _last_batch(rows: list[dict]) -> int:
    return max((r["batch"] or 0 for r in rows), default=0)


def _table(rows: list[dict]) -> pa.Table:
    if not rows:
        return schemas.SCHEMAS["annotation_tasks"].empty_table()
    return schemas.conform(pa.Table.from_pylist(rows, schema=schemas.SCHEMAS["annotation_tasks"]),
                           "annotation_tasks", "selected tasks")


def _model_groups(run: Path) -> dict[str, dict]:
    """One model-assigned group row per uid (the most confident when several methods assigned it)."""
    groups = schemas.read_folder(run / "groups", "groups")
    groups = groups.filter(pc.not_equal(groups.column("method"), "human"))
    best: dict[str, dict] = {}
    for r in groups.select(["uid", "class_idx", "class_name", "background", "confidence", "method",
                            "model_id"]).to_pylist():
        old = best.get(r["uid"])
        if old is None or (r["confidence"] or -1.0) > (old["confidence"] or -1.0):
            best[r["uid"]] = r
    return best


def _model_correct(run: Path, cfg: RunConfig) -> dict[str, str]:
    """uid -> "yes"/"no": did the first model's top-1 name the photo's class (scores, when present)."""
    files = sorted(p for p in (run / "scores").glob("*.parquet") if not p.name.startswith("."))
    if not files or "scores" not in schemas.SCHEMAS:
        return {}
    model_id = cfg.models[0].model_id
    out: dict[str, str] = {}
    for path in files:
        try:
            table = pq.read_table(path, columns=["uid", "model_id", "correct"])
        except (OSError, pa.ArrowInvalid, KeyError) as exc:
            raise schemas.SchemaError(str(path), f"not a readable scores file ({exc})") from None
        table = table.filter(pc.equal(table.column("model_id"), model_id))
        for uid, ok in zip(table.column("uid").to_pylist(), table.column("correct").to_pylist()):
            if ok is not None:
                out[uid] = "yes" if ok else "no"
    return out


def _gold(run: Path) -> dict[str, dict]:
    path = annotation_dir(run) / "gold.parquet"
    if not path.exists():
        return {}
    return {r["uid"]: r for r in schemas.read(path, "annotation_gold").to_pylist()}


def image_name(uid: str, ext: str) -> str:
    """A file name for a uid's image: the uid itself when it is filename-safe, else its hash."""
    safe = uid if re.fullmatch(r"[A-Za-z0-9_.-]{1,120}", uid) and not uid.startswith(".") else \
        hashlib.sha1(uid.encode()).hexdigest()
    return safe + ext


def extract_images(run: Path, tasks: pa.Table) -> pa.Table:
    """Copy each task's image out of its shard into RUN/annotation/images (skipping ones present).

    Returns the tasks with `image` set, or status 'no_image' when the shard does not hold it.
    """
    run = Path(run)
    out_dir = image_dir(run)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = tasks.to_pylist()
    by_shard: dict[str, dict[str, dict]] = {}
    for r in rows:
        existing = [e for e in IMAGE_EXTENSIONS if (out_dir / image_name(r["uid"], e)).exists()]
        if existing:
            r["image"] = image_name(r["uid"], existing[0])
        elif r["shard"] and r["key"]:
            by_shard.setdefault(r["shard"], {})[r["key"]] = r
    for shard, wanted in by_shard.items():
        path = run / "shards" / shard
        if not path.exists():
            continue
        try:
            with tarfile.open(path) as tar:
                for member in tar:
                    stem, dot, ext = member.name.rpartition(".")
                    r = wanted.get(stem)
                    if r is None or r["image"] or f".{ext.lower()}" not in IMAGE_EXTENSIONS or not member.isfile():
                        continue
                    name = image_name(r["uid"], f".{ext.lower()}")
                    atomic.write_bytes(out_dir / name, tar.extractfile(member).read())
                    r["image"] = name
        except (tarfile.TarError, OSError) as exc:
            raise UserError(f"cannot read the shard ({exc})", where=str(path)) from None
    for r in rows:
        if not r["image"]:
            r["status"] = "no_image"
    return schemas.conform(pa.Table.from_pylist(rows, schema=tasks.schema), "annotation_tasks")
