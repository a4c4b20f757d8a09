"""Clean stage: check every stored image, then dedupe across the run and set each sample's outcome.

    plan (names of shards not yet checked) ─▶ check images per shard ─▶ RUN/clean/NNNNN.parquet
    samples files ─▶ image outcomes + dedupe candidates ─▶ per content hash: exact duplicates
                     per pHash band bucket: close pairs ─▶ ⋈ thumbnails: confirmed pairs ─▶ components
                     per component (⋈ thumbnails): near duplicates (greedy, no chains)
                     decisions per samples file ─▶ RUN/samples/NNNNN.parquet (status, reason, duplicate_of, flags)

The job graph carries shard and samples-file names only; each step reads its files itself. The
per-shard checks (decoding every image) are the expensive part: each shard's file appears whole
and a re-run skips shards already checked for the same samples. The run-wide decision is cheap and
recomputed every time, so it is always consistent with all shards; it runs as per-key steps
(curation/dedupe.py: the same decisions as dedupe.find_duplicates in one process). The one step
that sees the whole run joins the confirmed pairs into components: its input grows with the near
duplicates, not with the photos.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import apache_beam as beam
import pyarrow as pa

import schemas
from curation import atomic, clean, dedupe, manifest, shard_reader, storage
from curation.config import CleanSpec, RunConfig
from curation.run_paths import RunPaths
from curation.errors import UserError

UNSTORED = "_unstored"    # the checks of cleanable samples no shard holds (every one missing_in_shard)


def checks_path(run_dir: Path, shard: str) -> Path:
    return RunPaths(run_dir).checks(shard)


def samples_files(run_dir: Path) -> list[str]:
    """The samples files' names (one per fetch chunk, named like its shard)."""
    return sorted(p.name for p in RunPaths(run_dir).samples.glob("[0-9]*.parquet"))


def _read_samples(run_dir: Path, shard: str) -> pa.Table:
    """The samples that may name ``shard``: its own chunk's file (all files for UNSTORED)."""
    if shard == UNSTORED:
        return schemas.read_folder(RunPaths(run_dir).samples, "samples")
    return schemas.read(RunPaths(run_dir).samples / f"{shard.split('.', 1)[0]}.parquet", "samples")


def wanted_in(run_dir: Path, shard: str) -> dict[str, str]:
    """{key: uid} of the cleanable samples stored in ``shard``."""
    for name, wanted in clean.wanted_by_shard(_read_samples(run_dir, shard)):
        if (name or UNSTORED) == shard:
            return wanted
    return {}


class CheckShard(beam.DoFn):
    def __init__(self, run_dir: str, spec: CleanSpec):
        self.run_dir, self.spec = run_dir, spec

    def process(self, shard: str):
        wanted = wanted_in(storage.path(self.run_dir), shard)
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


def file_outcomes(run_dir: Path, name: str, spec: CleanSpec) -> tuple[pa.Table, list[dict], list[dedupe.Candidate]]:
    """One samples file as read, its rows with the image-check outcomes, and its dedupe candidates."""
    samples = schemas.read(RunPaths(run_dir).samples / name, "samples")
    rows = samples.to_pylist()
    checks: dict[str, dict] = {}
    for shard in sorted({r["shard"] or UNSTORED for r in rows if clean.is_cleanable(r)}):
        path = checks_path(run_dir, shard)
        if path.exists():
            checks.update((r["uid"], r) for r in schemas.read(path, "image_checks").to_pylist())
    rows, passed = clean.image_outcomes(rows, checks, spec)
    return samples, rows, passed


class ReadCandidates(beam.DoFn):
    """A samples file's name -> (name, Candidate without thumbnails) for each of its images that passed
    the checks, and ("thumbs") (uid, thumbnails) for those that can be near duplicates: the steps that
    group images move hashes; thumbnails go only where a pair or a component needs them."""

    def __init__(self, run_dir: str, spec: CleanSpec):
        self.run_dir, self.spec = run_dir, spec

    def process(self, name: str):
        for c in file_outcomes(storage.path(self.run_dir), name, self.spec)[2]:
            near = dedupe.near_candidate(c)
            if near:
                yield beam.pvalue.TaggedOutput("thumbs", (c.uid, c.thumbnails))
            yield name, dataclasses.replace(c, thumbnails=None), near


def _exact(element):
    """One content hash's images: the kept one (main output) and the others ("dropped")."""
    _, items = element
    items = list(items)
    keep, dups = dedupe.exact_split([c for _, c, _ in items])
    where = {c.uid: (name, c.class_idx) for name, c, _ in items}
    yield next(item for item in items if item[1] is keep)
    for uid, dup in dups:
        yield beam.pvalue.TaggedOutput("dropped", (uid, *where[uid], dup))


def _with_thumbs(element, side: str):
    """(uid, {"thumbs": [t], side: [...]}) -> (value, thumbnails) for each value on ``side``."""
    _, joined = element
    thumbs = list(joined["thumbs"])
    for value in joined[side]:
        if thumbs:
            yield value, thumbs[0]


def _confirm(element, max_difference: float):
    """((a, b), {"a": [ta], "b": [tb]}) -> the pair when the thumbnails agree."""
    pair, joined = element
    a, b = list(joined["a"]), list(joined["b"])
    if a and b and dedupe.confirmed(a[0], b[0], max_difference):
        yield pair


class Components(beam.CombineFn):
    """Confirmed pairs -> {uid: component}; its input grows with the near duplicates, not the photos."""

    def create_accumulator(self):
        return []

    def add_input(self, acc, pair):
        acc.append(pair)
        return acc

    def merge_accumulators(self, accs):
        return [p for acc in accs for p in acc]

    def extract_output(self, acc):
        return dedupe.components(sorted(acc))


def _near(element, max_bits: int, max_difference: float):
    """One component's images -> (uid, samples file, class_idx, Duplicate) for its near duplicates."""
    _, items = element
    items = [(name, dataclasses.replace(c, thumbnails=thumbs)) for (name, c), thumbs in items]
    where = {c.uid: (name, c.class_idx) for name, c in items}
    dropped, _ = dedupe.find_duplicates([c for _, c in items], max_bits, max_difference)
    for uid, dup in sorted(dropped.items()):
        yield uid, *where[uid], dup


def _resolve(element):
    """Per kept-or-near uid: exact duplicates of a near duplicate point at that image's keeper."""
    _, joined = element
    near = list(joined["near"])
    target = near[0][3].duplicate_of if near else None
    yield from near
    for uid, name, cls, dup in joined["exact"]:
        yield uid, name, cls, dedupe.Duplicate(dup.reason, target or dup.duplicate_of)


def _across(element):
    """A kept image whose duplicates carry another class -> (its samples file, ("flag", uid))."""
    uid, joined = element
    kept = list(joined["kept"])
    if kept and any(cls != kept[0][1].class_idx for cls in joined["classes"]):
        yield kept[0][0], ("flag", uid)


class WriteOutcomes(beam.DoFn):
    """(samples file, decisions) -> the file rewritten with every outcome, when any changed."""

    def __init__(self, run_dir: str, spec: CleanSpec):
        self.run_dir, self.spec = run_dir, spec

    def process(self, element):
        name, joined = element
        dropped, across = {}, set()
        for decision in joined["decisions"]:
            if decision[0] == "flag":
                across.add(decision[1])
            else:
                dropped[decision[1]] = decision[2]
        run_dir = storage.path(self.run_dir)
        samples, rows, _ = file_outcomes(run_dir, name, self.spec)
        new = schemas.conform(pa.Table.from_pylist(clean.apply_duplicates(rows, dropped, across),
                                                   schema=samples.schema), "samples")
        if not new.equals(samples):
            atomic.write_parquet(RunPaths(run_dir).samples / name, new)
        yield name


class Decide(beam.PTransform):
    """Samples files (names) -> every sample's outcome, written back per file; yields the file names."""

    def __init__(self, run_dir: str, spec: CleanSpec):
        super().__init__()
        self.run_dir, self.spec = run_dir, spec

    def expand(self, files):
        bits, diff = self.spec.near_duplicate_bits, self.spec.near_duplicate_max_cell_difference
        read = files | "ReadCandidates" >> beam.ParDo(ReadCandidates(self.run_dir, self.spec)).with_outputs(
            "thumbs", main="candidates")
        thumbs = read.thumbs
        exact = (read.candidates
                 | "ByContentHash" >> beam.Map(lambda item: (item[1].sha256, item))
                 | "GroupByHash" >> beam.GroupByKey()
                 | "ExactDuplicates" >> beam.FlatMap(_exact).with_outputs("dropped", main="kept"))
        kept = exact.kept | "Light" >> beam.Map(lambda item: item[:2])     # (samples file, Candidate)
        close = (exact.kept
                 | "Buckets" >> beam.FlatMap(lambda item: [(key, item[1]) for key in dedupe.band_keys(item[1], bits)]
                                             if item[2] else [])
                 | "GroupByBucket" >> beam.GroupByKey()
                 | "ClosePairs" >> beam.FlatMap(lambda kv: dedupe.close_pairs(kv[0], list(kv[1]), bits)))
        with_a = ({"thumbs": thumbs, "pairs": close | "ByFirst" >> beam.Map(lambda ab: (ab[0], ab))}
                  | "JoinFirst" >> beam.CoGroupByKey()
                  | "FirstThumbs" >> beam.FlatMap(_with_thumbs, "pairs"))
        with_b = ({"thumbs": thumbs, "pairs": close | "BySecond" >> beam.Map(lambda ab: (ab[1], ab))}
                  | "JoinSecond" >> beam.CoGroupByKey()
                  | "SecondThumbs" >> beam.FlatMap(_with_thumbs, "pairs"))
        pairs = ({"a": with_a, "b": with_b}
                 | "JoinPair" >> beam.CoGroupByKey()
                 | "ConfirmedPairs" >> beam.FlatMap(_confirm, diff))
        comp = pairs | "Components" >> beam.CombineGlobally(Components())
        members = (kept
                   | "InComponent" >> beam.FlatMap(lambda nc, comp: [(nc[1].uid, (comp[nc[1].uid], nc))]
                                                   if nc[1].uid in comp else [], beam.pvalue.AsSingleton(comp)))
        near = ({"thumbs": thumbs, "members": members}
                | "JoinMembers" >> beam.CoGroupByKey()
                | "MemberThumbs" >> beam.FlatMap(_with_thumbs, "members")
                | "ByComponent" >> beam.Map(lambda m: (m[0][0], (m[0][1], m[1])))
                | "GroupByComponent" >> beam.GroupByKey()
                | "NearDuplicates" >> beam.FlatMap(_near, bits, diff))
        dropped = ({"exact": exact.dropped | "ExactByKeeper" >> beam.Map(lambda d: (d[3].duplicate_of, d)),
                    "near": near | "NearByUid" >> beam.Map(lambda d: (d[0], d))}
                   | "JoinDrops" >> beam.CoGroupByKey()
                   | "Resolve" >> beam.FlatMap(_resolve))
        flags = ({"kept": kept | "KeptByUid" >> beam.Map(lambda nc: (nc[1].uid, nc)),
                  "classes": dropped | "ClassByTarget" >> beam.Map(lambda d: (d[3].duplicate_of, d[2]))}
                 | "JoinTargets" >> beam.CoGroupByKey()
                 | "AcrossClasses" >> beam.FlatMap(_across))
        decisions = ((dropped | "DropByFile" >> beam.Map(lambda d: (d[1], ("drop", d[0], d[3]))), flags)
                     | "AllDecisions" >> beam.Flatten())
        return ({"file": files | "FileKey" >> beam.Map(lambda n: (n, None)), "decisions": decisions}
                | "ByFile" >> beam.CoGroupByKey()
                | "WriteOutcomes" >> beam.ParDo(WriteOutcomes(self.run_dir, self.spec)))


class Clean(beam.PTransform):
    """Image checks per shard in parallel, then the run-wide decision as per-key steps (Decide)."""

    def __init__(self, run_dir: Path, cfg: RunConfig, work: list[str], files: list[str]):
        super().__init__()
        self.run_dir, self.cfg, self.work, self.files = storage.path(run_dir), cfg, work, files

    def expand(self, pbegin):
        checked = (pbegin
                   | "Plan" >> beam.Create(self.work)
                   | "Spread" >> beam.Reshuffle()
                   | "CheckImages" >> beam.ParDo(CheckShard(self.run_dir, self.cfg.clean)))
        files = (pbegin
                 | "SamplesFiles" >> beam.Create(self.files)
                 | "AfterChecks" >> beam.Map(lambda name, _: name, beam.pvalue.AsList(checked))
                 | "SpreadFiles" >> beam.Reshuffle())
        return files | "Decide" >> Decide(self.run_dir, self.cfg.clean)


def plan(run_dir: Path) -> tuple[list[str], int, int]:
    """Names of shards whose checks are missing or stale, how many are current, and the images to check."""
    samples = schemas.read_folder(RunPaths(run_dir).samples, "samples")
    work, done, n = [], 0, 0
    for shard, wanted in clean.wanted_by_shard(samples):
        shard = shard or UNSTORED
        path = checks_path(run_dir, shard)
        if path.exists() and _covers(path, set(wanted.values())):
            done += 1
        else:
            work.append(shard)
            n += len(wanted)
    return work, done, n


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
    """The whole-run decision in this process (clean.decide over every file): the reference the
    pipeline's Decide must equal, kept for tests and for comparing the two."""
    files = sorted(RunPaths(run_dir).samples.glob("[0-9]*.parquet"))
    parts = [schemas.read(p, "samples") for p in files]
    checks = schemas.read_folder(RunPaths(run_dir).clean, "image_checks")
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
    work, done, n = plan(run_dir)
    say(f"clean: {len(work) + done} shards, {done} already checked; checking {n} images")
    started = time.monotonic()
    with beam.Pipeline(options=options) as p:
        _ = p | "Clean" >> Clean(run_dir, cfg, work, samples_files(run_dir))
    counts = clean.outcome_counts(schemas.read_folder(RunPaths(run_dir).samples, "samples"))
    seconds = time.monotonic() - started
    manifest.record_stage(run_dir, "clean", config_digest=cfg.digest(), counts=counts, seconds=seconds,
                          images_checked=n, shards_done_before=done)
    say(f"clean: {n} images checked in {seconds:.1f}s; outcomes: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return counts
