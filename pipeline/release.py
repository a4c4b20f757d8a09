"""The release pipeline: a composite PTransform over curation.release.

    plan (driver)  proposals ⋈ groups ⋈ samples ⋈ candidates → photos per split, each with its output shard
    Release        run shards ─▶ read the chosen photos ─▶ by (split, output shard) ─▶ write deterministic tars
                                                                                  ─▶ records ─▶ the other files
    publish        RUN/release/.NAME-VERSION.*.tmp ─▶ RUN/release/NAME-VERSION (one rename)

On the default runner (the DirectRunner with one worker, in memory: every transform in this process,
one after the other) the same functions run in the driver without building a pipeline: there Beam
adds its start-up (~0.4 s, as long as writing a thousand photos) and the shuffle's encoding of every
image, and nothing else (bench/RESULTS.md, "release"). Any other runner or worker count runs the
pipeline; the bytes written are the same either way (tests/test_release.py compares the two).

Input shards are read with curation.shard_reader (the reader clean and score use) through the run's
own paths (curation/storage.py); a local release folder appears in one rename, one in an object
store object by object with SHA256SUMS last (curation.release.publish).
"""
from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Iterable

import apache_beam as beam
import pyarrow.compute as pc

import schemas
from curation import atomic, card, croissant, manifest, release, shard_reader, storage, zeroshot
from curation import release_layout as layout
from curation.config import RunConfig
from curation.run_paths import RunPaths
from curation.errors import UserError
from pipeline.score import read_text_embeddings


def read_photos(shard: str, run: str, photos_file: str) -> Iterable[tuple[tuple[str, int], list[tuple]]]:
    """One run shard's chosen photos → per (split, output shard) one batch of (key, extension, bytes).

    Batches, not single photos, cross the shuffle: a few elements per shard instead of one per photo."""
    wanted = {p.in_key: p for p in release.read_photos(photos_file, shard)}
    batches: dict[tuple[str, int], list[tuple]] = {}
    found = set()
    path = RunPaths(run).shards / shard
    with path.open("rb") as f:   # a local file or an object, with the run's storage options (curation/storage.py)
        for key, parts in shard_reader.iter_samples(f):
            photo = wanted.get(key)
            image = release.image_ext(parts) if photo is not None else None
            if image is not None:   # only plain values cross the shuffle; the writer looks the photo up by key
                batches.setdefault((photo.group, photo.out_shard), []).append((photo.key, *image))
                found.add(key)
    missing = sorted(set(wanted) - found)
    if missing:
        raise UserError(f"sample {missing[0]} (uid {wanted[missing[0]].uid}) is marked ok in RUN/samples but its "
                        f"image is not in the shard ({len(missing)} such)", where=str(path),
                        hint="The shard changed after the clean stage: re-run `counteranimal curate RUN`.")
    yield from sorted(batches.items(), key=lambda kv: kv[0])


class WriteShard(beam.DoFn):
    """All photos of one output shard → the tar, and one metadata record per photo."""

    def __init__(self, folder: str, photos_file: str):
        self.folder, self.photos_file = folder, photos_file

    def process(self, element):
        (split, index), batches = element
        rel = f"{split}/{layout.shard_name(index)}"
        photos = release.photos_by_key(self.photos_file)
        samples, records = [], []
        for key, ext, data in (item for batch in batches for item in batch):
            photo = photos[key]
            digest = hashlib.sha256(data).hexdigest()
            record = release.sample_record(photo, digest)
            samples.append((photo.key, release.sample_members(photo.key, ext, data, photo.label, record)))
            records.append(dict(record, key=photo.key, shard=rel, image_ext=ext, bytes=len(data),
                                width=photo.width, height=photo.height, run_class_idx=photo.class_idx,
                                flags=photo.flags))
        path = storage.path(self.folder) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        digest, _ = release.write_tar(path, samples)
        yield rel, digest, records      # one element per shard: its records travel as one batch


class Release(beam.PTransform):
    """Run shards → release shards under ``folder``; returns the PCollection of metadata records.

    ``photos_file`` (curation.release.write_photos) says which photos of each run shard to release and where."""

    def __init__(self, shards: list[str], photos_file: Path, run: Path, folder: Path):
        super().__init__()
        self.shards, self.photos_file, self.run, self.folder = shards, photos_file, run, folder

    def expand(self, pbegin):
        return (pbegin
                | "RunShards" >> beam.Create(self.shards)
                | "ReadPhotos" >> beam.FlatMap(read_photos, self.run, self.photos_file)   # paths: curation/storage
                | "ByOutputShard" >> beam.GroupByKey()
                | "WriteShards" >> beam.ParDo(WriteShard(self.folder, self.photos_file)))


def in_process(options) -> bool:
    """Run the Release functions in the driver? Only where Beam would run them in this process, one
    after the other, anyway: the DirectRunner with one worker in memory (the default)."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    from pipeline.options import is_direct

    direct = options.view_as(DirectOptions)
    return (is_direct(options.view_as(StandardOptions).runner) and (direct.direct_num_workers or 1) == 1
            and direct.direct_running_mode in (None, "in_memory"))


def write_in_process(shards: list[str], photos_file: Path, run: Path, folder: Path) -> list[tuple[str, str, list[dict]]]:
    """What Release does, as plain calls: read each run shard once, then write each output shard."""
    batches: dict[tuple[str, int], list[list[tuple]]] = {}
    for shard in shards:
        for out, batch in read_photos(shard, str(run), str(photos_file)):
            batches.setdefault(out, []).append(batch)
    writer = WriteShard(str(folder), str(photos_file))
    return [written for out in sorted(batches) for written in writer.process((out, batches[out]))]


def one_vs_k_sets(run: Path, cfg: RunConfig, labels: Iterable[int]) -> dict[str, list[int]]:
    """The reference model's "1 vs k" label sets, chosen as the score stage chose them (curation.zeroshot
    .closest_labels over every scored photo of the class), for the released classes."""
    model_id = release.reference_model(cfg)
    scores = schemas.read_folder(RunPaths(run).scores, "scores")
    scores = scores.filter(pc.equal(scores.column("model_id"), model_id))
    if scores.num_rows == 0:
        raise UserError(f"no scores of the reference model {model_id!r}", where=str(RunPaths(run).scores),
                        hint="Run the score stage first.")
    from curation import arrays

    _, label_emb = read_text_embeddings(run, model_id, "label")
    truth = scores.column("true_label").to_numpy()
    sets = zeroshot.closest_labels(arrays.embeddings(scores.column("embedding")), truth, label_emb,
                                   cfg.score.one_vs_k)
    return {str(label): [int(i) for i in sets[label]] for label in sorted(set(labels)) if label in sets}


def run_release(run: str | Path, cfg: RunConfig, options, *, name: str, version: str, verified: bool = True,
                max_shard_bytes: int = release.DEFAULT_MAX_SHARD_BYTES, say=print, use_beam: bool | None = None) -> Path:
    """The release folder, written aside and renamed into place. ``use_beam``: True/False force the Beam
    pipeline or the in-process path; None (the default) picks by in_process()."""
    run = storage.path(run)
    started = time.monotonic()
    final = layout.release_dir(run, name, version)
    plan = release.plan(run, cfg, verified=verified, max_shard_bytes=max_shard_bytes)
    n = sum(len(v) for v in plan.photos.values())
    say(f"release: {n} photos of {len(plan.pairs)} classes "
        f"({', '.join(f'{s} {len(plan.photos[s])} in {plan.nshards[s]} shards' for s in layout.SPLITS)})"
        f"{'' if verified else ', UNVERIFIED (model-proposed pairs and groups)'}"
        f"{f'; {len(plan.excluded)} excluded' if plan.excluded else ''}")
    absent = [s for s in plan.input_shards() if not (RunPaths(run).shards / s).is_file()]
    if absent:
        raise UserError(f"{len(absent)} shard(s) holding photos to release are missing, e.g. {absent[0]}",
                        where=str(RunPaths(run).shards), hint="Re-fetch them: `counteranimal curate RUN` (fetch resumes).")
    sets = one_vs_k_sets(run, cfg, [p.label for p in plan.pairs])
    tmp = release.temp_folder(final)
    photos_file = tmp.parent / f"{tmp.name}.photos.tmp"     # beside the temp folder: not part of the release
    try:
        release.write_photos(plan, photos_file)
        engine = "beam" if use_beam or (use_beam is None and not in_process(options)) else "in-process"
        if engine == "in-process":
            written = write_in_process(plan.input_shards(), photos_file, run, tmp)
            finish(written, tmp, plan.summary(), cfg, run, name, version, sets)
        else:
            with beam.Pipeline(options=options) as p:
                records = (p
                           | "Release" >> Release(plan.input_shards(), photos_file, run, tmp)
                           | "Collect" >> beam.combiners.ToList())
                _ = records | "Finish" >> beam.Map(finish, tmp, plan.summary(), cfg, run, name, version, sets)
        missing = [f"{s}/{layout.shard_name(i)}" for s in layout.SPLITS for i in range(plan.nshards[s])
                   if not (tmp / s / layout.shard_name(i)).is_file()]
        if missing or not (tmp / layout.CHECKSUMS).is_file():
            raise RuntimeError(f"the release pipeline finished without writing {missing or [layout.CHECKSUMS]}")
        release.publish(tmp, final)
    except BaseException:
        storage.rmtree(tmp)
        raise
    finally:
        photos_file.unlink(missing_ok=True)
    counts = {"photos": n, "classes": len(plan.pairs), "verified": verified,
              **{f"{s}_photos": len(plan.photos[s]) for s in layout.SPLITS},
              **{f"{s}_shards": plan.nshards[s] for s in layout.SPLITS},
              "excluded": len(plan.excluded)}
    seconds = time.monotonic() - started
    manifest.record_stage(run, "release", config_digest=cfg.digest(), counts=counts, seconds=seconds,
                          release=str(final), engine=engine)
    say(f"release: {layout.release_name(name, version)} written in {seconds:.1f}s ({engine}) -> {final}")
    return final


def finish(shards: list[tuple[str, str, list[dict]]], folder: str, plan: release.Plan, cfg: RunConfig, run: str,
           name: str, version: str, sets: dict) -> str:
    """Everything beside the shards, once every shard is written (the pipeline's last step).

    ``shards``: per written shard its path in the release, its sha256 and its photos' records."""
    folder = storage.path(folder)
    records = [r for _, _, rs in shards for r in rs]
    digests = {rel: digest for rel, digest, _ in shards}   # the shards are not hashed twice
    for split in layout.SPLITS:
        (folder / split).mkdir(exist_ok=True)
        (folder / split / layout.NSHARDS).write_text(f"{plan.nshards[split]}\n")
    release.write_lines(folder / layout.CLASSNAMES, plan.label_names)
    release.write_lines(folder / layout.TEMPLATES, plan.templates)
    lines = [f"{json.dumps(k)}: {json.dumps(v)}" for k, v in sorted(sets.items(), key=lambda kv: int(kv[0]))]
    (folder / layout.ONE_VS_K).write_text("{\n" + ",\n".join(lines) + "\n}\n")   # one class per line
    table = release.metadata_table(records)
    atomic.write_parquet(folder / layout.METADATA, table)
    context = card.context(plan, table, cfg, storage.path(run), name, version, sets)
    (folder / layout.CARD).write_text(card.render(context))
    (folder / layout.CROISSANT).write_text(croissant.dumps(croissant.build(folder, context, digests)))
    release.write_checksums(folder, digests)
    return str(folder)
