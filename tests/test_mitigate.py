"""`mitigate`: only the projections (and the temperature) change, the checkpoint loads in open_clip as is
and reproduces the trained embeddings, and the command runs on a curated run and on a world."""
from __future__ import annotations

import json

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from curation import clip_models
from curation.errors import UserError
from curation.mitigate import data as mdata, features, train
from pipeline.cli import main
from tests.support.curated_world import curated_world  # noqa: F401  (pytest fixture)
from tests.support.world import trained_world  # noqa: F401  (pytest fixture)


def _toy_data(n_per_group: int = 6) -> mdata.Data:
    """Two classes on two backgrounds: a colour square (the class) on a coloured field (the background)."""
    classes, backgrounds = ["duck", "goose"], ["water", "grass"]
    rows = [(c, g) for c in range(2) for g in range(2) for _ in range(n_per_group)]
    y = np.array([r[0] for r in rows])
    b = np.array([r[1] for r in rows])
    uids = [f"u{i}" for i in range(len(rows))]
    split = mdata.split_groups(uids, list(zip(y.tolist(), b.tolist())), (0.5, 0.25, 0.25))

    def images(indices):
        for i in reversed(list(indices)):    # sources may hand photos over in their own order (shard order)
            field = np.zeros((64, 64, 3), np.uint8) + np.array([[0, 0, 200], [0, 160, 0]][b[i]], np.uint8)
            field[20:44, 20:44] = [[230, 230, 0], [120, 60, 30]][y[i]]
            field = np.clip(field + np.random.default_rng(i).integers(0, 30, field.shape), 0, 255).astype(np.uint8)
            yield i, Image.fromarray(field)

    return mdata.Data("toy", classes, backgrounds, uids, y, b, split, {0: (0, 1), 1: (1, 0)}, images,
                      ["a photo of a {}."], ["a photo of {}."], key="toy")


@pytest.mark.parametrize("model", ["ca-tiny", "ca-tiny-vit"])   # ResNet attention pool; ViT matrix
def test_only_projections_and_temperature_change(model, tmp_path):
    torch.manual_seed(0)
    start = clip_models.load(model).model
    start_file = tmp_path / "start.pt"
    torch.save({"state_dict": start.state_dict()}, start_file)
    settings = train.Settings(model=model, pretrained=str(start_file), methods=("zero-shot", "spurious"),
                              epochs=3, batch_size=8, lr=1e-2, templates="source", progress=False, threads=1)
    summary = train.run(_toy_data(), settings, tmp_path / "out")

    before = torch.load(start_file, weights_only=True)["state_dict"]
    after_model, _, _ = open_clip.create_model_and_transforms(model, pretrained=summary["checkpoint"])
    after = after_model.state_dict()
    assert set(after) == set(before)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    sites = features.find_sites(start)
    allowed = features.trained_keys(sites)
    assert changed <= allowed, f"outside the projections: {sorted(changed - allowed)}"
    assert {sites[0].keys[0], sites[1].keys[0], "logit_scale"} <= changed   # both projections and the temperature trained

    # The checkpoint is the trained model: open_clip's own forward gives what training optimised.
    proj = features.Projections(start, sites)
    proj.image.load_state_dict({"weight": after[sites[0].keys[0]], **({"bias": after[sites[0].keys[1]]}
                                                                      if len(sites[0].keys) > 1 else {})})
    size = after_model.visual.image_size
    size = size if isinstance(size, int) else size[0]
    pixels = torch.randn(2, 3, size, size)
    expected = proj.image(features.image_features(start, sites[0], pixels))
    with torch.no_grad():
        assert torch.allclose(after_model.eval().encode_image(pixels), expected, atol=1e-5)


def test_photo_features_land_on_their_own_rows(tmp_path):
    data = _toy_data(2)
    settings = train.Settings(model="ca-tiny", templates="source", progress=False)
    clip = clip_models.load("ca-tiny")
    sites = features.find_sites(clip.model)
    feats = train.encode(clip, sites, data, settings, tmp_path)
    photos = dict(data.images(range(len(data.uids))))
    for i in (0, len(data.uids) - 1):
        alone = features.image_features(clip.model, sites[0], clip.preprocess(photos[i]).unsqueeze(0))[0]
        assert torch.allclose(feats["images"][i], alone, atol=1e-5)


def test_pre_projection_features_give_the_model_embeddings():
    for name in ("ca-tiny", "ca-tiny-vit"):
        clip = clip_models.load(name)
        sites = features.find_sites(clip.model)
        proj = features.Projections(clip.model, sites, fresh_scale=False)
        size = clip.model.visual.image_size
        pixels = torch.randn(3, 3, *((size, size) if isinstance(size, int) else size))
        tokens = clip.tokenizer(["a photo of a duck.", "a photo of grass."])
        with torch.no_grad():
            assert torch.allclose(proj.image(features.image_features(clip.model, sites[0], pixels)),
                                  clip.model.encode_image(pixels), atol=1e-5)
            assert torch.allclose(proj.text(features.text_features(clip.model, sites[1], tokens)),
                                  clip.model.encode_text(tokens), atol=1e-5)
        # Reading the features leaves the model as it was.
        assert features.find_sites(clip.model) == sites


def test_a_tower_without_a_known_projection_is_a_user_error():
    clip = clip_models.load("ca-tiny-vit")
    clip.model.visual.proj = None
    with pytest.raises(UserError, match="image projection"):
        features.find_sites(clip.model)


def test_split_groups_keeps_every_part_in_each_group():
    uids = [f"x{i}" for i in range(30)]
    groups = [i % 3 for i in range(30)]
    split = mdata.split_groups(uids, groups, (0.5, 0.2, 0.3))
    for g in range(3):
        parts = [s for s, gg in zip(split, groups) if gg == g]
        assert parts.count("test") == 3 and parts.count("val") == 2 and parts.count("train") == 5
    assert list(split) == list(mdata.split_groups(uids, groups, (0.5, 0.2, 0.3)))   # deterministic


def test_mitigate_command_on_a_curated_run(curated_world, tmp_path, capsys):
    out = tmp_path / "mitigated"
    assert main(["mitigate", str(curated_world.run), "--out", str(out), "--epochs", "3", "--threads", "1",
                 "--no-progress", "--templates", "source"]) == 0
    printed = capsys.readouterr().out
    assert "run groups: model" in printed and "Spurious-aware (L_vs)" in printed
    summary = json.loads((out / "results.json").read_text())
    assert list(summary["results"]) == list(train.METHODS)
    assert summary["pairs"], "the run's kept pairs give the common → counter drop"
    for r in summary["results"].values():
        assert 0 <= r["test"]["avg_acc"] <= 100
    # The checkpoint loads through the project's one loader as is.
    loaded = clip_models.load(summary["model"], summary["checkpoint"])
    assert loaded.model is not None
    assert (out / "results.csv").read_text().splitlines()[0].startswith("key,method,avg_acc")
    assert (out / "plot.svg").read_text().startswith("<svg")


def test_zero_shot_on_a_run_agrees_with_its_scores(curated_world, tmp_path):
    # The run's own score stage judged every photo with the same model and prompts: mitigate's zero-shot
    # on the pre-projection features must give the same answers, photo by photo.
    import schemas

    run = curated_world.run
    data = mdata.from_run(run)
    cfg_model = curated_world.world
    settings = train.Settings(model=cfg_model.model, pretrained=str(cfg_model.checkpoint), templates="source",
                              progress=False)
    clip = clip_models.load(settings.model, settings.pretrained)
    sites = features.find_sites(clip.model)
    feats = train.encode(clip, sites, data, settings, tmp_path)
    pred = train.predict(features.Projections(clip.model, sites, fresh_scale=False), feats,
                         np.arange(len(data.uids)))
    scores = {r["uid"]: r["correct"] for r in schemas.read_folder(run / "scores", "scores").to_pylist()}
    agree = np.mean([(pred[i] == data.y[i]) == scores[u] for i, u in enumerate(data.uids)])
    assert agree > 0.99, agree


def test_mitigate_command_faults(tmp_path, capsys):
    assert main(["mitigate", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["mitigate", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "neither a run directory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["mitigate", str(tmp_path), "--out", "o", "--weights", "clip=x"])


def test_mitigate_command_on_a_release(trained_world, tmp_path, capsys):
    from tests.test_evaluate import write_world_release

    release = write_world_release(trained_world, tmp_path / "release", per_cell=10)
    out = tmp_path / "out"
    assert main(["mitigate", str(release), "--out", str(out), "--model", trained_world.model, "--pretrained",
                 str(trained_world.checkpoint), "--methods", "zero-shot,spurious", "--epochs", "2",
                 "--no-progress", "--templates", "source", "--threads", "1"]) == 0
    summary = json.loads((out / "results.json").read_text())
    assert summary["source"] == "release (release layout)"
    assert len(summary["pairs"]) == len(trained_world.classes_list)   # every class: its common and counter group
    assert summary["counts"]["test"] > 0 and summary["checkpoint"]
    # Without --model a release cannot say which model to tune.
    assert main(["mitigate", str(release), "--out", str(out)]) == 2
    assert "pass --model" in capsys.readouterr().err
