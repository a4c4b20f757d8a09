"""Backgrounds and propose stages on a real scored run (real open_clip scores, real Beam runners)."""
from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pytest

import schemas
from curation import atomic, config
from curation.errors import UserError
from pipeline import clean as clean_stage
from pipeline import propose as propose_stage
from pipeline import score as score_stage
from pipeline.options import pipeline_options
from tests.support.score_run import TINY_NAME, build_run, tiny_checkpoint

QUIET = dict(say=lambda s: None)


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    a, b = tiny_checkpoint(folder, seed=0), tiny_checkpoint(folder, seed=1)
    planted = build_run(tmp_path_factory.mktemp("propose") / "run", a, per_class=12, models=[
        {"name": TINY_NAME, "pretrained": str(a), "id": "tiny-a"},
        {"name": TINY_NAME, "pretrained": str(b), "id": "tiny-b"}])
    cfg = config.load(planted.run)
    cfg.thresholds.min_group_size = 2
    cfg.background_assignment.min_cluster_size = 4
    atomic.write_text(planted.run / "config.yaml", config.dump(cfg))
    clean_stage.run_clean(planted.run, cfg, pipeline_options([]), **QUIET)
    score_stage.run_score(planted.run, cfg, pipeline_options([]), **QUIET)
    return planted.run, cfg


def _run_both(run, cfg, beam_args=()):
    opts = pipeline_options(list(beam_args))
    propose_stage.run_backgrounds(run, cfg, opts, **QUIET)
    propose_stage.run_propose(run, cfg, opts, **QUIET)


def _proposed_copy(scored, tmp_path):
    """A copy of the scored run with backgrounds and proposals made in-process."""
    run = tmp_path / "run"
    shutil.copytree(scored[0], run)
    _run_both(run, scored[1])
    return run, scored[1]


def test_every_scored_photo_gets_exactly_one_background(scored, tmp_path):
    run, cfg = _proposed_copy(scored, tmp_path)
    groups = schemas.read_folder(run / "groups", "groups")
    scores = schemas.read_folder(run / "scores", "scores")
    scored_uids = set(scores.filter(pc.equal(scores.column("model_id"), "tiny-a")).column("uid").to_pylist())
    uids = groups.column("uid").to_pylist()
    assert sorted(uids) == sorted(scored_uids) and len(uids) == len(set(uids))
    assert set(groups.column("background").to_pylist()) <= set(cfg.backgrounds)
    assert set(groups.column("method").to_pylist()) <= {"zero-shot", "cluster"}
    assert set(groups.column("class_name").to_pylist()) == {c.name for c in cfg.classes}


def test_proposals_cover_every_class_and_model_with_counts_that_add_up(scored, tmp_path):
    run, cfg = _proposed_copy(scored, tmp_path)
    proposals = schemas.read(run / "proposals.parquet", "proposals").to_pylist()
    per_model = {}
    for r in proposals:
        per_model.setdefault(r["model_id"], set()).add(r["class_name"])
        assert r["decision"] in ("kept", "dropped", "undecided") and r["reason"]
    assert set(per_model) == {"tiny-a", "tiny-b", "all"}
    assert all(v == {c.name for c in cfg.classes} for v in per_model.values())
    stats = schemas.read(run / "group_stats.parquet", "group_stats").to_pylist()
    n_photos = schemas.read_folder(run / "groups", "groups").num_rows
    for model in ("tiny-a", "tiny-b"):
        cells = [s for s in stats if s["model_id"] == model and s["metric"] == "top1"]
        assert sum(s["n"] for s in cells) == n_photos
        assert all(s["acc_lo"] <= s["acc"] <= s["acc_hi"] for s in cells)
    # Seed 2's δ: one row per (class, model, background) for classes seen on more than one background.
    deltas = schemas.read(run / "attributes.parquet", "attribute_deltas")
    expected = 0
    for model in ("tiny-a", "tiny-b"):
        per_class = {}
        for s in stats:
            if s["model_id"] == model and s["metric"] == "top1":
                per_class[s["class_idx"]] = per_class.get(s["class_idx"], 0) + 1
        expected += sum(n for n in per_class.values() if n > 1)
    assert deltas.num_rows == expected


def test_extra_attributes_get_deltas_that_match_a_direct_count(scored, tmp_path):
    import numpy as np

    from curation import attributes, clip_models

    run = tmp_path / "run"
    shutil.copytree(scored[0], run)
    cfg = scored[1].model_copy(deep=True)
    cfg.prompts.attributes = ["at night", "in the rain"]
    _run_both(run, cfg)
    deltas = [d for d in schemas.read(run / "attributes.parquet", "attribute_deltas").to_pylist()
              if d["attribute"] in cfg.prompts.attributes]
    assert deltas, "no extra-attribute rows"
    scores = schemas.read_folder(run / "scores", "scores").to_pylist()
    for model in cfg.models:
        clip = clip_models.load(model.name, model.pretrained)
        bank = attributes.attribute_bank(clip, [c.name for c in cfg.classes], cfg.prompts.attributes,
                                         cfg.prompts.attribute_template, cfg.prompts.attribute_baseline)
        for i, c in enumerate(cfg.classes):
            rows = [s for s in scores if s["model_id"] == model.model_id and s["class_idx"] == cfg.class_index(c)]
            has = attributes.presence(np.asarray([r["embedding"] for r in rows], dtype=np.float32), bank[i])
            correct = np.asarray([r["correct"] for r in rows])
            for j, a in enumerate(cfg.prompts.attributes):
                got = [d for d in deltas if (d["model_id"], d["class_name"], d["attribute"]) == (model.model_id, c.name, a)]
                if has[:, j].all() or not has[:, j].any():
                    assert not got       # never absent or never present: no estimate
                    continue
                (d,) = got
                assert d["n_present"] == has[:, j].sum() and d["n_absent"] == (~has[:, j]).sum()
                assert d["delta"] == pytest.approx(correct[has[:, j]].mean() - correct[~has[:, j]].mean())
    # Ranked together with the backgrounds, 1..n within each (model, class).
    all_rows = schemas.read(run / "attributes.parquet", "attribute_deltas").to_pylist()
    for key in {(d["model_id"], d["class_idx"]) for d in all_rows}:
        ranks = sorted(d["rank"] for d in all_rows if (d["model_id"], d["class_idx"]) == key)
        assert ranks == list(range(1, len(ranks) + 1))


def test_human_groups_give_human_rows_beside_model_rows(scored, tmp_path):
    run, cfg = _proposed_copy(scored, tmp_path)
    groups = schemas.read_folder(run / "groups", "groups")
    human = groups.set_column(groups.schema.get_field_index("method"), "method",
                              pa.array(["human"] * groups.num_rows))
    human = human.set_column(human.schema.get_field_index("background"), "background",
                             pa.array(["snow"] * human.num_rows))   # annotators saw snow everywhere
    atomic.write_parquet(run / "groups" / "human.parquet", human)
    propose_stage.run_propose(run, cfg, pipeline_options([]), **QUIET)
    proposals = schemas.read(run / "proposals.parquet", "proposals").to_pylist()
    human_rows = [r for r in proposals if r["source"] == "human"]
    assert {r["model_id"] for r in human_rows} == {"tiny-a", "tiny-b", "all"}
    # One background everywhere: no pair, and the row says to collect photos on another background.
    assert all(r["decision"] != "kept" and "fewer than two" in r["reason"] for r in human_rows)
    assert all("another background" in r["needs"] for r in human_rows if r["model_id"] != "all")
    assert any(r["source"] == "model" for r in proposals)


def test_in_process_and_multi_processing_agree(scored, tmp_path):
    outs = []
    for name, args in (("direct", []), ("multi", ["--direct_num_workers", "2",
                                                  "--direct_running_mode", "multi_processing"])):
        run = tmp_path / name
        shutil.copytree(scored[0], run)
        _run_both(run, scored[1], args)
        outs.append((schemas.read_folder(run / "groups", "groups").sort_by("uid"),
                     schemas.read(run / "proposals.parquet", "proposals"),
                     schemas.read(run / "group_stats.parquet", "group_stats")))
    for a, b in zip(*outs):
        assert a.equals(b)


def test_missing_inputs_are_clear_errors(tmp_path):
    cfg = config.RunConfig(classes=[config.ClassSpec(name="x", imagenet_idx=1)], backgrounds=["snow"],
                           models=[config.ModelSpec(name="RN50")])
    with pytest.raises(UserError, match="no scores to assign backgrounds from"):
        propose_stage.run_backgrounds(tmp_path, cfg, pipeline_options([]), **QUIET)
    with pytest.raises(UserError, match="no background groups to propose pairs from"):
        propose_stage.run_propose(tmp_path, cfg, pipeline_options([]), **QUIET)


def test_backgrounds_use_prompts_that_name_the_class(scored, tmp_path):
    """The zero-shot label is the argmax over 'a photo of a {class} on {background}.', as open_clip computes it."""
    import numpy as np
    import open_clip
    import torch

    run = tmp_path / "run"
    shutil.copytree(scored[0], run)
    cfg = scored[1]
    propose_stage.run_backgrounds(run, cfg, pipeline_options([]), **QUIET)
    spec = cfg.models[0]
    model, _, _ = open_clip.create_model_and_transforms(TINY_NAME, pretrained=spec.pretrained)
    tok = open_clip.get_tokenizer(TINY_NAME)
    scores = {r["uid"]: r for r in schemas.read_folder(run / "scores", "scores").to_pylist()
              if r["model_id"] == spec.model_id}
    names = {c.imagenet_idx: c.name for c in cfg.classes}
    checked = 0
    for g in schemas.read_folder(run / "groups", "groups").to_pylist():
        prompts = [f"a photo of a {names[g['class_idx']]} on {b}." for b in cfg.backgrounds]
        with torch.no_grad():
            text = torch.nn.functional.normalize(model.encode_text(tok(prompts)).float(), dim=-1).numpy()
        sims = np.asarray(scores[g["uid"]]["embedding"], dtype=np.float32) @ text.T
        if np.sort(sims)[-1] - np.sort(sims)[-2] > 1e-4:      # skip near ties
            assert g["zero_shot"] == cfg.backgrounds[int(sims.argmax())]
            checked += 1
    assert checked > 10
