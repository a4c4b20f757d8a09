"""The planted world: assets, generator, reference model and oracle (real photos, real open_clip)."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import time
from contextlib import redirect_stderr
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from curation.errors import UserError
from curation.world import assets, generate, spec
from pipeline import cli
from tests.support.world import trained_world  # noqa: F401  (session fixture)

TINY = dict(classes=["duck", "flamingo", "king penguin", "lion"], backgrounds=["water", "grass", "snow"], n_control=1,
            image_size=64, train_per_class=6, train_background_per_label=3, pool_per_class=12, grid_per_cell=2,
            pool_noise={"exact_dup": 0.1, "near_dup": 0.1, "corrupted": 0.1, "tiny": 0.1, "no_animal": 0.1,
                        "wrong_label": 0.1})


def tiny_spec(seed: int = 3, **overrides) -> spec.WorldSpec:
    return spec.WorldSpec(seed=seed, **{**TINY, **overrides})


def digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.suffix in (".jpg", ".parquet"):
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes() if p.suffix == ".jpg" else pq.read_table(p).to_string().encode())
    return h.hexdigest()


# -- assets and manifest -------------------------------------------------------------------

def test_manifest_covers_enough_classes_and_backgrounds_with_imagenet_names():
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    m = assets.load_manifest()
    assert len(m.classes) >= 12
    for c in m.classes:
        assert IMAGENET_CLASSNAMES[c.imagenet_idx] == c.name
        for s in c.stamps:
            img = Image.open(s.path)
            alpha = np.asarray(img.convert("RGBA").getchannel("A"))
            assert (alpha == 0).mean() > 0.2, f"{s.path} is not a cut-out"
    labels = m.background_labels()
    assert len(labels) >= 6
    from curation.presets import PAPER_BACKGROUNDS
    assert set(labels) <= set(PAPER_BACKGROUNDS)
    for label in labels:
        assert len(m.photos(label)) >= 3, label
    assert {s.license for s in m.sources.values()} == {"GPL-2.0-or-later", "MIT", "CC0-1.0"}


def test_missing_assets_name_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setenv("COUNTERANIMAL_TUXPAINT_DIR", str(tmp_path / "nothing"))
    with pytest.raises(UserError, match="apt-get install -y tuxpaint-stamps-default tuxpaint-data"):
        assets.load_manifest()
    err = io.StringIO()
    with redirect_stderr(err):
        code = cli.main(["world", "build", str(tmp_path / "w"), "--size", "small"])
    assert code == 2
    assert "make assets" in err.getvalue() and "Traceback" not in err.getvalue()


# -- the plant --------------------------------------------------------------------------------

def test_plant_is_drawn_from_the_seed_with_controls_and_overrides():
    m = assets.load_manifest()
    s = spec.preset("default", seed=5).validate(m)
    plant = spec.draw_plant(s)
    assert plant == spec.draw_plant(s)
    biased = [p for p in plant.values() if p.biased]
    assert len(biased) == s.n_classes - s.n_control
    assert {p.common for p in biased} == set(s.backgrounds)     # every background is someone's common
    commons = {p.common for p in biased}
    for p in biased:
        assert p.counter != p.common and p.counter in commons  # the counter pulls toward another class
    assert spec.draw_plant(spec.preset("default", seed=6).validate(m)) != plant

    fixed = spec.preset("default", seed=5, plant={"flamingo": ["water", "sky"]}).validate(m)
    assert spec.draw_plant(fixed)["flamingo"] == spec.Plant("flamingo", True, "water", "sky")
    with pytest.raises(UserError, match="plant for 'flamingo'"):
        spec.preset("default", plant={"flamingo": ["water", "lava"]}).validate(m)
    with pytest.raises(UserError, match="no class 'unicorn'"):
        spec.preset("default", classes=["duck", "unicorn"]).validate(m)


# -- the generator ----------------------------------------------------------------------------

def test_build_is_deterministic_per_seed(tmp_path):
    a = generate.build(tmp_path / "a", tiny_spec(seed=3))
    generate.build(tmp_path / "b", tiny_spec(seed=3))
    generate.build(tmp_path / "c", tiny_spec(seed=4))
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")
    assert a["counts"]["grid"] == 4 * 3 * 2
    with pytest.raises(UserError, match="other settings"):
        generate.build(tmp_path / "a", tiny_spec(seed=9))


def test_killed_build_resumes_to_the_same_world(tmp_path, monkeypatch):
    whole = tmp_path / "whole"
    generate.build(whole, tiny_spec())
    calls = {"n": 0}
    real_render = generate.World.render

    def dying_render(self, *args):
        calls["n"] += 1
        if calls["n"] == 40:                    # the process dies in the middle of the pool
            raise KeyboardInterrupt
        return real_render(self, *args)

    killed = tmp_path / "killed"
    monkeypatch.setattr(generate.World, "render", dying_render)
    with pytest.raises(KeyboardInterrupt):
        generate.build(killed, tiny_spec())
    assert not (killed / "pool").exists() and not (killed / "world.json").exists()   # nothing half-visible
    monkeypatch.setattr(generate.World, "render", real_render)
    generate.build(killed, tiny_spec())
    assert digest(killed) == digest(whole)
    assert not list(killed.glob(".*.partial"))


def test_pool_is_noisy_and_every_image_has_truth_and_license(tmp_path):
    out = tmp_path / "w"
    world = generate.build(out, tiny_spec())
    truth = pq.read_table(out / "ground_truth.parquet").to_pylist()
    pool = {r["uid"]: r for r in truth if r["split"] == "pool"}
    assert len(pool) == world["counts"]["pool"] == len(list((out / "pool").iterdir()))
    kinds = {k: [r for r in pool.values() if r["noise"] == k] for k in spec.NOISE_KINDS}
    assert all(len(v) == 5 for v in kinds.values())               # 10% of 48 clean images each
    for r in kinds["exact_dup"]:
        assert (out / r["file"]).read_bytes() == (out / pool[r["duplicate_of"]]["file"]).read_bytes()
    for r in kinds["near_dup"]:
        assert (out / r["file"]).read_bytes() != (out / pool[r["duplicate_of"]]["file"]).read_bytes()
        assert Image.open(out / r["file"]).size == (64, 64)
    for r in kinds["corrupted"]:
        with pytest.raises(OSError):
            Image.open(out / r["file"]).load()
    for r in kinds["tiny"]:
        assert max(Image.open(out / r["file"]).size) < 32
    for r in kinds["no_animal"]:
        assert r["class_name"] is None and r["stamp"] is None and r["label_class"]
    for r in kinds["wrong_label"]:
        assert r["class_name"] != r["label_class"]
    for r in pool.values():
        if r["stamp"]:
            assert r["license"] == "GPL-2.0-or-later" and "Tux Paint stamps" in r["attribution"]
        elif r["photo"]:
            assert r["license"] in ("GPL-2.0-or-later", "MIT", "CC0-1.0") and r["attribution"]

    urls = generate_urls(out, tmp_path / "urls.csv")
    assert [u["id"] for u in urls] != sorted(u["id"] for u in urls)      # shuffled like a crawl
    assert sorted(u["id"] for u in urls) == sorted(pool)
    for u in urls:
        assert u["url"] == f"http://127.0.0.1:8765/{u['id']}.jpg"      # BASE_URL serves OUT/pool/ itself
        assert u["class"] == pool[u["id"]]["label_class"] and u["license"] == pool[u["id"]]["license"]


def generate_urls(world_dir: Path, path: Path) -> list[dict]:
    code = cli.main(["world", "urls", str(world_dir), "http://127.0.0.1:8765/", str(path)])
    assert code == 0
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_grid_is_balanced_and_classes_table_has_the_plant(tmp_path):
    out = tmp_path / "w"
    world = generate.build(out, tiny_spec())
    grid = [r for r in pq.read_table(out / "ground_truth.parquet").to_pylist() if r["split"] == "grid"]
    cells = {}
    for r in grid:
        cells[(r["class_name"], r["background"])] = cells.get((r["class_name"], r["background"]), 0) + 1
    assert cells == {(c, b): 2 for c in TINY["classes"] for b in TINY["backgrounds"]}
    classes = pq.read_table(out / "classes.parquet").to_pylist()
    for row in classes:
        p = world["plant"][row["class_name"]]
        assert (row["biased"], row["planted_common"], row["planted_counter"]) == (p["biased"], p["common"], p["counter"])
    assert sum(not r["biased"] for r in classes) == 1


def test_a_larger_grid_is_redrawn_in_place_keeping_pool_and_model(tmp_path):
    import dataclasses

    out = tmp_path / "w"
    generate.build(out, tiny_spec())
    pool_bytes = {p.name: p.read_bytes() for p in (out / "pool").iterdir()}
    pool_truth = [r for r in pq.read_table(out / "ground_truth.parquet").to_pylist() if r["split"] == "pool"]
    (out / "model").mkdir()
    (out / "model" / "ca-tiny.pt").write_bytes(b"a trained model")
    (out / "oracle.json").write_text("{}")          # computed on the old grid: must go
    bigger = dataclasses.replace(tiny_spec(), grid_per_cell=5)
    assert not generate.built_with_other_settings(out, bigger)
    world = generate.build(out, bigger)
    truth = pq.read_table(out / "ground_truth.parquet").to_pylist()
    assert [r for r in truth if r["split"] == "pool"] == pool_truth
    assert {p.name: p.read_bytes() for p in (out / "pool").iterdir()} == pool_bytes
    assert sum(r["split"] == "grid" for r in truth) == 5 * len(TINY["classes"]) * len(TINY["backgrounds"])
    assert len(list((out / "grid").iterdir())) == 5 * len(TINY["classes"]) * len(TINY["backgrounds"])
    assert (out / "model" / "ca-tiny.pt").read_bytes() == b"a trained model" and not (out / "oracle.json").exists()
    assert world["spec"]["grid_per_cell"] == 5 and generate.read_world(out)["spec"]["grid_per_cell"] == 5
    # Another setting than the grid's still needs a rebuild.
    assert generate.built_with_other_settings(out, dataclasses.replace(bigger, pool_per_class=7))


def test_train_command_writes_a_loadable_checkpoint_and_the_oracle(tmp_path, capsys):
    out = tmp_path / "w"
    generate.build(out, tiny_spec())
    assert cli.main(["world", "train", str(out), "--epochs", "1"]) == 0
    info = json.loads((out / "model" / "ca-tiny.json").read_text())
    assert info["settings"]["epochs"] == 1 and len(info["epoch_losses"]) == 1
    oracle = json.loads((out / "oracle.json").read_text())
    assert set(oracle["classes"]) == set(TINY["classes"]) and oracle["reference"]
    assert "oracle for ca-tiny" in capsys.readouterr().out
    from curation import clip_models
    assert clip_models.load("ca-tiny", str(out / "model" / "ca-tiny.pt")).model is not None


# -- the reference model and the oracle (session world) ---------------------------------------

def test_training_split_is_biased_as_planted(trained_world):
    rows = pq.read_table(trained_world.dir / "train.parquet").to_pylist()
    p_common = trained_world.world["spec"]["p_common"]
    for cls, plant in trained_world.world["plant"].items():
        mine = [r for r in rows if r["class_name"] == cls]
        assert all(r["caption"] in (f"a photo of a {cls}.", f"a photo of {cls}.", f"a photo of a {cls} on {r['background']}.")
                   for r in mine)
        if plant["biased"]:
            share = np.mean([r["background"] == plant["common"] for r in mine])
            assert abs(share - p_common) < 0.1
            assert not any(r["background"] == plant["counter"] for r in mine)
    backgrounds_only = [r for r in rows if r["kind"] == "background"]
    assert {r["background"] for r in backgrounds_only} == set(trained_world.backgrounds)
    assert all(r["background"] in r["caption"] for r in backgrounds_only)


def test_reference_model_learns_the_planted_shortcut(trained_world):
    s = trained_world.oracle["summary"]
    assert s["acc_planted_common"] >= 0.7
    assert s["mean_planted_drop_biased"] >= 0.2
    assert s["background_accuracy"] >= 0.6
    for cls, e in trained_world.oracle["classes"].items():
        assert e["drop_lo"] <= e["drop"] <= e["drop_hi"]
        assert abs(e["acc_counter"] - min(e["accuracy"].values())) < 1e-3
    cells = pq.read_table(trained_world.dir / "oracle.parquet").to_pylist()
    assert len(cells) == len(trained_world.classes_list) * len(trained_world.backgrounds)
    assert all(c["accuracy_lo"] <= c["accuracy"] <= c["accuracy_hi"] for c in cells)


def test_checkpoint_loads_with_plain_open_clip(trained_world):
    import open_clip

    from curation import clip_models

    model, _, preprocess = open_clip.create_model_and_transforms(trained_world.model,
                                                                 pretrained=str(trained_world.checkpoint))
    ours = clip_models.load(trained_world.model, str(trained_world.checkpoint))
    img = preprocess(Image.open(next((trained_world.dir / "grid").iterdir())).convert("RGB"))[None]
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model.encode_image(img), ours.model.encode_image(img), atol=1e-6)


def test_oracle_command_rescores_the_grid(trained_world, tmp_path):
    world = tmp_path / "w"
    world.mkdir()
    for name in ("world.json", "ground_truth.parquet"):
        shutil.copy(trained_world.dir / name, world / name)
    shutil.copytree(trained_world.dir / "grid", world / "grid")
    shutil.copytree(trained_world.dir / "model", world / "model")
    assert cli.main(["world", "oracle", str(world)]) == 0
    again = json.loads((world / "oracle.json").read_text())
    assert again["classes"] == trained_world.oracle["classes"]          # deterministic scoring
    drop_time = lambda s: {k: v for k, v in s.items() if k != "seconds"}
    assert drop_time(again["summary"]) == drop_time(trained_world.oracle["summary"])


def test_real_weights_that_are_absent_fail_fast_with_the_file_named(trained_world, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("COUNTERANIMAL_ALLOW_DOWNLOAD", raising=False)
    err = io.StringIO()
    started = time.time()
    with redirect_stderr(err):
        code = cli.main(["world", "oracle", str(trained_world.dir), "--model", "ViT-B-32", "--pretrained", "laion400m_e31"])
    assert code == 2 and time.time() - started < 10
    assert "not on this machine" in err.getvalue() and "open_clip_pytorch_model" in err.getvalue()
    with redirect_stderr(io.StringIO()):
        assert cli.main(["world", "train", str(trained_world.dir), "--pretrained", str(tmp_path / "none.pt")]) == 2
