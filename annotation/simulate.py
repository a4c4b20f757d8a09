"""Simulated annotators: separate Label Studio users who label a run's pushed tasks from a known truth.

For tests, benchmarks and the demo only. Each one is a real user of the real server, created
through the API (e-mail ``simulated-annotator-N@counteranimal.invalid``), whose token comes from
`label-studio user --username … --data-dir D`; it answers every pushed task it has not answered
yet through the API, as a person would in the browser. Answers come from a planted world's ground
truth (WORLD/ground_truth.parquet; run uids map to world ids through RUN/candidates' source_id)
with a given error rate: a wrong background is drawn from the rest of the vocabulary, a wrong
class verdict is flipped, independently. With ``prefill_bias`` B, when a task shows the model's
background the annotator takes it as is with probability B. Each answer is a seeded function of
(seed, annotator, uid), so a simulation cut short (server killed) gives the same labels when run
again, and it never answers a task twice. Everything it produces says "simulated".
"""
from __future__ import annotations

import hashlib
import random
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

import schemas
from annotation import config as lsconfig
from annotation import export, server, sync
from annotation import tasks as tasklib
from annotation.client import Connection
from curation import atomic
from curation.config import RunConfig
from curation.errors import UserError

DOMAIN = "counteranimal.invalid"
PREFIX = "simulated-annotator-"
# (data dir, e-mail) → token. `label-studio user` starts Django (seconds on 2 cores) and a user's
# token does not change, so each annotator's is read once per process, not once per loop round.
_TOKENS: dict[tuple[str, str], str] = {}


def email(i: int) -> str:
    return f"{PREFIX}{i}@{DOMAIN}"


def is_simulated(annotator: str | None) -> bool:
    return bool(annotator) and annotator.startswith(PREFIX) and annotator.endswith("@" + DOMAIN)


@dataclass(frozen=True)
class Truth:
    background: str | None
    class_name: str | None      # the animal really shown (None: no animal)


def read_truth(path: str | Path, run: Path) -> dict[str, Truth]:
    """Run uid → truth, from a ground-truth parquet keyed by world id (mapped via candidates) or run uid."""
    path = Path(path)
    if not path.is_file():
        raise UserError("no such truth file", where=str(path), hint="Pass the world's ground_truth.parquet.")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise UserError(f"not a readable parquet file ({exc})", where=str(path)) from None
    missing = {"uid", "background", "class_name"} - set(table.column_names)
    if missing:
        raise UserError(f"the truth file lacks column(s) {', '.join(sorted(missing))}", where=str(path),
                        hint="It needs uid, background and class_name (a world's ground_truth.parquet).")
    by_id = {r["uid"]: Truth(r["background"], r["class_name"])
             for r in table.select(["uid", "background", "class_name"]).to_pylist()}
    out: dict[str, Truth] = {}
    candidates = run / "candidates"
    if candidates.is_dir():
        for r in schemas.read_folder(candidates, "candidates").select(["uid", "source_id"]).to_pylist():
            if r["source_id"] in by_id:
                out[r["uid"]] = by_id[r["source_id"]]
    for uid, t in by_id.items():
        out.setdefault(uid, t)
    return out


def answer(truth: Truth | None, class_name: str, vocabulary: list[str], error_rate: float, seed: int,
           who: str, uid: str, prefilled: str | None = None, prefill_bias: float = 0.0) -> dict:
    """One simulated annotation's values (background, is_class): truth, then seeded errors."""
    rng = random.Random(hashlib.sha1(f"{seed}:{who}:{uid}".encode()).hexdigest())
    if truth is None:
        return {"background": None, "is_class": None, "skip": True}
    is_class = "yes" if truth.class_name == class_name else "no"
    background = truth.background if truth.background in vocabulary else lsconfig.OTHER
    if rng.random() < error_rate:
        background = rng.choice([b for b in vocabulary if b != background])
    if rng.random() < error_rate:
        is_class = "no" if is_class == "yes" else "yes"
    if prefilled is not None and rng.random() < prefill_bias:
        background = prefilled
    return {"background": background, "is_class": is_class, "skip": False}


def ensure_annotators(conn: Connection, n: int, data_dir: str | Path) -> dict[str, str]:
    """email → token for n simulated users, created through the API when missing."""
    client = conn.client()
    me = conn.call("read the current user", client.users.whoami)
    existing = {u.email for u in conn.call("list users", client.users.list)}
    tokens = {}
    for i in range(1, n + 1):
        who = email(i)
        if who not in existing:
            conn.call("create a simulated annotator", lambda: client.users.create(
                username=who, email=who, first_name="Simulated", last_name=f"annotator {i}",
                active_organization=me.active_organization), retry=False)
        key = (str(Path(data_dir).resolve()), who)
        if key not in _TOKENS or not _token_works(conn, _TOKENS[key], who):
            _TOKENS[key] = server.user_token(who, data_dir)
        tokens[who] = _TOKENS[key]
    return tokens


def _token_works(conn: Connection, token: str, who: str) -> bool:
    """A remembered token still names this user (a data dir wiped and made again issues new ones)."""
    try:
        me = Connection(conn.url, token, "a simulated annotator's token", conn.files_root,
                        retries=0).client().users.whoami()
    except Exception:     # 401 for a stale token, or any other failure: fetch it anew
        return False
    return me.email == who


def simulate(run: Path, cfg: RunConfig, conn: Connection, truth_path: str | Path, error_rate: float,
             annotators: int, prefill_bias: float = 0.0, seed: int = 0, data_dir: str | Path | None = None,
             gold_share: float = 0.05, threads: int = 4, say: Callable[[str], None] = print,
             after: Callable[[int], None] | None = None, progress: bool = False) -> dict:
    """Every simulated annotator answers every pushed task it has not answered yet. Returns counts.
    ``progress``: a bar over the annotations (one POST each, the slow part of a round) where stderr is
    a terminal; a log gets the callers' lines per round instead of thousands of redraws."""
    run = Path(run)
    if not 0 <= error_rate <= 1 or not 0 <= prefill_bias <= 1:
        raise UserError("--error-rate and --prefill-bias must lie between 0 and 1")
    if annotators < 1:
        raise UserError("--annotators must be at least 1")
    if data_dir is None:
        state = server.read_state()
        if state is None or state.url.rstrip("/") != conn.url:
            raise UserError(f"simulated annotators need the local server's data dir to read their tokens; "
                            f"{conn.url} is not the server `counteranimal label-studio start` runs",
                            hint="Pass --data-dir DIR (the server's --data-dir).")
        data_dir = state.data_dir
    truth = read_truth(truth_path, run)
    wrote_gold = write_gold(run, truth, gold_share, seed) if gold_share > 0 else 0
    ledger = [r for r in sync.read_ledger(run).to_pylist() if r["status"] == "pushed"]
    project_id = sync.find_project(conn, run)
    tokens = ensure_annotators(conn, annotators, data_dir)
    ids = {u.email: u.id for u in conn.call("list users", conn.client().users.list)}
    done: set[tuple[str, int]] = set()     # (uid, user id): by uid, so a duplicated task is answered once
    shown: dict[int, str] = {}
    for t in export.export_tasks(conn, project_id):
        for a in t.get("annotations") or []:
            who = a.get("completed_by")
            done.add(((t.get("data") or {}).get("uid"), who.get("id") if isinstance(who, dict) else who))
    # What each task shows pre-filled (the export lists prediction ids only).
    client = conn.client()
    for p in conn.call("list predictions", lambda: client.predictions.list(project=project_id)):
        values = lsconfig.parse_result([r if isinstance(r, dict) else dict(r) for r in p.result or []])
        if values["background"] and p.task is not None:
            shown[p.task] = values["background"]
    vocabulary = lsconfig.vocabulary(cfg)
    todo = [(who, r) for who in tokens for r in ledger if (r["uid"], ids.get(who)) not in done]
    clients = {who: Connection(conn.url, tok, "a simulated annotator's token", conn.files_root, conn.retries,
                               conn.backoff) for who, tok in tokens.items()}
    # One SDK client per annotator, shared by the threads (its httpx pool is thread-safe): building one
    # per annotation cost ~60 ms of client CPU each, taken from the server on a 2-core machine.
    apis = {who: c.client() for who, c in clients.items()}
    missing_truth = sum(1 for r in ledger if r["uid"] not in truth)

    def label(item) -> None:
        who, r = item
        c = clients[who]
        a = answer(truth.get(r["uid"]), r["class_name"], vocabulary, error_rate, seed, who, r["uid"],
                   shown.get(r["task_id"]), prefill_bias)
        api = apis[who]
        if a["skip"]:
            c.call("skip a task", lambda: api.annotations.create(id=r["task_id"], result=[], was_cancelled=True),
                   retry=False)
        else:
            c.call("submit a simulated annotation", lambda: api.annotations.create(
                id=r["task_id"], result=lsconfig.annotation_result(a["background"], a["is_class"]), lead_time=1.0),
                retry=False)

    from tqdm import tqdm

    made = 0
    with ThreadPoolExecutor(max(1, threads)) as pool, \
            tqdm(total=len(todo), unit="annotation", desc="annotate simulate (SIMULATED)",
                 disable=None if progress else True, file=sys.stderr, leave=False) as bar:   # None: a terminal only
        for _ in pool.map(label, todo):
            made += 1
            bar.update()
            if after:
                after(made)
            if made % 500 == 0 and bar.disable:     # no bar drawn (off, or not a terminal): a line now and then
                say(f"annotate simulate: {made}/{len(todo)} simulated annotations")
    return {"annotators": sorted(tokens), "annotations": made, "tasks": len(ledger), "already": len(done),
            "missing_truth": missing_truth, "gold_written": wrote_gold, "error_rate": error_rate,
            "prefill_bias": prefill_bias}


def write_gold(run: Path, truth: dict[str, Truth], share: float, seed: int) -> int:
    """RUN/annotation/gold.parquet from the truth for a seeded share of the clean photos, unless one exists."""
    path = tasklib.annotation_dir(run) / "gold.parquet"
    if path.exists():
        return 0
    samples = schemas.read_folder(run / "samples", "samples").select(["uid", "class_name", "status"]).to_pylist()
    ok = sorted((s for s in samples if s["status"] == "ok" and s["uid"] in truth),
                key=lambda s: hashlib.sha1(f"gold:{seed}:{s['uid']}".encode()).hexdigest())
    rows = [dict(uid=s["uid"], background=truth[s["uid"]].background,
                 is_class="yes" if truth[s["uid"]].class_name == s["class_name"] else "no")
            for s in ok[:round(share * len(ok))]]
    if rows:
        atomic.write_parquet(path, schemas.conform(pa.Table.from_pylist(rows), "annotation_gold", "simulated gold"))
    return len(rows)
