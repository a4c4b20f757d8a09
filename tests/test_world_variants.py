"""Planted-world variants (issue 11): shared commons, emergent counters, caption and pool shares,
null worlds; the second (background) model and `init --background-model`."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter

import pyarrow.parquet as pq
import pytest

from curation import clip_models, config
from curation.errors import UserError
from curation.world import assets, generate, spec, train
from pipeline.commands import world as world_command
from tests.support.null_world import null_world  # noqa: F401  (session fixture)

CLI = [sys.executable, "-m", "pipeline.cli"]


@pytest.fixture(scope="module")
def manifest():
    return assets.load_manifest()


def plant_of(manifest, size="default", variant=None, **overrides):
    s = spec.preset(size, variant=variant, **overrides).validate(manifest)
    return s, spec.draw_plant(s)


def test_existing_presets_are_unchanged(manifest):
    # The test and demo worlds' plant and settings record, as before variants existed: a changed
    # .spec.json would make every cached world rebuild, and a changed plant a different world.
    s, plant = plant_of(manifest, "small", seed=0)
    assert {c: [p.common, p.counter] for c, p in plant.items() if p.biased} == {
        "duck": ["rock", "grass"], "goose": ["tree", "water"], "ostrich": ["snow", "grass"],
        "peafowl": ["sky", "grass"], "flamingo": ["rock", "grass"], "king penguin": ["water", "indoor"],
        "toucan": ["water", "snow"], "American bullfrog": ["grass", "indoor"], "lion": ["indoor", "water"]}
    for size in ("default", "small"):
        recorded = json.loads(spec.preset(size).validate(manifest).to_json())
        assert "n_commons" not in recorded and "plant_counter" not in recorded
    assert spec.preset("default", variant="default") == spec.preset("default")


def test_shared_common_puts_several_classes_on_each_common(manifest):
    s, plant = plant_of(manifest, variant="shared-common", seed=101)
    biased = [p for p in plant.values() if p.biased]
    per_common = Counter(p.common for p in biased)
    assert len(per_common) == 3 and set(per_common.values()) == {len(biased) // 3}    # round-robin
    for p in biased:
        assert p.counter in per_common and p.counter != p.common
    with pytest.raises(UserError, match="n_commons"):
        spec.preset("default", n_commons=99).validate(manifest)


def test_emergent_world_plants_no_counter_and_trains_on_every_other_background(manifest):
    s, plant = plant_of(manifest, variant="emergent", seed=104)
    assert all(p.counter is None for p in plant.values())
    world = generate.World(s, manifest)
    cls = next(c for c, p in plant.items() if p.biased)
    seen = Counter(world.train_background(cls, world.rng("train", i)) for i in range(2000))
    assert set(seen) == set(s.backgrounds)                                  # no background withheld
    assert seen[plant[cls].common] / 2000 == pytest.approx(s.p_common, abs=0.03)
    # With a planted counter, the same class never trains on it.
    s2, plant2 = plant_of(manifest, seed=104)
    world2 = generate.World(s2, manifest)
    seen2 = {world2.train_background(cls, world2.rng("train", i)) for i in range(2000)}
    assert plant2[cls].counter not in seen2


def test_null_world_has_no_biased_class_and_balanced_training(manifest):
    s, plant = plant_of(manifest, variant="null", seed=101)
    assert s.n_control == s.n_classes == 16 and s.is_null
    assert not any(p.biased for p in plant.values())
    world = generate.World(s, manifest)
    items = [it for it in world.train_items() if it.true_class]
    per_class = Counter((it.true_class, it.background) for it in items)
    for cls in s.classes:
        counts = [per_class[(cls, bg)] for bg in s.backgrounds]
        assert max(counts) < 3 * s.train_per_class / len(s.backgrounds)      # no class leans on a background
    assert spec.preset("small", variant="null").n_control == 12
    assert spec.preset("default", variant="null", classes=["duck", "lion", "tiger"]).n_control == 3
    with pytest.raises(UserError, match="null world"):
        spec.preset("default", variant="null", plant={"duck": ["water", "sky"]}).validate(manifest)
    with pytest.raises(UserError, match="n_control must be between 0 and n_classes"):
        spec.preset("default", n_control=17).validate(manifest)


def test_caption_and_pool_shares(manifest):
    for variant, share in (("few-captions", 0.1), ("no-captions", 0.0)):
        s, _ = plant_of(manifest, variant=variant, seed=105)
        items = [it for it in generate.World(s, manifest).train_items() if it.true_class]
        scene = sum(it.caption == generate.SCENE_TEMPLATE.format(it.true_class, it.background) for it in items)
        assert scene / len(items) == pytest.approx(share, abs=0.03)
    s, plant = plant_of(manifest, variant="pool-common-0.7", seed=108)
    pool = [it for it in generate.World(s, manifest).pool_items() if it.noise == "none" and plant[it.true_class].biased]
    on_common = sum(it.background == plant[it.true_class].common for it in pool)
    assert on_common / len(pool) == pytest.approx(0.7, abs=0.03)
    with pytest.raises(UserError, match="scene_caption_share"):
        spec.preset("default", scene_caption_share=1.5).validate(manifest)
    with pytest.raises(UserError, match="unknown world variant 'nul'"):
        spec.preset("default", variant="nul")


def test_cli_lists_every_variant():
    assert list(world_command.VARIANTS) == list(spec.VARIANTS)


def test_build_command_takes_a_variant_and_flags(tmp_path):
    out = tmp_path / "w"
    done = subprocess.run(CLI + ["world", "build", str(out), "--size", "tiny", "--variant", "shared-common",
                                 "--n-commons", "2", "--no-plant-counter", "--scene-caption-share", "0.2",
                                 "--pool-common-share", "0.5", "--seed", "3"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    recorded = json.loads((out / "world.json").read_text())
    assert recorded["spec"]["n_commons"] == 2 and recorded["spec"]["plant_counter"] is False
    assert recorded["spec"]["scene_caption_share"] == 0.2 and recorded["spec"]["pool_common_share"] == 0.5
    assert len({p["common"] for p in recorded["plant"].values() if p["biased"]}) == 2
    assert "(none planted)" in done.stdout
    bad = subprocess.run(CLI + ["world", "build", str(tmp_path / "x"), "--scene-caption-share", "2"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "between 0 and 1" in bad.stderr


def test_recaption_names_the_scene_at_the_given_share():
    rows = [{"kind": "animal", "class_name": "duck", "background": "water", "caption": "a photo of a duck."}] * 400
    rows += [{"kind": "background", "class_name": None, "background": "sky", "caption": "a photo of sky."}]
    assert set(train.recaption(rows, 1.0, 0)[:400]) == {"a photo of a duck on water."}
    assert "a photo of a duck on water." not in train.recaption(rows, 0.0, 0)
    half = train.recaption(rows, 0.5, 0)
    assert 150 < half.count("a photo of a duck on water.") < 250 and half[-1] == "a photo of sky."


def test_second_model_is_trained_beside_the_reference_and_init_uses_it(null_world, tmp_path):
    world = tmp_path / "world"
    shutil.copytree(null_world.dir, world)
    refused = subprocess.run(CLI + ["world", "train", str(world), "--balanced"], capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 2 and "--name" in refused.stderr
    reference = (world / "model" / "ca-tiny.pt").read_bytes()
    done = subprocess.run(CLI + ["world", "train", str(world), "--name", "background", "--balanced",
                                 "--scene-caption-share", "1.0", "--epochs", "2"],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert (world / "model" / "ca-tiny.pt").read_bytes() == reference                  # untouched
    info = json.loads((world / "model" / "background.json").read_text())
    assert info["model"] == "ca-tiny" and info["train_split"] == "train-balanced.parquet"
    assert info["settings"]["balanced"] and info["settings"]["scene_caption_share"] == 1.0
    assert (world / "oracle-ca-tiny-background.json").is_file()
    assert json.loads((world / "oracle.json").read_text()) == null_world.oracle        # the world's oracle stays
    assert clip_models.load("ca-tiny", str(world / "model" / "background.pt")).model is not None
    balanced = pq.read_table(world / "train-balanced.parquet").to_pylist()
    assert len(balanced) == len(pq.read_table(world / "train.parquet")) and all(
        (world / r["file"]).is_file() for r in balanced)

    run = tmp_path / "run"
    init = subprocess.run(CLI + ["init", str(run), "--world", str(world), "--background-model", "background"],
                          capture_output=True, text=True, timeout=120)
    assert init.returncode == 0, init.stderr
    cfg = config.load(run)
    assert [m.model_id for m in cfg.models] == ["reference", "background"]
    assert cfg.models[1].pretrained == str((world / "model" / "background.pt").resolve())
    assert cfg.background_assignment.model == "background" and cfg.thresholds.require_all_models is False
    missing = subprocess.run(CLI + ["init", str(tmp_path / "r2"), "--world", str(world), "--background-model", "nope"],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "no model named 'nope'" in missing.stderr and "--name nope" in missing.stderr
