"""clip_benchmark (its own venv, `make clipbench`) evaluates a real `counteranimal release` of the curated
planted world with the world's local ca-tiny checkpoint: its mean_per_class_recall on each split equals our
class-balanced accuracy, and our evaluator reads the same release."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from curation import clip_models, evaluate, release_layout as layout
from curation.release_reader import open_dataset
from pipeline.cli import main
from tests.support.curated_world import curated_world  # noqa: F401  (pytest fixture)
from tests.support.world import trained_world  # noqa: F401  (pytest fixture)

ROOT = Path(__file__).resolve().parents[1]
CB_PYTHON = ROOT / ".venv-clipbench" / "bin" / "python"
LAUNCHER = ROOT / "scripts" / "clip_benchmark_ca.py"


@pytest.fixture(scope="module")
def world_release(curated_world, tmp_path_factory):
    run = tmp_path_factory.mktemp("cb") / "run"
    shutil.copytree(curated_world.run, run, ignore=shutil.ignore_patterns("release", "report"))
    assert main(["release", str(run), "--name", "world", "--version", "1", "--unverified"]) == 0
    return layout.release_dir(run, "world", "1")


def clip_benchmark(release: Path, split: str, model: str, checkpoint: Path, out: Path) -> dict:
    if not CB_PYTHON.is_file():
        pytest.skip("clip_benchmark's venv is missing: run `make clipbench`")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    # --no_amp: on a CPU clip_benchmark's autocast runs bf16, which is not what open_clip (or we) compute.
    done = subprocess.run([str(CB_PYTHON), str(LAUNCHER), "eval", "--dataset", f"wds/{release.name}",
                           "--dataset_root", str(release), "--split", split, "--model", model,
                           "--pretrained", str(checkpoint), "--no_amp", "--output", str(out)],
                          capture_output=True, text=True, env=env, cwd=out.parent, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return json.loads(out.read_text())["metrics"]


def test_clip_benchmark_mean_per_class_recall_equals_our_class_balanced_accuracy(world_release, trained_world,
                                                                                  tmp_path):
    clip = clip_models.load(trained_world.model, str(trained_world.checkpoint))
    ours = evaluate.evaluate(open_dataset(world_release), clip, n_boot=0, progress=False)
    assert ours["dataset"]["images"]["common"] > 0 and ours["dataset"]["images"]["counter"] > 0
    for split in layout.SPLITS:
        theirs = clip_benchmark(world_release, split, trained_world.model, trained_world.checkpoint,
                                tmp_path / f"{split}.json")
        assert theirs["mean_per_class_recall"] == pytest.approx(ours["summary"]["full"][split]["value"] / 100,
                                                                abs=1e-6), split
        assert theirs["acc1"] == pytest.approx(ours["summary"]["full"][f"accuracy_images_{split}"] / 100, abs=1e-6)
    # Our reader takes the release's own 1-vs-k sets (the reference model's, written by release).
    assert "the release's one_vs_k.json" in ours["protocols"]["k"]
    # The shards are really split by group: the drop the release was built on shows up.
    assert ours["summary"]["full"]["drop"]["value"] > 10


def test_official_export_and_import_give_the_same_numbers(world_release, trained_world, tmp_path):
    """release's official-layout export, read by our evaluator directly and after import-official: the same
    photos, labels and templates give the same figures as the release itself."""
    from curation import release_official

    clip = clip_models.load(trained_world.model, str(trained_world.checkpoint))
    ours = evaluate.evaluate(open_dataset(world_release), clip, n_boot=100, progress=False)
    exported = release_official.export(world_release, tmp_path / "official")
    templates = (world_release / layout.TEMPLATES).read_text().splitlines()
    shutil.copy(world_release / layout.TEMPLATES, exported / layout.TEMPLATES)   # the export ships none
    direct = evaluate.evaluate(open_dataset(exported), clip, n_boot=100, progress=False)
    imported = release_official.import_official(exported, tmp_path / "imported", templates=templates)
    again = evaluate.evaluate(open_dataset(imported), clip, n_boot=100, progress=False)
    assert direct["dataset"]["layout"] == "official" and again["dataset"]["layout"] == "release"
    for other in (direct, again):
        assert other["per_class"] == ours["per_class"]
        assert other["summary"]["full"] == ours["summary"]["full"]
