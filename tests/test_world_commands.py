"""`counteranimal init --world` and `counteranimal world judge`: curating a planted world by hand."""
from __future__ import annotations

import subprocess
import sys

from curation import config
from curation.world.judge import judge
from tests.support.curated_world import curated_world  # noqa: F401  (pytest fixture)
from tests.support.world import trained_world  # noqa: F401  (pytest fixture)

CLI = [sys.executable, "-m", "pipeline.cli"]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=300)


def test_init_world_writes_the_worlds_run_config(curated_world, tmp_path):
    done = cli("init", str(tmp_path / "run"), "--world", str(curated_world.world.dir))
    assert done.returncode == 0, done.stderr
    assert f"counteranimal world urls {curated_world.world.dir}" in done.stdout
    written, curated = config.load(tmp_path / "run"), config.load(curated_world.run)
    assert [c.name for c in written.classes] == [c.name for c in curated.classes]
    assert written.backgrounds == curated.backgrounds and written.prompts == curated.prompts
    assert written.models[0].pretrained == str(curated_world.world.checkpoint.resolve())
    assert written.source.path == "urls.csv" and written.label_space == "classes"


def test_init_world_needs_a_built_and_trained_world(tmp_path):
    done = cli("init", str(tmp_path / "run"), "--world", str(tmp_path))
    assert done.returncode == 2 and "not a built planted world" in done.stderr and "world build" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "run").exists()


def test_world_judge_prints_the_judges_verdict(curated_world, tmp_path):
    done = cli("world", "judge", str(curated_world.world.dir), str(curated_world.run))
    assert done.returncode == 0, done.stderr
    verdict = judge(curated_world.world.dir, curated_world.run, config.load(curated_world.run).thresholds.min_accuracy_range)
    assert f"{verdict['found']} of {verdict['significant']} classes with a real shortcut" in done.stdout
    assert all(c in done.stdout for c in verdict["classes"])
    nothing = cli("world", "judge", str(curated_world.world.dir), str(tmp_path))
    assert nothing.returncode == 2 and "no proposals.parquet" in nothing.stderr and "curate" in nothing.stderr
