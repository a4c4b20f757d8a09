"""The release pipeline: a composite PTransform over curation.release.

    plan (driver)  proposals ⋈ groups ⋈ samples ⋈ candidates → photos per split, each with its output shard
    Release        run shards ─▶ read the chosen photos ─▶ by (split, output shard) ─▶ write deterministic tars
                                                                                  ─▶ records ─▶ the other files
    publish        RUN/release/.NAME-VERSION.*.tmp ─▶ RUN/release/NAME-VERSION (one rename)

Input shards are read with curation.shard_reader (the reader clean and score use) through Beam's
FileSystems; the release folder is written on the local file system, so it can appear in one rename.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path
from typing import Iterable

import apache_beam as beam
import pyarrow.compute as pc
import pyarrow.parquet as pq

import schemas
from curation import card, croissant, manifest, release, shard_reader, zeroshot
from curation import release_layout as layout
from curation.config import RunConfig
from curation.errors import UserError
from pipeline.score import read_text_embeddings


def read_photos(item: tuple[str, list[release.Photo]]) -> Iterable[tuple[tuple[str, int], tuple]]:
    """One run shard's chosen photos → ((split, output shard), (photo, extension, bytes))."""
    from apache_beam.io.filesystems import FileSystems

    path, photos = item
    wanted = {p.in_key: p for p in photos}
    found = set()
    with FileSystems.open(path) as f:
        for key, parts in shard_reader.iter_samples(f):
            photo = wanted.get(key)
            if photo is None:
                continue
            image = release.image_ext(parts)
            if image is None:
                continue
            found.add(key)
            yield (photo.group, photo.out_shard), (photo, *image)
    missing = sorted(set(wanted) - found)
    if missing:
        raise RuntimeError(f"{path}: sample {missing[0]} (uid {wanted[missing[0]].uid}) is marked ok but its image "
                           f"is not in the shard ({len(missing)} missing); re-run the clean stage")


class WriteShard(beam.DoFn):
    """All photos of one output shard → the tar, and one metadata record per photo."""

    def __init__(self, folder: str):
        self.folder = folder

    def process(self, element):
        (split, index), items = element
        rel = f"{split}/{layout.shard_name(index)}"
        samples, records = [], []
        for photo, ext, data in items:
            digest = hashlib.sha256(data).hexdigest()
            record = release.sample_record(photo, digest)
            samples.append((photo.key, release.sample_members(photo.key, ext, data, photo.label, record)))
            records.append(dict(record, key=photo.key, shard=rel, image_ext=ext, bytes=len(data),
                                width=photo.width, height=photo.height, run_class_idx=photo.class_idx,
                                flags=photo.flags))
        path = Path(self.folder) / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        release.write_tar(path, samples)
        yield from records


class Release(beam.PTransform):
    """Run shards → release shards under ``folder``; returns the PCollection of metadata records."""

    def __init__(self, plan: release.Plan, run: Path, folder: Path):
        super().__init__()
        self.plan, self.run, self.folder = plan, run, folder

    def expand(self, pbegin):
        work = [(str(self.run / "shards" / shard), photos) for shard, photos in self.plan.by_input_shard().items()]
        return (pbegin
                | "RunShards" >> beam.Create(work, reshuffle=False)
                | "ReadPhotos" >> beam.FlatMap(read_photos)
                | "ByOutputShard" >> beam.GroupByKey()
                | "WriteShards" >> beam.ParDo(WriteShard(str(self.folder))))


def one_vs_k_sets(run: Path, cfg: RunConfig, labels: Iterable[int]) -> dict[str, list[int]]:
    """The reference model's "1 vs k" label sets, chosen as the score stage chose them (curation.zeroshot
    .closest_labels over every scored photo of the class), for the released classes."""
    model_id = release.reference_model(cfg)
    scores = schemas.read_folder(run / "scores", "scores")
    scores = scores.filter(pc.equal(scores.column("model_id"), model_id))
    if scores.num_rows == 0:
        raise UserError(f"no scores of the reference model {model_id!r}", where=str(run / "scores"),
                        hint="Run the score stage first.")
    from curation import arrays

    _, label_emb = read_text_embeddings(run, model_id, "label")
    truth = scores.column("true_label").to_numpy()
    sets = zeroshot.closest_labels(arrays.embeddings(scores.column("embedding")), truth, label_emb,
                                   cfg.score.one_vs_k)
    return {str(label): [int(i) for i in sets[label]] for label in sorted(set(labels)) if label in sets}


def run_release(run: str | Path, cfg: RunConfig, options, *, name: str, version: str, verified: bool = True,
                max_shard_bytes: int = release.DEFAULT_MAX_SHARD_BYTES, say=print) -> Path:
    run = Path(run)
    started = time.monotonic()
    final = layout.release_dir(run, name, version)
    plan = release.plan(run, cfg, verified=verified, max_shard_bytes=max_shard_bytes)
    n = sum(len(v) for v in plan.photos.values())
    say(f"release: {n} photos of {len(plan.pairs)} classes "
        f"({', '.join(f'{s} {len(plan.photos[s])} in {plan.nshards[s]} shards' for s in layout.SPLITS)})"
        f"{'' if verified else ', UNVERIFIED (model-proposed pairs and groups)'}"
        f"{f'; {len(plan.excluded)} excluded' if plan.excluded else ''}")
    sets = one_vs_k_sets(run, cfg, [p.label for p in plan.pairs])
    tmp = release.temp_folder(final)
    try:
        with beam.Pipeline(options=options) as p:
            records = (p
                       | "Release" >> Release(plan, run, tmp)
                       | "Collect" >> beam.combiners.ToList())
            _ = records | "Finish" >> beam.Map(finish, str(tmp), plan, cfg, str(run), name, version, sets)
        missing = [f"{s}/{layout.shard_name(i)}" for s in layout.SPLITS for i in range(plan.nshards[s])
                   if not (tmp / s / layout.shard_name(i)).is_file()]
        if missing or not (tmp / layout.CHECKSUMS).is_file():
            raise RuntimeError(f"the release pipeline finished without writing {missing or [layout.CHECKSUMS]}")
        release.publish(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    counts = {"photos": n, "classes": len(plan.pairs), "verified": verified,
              **{f"{s}_photos": len(plan.photos[s]) for s in layout.SPLITS},
              **{f"{s}_shards": plan.nshards[s] for s in layout.SPLITS},
              "excluded": len(plan.excluded)}
    seconds = time.monotonic() - started
    manifest.record_stage(run, "release", config_digest=cfg.digest(), counts=counts, seconds=seconds,
                          release=str(final))
    say(f"release: {layout.release_name(name, version)} written in {seconds:.1f}s -> {final}")
    return final


def finish(records: list[dict], folder: str, plan: release.Plan, cfg: RunConfig, run: str, name: str,
           version: str, sets: dict) -> str:
    """Everything beside the shards, once every shard is written (the pipeline's last step)."""
    folder = Path(folder)
    for split in layout.SPLITS:
        (folder / split).mkdir(exist_ok=True)
        (folder / split / layout.NSHARDS).write_text(f"{plan.nshards[split]}\n")
    release.write_lines(folder / layout.CLASSNAMES, plan.label_names)
    release.write_lines(folder / layout.TEMPLATES, plan.templates)
    (folder / layout.ONE_VS_K).write_text(json.dumps(sets, sort_keys=True, indent=1) + "\n")
    table = release.metadata_table(records)
    pq.write_table(table, folder / layout.METADATA)
    context = card.context(plan, table, cfg, Path(run), name, version, sets)
    (folder / layout.CARD).write_text(card.render(context))
    (folder / layout.CROISSANT).write_text(croissant.dumps(croissant.build(folder, context)))
    release.write_checksums(folder)
    return str(folder)
