"""The fetch stage as a Beam composite: chunks of candidates → img2dataset → WebDataset shards.

    chunk plans ─▶ Reshuffle ─▶ DownloadChunk (img2dataset, threads inside) ─▶ per-chunk tallies

Each worker reads the uid-sorted candidate table once, installs the network guard in its
process, and fetches whole chunks; a chunk already completed is skipped, so a retried bundle
or a re-run after a kill does no work twice.
"""
from __future__ import annotations

import logging
from pathlib import Path

import apache_beam as beam

from curation import fetch_status, storage
from curation.fetch_status import Chunk
from curation.netguard import NetPolicy
from pipeline.fetch_chunk import FetchSettings

log = logging.getLogger(__name__)


class DownloadChunk(beam.DoFn):
    def __init__(self, run_dir: str, candidates_path: str, settings: FetchSettings):
        self.run_dir, self.candidates_path, self.settings = run_dir, candidates_path, settings

    def setup(self):
        self._candidates = storage.read_table(self.candidates_path)

    def process(self, plan: tuple[int, int, int]):
        from pipeline import urlguard
        from pipeline.fetch_chunk import fetch_chunk

        chunk = Chunk(*plan)
        rows = self._candidates.slice(chunk.start, chunk.stop - chunk.start)
        with urlguard.installed(NetPolicy(self.settings.allowed_networks, self.settings.file_root),
                                self.settings.max_bytes):
            samples, skipped = fetch_chunk(self.run_dir, chunk, rows, self.settings)
        counts = fetch_status.tally(samples)
        log.debug("chunk %s: %s%s", chunk.name, counts, " (already done)" if skipped else "")
        yield {"chunk": chunk.index, "skipped": skipped, **counts}


class Fetch(beam.PTransform):
    """Fetch the given chunks of ``RUN/candidates/candidates.parquet`` into ``RUN/shards``."""

    def __init__(self, run_dir: str | Path, candidates_path: str | Path, chunks: list[Chunk],
                 settings: FetchSettings):
        super().__init__()
        self.run_dir, self.candidates_path = storage.path(run_dir), storage.path(candidates_path)
        self.chunks, self.settings = chunks, settings

    def expand(self, pbegin):
        return (pbegin
                | "ChunkPlans" >> beam.Create([(c.index, c.start, c.stop) for c in self.chunks])
                | "SpreadChunks" >> beam.Reshuffle()
                | "DownloadChunk" >> beam.ParDo(DownloadChunk(self.run_dir, self.candidates_path, self.settings)))
