"""A tiny null planted world (nothing planted: every class trained balanced), built and trained once
per test session (well under a minute: `spec.preset("tiny", variant="null")`).

    from tests.support.null_world import null_world  # noqa: F401  (pytest fixture)

    def test_something(null_world):
        null_world.dir, null_world.checkpoint, null_world.oracle   # read-only: copy before changing files

COUNTERANIMAL_TEST_NULL_WORLD names a folder to build it in once and reuse across pytest runs while
developing, like COUNTERANIMAL_TEST_WORLD for the trained_world fixture.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support.world import TrainedWorld

NULL_SEED = 7
NULL_SIZE = "tiny"


def null_world_at(folder: str | Path) -> TrainedWorld:
    import json

    from curation.world.oracle import read_oracle
    from curation.world.reference import ensure_trained

    folder = Path(folder)
    world, model, checkpoint = ensure_trained(folder, NULL_SIZE, NULL_SEED, "null")
    return TrainedWorld(folder, model, checkpoint, world, read_oracle(folder))


@pytest.fixture(scope="session")
def null_world(tmp_path_factory) -> TrainedWorld:
    cached = os.environ.get("COUNTERANIMAL_TEST_NULL_WORLD")
    return null_world_at(Path(cached) if cached else tmp_path_factory.getbasetemp() / "null-world")
