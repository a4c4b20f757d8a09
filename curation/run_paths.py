"""The run directory's layout, in one place: every artifact's path (DESIGN.md, "The run directory").

    paths = RunPaths("s3://bucket/runs/r1")      # or a local folder
    paths.samples / "00000.parquet"             # RUN/samples/00000.parquet
    paths.checks("00000.tar")                   # RUN/clean/00000.parquet

The run may be a local path or an object store URL (curation/storage.py); every path here is of the
same kind as the run, so stages read and write them the same way either way.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from curation import storage


def shard_stem(shard: str) -> str:
    """00000.tar → 00000: the per-shard files of later stages are named after the fetch shard."""
    return shard.split(".", 1)[0]


def model_slug(model_id: str) -> str:
    """A model id as a file name (text banks): anything but [A-Za-z0-9._-] replaced by '_'."""
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model_id)


@dataclass(frozen=True)
class RunPaths:
    run: "Path | storage.UrlPath"

    def __init__(self, run: "str | os.PathLike | storage.UrlPath"):
        object.__setattr__(self, "run", storage.path(run))

    # -- inputs and the whole-run files ----------------------------------------------------------
    @property
    def config(self):
        return self.run / "config.yaml"

    @property
    def manifest(self):
        return self.run / "manifest.json"

    @property
    def candidates(self):                  # sources: candidates, sorted by uid (marks the stage done)
        return self.candidates_folder / "candidates.parquet"

    @property
    def candidates_folder(self):
        return self.run / "candidates"

    @property
    def rejected(self):                    # sources: rows refused, with their reason
        return self.run / "candidates_rejected.parquet"

    # -- per fetch shard -------------------------------------------------------------------------
    @property
    def shards(self):                      # fetch: NNNNN.tar, .parquet, _stats.json; settings.json
        return self.run / "shards"

    @property
    def samples(self):                     # fetch, then clean and score: one outcome per candidate
        return self.run / "samples"

    @property
    def clean(self):                       # clean: per-image checks
        return self.run / "clean"

    @property
    def scores(self):                      # score: per-image zero-shot results; settings.json
        return self.run / "scores"

    @property
    def text(self):                        # score: text embeddings per model
        return self.scores / "text"

    def shard_files(self, name: str) -> dict:
        """A fetch chunk's outputs: the tar, img2dataset's parquet and stats, and the samples file."""
        return {"tar": self.shards / f"{name}.tar", "parquet": self.shards / f"{name}.parquet",
                "stats": self.shards / f"{name}_stats.json", "samples": self.samples / f"{name}.parquet"}

    def checks(self, shard: str):
        return self.clean / f"{shard_stem(shard)}.parquet"

    def scores_file(self, shard: str):
        return self.scores / f"{shard_stem(shard)}.parquet"

    def text_bank(self, model_id: str):
        return self.text / f"{model_slug(model_id)}.parquet"

    # -- backgrounds and propose -----------------------------------------------------------------
    @property
    def groups(self):                      # backgrounds: model-CCCCC.parquet; annotation: human rows
        return self.run / "groups"

    def model_groups(self, class_idx: int):
        return self.groups / f"model-{class_idx:05d}.parquet"

    @property
    def group_stats(self):
        return self.run / "group_stats.parquet"

    @property
    def attributes(self):
        return self.run / "attributes.parquet"

    @property
    def proposals(self):
        return self.run / "proposals.parquet"

    # -- after curate ----------------------------------------------------------------------------
    @property
    def annotation(self):
        return self.run / "annotation"

    @property
    def report(self):
        return self.run / "report"

    @property
    def truth(self):                       # a planted world's ground truth, when the run has one
        return self.run / "truth.parquet"

    @property
    def releases(self):
        return self.run / "release"

    def release(self, name: str, version: str):
        from curation.release_layout import release_name

        return self.releases / release_name(name, version)
