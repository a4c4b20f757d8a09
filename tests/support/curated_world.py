"""The planted world's candidate pool curated once per test session: every stage, real components.

    from tests.support.world import trained_world        # noqa: F401  (pytest fixtures)
    from tests.support.curated_world import curated_world  # noqa: F401

    def test_x(curated_world):
        cw = curated_world          # CuratedWorld: .world (TrainedWorld), .run (the run directory)

The pool is served by pipeline/imageserver.py on 127.0.0.1 and curated through the real
`counteranimal curate` command (sources → fetch → clean → score → backgrounds → propose) with the
world's run config (curation/world/run_config.py). Read-only: copy the run before changing it.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from curation import atomic, config
from curation.world.run_config import run_config

# Groups of 8 photos suffice to measure the world's drops (its pool has ~10 per rarer background).
MIN_GROUP_SIZE = 8


@dataclass(frozen=True)
class CuratedWorld:
    world: object     # tests.support.world.TrainedWorld
    run: Path


def curate_world(tw, run: Path) -> Path:
    from pipeline.cli import main
    from pipeline.imageserver import ImageServer

    run.mkdir(parents=True, exist_ok=True)
    cfg = run_config(tw.dir, tw.model, tw.checkpoint, thresholds={"min_group_size": MIN_GROUP_SIZE})
    atomic.write_text(run / "config.yaml", config.dump(cfg))
    server = ImageServer(tw.pool_dir).start()
    try:
        tw.candidate_urls(server.base, run / "urls.csv")
        assert main(["curate", str(run)]) == 0
    finally:
        server.stop()
    return run


@pytest.fixture(scope="session")
def curated_world(trained_world, tmp_path_factory) -> CuratedWorld:
    return CuratedWorld(trained_world, curate_world(trained_world, tmp_path_factory.getbasetemp() / "world-run"))
