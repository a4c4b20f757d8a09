"""The curate pipeline: the stages that exist so far, in DAG order.

    sources ─▶ RUN/candidates/candidates.parquet (+ RUN/candidates_rejected.parquet)
    fetch   ─▶ RUN/shards/NNNNN.tar (+ .parquet, _stats.json) and RUN/samples/NNNNN.parquet
    clean   ─▶ RUN/clean/NNNNN.parquet, then each sample's outcome in RUN/samples/ (pipeline/clean.py)
    score   ─▶ RUN/scores/NNNNN.parquet (+ text/), review flags in RUN/samples/ (pipeline/score.py)
    backgrounds ─▶ RUN/groups/model-CCCCC.parquet (pipeline/propose.py)
    propose ─▶ RUN/group_stats.parquet, RUN/attributes.parquet, RUN/proposals.parquet

Each stage reads the run directory and writes to it, so a stage can be re-run alone and a
killed run resumes: fetch skips every chunk whose samples file (written last) exists.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.compute as pc

import schemas
from curation import atomic, config, fetch_status, manifest, settings_record, storage
from curation.errors import UserError
from curation.fetch_status import Chunk
from curation.run_paths import RunPaths

STAGES = ["sources", "fetch", "clean", "score", "backgrounds", "propose"]


CuratePaths = RunPaths     # the stages below name artifacts through it (curation/run_paths.py)


@dataclass
class CurateResult:
    stages: list[str]
    counts: dict = field(default_factory=dict)     # stage -> counts


def run(run_dir: str | Path, stages: list[str] | None = None, beam_args: list[str] | None = None,
        say: Callable[[str], None] = print) -> CurateResult:
    run_dir = storage.path(run_dir)
    cfg = config.load(run_dir)
    stages = list(stages or STAGES)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise UserError(f"unknown stage {', '.join(unknown)}; stages are: {', '.join(STAGES)}", where="--stages")
    # Options are checked before any stage writes, so a flag typo leaves nothing behind.
    from pipeline.options import pipeline_options
    options = pipeline_options(beam_args or [])
    if "score" in stages:   # model names, checkpoint files and devices too, on the workers
        from pipeline.score import check_models
        check_models(cfg, RunPaths(run_dir).config, options)
    result = CurateResult(stages=[s for s in STAGES if s in stages])
    paths = CuratePaths(run_dir)
    if "sources" in stages:
        result.counts["sources"] = run_sources(cfg, paths, say)
    if "fetch" in stages:
        result.counts["fetch"] = run_fetch(cfg, paths, options, say)
    later = [s for s in STAGES[STAGES.index("clean"):] if s in stages]
    if later:
        _require_a_fetched_photo(paths, later[0])
    if "clean" in stages:
        from pipeline.clean import run_clean
        result.counts["clean"] = run_clean(paths.run, cfg, options, say)
    after_clean = [s for s in STAGES[STAGES.index("score"):] if s in stages]
    if after_clean:
        _require_a_clean_photo(paths, after_clean[0])
    if "score" in stages:
        from pipeline.score import run_score
        result.counts["score"] = run_score(paths.run, cfg, options, say, models_checked=True)
    if "backgrounds" in stages:
        from pipeline.propose import run_backgrounds
        result.counts["backgrounds"] = run_backgrounds(paths.run, cfg, options, say)
    if "propose" in stages:
        from pipeline.propose import run_propose
        result.counts["propose"] = run_propose(paths.run, cfg, options, say)
    return result


def run_sources(cfg: config.RunConfig, paths: CuratePaths, say) -> dict:
    from curation.sources import load_candidates

    started = time.monotonic()
    res = load_candidates(cfg, base_dir=paths.run)
    candidates = res.table.sort_by("uid")
    # Rejected rows first, candidates last: the candidates file marks the stage complete.
    atomic.write_parquet(paths.rejected, res.rejected)
    atomic.write_parquet(paths.candidates, candidates)
    counts = {"candidates": candidates.num_rows, "rejected": res.rejected.num_rows, **_plain(res.counts)}
    manifest.record_stage(paths.run, "sources", config_digest=cfg.digest(), counts=counts,
                          seconds=time.monotonic() - started)
    reasons = manifest.count_by(res.rejected, "reason")
    say(f"sources: {candidates.num_rows} candidates, {res.rejected.num_rows} rejected"
        + (f" ({_fmt_counts(reasons)})" if reasons else "") + f" -> {paths.candidates}")
    empty = [c.name for c in cfg.classes if c.name not in set(candidates.column("class_name").to_pylist())]
    if empty and candidates.num_rows:
        say(f"sources: {len(empty)} of {len(cfg.classes)} classes have no candidates: {', '.join(empty[:10])}"
            + (f", … ({len(empty) - 10} more)" if len(empty) > 10 else "")
            + "; they cannot get a pair (check the source or the class names and synonyms)")
    if candidates.num_rows == 0:
        from curation.sources import resolve_path

        raise UserError(
            "the source gave no candidates: "
            + (f"all {res.rejected.num_rows} rows were rejected ({_fmt_counts(reasons)}; each row and its reason "
               f"are in {paths.rejected})" if res.rejected.num_rows else "it has no rows"),
            where=f"{resolve_path(cfg, paths.run)} (source.kind {cfg.source.kind})",
            hint="Check source.path, source.columns and license_allow in config.yaml.")
    return counts


def run_fetch(cfg: config.RunConfig, paths: CuratePaths, options, say) -> dict:
    import apache_beam as beam

    from pipeline.fetch import Fetch
    from pipeline.fetch_chunk import FetchSettings, completed, remove_stale_temp

    if not paths.candidates.exists():
        raise UserError("no candidates to fetch", where=str(paths.candidates),
                        hint="Run the sources stage first: `counteranimal curate RUN --stages sources,fetch`.")
    started = time.monotonic()
    candidates = schemas.read(paths.candidates, "candidates")
    if candidates.num_rows == 0:
        raise UserError("no candidates to fetch: the sources stage kept none", where=str(paths.candidates),
                        hint=f"See why in {paths.rejected}, fix the source, then run the sources stage again.")
    if not pc.all(pc.equal(candidates.column("uid"),
                                                   candidates.sort_by("uid").column("uid"))).as_py():
        candidates = candidates.sort_by("uid")   # chunks are planned over uid order
        atomic.write_parquet(paths.candidates, candidates)
    settings = FetchSettings.from_config(cfg, paths.run)
    chunks = fetch_status.plan_chunks(candidates.num_rows, settings.chunk_size)
    removed = remove_stale_temp(paths.run) + _remove_unplanned(paths, len(chunks))
    pending = [c for c in chunks if completed(paths.run, c, _rows(candidates, c)) is None]
    say(f"fetch: {len(chunks)} chunks of up to {settings.chunk_size} ({candidates.num_rows} candidates), "
        f"{len(chunks) - len(pending)} already done" + (f", {removed} stale leftovers removed" if removed else ""))
    _say_stored_settings_changed(cfg, paths, done=len(chunks) - len(pending), say=say)
    if pending:
        with _Progress(paths.samples, chunks, say):
            with beam.Pipeline(options=options) as p:
                _ = p | "Fetch" >> Fetch(paths.run, paths.candidates.resolve(), pending, settings)
    samples = _check_every_candidate(paths, candidates, chunks)
    counts = fetch_status.tally(_as_fetched(samples))
    counts.update(chunks=len(chunks), fetched_chunks=len(pending))
    seconds = time.monotonic() - started
    manifest.record_stage(paths.run, "fetch", config_digest=cfg.digest(), counts=counts, seconds=seconds,
                          images_per_s=round(counts["candidates"] / seconds, 2) if pending and seconds else None)
    say(f"fetch: done: {counts['ok']} ok, {counts['failed']} failed"
        + (f" ({_fmt_counts(counts['reasons'])})" if counts["reasons"] else "")
        + f" in {seconds:.1f}s -> shards in {paths.shards}, statuses in {paths.samples}")
    return counts


STORED = ("image_size", "resize_only_if_bigger", "encode_format", "encode_quality")   # what shapes a stored photo


def _say_stored_settings_changed(cfg: config.RunConfig, paths: CuratePaths, done: int, say) -> None:
    """A finished chunk is never fetched again, so say when the settings that shape the stored
    photos changed since the shards were written (RUN/shards/settings.json), and how to redo them."""
    now = {k: getattr(cfg.fetch, k) for k in STORED}
    before = settings_record.replace(paths.shards / "settings.json", now)
    if done and before:
        changed = ", ".join(f"fetch.{k} {before.get(k)} → {now[k]}" for k in STORED if before.get(k) != now[k])
        say(f"fetch: {changed} since {paths.shards} was written; the {done} chunk(s) already done keep their "
            f"photos as stored (remove {paths.shards} and {paths.samples} to fetch everything again)")


def _require_a_fetched_photo(paths: CuratePaths, stage: str) -> None:
    """Stop before the stages after fetch when fetch got no photo at all (a wrong base URL, a server
    that is down, a network not allowed): they would only report that nothing was cleaned or scored."""
    if not paths.samples.is_dir():
        return
    samples = schemas.read_folder(paths.samples, "samples")
    counts = fetch_status.tally(_as_fetched(samples))
    if samples.num_rows == 0 or counts["ok"]:
        return
    raise UserError(
        f"none of the {counts['candidates']} candidates could be fetched ({_fmt_counts(counts['reasons'])}), "
        f"so the {stage} stage has nothing to work on; each candidate's reason is in {paths.samples}",
        where=str(paths.run),
        hint=f"Fix the URLs, the server or fetch.allowed_networks, then remove {paths.shards} and {paths.samples} "
             "and run the same command again (a finished chunk is never fetched twice).")


def _require_a_clean_photo(paths: CuratePaths, stage: str) -> None:
    """Stop before score when clean rejected every fetched photo (thresholds too strict for the photos)."""
    if not paths.clean.is_dir() or not paths.samples.is_dir():
        return
    samples = schemas.read_folder(paths.samples, "samples")
    status = samples.column("status")
    if samples.num_rows == 0 or pc.any(pc.equal(status, "ok")).as_py():
        return
    rejected = samples.filter(pc.equal(status, "rejected"))
    if rejected.num_rows == 0:
        return     # nothing was fetched: the fetch check says so
    reasons = _fmt_counts(manifest.count_by(rejected, "reason"))
    raise UserError(
        f"clean rejected every one of the {rejected.num_rows} fetched photos ({reasons}), so the {stage} stage "
        f"has nothing to work on; each photo's reason is in {paths.samples}", where=str(paths.config),
        hint="Loosen clean.min_side, clean.max_aspect_ratio or clean.near_duplicate_bits, then run the clean stage "
             "again (it re-applies them without decoding the photos again).")


def _rows(candidates: pa.Table, chunk: Chunk) -> pa.Table:
    return candidates.slice(chunk.start, chunk.stop - chunk.start)


def _remove_unplanned(paths: CuratePaths, n_chunks: int) -> int:
    """Outputs of chunks beyond the current plan (an earlier, longer candidate list) would be
    counted twice; remove them."""
    n = 0
    for folder, pattern in ((paths.samples, "*.parquet"), (paths.shards, "*")):
        for p in folder.glob(pattern) if folder.is_dir() else []:
            stem = p.name.split(".", 1)[0].split("_", 1)[0]
            if stem.isdigit() and int(stem) >= n_chunks:
                p.unlink()
                n += 1
    return n


def _check_every_candidate(paths: CuratePaths, candidates: pa.Table, chunks: list[Chunk]) -> pa.Table:
    missing = [c.name for c in chunks if not (paths.samples / f"{c.name}.parquet").exists()]
    if missing:
        raise RuntimeError(f"fetch finished but chunks {', '.join(missing[:5])} have no samples file; "
                           "re-run the same command to fetch them")
    samples = schemas.read_folder(paths.samples, "samples")
    got, want = samples.column("uid").to_pylist(), candidates.column("uid").to_pylist()
    if sorted(got) != want:
        raise RuntimeError(f"samples do not cover the candidates one-to-one ({len(got)} rows for {len(want)} "
                           "candidates)")
    return samples


def _as_fetched(samples: pa.Table) -> pa.Table:
    """Samples as fetch left them: a photo that clean later rejected was fetched fine."""
    rejected = pc.equal(samples.column("status"), "rejected")
    status = pc.if_else(rejected, "ok", samples.column("status"))
    reason = pc.if_else(rejected, pa.scalar(None, pa.string()), samples.column("reason"))
    return samples.set_column(samples.schema.get_field_index("status"), "status", status) \
                  .set_column(samples.schema.get_field_index("reason"), "reason", reason)


def _fmt_counts(counts: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _plain(d) -> dict:
    return {str(k): v for k, v in dict(d or {}).items() if k not in ("candidates", "rejected")}


class _Progress:
    """Prints chunks done / total and images ok / failed as samples files appear.

    It watches the run directory, so it reports the same way whichever runner does the work.
    """

    def __init__(self, samples_dir: Path, chunks: list[Chunk], say, every: float = 1.0):
        self.dir, self.total, self.say, self.every = samples_dir, len(chunks), say, every
        self._seen: dict[str, tuple[int, int]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self):
        self._poll(report=False)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self._poll(report=True)

    def _watch(self):
        while not self._stop.wait(self.every):
            self._poll(report=True)

    def _poll(self, report: bool):
        new = False
        for p in sorted(self.dir.glob("[0-9]*.parquet")) if self.dir.is_dir() else []:
            if p.name in self._seen:
                continue
            try:
                status = storage.read_table(p, columns=["status"]).column("status").to_pylist()
            except (OSError, pa.ArrowInvalid):
                continue
            failed = status.count("failed")   # "rejected" is clean's verdict on a photo fetched fine
            self._seen[p.name] = (len(status) - failed, failed)
            new = True
        if new and report:
            ok = sum(v[0] for v in self._seen.values())
            failed = sum(v[1] for v in self._seen.values())
            self.say(f"fetch: {len(self._seen)}/{self.total} chunks, {ok} ok, {failed} failed")
