"""Null worlds with flat classes (issue 11): per-class background sets, a fresh grid, the flat-set
choice, and the oracle and judge on a class that is never on some backgrounds."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemas
from curation import atomic, config
from curation.errors import UserError
from curation.world import assets, generate, oracle, spec
from curation.world.flat import flat_set, flat_sets
from curation.world.judge import judge
from curation.world.run_config import run_config
from tests.support.null_world import NULL_SEED, NULL_SIZE, null_world  # noqa: F401  (session fixture)

CLI = [sys.executable, "-m", "pipeline.cli"]


@pytest.fixture(scope="module")
def manifest():
    return assets.load_manifest()


def test_class_backgrounds_restrict_pool_and_grid_and_leave_training_alone(manifest):
    sets = {"duck": ["grass", "rock", "snow"], "lion": ["indoor", "sky"]}
    plain = generate.World(spec.preset("small", variant="null", seed=3), manifest)
    flat = generate.World(spec.preset("small", variant="null", seed=3, class_backgrounds=sets), manifest)
    assert [(i.caption, i.background, i.stamp, i.photo) for i in flat.train_items()] == \
        [(i.caption, i.background, i.stamp, i.photo) for i in plain.train_items()]
    pool = [it for it in flat.pool_items() if it.true_class]
    for cls, bgs in sets.items():
        seen = Counter(it.background for it in pool if it.true_class == cls)
        assert set(seen) == set(bgs)                                       # wrong-label and tiny photos too
        grid = Counter(it.background for it in flat.grid_items() if it.true_class == cls)
        assert grid == {bg: flat.spec.grid_per_cell for bg in bgs}
    other = Counter(it.background for it in flat.grid_items() if it.true_class == "goose")
    assert set(other) == set(flat.spec.backgrounds)                        # a class without a set: every one
    assert "class_backgrounds" not in plain.spec.to_json() and "grid_draw" not in plain.spec.to_json()
    assert json.loads(flat.spec.to_json())["class_backgrounds"] == sets


def test_class_backgrounds_errors_name_the_class(manifest):
    with pytest.raises(UserError, match="'dodo'"):
        spec.preset("small", variant="null", class_backgrounds={"dodo": ["grass", "rock"]}).validate(manifest)
    with pytest.raises(UserError, match="'duck' must be two or more different backgrounds"):
        spec.preset("small", variant="null", class_backgrounds={"duck": ["grass"]}).validate(manifest)
    with pytest.raises(UserError, match="'duck' must be two or more different backgrounds"):
        spec.preset("small", variant="null", class_backgrounds={"duck": ["grass", "lava"]}).validate(manifest)
    biased = next(c for c, p in spec.draw_plant(spec.preset("small", seed=0).validate(manifest)).items() if p.biased)
    with pytest.raises(UserError, match=f"only restrict control classes; {biased} is biased"):
        generate.World(spec.preset("small", seed=0, class_backgrounds={biased: ["grass", "rock"]}), manifest)
    with pytest.raises(UserError, match="grid_draw"):
        spec.preset("small", grid_draw=-1).validate(manifest)


def test_grid_draw_draws_new_grid_photos_only(manifest):
    a = generate.World(spec.preset("tiny", seed=5), manifest)
    b = generate.World(spec.preset("tiny", seed=5, grid_draw=1), manifest)
    key = lambda items: [(i.true_class, i.background, i.stamp, i.photo) for i in items]      # noqa: E731
    assert key(a.pool_items()) == key(b.pool_items()) and key(a.train_items()) == key(b.train_items())
    assert [(i.true_class, i.background) for i in a.grid_items()] == [(i.true_class, i.background) for i in b.grid_items()]
    assert a.rng("grid", 0).random() != b.rng("grid", 0).random()           # fresh draws, same cells
    assert a.rng("pool", 0).random() == b.rng("pool", 0).random()


def test_flat_set_picks_backgrounds_within_the_spread():
    acc = {"grass": 0.30, "rock": 0.33, "snow": 0.38, "sky": 0.90, "tree": 0.02, "water": 0.05, "indoor": 0.07}
    # Two windows of three within 8 points: near 0% (tree, water, indoor) and near 33%; the latter wins.
    assert flat_set(acc, 0.08) == ["grass", "rock", "snow"]
    assert flat_set(acc, 0.02) is None
    assert flat_set({"a": 0.5, "b": 0.5, "c": 0.9}, 0.1) is None            # only two within the spread
    assert flat_set(acc, 0.40) == ["grass", "rock", "snow"]                 # nearest 50% before larger
    assert flat_set({"a": 0.45, "b": 0.5, "c": 0.55, "d": 0.5, "e": 0.7}, 0.1) == ["a", "b", "c", "d"]
    classes = {"duck": {"biased": False, "accuracy": acc}, "lion": {"biased": True, "accuracy": acc},
               "hen": {"biased": False, "accuracy": {"a": 0.1, "b": 0.9, "c": 0.5}}}
    assert flat_sets(classes, 0.08) == {"duck": ["grass", "rock", "snow"]}


def test_oracle_and_judge_on_a_class_restricted_to_some_backgrounds(null_world, tmp_path):
    cls = sorted(null_world.oracle["classes"])[0]
    bgs = sorted(null_world.oracle["classes"][cls]["accuracy"])[:3]
    world = tmp_path / "flat"
    wanted = spec.preset(NULL_SIZE, variant="null", seed=NULL_SEED, class_backgrounds={cls: bgs}, grid_draw=1)
    generate.build(world, wanted)
    assert (world / "train.parquet").read_bytes() == (null_world.dir / "train.parquet").read_bytes()
    shutil.copytree(null_world.dir / "model", world / "model")
    result = oracle.compute(world, null_world.model, str(world / "model" / null_world.checkpoint.name), reference=True)
    assert sorted(result["classes"][cls]["accuracy"]) == bgs
    cells = pq.read_table(world / "oracle.parquet").to_pylist()
    assert sorted(c["background"] for c in cells if c["class_name"] == cls) == bgs and all(c["n"] for c in cells)

    # A run that keeps the class with a counter the class is never on: wrong, never "tied", no grid drop.
    elsewhere = next(b for b in null_world.backgrounds if b not in bgs)
    run = tmp_path / "run"
    atomic.write_text(run / "config.yaml", config.dump(run_config(world, null_world.model, null_world.checkpoint)))
    rows = [dict(class_idx=i, class_name=c, source="model", model_id="reference", common=e["oracle_common"],
                 counter=elsewhere if c == cls else None, decision="kept" if c == cls else "dropped", reason="by hand")
            for i, (c, e) in enumerate(result["classes"].items())]
    atomic.write_parquet(run / "proposals.parquet", schemas.conform(pa.Table.from_pylist(rows), "proposals"))
    v = judge(world, run)
    assert not v["classes"][cls]["correct"] and v["classes"][cls]["grid_drop"] is None
    assert cls in v["unconfirmed"]


def test_build_command_takes_class_backgrounds_and_a_grid_draw(tmp_path):
    out = tmp_path / "w"
    done = subprocess.run(CLI + ["world", "build", str(out), "--size", "tiny", "--variant", "null", "--seed", "4",
                                 "--class-backgrounds", "duck=grass, rock,snow", "--grid-draw", "2"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    recorded = json.loads((out / "world.json").read_text())["spec"]
    assert recorded["class_backgrounds"] == {"duck": ["grass", "rock", "snow"]} and recorded["grid_draw"] == 2
    for bad, says in ((["--class-backgrounds", "duck"], "expected CLASS=BG,BG"),
                      (["--class-backgrounds", "duck=grass"], "two or more different backgrounds")):
        refused = subprocess.run(CLI + ["world", "build", str(tmp_path / "x"), "--variant", "null", *bad],
                                 capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and says in refused.stderr and "Traceback" not in refused.stderr
