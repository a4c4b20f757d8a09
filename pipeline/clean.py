"""Clean stage: check every stored image, then dedupe across the run and set each sample's outcome.

    plan (shards not yet checked) ─▶ check images per shard ─▶ RUN/clean/NNNNN.parquet
                                       all shards ─▶ dedupe run-wide ─▶ RUN/samples/NNNNN.parquet (status, reason,
                                                                         duplicate_of, flags)

The per-shard checks (decoding every image) are the expensive part: each shard's file appears
whole and a re-run skips shards already checked for the same samples. The run-wide decision is
cheap and recomputed every time, so it is always consistent with all shards.
"""
from __future__ import annotations

import time
from pathlib import Path

import apache_beam as beam
import pyarrow as pa

import schemas
from curation import atomic, clean, manifest, shard_reader, storage
from curation.config import CleanSpec, RunConfig
from curation.run_paths import RunPaths
from curation.errors import UserError


def checks_path(run_dir: Path, shard: str) -> Path:
    return RunPaths(run_dir).checks(shard)


class CheckShard(beam.DoFn):
    def __init__(self, run_dir: str, spec: CleanSpec):
        self.run_dir, self.spec = run_dir, spec

    def process(self, work: tuple[str, dict[str, str]]):
        shard, wanted = work
        # Through the run's own path (curation/storage.py), not Beam's FileSystems: the path carries the
        # storage options, which Beam's S3 file system lacks in an external worker pool's threads.
        path = RunPaths(self.run_dir).shards / shard
        if path.exists():
            with path.open("rb") as f:
                rows = clean.check_shard(shard, wanted, shard_reader.iter_samples(f), self.spec)
        else:
            rows = clean.check_shard(shard, wanted, [], self.spec)   # every wanted sample: missing_in_shard
        atomic.write_parquet(checks_path(storage.path(self.run_dir), shard), clean.checks_table(rows))
        yield shard


class Clean(beam.PTransform):
    """Image checks per shard in parallel, then one run-wide decision."""

    def __init__(self, run_dir: Path, cfg: RunConfig, work: list[tuple[str, dict[str, str]]]):
        super().__init__()
        self.run_dir, self.cfg, self.work = storage.path(run_dir), cfg, work

    def expand(self, pbegin):
        return (pbegin
                | "Plan" >> beam.Create(self.work)
                | "Spread" >> beam.Reshuffle()
                | "CheckImages" >> beam.ParDo(CheckShard(self.run_dir, self.cfg.clean))
                | "AllShards" >> beam.combiners.ToList()
                | "DedupeAndDecide" >> beam.Map(lambda _, run_dir, spec: decide(storage.path(run_dir), spec),
                                                self.run_dir, self.cfg.clean))


def plan(run_dir: Path) -> tuple[list[tuple[str, dict[str, str]]], int]:
    """(shard, {key: uid}) for shards whose checks are missing or stale, and how many are current."""
    samples = schemas.read_folder(RunPaths(run_dir).samples, "samples")
    work, done = [], 0
    for shard, wanted in clean.wanted_by_shard(samples):
        shard = shard or "_unstored"
        path = checks_path(run_dir, shard)
        if path.exists() and _covers(path, set(wanted.values())):
            done += 1
        else:
            work.append((shard, wanted))
    return work, done


def _covers(path: Path, uids: set[str]) -> bool:
    """The checks file holds exactly these uids and was written with the current image_checks
    schema (older ones lack what dedupe now needs, e.g. v1 had no thumbnails)."""
    try:
        found = storage.read_schema(path)
        if schemas.version_of(found) != schemas.version_of(schemas.SCHEMAS["image_checks"]):
            return False
        return set(storage.read_table(path, columns=["uid"]).column("uid").to_pylist()) == uids
    except (OSError, pa.ArrowInvalid, KeyError, TypeError):
        return False


def decide(run_dir: Path, spec: CleanSpec) -> dict:
    """Read every samples file and every check, set outcomes run-wide, rewrite changed samples files."""
    files = sorted((run_dir / "samples").glob("[0-9]*.parquet"))
    parts = [schemas.read(p, "samples") for p in files]
    checks = schemas.read_folder(run_dir / "clean", "image_checks")
    decided = clean.decide(pa.concat_tables(parts) if parts else schemas.SCHEMAS["samples"].empty_table(),
                           checks, spec)
    start = 0
    for path, part in zip(files, parts):
        new = decided.slice(start, part.num_rows)
        start += part.num_rows
        if not new.equals(part):
            atomic.write_parquet(path, new)
    return clean.outcome_counts(decided)


def run_clean(run_dir: str | Path, cfg: RunConfig, options, say=print) -> dict:
    run_dir = storage.path(run_dir)
    if not any(RunPaths(run_dir).samples.glob("[0-9]*.parquet")):
        raise UserError("no fetched samples to clean", where=str(RunPaths(run_dir).samples),
                        hint="Run the fetch stage first: `counteranimal curate RUN --stages sources,fetch`.")
    atomic.clean_temp_files(RunPaths(run_dir).clean)
    work, done = plan(run_dir)
    n = sum(len(w) for _, w in work)
    say(f"clean: {len(work) + done} shards, {done} already checked; checking {n} images")
    started = time.monotonic()
    with beam.Pipeline(options=options) as p:
        _ = p | "Clean" >> Clean(run_dir, cfg, work)
    counts = clean.outcome_counts(schemas.read_folder(RunPaths(run_dir).samples, "samples"))
    seconds = time.monotonic() - started
    manifest.record_stage(run_dir, "clean", config_digest=cfg.digest(), counts=counts, seconds=seconds,
                          images_checked=n, shards_done_before=done)
    say(f"clean: {n} images checked in {seconds:.1f}s; outcomes: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return counts
