"""Score stage: CLIP zero-shot scores for every clean sample, through Beam's RunInference.

    plan (shards not yet scored) ─▶ shard samples ─▶ RunInference(model 1) ─┐
                                                  ─▶ RunInference(model 2) ─┴▶ by shard ─▶ RUN/scores/NNNNN.parquet
                                                                               all shards ─▶ 1 vs k + review flags

One model per worker process, shared by its threads (RunInference's shared handle); the text
embeddings of the label space and backgrounds are computed once when a worker loads the model
(and saved to RUN/scores/text/ for later stages). Each RunInference element is one shard's samples;
the handler runs them in fixed batches in key order, so every runner and worker count sees the
same batches and writes the same numbers. Nothing waits on anything else when it need not: a
thread reads the shard while a pool decodes the next batches and the model runs the current one
(see OpenClipModelHandler, and score.decode for small models). A shard's scores file appears
whole (temp then rename) and a re-run skips shards already scored for every model.
"""
from __future__ import annotations

import io
import os
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from apache_beam.ml.inference.base import ModelHandler, RunInference

import schemas
from curation import (arrays, atomic, clean, clip_models, config, manifest, neighbors, settings_record,
                      shard_reader, storage, zeroshot)
from curation.config import ModelSpec, RunConfig
from curation.run_paths import RunPaths
from curation.errors import UserError
from pipeline.worker_errors import marked, user_errors_from_workers


@dataclass(frozen=True)
class ImageSample:
    uid: str
    class_idx: int
    shard: str
    key: str
    data: bytes | None = None     # None: the handler reads it from RUN/shards/<shard> (ShardStream)




def scores_path(run_dir: Path, shard: str) -> Path:
    return RunPaths(run_dir).scores_file(shard)


def text_path(run_dir: Path, model_id: str) -> Path:
    return RunPaths(run_dir).text_bank(model_id)


# -- the model handler ----------------------------------------------------------------------------

DECODE_AHEAD = 2   # batches decoded ahead of the one the model is running (see overlaps())
DRAFT_MARGIN = 2   # score.decode: draft keeps each side >= this x the preprocess's resize target


@dataclass
class LoadedScorer:
    """What a worker process holds once per model: the model, its text bank, a decode pool."""
    clip: Any
    bank: zeroshot.TextBank
    truth: dict[int, int]
    pool: ThreadPoolExecutor
    draft: int | None = None    # score.decode: draft -> the smallest side libjpeg may decode to
    per_image: Any = None       # the preprocess's per-image steps, then its Normalize (see split_preprocess)
    normalize: Any = None
    ahead: int = DECODE_AHEAD   # 0: decode a batch only once the model is done with the one before

    def __post_init__(self):
        if self.per_image is None:
            self.per_image, self.normalize = split_preprocess(self.clip.preprocess)


class OpenClipModelHandler(ModelHandler[ImageSample, tuple, LoadedScorer]):
    """RunInference handler for any open_clip model (name + pretrained tag or checkpoint file).

    Each RunInference element is one shard's samples in key order. The handler runs them through
    the model in fixed batches of score.batch_size (the same batches on every runner) while a
    thread reads the shard (ShardStream) and a pool decodes and preprocesses the next DECODE_AHEAD
    batches (PIL and torch release the GIL), so reading and decoding overlap the forward instead
    of preceding it (unless overlaps() says a multi-threaded CPU forward would suffer from it).
    It returns one (shard, rows as a pyarrow table) pair per shard, not one Python object per
    image. Each model's handler reads the shard itself.
    """

    def __init__(self, spec: ModelSpec, cfg: RunConfig, run_dir: str | None = None, **kwargs):
        super().__init__(**kwargs)
        self.spec_json = spec.model_dump(mode="json")
        self.cfg_json = cfg.model_dump(mode="json", by_alias=True)
        self.run_dir = run_dir
        self.model_id = spec.model_id
        self.batch_size = cfg.score.batch_size
        self.model_configs = clip_models.extra_model_configs()

    def load_model(self) -> LoadedScorer:
        import torch

        clip_models.register_model_configs(self.model_configs)
        cfg = config.parse(self.cfg_json)
        spec = ModelSpec(**self.spec_json)
        s = cfg.score
        if s.num_threads:
            torch.set_num_threads(s.num_threads)
        try:
            clip = clip_models.load(spec.name, spec.pretrained, device=s.device, precision=s.precision)
        except UserError as exc:       # this worker's device or files: told on the launcher
            raise marked(UserError(str(exc), where=f"models ({spec.model_id})")) from None
        bank = zeroshot.build_text_bank(clip, cfg)
        if self.run_dir:
            save_text_bank(storage.path(self.run_dir), self.model_id, bank)
        threads = s.decode_threads or max(2, (os.cpu_count() or 2) - 1)
        return LoadedScorer(clip, bank, zeroshot.true_labels(cfg), ThreadPoolExecutor(threads),
                            draft_size(clip) if s.decode == "draft" else None,
                            ahead=DECODE_AHEAD if overlaps(s.device, torch.get_num_threads(), threads) else 0)

    def run_inference(self, batch: Sequence[ImageSample], model: LoadedScorer,
                      inference_args: dict | None = None) -> Iterable[tuple[str, pa.Table]]:
        size = self.batch_size
        streams = {shard: ShardStream(storage.path(self.run_dir) / "shards" / shard, [s.key for s in batch if s.shard == shard])
                   for shard in dict.fromkeys(s.shard for s in batch if s.data is None)}
        rows: list[dict] = []
        try:
            for samples, pixels in decode_ahead(model, [batch[i:i + size] for i in range(0, len(batch), size)], streams):
                emb = zeroshot.encode_images(model.clip, pixels)
                rows += zeroshot.score_images(emb, [model.truth[s.class_idx] for s in samples], model.bank)
        finally:
            for stream in streams.values():
                stream.close()
        return [(shard, result_table(self.model_id, self.cfg_json["label_space"],
                                     [s for s in batch if s.shard == shard],
                                     [r for s, r in zip(batch, rows) if s.shard == shard]))
                for shard in dict.fromkeys(s.shard for s in batch)]

    def get_num_bytes(self, batch: Sequence[ImageSample]) -> int:
        return sum(len(s.data or b"") for s in batch)     # the default pickles the whole batch to measure it

    def get_metrics_namespace(self) -> str:
        return "counteranimal.score"


def decode_ahead(model: LoadedScorer, batches: list[Sequence[ImageSample]], streams: dict | None = None):
    """Yield (batch, pixels) in order; the pool decodes up to model.ahead batches beyond the one yielded
    (0: the next batch is submitted once the caller is done with this one).

    Samples without bytes take them from streams[shard] (a ShardStream), as its reader thread gets to them.
    """
    pending: deque = deque()
    todo = iter(batches)

    def work(s: ImageSample):
        if s.data is None:
            s = ImageSample(s.uid, s.class_idx, s.shard, s.key, streams[s.shard].get(s.key))
        return decode(model.per_image, model.normalize, model.draft, s)

    def submit() -> None:
        b = next(todo, None)
        if b is not None:
            pending.append((b, [model.pool.submit(work, s) for s in b]))

    try:
        for _ in range(model.ahead + 1):
            submit()
        while pending:
            b, futures = pending.popleft()
            if model.ahead:
                submit()
            yield b, to_batch([f.result() for f in futures], model.normalize, model.clip.device)
            if not model.ahead:
                submit()
    finally:
        for _, futures in pending:       # an error or an abandoned generator: drop work not yet started
            for f in futures:
                f.cancel()


class ShardStream:
    """One shard's wanted image bytes, read by a thread of its own while earlier samples are scored.

    get(key) waits until the reader has passed the key (img2dataset writes keys in order, so the
    first batch can start long before the shard is read) and raises when the shard lacks it.
    """

    def __init__(self, path: Path, keys: Sequence[str]):
        self.path, self.wanted = path, set(keys)
        self.found: dict[str, bytes] = {}
        self.done, self.closed, self.error = False, False, None
        self.cond = threading.Condition()
        threading.Thread(target=self._read, name=f"read {path.name}", daemon=True).start()

    def _read(self) -> None:
        try:
            with storage.path(self.path).open("rb") as f:   # a local file or an object (curation/storage.py)
                for key, parts in shard_reader.iter_samples(f):
                    data = shard_reader.image_bytes(parts)
                    if key in self.wanted and data is not None:
                        with self.cond:
                            if self.closed:
                                return
                            self.found[key] = data
                            self.cond.notify_all()
        except Exception as exc:   # noqa: BLE001 - raised by get() in the scoring thread
            self.error = exc
        finally:
            with self.cond:
                self.done = True
                self.cond.notify_all()

    def get(self, key: str) -> bytes:
        with self.cond:
            self.cond.wait_for(lambda: key in self.found or self.done)
            if key in self.found:
                return self.found.pop(key)
            if self.error is not None:
                raise RuntimeError(f"{self.path.name}: cannot read the shard: {self.error}") from self.error
        raise RuntimeError(f"{self.path.name}: sample {key} is marked ok but not in the shard; re-run the clean stage")

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.found.clear()


def overlaps(device: str, torch_threads: int, decode_threads: int) -> bool:
    """Whether decoding should run beside the forward (DECODE_AHEAD) rather than between forwards.

    Always on a GPU, and with one torch thread. A CPU forward on several threads is a series of
    OpenMP regions that wait for their slowest thread; a decode thread taking one of their cores
    stalls them all (ViT-B-32, 2 threads on 2 cores: half speed, bench/RESULTS.md "## score"), so
    there it only overlaps when the machine has a core for every torch and decode thread.
    """
    return device != "cpu" or torch_threads == 1 or torch_threads + decode_threads <= (os.cpu_count() or 1)


def split_preprocess(preprocess) -> tuple[Any, Any]:
    """open_clip's preprocess as (per-image steps, batch Normalize).

    When it ends in ToTensor + Normalize (open_clip's always do), those two run once per batch on
    the stacked uint8 pixels (to_batch), with the same float operations, so the tensors are equal
    bit for bit; the decode threads then only run the PIL steps (resize, crop). Otherwise the whole
    preprocess runs per image.
    """
    from torchvision import transforms

    steps = list(getattr(preprocess, "transforms", []))
    if (len(steps) >= 2 and isinstance(steps[-2], transforms.ToTensor)
            and isinstance(steps[-1], transforms.Normalize)):
        return transforms.Compose(steps[:-2]), steps[-1]
    return preprocess, None


def decode(per_image, normalize, draft: int | None, sample: ImageSample):
    """Encoded image -> the model's input for one image, or its uint8 HxWx3 pixels for to_batch to finish.

    per_image, normalize: split_preprocess's halves; draft: libjpeg's scaled decode to >= draft a side.
    """
    from PIL import Image

    try:
        with Image.open(io.BytesIO(sample.data)) as img:
            if draft:
                img.draft("RGB", (draft, draft))   # JPEG only; each side stays >= draft
            out = per_image(img.convert("RGB"))
    except Exception as exc:   # noqa: BLE001 - re-raised with the sample named
        raise RuntimeError(f"{sample.shard}/{sample.key} (uid {sample.uid}): cannot decode for scoring: {exc}") from exc
    if normalize is None:
        return out
    arr = np.asarray(out)
    if arr.dtype == np.uint8 and arr.ndim == 3:
        return arr
    from torchvision.transforms import functional

    return normalize(functional.to_tensor(out))


def to_batch(items: list, normalize, device: str = "cpu"):
    """Stack decode's outputs into the model's input; uint8 pixels get ToTensor + Normalize here, at once.

    On a GPU the uint8 batch is moved first and normalised there: a quarter of the bytes cross the
    bus and no CPU core spends time on float arithmetic the GPU does for free.
    """
    import torch

    if not all(isinstance(a, np.ndarray) for a in items):
        from torchvision.transforms import functional

        return torch.stack([normalize(functional.to_tensor(a)) if isinstance(a, np.ndarray) else a for a in items])
    x = torch.from_numpy(np.stack(items)).to(device).permute(0, 3, 1, 2).contiguous()
    return normalize(x.to(dtype=torch.get_default_dtype()).div(255))


def draft_size(clip) -> int:
    """score.decode: draft -> the size libjpeg's scaled decode keeps both sides at or above.

    DRAFT_MARGIN x the resize target, so open_clip's bicubic resize still downsamples at least 2x:
    on the planted world's scenes at 512 px this kept ca-tiny's top-1 for 98.4% of the images
    (1x: 96-97%); see bench/RESULTS.md "## score".
    """
    return DRAFT_MARGIN * resize_target(clip)


def resize_target(clip) -> int:
    """The largest side open_clip's preprocess resizes to (its Resize), else the model's input size."""
    from torchvision import transforms

    for t in getattr(clip.preprocess, "transforms", []):
        size = t.size if isinstance(t, transforms.Resize) else getattr(t, "max_size", None)
        if size:
            return int(size) if isinstance(size, int) else int(max(size))
    size = clip.model.visual.image_size
    return int(size) if isinstance(size, int) else int(max(size))


def result_table(model_id: str, label_space: str, samples: Sequence[ImageSample], rows: list[dict]) -> pa.Table:
    """One model's scores rows for some samples, as the scores schema (1 vs k filled in by finish)."""
    n = len(rows)
    cols = {"uid": [s.uid for s in samples], "model_id": [model_id] * n, "class_idx": [s.class_idx for s in samples],
            "shard": [s.shard for s in samples], "label_space": [label_space] * n}
    for f in schemas.SCHEMAS["scores"]:
        if f.name not in cols and f.name != "embedding":
            cols[f.name] = [r.get(f.name) for r in rows]
    emb = np.asarray([r["embedding"] for r in rows], dtype=np.float16).reshape(n, -1)
    cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), emb.shape[1]).cast(
        schemas.SCHEMAS["scores"].field("embedding").type) if n else pa.array([], schemas.SCHEMAS["scores"].field(
            "embedding").type)
    return pa.table({f.name: cols[f.name] for f in schemas.SCHEMAS["scores"]}, schema=schemas.SCHEMAS["scores"])


def save_text_bank(run_dir: Path, model_id: str, bank: zeroshot.TextBank) -> None:
    rows = [{"model_id": model_id, "kind": "label", "index": i, "name": n, "embedding": bank.labels[i].tolist()}
            for i, n in enumerate(bank.label_names)]
    rows += [{"model_id": model_id, "kind": "background", "index": i, "name": n,
              "embedding": bank.backgrounds[i].tolist()} for i, n in enumerate(bank.background_names)]
    atomic.write_parquet(text_path(run_dir, model_id),
                         schemas.conform(pa.Table.from_pylist(rows), "text_embeddings"))


# -- the transform ------------------------------------------------------------------------------

def samples_path(run_dir: Path, shard: str) -> Path:
    """The samples file of the fetch chunk that wrote ``shard`` (same name)."""
    return RunPaths(run_dir).samples / f"{shard.split('.', 1)[0]}.parquet"


def clean_samples(run_dir: Path, shard: str) -> list[tuple[str, str, int]]:
    """(key, uid, class_idx) of the shard's clean samples, in key order."""
    t = schemas.read(samples_path(run_dir, shard), "samples")
    ok = t.filter(pc.and_(pc.equal(t.column("status"), "ok"), pc.equal(t.column("shard"), shard)))
    return sorted((r["key"] or r["uid"], r["uid"], r["class_idx"])
                  for r in ok.select(["uid", "class_idx", "key"]).to_pylist())


class ShardSamples(beam.DoFn):
    """A shard's name -> its clean samples in key order, as one RunInference element (the handler
    reads the bytes): the job graph carries names, each worker reads its shard's samples itself."""

    def __init__(self, run_dir: str):
        self.run_dir = run_dir

    def process(self, shard: str):
        samples = clean_samples(storage.path(self.run_dir), shard)
        if samples:
            yield [ImageSample(uid, cls, shard, key) for key, uid, cls in samples]


class WriteShardScores(beam.DoFn):
    def __init__(self, run_dir: str):
        self.run_dir = run_dir

    def process(self, shard_tables: tuple[str, Iterable[pa.Table]]):
        shard, tables = shard_tables
        table = pa.concat_tables(list(tables))
        table = table.take(pc.sort_indices(table, [("uid", "ascending"), ("model_id", "ascending")]))
        atomic.write_parquet(scores_path(storage.path(self.run_dir), shard), schemas.conform(table, "scores"))
        yield shard


class Score(beam.PTransform):
    """Shards to scores: read batches, one RunInference per model, write per shard, then Finish."""

    def __init__(self, run_dir: Path, cfg: RunConfig, work: list[str], files: list[str]):
        super().__init__()
        self.run_dir, self.cfg, self.work, self.files = storage.path(run_dir), cfg, work, files

    def expand(self, pbegin):
        shards = (pbegin
                  | "Plan" >> beam.Create(self.work)
                  | "Spread" >> beam.Reshuffle()
                  | "ShardSamples" >> beam.ParDo(ShardSamples(self.run_dir)))
        scored = [shards | f"RunInference[{m.model_id}]" >> RunInference(
                      OpenClipModelHandler(m, self.cfg, self.run_dir).with_no_batching())
                  for m in self.cfg.models]
        written = (scored
                   | "AllModels" >> beam.Flatten()
                   | "ByShard" >> beam.GroupByKey()
                   | "WriteScores" >> beam.ParDo(WriteShardScores(self.run_dir)))
        return pbegin | "Finish" >> Finish(self.run_dir, self.cfg, self.files, after=written)


class Finish(beam.PTransform):
    """After every shard is scored: the "1 vs k" columns and the review flags, per shard.

        samples files ─▶ scores ─▶ per (model, class): embedding sums ─▶ its k closest labels ─┐
                                └▶ flag model's embeddings ─▶ cells (curation/neighbors.py) ─▶ per cell:
                                   nearest photos ─▶ per photo: share of its class ─────────────┴▶ per shard:
                                   RUN/scores/NNNNN.parquet (top1_1vk, correct_1vk), RUN/samples/NNNNN.parquet (flags)

    ``files``: the samples files' names (every one, so a file whose photos are no longer scored
    loses its model flags); ``after``: a PCollection to wait for (the scores being written).
    """

    def __init__(self, run_dir: str, cfg: RunConfig, files: list[str], after=None):
        super().__init__()
        self.run_dir, self.cfg, self.files, self.after = storage.path(run_dir), cfg, files, after

    def expand(self, pbegin):
        cfg, run_dir = self.cfg, self.run_dir
        names = pbegin | "SamplesFiles" >> beam.Create(self.files)
        if self.after is not None:
            names = names | "AfterScores" >> beam.Map(lambda n, _: n, beam.pvalue.AsList(self.after))
        names = names | "SpreadFiles" >> beam.Reshuffle()
        sets = (names
                | "ClassSums" >> beam.FlatMap(_class_sums, run_dir)
                | "SumPerClass" >> beam.CombinePerKey(_add_sums)
                | "LabelSets" >> beam.ParDo(LabelSets(run_dir, cfg.score.one_vs_k)))
        flag_model = cfg.clean.flag_model or cfg.models[0].model_id
        k = cfg.clean.label_noise_neighbors
        shares = (names | "NoNeighbours" >> beam.FlatMap(lambda _: []))
        if k > 0:
            rows = names | "FlagModelRows" >> beam.FlatMap(_embedding_rows, run_dir, flag_model)
            count = rows | "Count" >> beam.combiners.Count.Globally()
            sample = rows | "Sample" >> beam.combiners.Top.Of(
                neighbors.MAX_TRAIN, key=lambda r: (neighbors.sample_key(r[0]), r[0]), reverse=True)
            cells = sample | "Cells" >> beam.Map(_train_cells, beam.pvalue.AsSingleton(count))
            shares = (rows
                      | "Route" >> beam.FlatMap(_route, beam.pvalue.AsSingleton(cells))
                      | "GroupByCell" >> beam.GroupByKey()
                      | "SearchCell" >> beam.FlatMap(_search_cell, k)
                      | "GroupByPhoto" >> beam.GroupByKey()
                      | "Share" >> beam.Map(_share, k))
        return ({"file": names | "FileKey" >> beam.Map(lambda n: (n.split(".", 1)[0], None)), "shares": shares}
                | "ByShard" >> beam.CoGroupByKey()
                | "FinishShard" >> beam.ParDo(FinishShard(run_dir, cfg), beam.pvalue.AsDict(sets)))


def _scores_of(run_dir: str, name: str):
    path = scores_path(storage.path(run_dir), name)
    return schemas.read(path, "scores") if path.exists() else None


def _class_sums(name: str, run_dir: str):
    """One shard's scores -> ((model_id, true label), (embedding sum, count)) per model and class."""
    t = _scores_of(run_dir, name)
    if t is None or not t.num_rows:
        return
    emb = arrays.embeddings(t.column("embedding"))
    keys = list(zip(t.column("model_id").to_pylist(), t.column("true_label").to_pylist()))
    for key in sorted(set(keys)):
        rows = np.asarray([i for i, k in enumerate(keys) if k == key])
        yield key, zeroshot.class_sum(emb[rows])


def _add_sums(values):
    total, count = None, 0
    for s, n in values:
        total, count = (s.copy() if total is None else total + s), count + n
    return total, count


class LabelSets(beam.DoFn):
    """((model_id, class), (sum, count)) -> ((model_id, class), its k closest labels)."""

    def __init__(self, run_dir: str, k: int):
        self.run_dir, self.k = run_dir, k
        self.labels: dict[str, np.ndarray] = {}

    def process(self, element):
        (model_id, t), (total, count) = element
        if model_id not in self.labels:
            self.labels[model_id] = read_text_embeddings(storage.path(self.run_dir), model_id, "label")[1]
        yield (model_id, t), zeroshot.labels_for_class(t, total, count, self.labels[model_id], self.k)


def _embedding_rows(name: str, run_dir: str, model_id: str):
    """One shard's scores of ``model_id`` -> (uid, shard stem, true label, float16 embedding) per photo."""
    t = _scores_of(run_dir, name)
    if t is None:
        return
    t = t.filter(pc.equal(t.column("model_id"), model_id))
    emb = arrays.embeddings(t.column("embedding")).astype(np.float16)
    stem = name.split(".", 1)[0]
    for uid, label, e in zip(t.column("uid").to_pylist(), t.column("true_label").to_pylist(), emb):
        yield uid, stem, label, e


def _train_cells(sample, count: int):
    sample = sorted(sample, key=lambda r: (neighbors.sample_key(r[0]), r[0]))
    cells = neighbors.n_cells(count)
    sample = sample[:cells * neighbors.TRAIN_PER_CELL]
    return neighbors.train_cells(np.stack([r[3] for r in sample]) if sample else np.zeros((0, 1)), cells)


def _route(row, centroids):
    """A photo -> (cell, ("data", row)) for the cell it lives in, (cell, ("query", row)) for each probed."""
    cells = neighbors.probe(row[3][None].astype(np.float32), centroids)[0]
    yield int(cells[0]), ("data", row)
    for c in cells:
        yield int(c), ("query", row)


def _search_cell(element, k: int):
    """One cell: each query's k best among the photos living there -> (uid, (stem, class, found))."""
    _, items = element
    data = sorted((row for kind, row in items if kind == "data"), key=lambda r: r[0])
    queries = sorted((row for kind, row in items if kind == "query"), key=lambda r: r[0])
    if not data or not queries:
        return
    d_emb = np.stack([r[3] for r in data])
    for start in range(0, len(queries), 4096):
        q = queries[start:start + 4096]
        sims, classes, uids = neighbors.cell_search([r[0] for r in q], np.stack([r[3] for r in q]),
                                                    [r[0] for r in data], d_emb,
                                                    np.asarray([r[2] for r in data]), k)
        for i, r in enumerate(q):
            yield r[0], (r[1], r[2], (sims[i], classes[i], uids[i]))


def _share(element, k: int):
    uid, found = element
    found = list(found)
    stem, own = found[0][0], found[0][1]
    return stem, (uid, neighbors.share(own, neighbors.merge([f[2] for f in found], k)))


class FinishShard(beam.DoFn):
    """(shard stem, {shares}) -> its scores' "1 vs k" columns and its samples' review flags, rewritten
    when they changed."""

    def __init__(self, run_dir: str, cfg: RunConfig):
        self.run_dir, self.cfg = run_dir, cfg
        self.labels: dict[str, np.ndarray] = {}

    def process(self, element, sets):
        stem, joined = element
        run_dir, cfg = storage.path(self.run_dir), self.cfg
        shares = dict(s for s in joined["shares"])
        path = scores_path(run_dir, stem)
        flags: dict[str, list[str]] = {}
        if path.exists():
            t = schemas.read(path, "scores")
            new = self._one_vs_k(t, sets)
            if not new.equals(t):
                atomic.write_parquet(path, new)
            flags = clean.review_flags_by_uid(t, cfg.clean, cfg.clean.flag_model or cfg.models[0].model_id,
                                              shares=shares if cfg.clean.label_noise_neighbors > 0 else None)
        spath = RunPaths(run_dir).samples / f"{stem}.parquet"
        if spath.exists():
            samples = schemas.read(spath, "samples")
            flagged = clean.apply_review_flags(samples, flags)
            if not flagged.equals(samples):
                atomic.write_parquet(spath, flagged)
        yield stem

    def _one_vs_k(self, t: pa.Table, sets: dict) -> pa.Table:
        top1 = np.zeros(t.num_rows, dtype=np.int32)
        model_col = np.asarray(t.column("model_id").to_pylist())
        truth = t.column("true_label").to_numpy()
        emb = arrays.embeddings(t.column("embedding")) if t.num_rows else None
        for m in set(model_col.tolist()):
            if m not in self.labels:
                self.labels[m] = read_text_embeddings(storage.path(self.run_dir), m, "label")[1]
            rows = np.nonzero(model_col == m)[0]
            top1[rows] = zeroshot.top1_among(emb[rows], truth[rows],
                                             {int(c): sets[(m, int(c))] for c in np.unique(truth[rows])},
                                             self.labels[m])
        return (t.set_column(t.schema.get_field_index("top1_1vk"), "top1_1vk", pa.array(top1, pa.int32()))
                 .set_column(t.schema.get_field_index("correct_1vk"), "correct_1vk", pa.array(top1 == truth)))


# -- planning, finishing, the entry point -------------------------------------------------------------

def plan(run_dir: Path, cfg: RunConfig) -> tuple[list[str], int, int]:
    """Names of the shards that still need scores, how many are done, and the images to score."""
    samples = schemas.read_folder(RunPaths(run_dir).samples, "samples")
    ok = samples.filter(pc.equal(samples.column("status"), "ok")).select(["uid", "class_idx", "shard"])
    by_shard: dict[str, set[str]] = {}
    for r in ok.to_pylist():
        by_shard.setdefault(r["shard"], set()).add(r["uid"])
    truth = zeroshot.true_labels(cfg)
    unknown = sorted(set(ok.column("class_idx").to_pylist()) - set(truth))
    if unknown:
        raise UserError(f"samples have class_idx {', '.join(map(str, unknown[:5]))}, which the config's classes do not "
                        "list", where=str(RunPaths(run_dir).samples))
    model_ids = {m.model_id for m in cfg.models}
    work, done, n = [], 0, 0
    for shard, uids in sorted(by_shard.items()):
        if _scored(scores_path(run_dir, shard), uids, model_ids):
            done += 1
        else:
            work.append(shard)
            n += len(uids)
    return work, done, n


def _scored(path: Path, uids: set[str], model_ids: set[str]) -> bool:
    if not path.exists():
        return False
    try:
        t = storage.read_table(path, columns=["uid", "model_id"])
    except (OSError, pa.ArrowInvalid):
        return False
    have = set(zip(t.column("uid").to_pylist(), t.column("model_id").to_pylist()))
    return have == {(u, m) for u in uids for m in model_ids}


def samples_files(run_dir: Path) -> list[str]:
    return sorted(p.name for p in RunPaths(run_dir).samples.glob("[0-9]*.parquet"))


def read_text_embeddings(run_dir: Path, model_id: str, kind: str) -> tuple[list[str], np.ndarray]:
    """The names and embeddings (in index order) of one kind (label | background) a model was scored with."""
    path = text_path(run_dir, model_id)
    if not path.exists():
        raise UserError(f"no text embeddings for {model_id}", where=str(path), hint="Re-run the score stage.")
    t = schemas.read(path, "text_embeddings")
    rows = t.filter(pc.equal(t.column("kind"), kind)).sort_by("index")
    return rows.column("name").to_pylist(), np.asarray(rows.column("embedding").to_pylist(), dtype=np.float32)


def check_models(cfg: RunConfig, config_path: str | Path = "config.yaml", options=None) -> None:
    """Every configured model (name, weights, device, precision), named by its place in the config,
    checked before any work starts: what the config says here, the rest on the workers.

    The weights, the device and the precision are the workers' (on a cluster the launcher may have
    no GPU and not their files), so a small pipeline checks them where the models will run
    (CheckModel) and its UserError comes back here (pipeline/worker_errors.py). ``options``: the
    run's pipeline options (None: the DirectRunner, in this process).
    """
    if cfg.clean.flag_model and cfg.clean.flag_model not in {m.model_id for m in cfg.models}:
        raise UserError(f"clean.flag_model {cfg.clean.flag_model!r} is not one of the models "
                        f"({', '.join(m.model_id for m in cfg.models)}).", where=str(config_path))
    ids = [m.model_id for m in cfg.models]
    if len(set(ids)) != len(ids):
        raise UserError(f"two models share the id {next(i for i in ids if ids.count(i) > 1)!r}; give each an id.",
                        where=str(config_path))
    zeroshot.true_labels(cfg)
    if options is None:
        from pipeline.options import pipeline_options

        options = pipeline_options([])
    checks = [(m.name, m.pretrained, f"{config_path}: models[{i}] ({m.model_id})") for i, m in enumerate(cfg.models)]
    with user_errors_from_workers():
        with beam.Pipeline(options=options) as p:
            _ = (p | "Models" >> beam.Create(checks)
                 | "CheckOnWorker" >> beam.ParDo(CheckModel(cfg.score.device, cfg.score.precision)))


class CheckModel(beam.DoFn):
    """(name, pretrained, where in the config) -> nothing, or the worker's UserError (marked)."""

    def __init__(self, device: str, precision: str):
        self.device, self.precision = device, precision
        self.model_configs = clip_models.extra_model_configs()

    def setup(self):
        clip_models.register_model_configs(self.model_configs)

    def process(self, check):
        name, pretrained, where = check
        try:
            clip_models.check(name, pretrained, self.device, self.precision)
        except UserError as exc:
            raise marked(UserError(str(exc), where=where)) from None
        return []


def score_settings(cfg: RunConfig) -> dict:
    """What a photo's stored scores depend on: each model (by id) and how it runs, the label space
    and its classes, the backgrounds and the prompts the text banks are built from."""
    return {"models": {m.model_id: [m.name, m.pretrained] for m in cfg.models},
            "precision": cfg.score.precision, "decode": cfg.score.decode,
            "label_space": cfg.label_space,
            "classes": [[c.name, cfg.class_index(c), list(c.synonyms)] for c in cfg.classes],
            "backgrounds": list(cfg.backgrounds),
            "prompts": [list(cfg.prompts.classes), list(cfg.prompts.backgrounds), cfg.prompts.ensemble]}


def drop_stale_scores(run_dir: Path, cfg: RunConfig, say) -> None:
    """Remove scores that no longer describe the run, so plan() scores those photos again.

    - Scores written under other settings (score_settings: a model's weights, the label space, the
      classes, backgrounds or prompts edited in config.yaml): plan() only checks that a shard has
      rows for the configured model ids, whatever made them. RUN/scores/settings.json records the
      settings; a run without it is taken as current.
    - A shard's scores whose photos are all gone (clean now rejects every one, or a shorter
      candidate list planned fewer chunks): plan() only visits shards with clean photos, so they
      would stay and the backgrounds and propose stages would count rejected photos.
    """
    import shutil

    folder = RunPaths(run_dir).scores
    now = score_settings(cfg)
    before = settings_record.replace(folder / "settings.json", now)
    if before and any(folder.glob("[0-9]*.parquet")):
        changed = [k.replace("_", " ") for k in now if k != "models" and before.get(k) != now[k]]
        old_models = before.get("models") or {}
        changed += [f"model {i}" for i, spec in now["models"].items() if i in old_models and old_models[i] != spec]
        if changed:
            say(f"score: {', '.join(changed)} changed in config.yaml since {folder} was written; removing those "
                "scores to score every photo again")
            for p in folder.glob("[0-9]*.parquet"):
                p.unlink()
            shutil.rmtree(folder / "text", ignore_errors=True)

    samples = schemas.read_folder(RunPaths(run_dir).samples, "samples")
    ok = samples.filter(pc.equal(samples.column("status"), "ok"))
    live = {str(s).split(".", 1)[0] for s in ok.column("shard").to_pylist() if s}
    gone = [p for p in sorted(folder.glob("[0-9]*.parquet")) if p.name.split(".", 1)[0] not in live]
    for p in gone:
        p.unlink()
    if gone:
        say(f"score: removed the scores of {len(gone)} shard(s) with no clean photo left "
            f"({', '.join(p.name for p in gone[:5])}{', …' if len(gone) > 5 else ''})")


def run_score(run_dir: str | Path, cfg: RunConfig, options, say=print, models_checked: bool = False) -> dict:
    """Score every clean sample not yet scored; returns counts for the manifest.

    ``models_checked``: check_models already ran for this run (curate checks before its first stage)."""
    run_dir = storage.path(run_dir)
    if not models_checked:
        check_models(cfg, RunPaths(run_dir).config, options)
    if not RunPaths(run_dir).clean.is_dir():
        raise UserError("the samples have not been cleaned", where=str(run_dir),
                        hint="Run the clean stage first: `counteranimal curate RUN --stages clean,score`.")
    atomic.clean_temp_files(RunPaths(run_dir).scores)
    drop_stale_scores(run_dir, cfg, say)
    work, done, n = plan(run_dir, cfg)
    say(f"score: {len(work) + done} shards with clean samples, {done} already scored; scoring {n} images "
        f"with {len(cfg.models)} model(s): {', '.join(m.model_id for m in cfg.models)}")
    started = time.monotonic()
    p = beam.Pipeline(options=options)
    scoring = bool(work) or not _text_current(run_dir, cfg)
    if not scoring:
        # Nothing to score: no model to load, only the "1 vs k" columns and flags over every shard.
        _ = p | "Finish" >> Finish(run_dir, cfg, samples_files(run_dir))
    else:
        _ = p | "Score" >> Score(run_dir, cfg, work, samples_files(run_dir))
    with user_errors_from_workers():
        result = p.run()
        result.wait_until_finish()
    metrics = _inference_metrics(result) if scoring else {}
    seconds = time.monotonic() - started
    scores = schemas.read_folder(RunPaths(run_dir).scores, "scores")
    counts = {"rows": scores.num_rows, "images": n, "shards_scored": len(work), "shards_done_before": done,
              "seconds": round(seconds, 2), "images_per_s": round(n / seconds, 2) if n else None, **metrics}
    manifest.record_stage(run_dir, "score", config_digest=cfg.digest(), counts=counts, seconds=seconds,
                          model_ids=[m.model_id for m in cfg.models])
    acc = {m.model_id: _mean(scores, m.model_id, "correct") for m in cfg.models}
    say(f"score: {n} images in {seconds:.1f}s; zero-shot accuracy " +
        ", ".join(f"{k} {v:.1%}" for k, v in acc.items() if v is not None) + f" -> {run_dir / 'scores'}")
    return counts


def _text_current(run_dir: Path, cfg: RunConfig) -> bool:
    """Every model's saved text embeddings name the config's labels and backgrounds, in order."""
    want = {"label": zeroshot.label_names(cfg), "background": list(cfg.backgrounds)}
    for m in cfg.models:
        path = text_path(run_dir, m.model_id)
        if not path.exists():
            return False
        t = storage.read_table(path, columns=["kind", "index", "name"]).sort_by("index").to_pylist()
        if any([r["name"] for r in t if r["kind"] == kind] != names for kind, names in want.items()):
            return False
    return True


def _inference_metrics(result) -> dict:
    """RunInference's own timings: model loads (incl. text banks) and batch inference, in seconds."""
    from apache_beam.metrics.metric import MetricsFilter

    out = {"model_load_s": 0.0, "inference_s": 0.0}
    try:
        found = result.metrics().query(MetricsFilter().with_namespace("counteranimal.score"))["distributions"]
    except (NotImplementedError, KeyError, AttributeError):
        return out    # a runner that does not report metrics
    for d in found:
        total = d.committed.sum if d.committed else 0
        if d.key.metric.name.startswith("load_model_latency_milli_secs"):
            out["model_load_s"] += total / 1e3
        elif d.key.metric.name.startswith("inference_batch_latency_micro_secs"):
            out["inference_s"] += total / 1e6
    return {k: round(v, 3) for k, v in out.items()}


def _mean(scores: pa.Table, model_id: str, column: str) -> float | None:
    t = scores.filter(pc.equal(scores.column("model_id"), model_id))
    vals = t.column(column).to_pylist()
    return sum(vals) / len(vals) if vals else None
