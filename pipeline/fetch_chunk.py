"""Fetch one chunk of candidates into one WebDataset shard with img2dataset's own machinery.

img2dataset's ``Downloader`` (thread pool, retries, robots headers, per-sample status) runs
in-process on the chunk, with two additions: a ``Resizer`` that checks the header first
(pixel cap, truncation, non-images) and a writer that records each stored image's sha256 and
size. Output is built in ``RUN/shards/.tmp-NNNNN-*/`` and moved into place whole; the chunk's
``RUN/samples/NNNNN.parquet`` is written last and marks the chunk complete.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import socket
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curation import atomic, fetch_status, image_header, storage
from curation.fetch_status import Chunk
from curation.run_paths import RunPaths

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from img2dataset.downloader import Downloader  # noqa: E402
from img2dataset.resizer import Resizer  # noqa: E402
from img2dataset.writer import WebDatasetSampleWriter  # noqa: E402

# Candidate columns carried into img2dataset's metadata (its save_additional_columns).
CARRIED_COLUMNS = ["uid", "class_idx", "class_name", "source", "source_id", "license", "attribution"]
TEMP_PREFIX = ".tmp-"


@dataclass(frozen=True)
class FetchSettings:
    """Everything a worker needs, as plain values (pickled to Beam workers)."""
    image_size: int = 512
    resize_only_if_bigger: bool = True
    encode_format: str = "jpg"
    encode_quality: int = 95
    chunk_size: int = 1000
    thread_count: int = 32
    timeout: float = 10.0
    retries: int = 0
    max_pixels: int = 89_478_485
    max_bytes: int = 50_000_000
    allowed_networks: tuple[str, ...] = ()
    file_root: str | None = None
    user_agent_token: str | None = "counteranimal"

    @classmethod
    def from_config(cls, cfg, base_dir: str | Path) -> "FetchSettings":
        f = cfg.fetch
        file_root = None
        if cfg.source.kind == "folder" and cfg.source.path:
            from curation.sources import resolve_path

            file_root = str(resolve_path(cfg, base_dir))   # file:// is read only under it
        return cls(image_size=f.image_size, resize_only_if_bigger=f.resize_only_if_bigger,
                   encode_format=f.encode_format, encode_quality=f.encode_quality, chunk_size=f.chunk_size,
                   thread_count=f.thread_count, timeout=f.timeout, retries=f.retries, max_pixels=f.max_pixels,
                   max_bytes=f.max_bytes, allowed_networks=tuple(f.allowed_networks), file_root=file_root,
                   user_agent_token=f.user_agent_token)


class GuardedResizer(Resizer):
    """img2dataset's resizer, after a header check that refuses bombs, truncation and non-images."""

    def __init__(self, max_pixels: int, **kwargs):
        super().__init__(**kwargs)
        self.max_pixels = max_pixels

    def __call__(self, img_stream, blurring_bbox_list=None):
        try:
            image_header.inspect(img_stream.getvalue(), self.max_pixels)
        except image_header.ImageRejected as exc:
            return None, None, None, None, None, str(exc)
        turned = image_header.upright(img_stream.getvalue())   # EXIF orientation applied (OpenCV ignores it)
        if turned is not None:
            img_stream = io.BytesIO(turned)
        return super().__call__(img_stream, blurring_bbox_list)


class HashingWriter(WebDatasetSampleWriter):
    """img2dataset's WebDataset writer, also recording sha256 and size of the stored image bytes."""

    def __init__(self, shard_id, output_folder, save_caption, oom_shard_count, schema, encode_format):
        schema = schema.append(pa.field("sha256", pa.string())).append(pa.field("bytes", pa.int64()))
        super().__init__(shard_id, output_folder, save_caption, oom_shard_count, schema, encode_format)

    def write(self, img_str, key, caption, meta):
        meta["sha256"] = hashlib.sha256(img_str).hexdigest() if img_str is not None else None
        meta["bytes"] = len(img_str) if img_str is not None else None
        super().write(img_str, key, caption, meta)


def resizer_for(s: FetchSettings) -> GuardedResizer:
    return GuardedResizer(s.max_pixels, image_size=s.image_size, resize_mode="keep_ratio_largest",
                          resize_only_if_bigger=s.resize_only_if_bigger, encode_quality=s.encode_quality,
                          encode_format=s.encode_format)


def shard_paths(run_dir: Path, chunk: Chunk) -> dict[str, Path]:
    return RunPaths(run_dir).shard_files(chunk.name)


def completed(run_dir: Path, chunk: Chunk, candidates: pa.Table) -> pa.Table | None:
    """The chunk's samples if it finished for exactly these candidates, else None."""
    paths = shard_paths(run_dir, chunk)
    if not (paths["samples"].exists() and paths["tar"].exists()):
        return None
    try:
        samples = storage.read_table(paths["samples"])
    except (OSError, pa.ArrowInvalid):
        return None
    if samples.column("uid").to_pylist() != candidates.column("uid").to_pylist():
        return None   # planned from another candidate list: fetch again
    return samples


def fetch_chunk(run_dir: str | Path, chunk: Chunk, candidates: pa.Table, s: FetchSettings) -> tuple[pa.Table, bool]:
    """Download ``candidates`` (the chunk's rows) into shard ``chunk.index``.

    Returns (samples, skipped): skipped is True when a completed chunk was found.
    """
    run_dir = storage.path(run_dir)
    done = completed(run_dir, chunk, candidates)
    if done is not None:
        return done, True
    paths = shard_paths(run_dir, chunk)
    if storage.is_url(run_dir):   # built on this worker's disk, then uploaded object by object
        tmp = Path(tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{chunk.name}-"))
    else:
        tmp = RunPaths(run_dir).shards / f"{TEMP_PREFIX}{chunk.name}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
    try:
        columns = ["url"] + [c for c in CARRIED_COLUMNS if c in candidates.column_names]
        listing = tmp / "input.arrow"
        with pa.ipc.new_file(str(listing), candidates.select(columns).schema) as w:
            w.write_table(candidates.select(columns))
        downloader = Downloader(
            sample_writer_class=HashingWriter, resizer=resizer_for(s), thread_count=s.thread_count,
            save_caption=False, extract_exif=False, output_folder=str(tmp), column_list=columns,
            timeout=s.timeout, number_sample_per_shard=s.chunk_size, oom_shard_count=5, compute_hash=None,
            verify_hash_type=None, encode_format=s.encode_format, retries=s.retries,
            user_agent_token=s.user_agent_token,
            disallowed_header_directives=["noai", "noimageai", "noindex", "noimageindex"])
        # download_shard, not __call__: __call__ prints and swallows a failed shard.
        downloader.download_shard((chunk.index, str(listing)))
        _note_worker(tmp / f"{chunk.name}_stats.json", s)
        fetched = pq.read_table(tmp / f"{chunk.name}.parquet")
        samples = fetch_status.samples_for_chunk(chunk, candidates, fetched)
        # Shard files first, samples last: the samples file is the completion marker.
        for kind, produced in (("parquet", f"{chunk.name}.parquet"), ("stats", f"{chunk.name}_stats.json"),
                               ("tar", f"{chunk.name}.tar")):
            storage.move_in(tmp / produced, paths[kind])
        atomic.write_parquet(paths["samples"], samples)
        return samples, False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _note_worker(stats_path: Path, s: FetchSettings) -> None:
    """Add which worker process fetched the chunk to img2dataset's stats (provenance, debugging)."""
    stats = json.loads(stats_path.read_text())
    stats["worker"] = {"host": socket.gethostname(), "pid": os.getpid(), "thread_count": s.thread_count}
    stats_path.write_text(json.dumps(stats, indent=4))


def remove_stale_temp(run_dir: str | Path) -> int:
    """Remove temp folders of chunks a killed run never finished; returns how many."""
    shards = storage.path(run_dir) / "shards"
    stale = list(shards.glob(f"{TEMP_PREFIX}*")) if shards.is_dir() else []
    for p in stale:
        storage.rmtree(p)
    atomic.clean_temp_files(storage.path(run_dir) / "samples")
    return len(stale)
