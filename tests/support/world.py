"""The planted world for tests: built and its reference model trained ONCE per test session.

Use the `trained_world` fixture in any test module (import it so pytest sees it):

    from tests.support.world import trained_world  # noqa: F401  (pytest fixture)

    def test_something(trained_world):
        tw = trained_world                  # a TrainedWorld, read-only: copy before changing files
        tw.dir                              # the world folder (pool/, grid/, train/, *.parquet, world.json)
        tw.pool_dir                         # serve this folder: ImageServer(tw.pool_dir), URLs /img/<file>
        tw.candidate_urls(base_url, path)   # write the pool's URL list (url, class, license, attribution, id)
        tw.model, tw.checkpoint             # "ca-tiny" and its .pt: clip_models.load(tw.model, str(tw.checkpoint))
        tw.ground_truth                     # ground_truth.parquet: per pool/grid image (uid, class, background, noise…)
        tw.classes                          # classes.parquet: per class its planted common/counter
        tw.oracle                           # oracle.json content: per class oracle_common/counter, drop + CI
        tw.classes_list, tw.backgrounds     # the world's class names and background labels, in order
        tw.world                            # world.json content (spec, plant, prompts, sources, counts)

The world is the "small" preset with seed 0 (12 classes, 3 of them controls, 7 backgrounds),
built under the session's pytest temp dir. `trained_world_at(folder)` does the same outside
pytest and reuses whatever is already there (a built world, a trained checkpoint).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

TEST_SEED = 0
TEST_SIZE = "small"


@dataclass(frozen=True)
class TrainedWorld:
    dir: Path
    model: str
    checkpoint: Path
    world: dict
    oracle: dict

    @property
    def pool_dir(self) -> Path:
        return self.dir / "pool"

    @property
    def ground_truth(self) -> Path:
        return self.dir / "ground_truth.parquet"

    @property
    def classes(self) -> Path:
        return self.dir / "classes.parquet"

    @property
    def classes_list(self) -> list[str]:
        return list(self.world["classes"])

    @property
    def backgrounds(self) -> list[str]:
        return list(self.world["backgrounds"])

    def candidate_urls(self, base_url: str, out_path: str | Path) -> Path:
        from curation.world.candidates import write_candidate_urls

        return write_candidate_urls(self.dir, base_url, out_path)


def trained_world_at(folder: str | Path, seed: int = TEST_SEED, size: str = TEST_SIZE) -> TrainedWorld:
    """Build the world in `folder`, train its reference model and compute the oracle, reusing done work."""
    from curation.world.oracle import read_oracle
    from curation.world.reference import ensure_trained

    folder = Path(folder)
    world, model, checkpoint = ensure_trained(folder, size, seed)
    return TrainedWorld(folder, model, checkpoint, world, read_oracle(folder))


@pytest.fixture(scope="session")
def trained_world(tmp_path_factory) -> TrainedWorld:
    # COUNTERANIMAL_TEST_WORLD names a folder to build the world in once and reuse across pytest
    # runs while developing (building and training take minutes); CI leaves it unset.
    cached = os.environ.get("COUNTERANIMAL_TEST_WORLD")
    return trained_world_at(Path(cached) if cached else tmp_path_factory.getbasetemp() / "world")
