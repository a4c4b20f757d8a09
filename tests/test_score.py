"""Score stage: RunInference scores equal a direct open_clip call, on every runner mode; errors come first."""
from __future__ import annotations

import io
import shutil

import numpy as np
import open_clip
import pyarrow as pa
import pytest
import torch
from PIL import Image

import schemas
from curation import atomic, config
from curation.errors import UserError
from pipeline import clean as clean_stage
from pipeline import score as score_stage
from pipeline.options import pipeline_options
from tests.support.score_run import TINY_NAME, build_run, tiny_checkpoint
from tests.support.world import trained_world  # noqa: F401  (pytest fixture)

QUIET = dict(say=lambda s: None)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    return tiny_checkpoint(folder, seed=0), tiny_checkpoint(folder, seed=1)


@pytest.fixture(scope="module")
def scored(tmp_path_factory, models):
    """Two models in one run, scored in-process."""
    a, b = models
    planted = build_run(tmp_path_factory.mktemp("score") / "run", a, models=[
        {"name": TINY_NAME, "pretrained": str(a), "id": "tiny-a"},
        {"name": TINY_NAME, "pretrained": str(b), "id": "tiny-b"}])
    cfg = config.load(planted.run)
    assert cfg.score.decode == "exact"          # the default: scores must equal a direct open_clip call
    clean_stage.run_clean(planted.run, cfg, pipeline_options([]), **QUIET)
    score_stage.run_score(planted.run, cfg, pipeline_options([]), **QUIET)
    return planted, cfg


def direct(checkpoint, images, truth, names, templates, backgrounds, k):
    """The reference: open_clip's own factory, preprocess and encoders, no pipeline code."""
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_NAME, pretrained=str(checkpoint))
    model.eval()
    tok = open_clip.get_tokenizer(TINY_NAME)
    norm = torch.nn.functional.normalize
    with torch.no_grad():
        x = torch.stack([preprocess(Image.open(io.BytesIO(b)).convert("RGB")) for b in images])
        img = norm(model.encode_image(x), dim=-1)
        labels = norm(torch.stack([norm(model.encode_text(tok([t.format(n) for t in templates])), dim=-1).mean(0)
                                   for n in names]), dim=-1)
        bgs = norm(model.encode_text(tok([f"a photo of {b}." for b in backgrounds])), dim=-1)
        scale = model.logit_scale.exp()
        p = (scale * img @ labels.T).softmax(-1)
        truth_t = torch.tensor(truth)
        p_true = p[torch.arange(len(truth)), truth_t]
        others = p.clone()
        others[torch.arange(len(truth)), truth_t] = -1
        subject = torch.cat([(img * labels[truth_t]).sum(-1, keepdim=True), img @ bgs.T], dim=1)
        # "1 vs k": per class the k labels with the highest mean cosine similarity to its images.
        one_vs_k = []
        for i, t in enumerate(truth):
            mean_sim = (img[truth_t == t] @ labels.T).mean(0)
            top = [int(j) for j in mean_sim.argsort(descending=True)[:k]]
            if t not in top:
                top[-1] = t
            one_vs_k.append(top[int((img[i] @ labels[top].T).argmax())])
    return {"top1": p.argmax(-1).numpy(), "p_true": p_true.numpy(), "margin": (p_true - others.max(-1).values).numpy(),
            "background_p": (scale * img @ bgs.T).softmax(-1).numpy(),
            "p_subject": (scale * subject).softmax(-1)[:, 0].numpy(), "embedding": img.numpy(),
            "top1_1vk": np.array(one_vs_k)}


def by_model(scores, model_id):
    rows = [r for r in scores.to_pylist() if r["model_id"] == model_id]
    return sorted(rows, key=lambda r: r["uid"])


@pytest.mark.parametrize("model_id,which", [("tiny-a", 0), ("tiny-b", 1)])
def test_scores_match_a_direct_open_clip_call(scored, models, model_id, which):
    planted, cfg = scored
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    rows = by_model(schemas.read_folder(planted.run / "scores", "scores"), model_id)
    ok = sorted(u for u, want in planted.truth.items() if want == "ok")
    assert [r["uid"] for r in rows] == ok                       # every clean sample, once per model
    ref = direct(models[which], [planted.images[u] for u in ok], [planted.class_of[u] for u in ok],
                 IMAGENET_CLASSNAMES, ["A photo of {}."], cfg.backgrounds, cfg.score.one_vs_k)
    assert [r["top1"] for r in rows] == ref["top1"].tolist()
    assert [r["correct"] for r in rows] == (ref["top1"] == [planted.class_of[u] for u in ok]).tolist()
    np.testing.assert_allclose([r["p_true"] for r in rows], ref["p_true"], atol=1e-4, rtol=0)
    np.testing.assert_allclose([r["margin"] for r in rows], ref["margin"], atol=1e-4, rtol=0)
    np.testing.assert_allclose([r["background_p"] for r in rows], ref["background_p"], atol=1e-4, rtol=0)
    np.testing.assert_allclose([r["p_subject"] for r in rows], ref["p_subject"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(np.array([r["embedding"] for r in rows], dtype=np.float32), ref["embedding"],
                               atol=1e-3, rtol=0)                # stored as fp16
    assert [r["top1_1vk"] for r in rows] == ref["top1_1vk"].tolist()


def test_review_flags_on_samples_come_from_the_flag_models_scores(scored):
    planted, cfg = scored
    from curation import clean

    # run-wide flags (label_noise looks at each photo's nearest photos), from the flag model's rows only
    expected = clean.review_flags_by_uid(schemas.read_folder(planted.run / "scores", "scores"), cfg.clean, "tiny-a")
    samples = schemas.read_folder(planted.run / "samples", "samples").to_pylist()
    assert {s["uid"] for s in samples if s["status"] == "ok"} <= set(expected)
    for s in samples:
        model_flags = [f for f in s["flags"] if f in clean.MODEL_FLAGS]
        assert model_flags == (expected[s["uid"]] if s["status"] == "ok" else [])


def test_openai_ensemble_over_the_runs_classes_matches_direct(tmp_path, models):
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

    planted = build_run(tmp_path / "run", models[0], label_space="classes", ensemble="openai")
    cfg = config.load(planted.run)
    clean_stage.run_clean(planted.run, cfg, pipeline_options([]), **QUIET)
    score_stage.run_score(planted.run, cfg, pipeline_options([]), **QUIET)
    rows = by_model(schemas.read_folder(planted.run / "scores", "scores"), "tiny")
    names = [c.name for c in cfg.classes]
    position = {cfg.class_index(c): i for i, c in enumerate(cfg.classes)}
    ok = [r["uid"] for r in rows]
    templates = [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
    ref = direct(models[0], [planted.images[u] for u in ok], [position[planted.class_of[u]] for u in ok],
                 names, templates, cfg.backgrounds, cfg.score.one_vs_k)
    assert [r["top1"] for r in rows] == ref["top1"].tolist()
    np.testing.assert_allclose([r["p_true"] for r in rows], ref["p_true"], atol=1e-4, rtol=0)


def test_bf16_runs_the_model_in_half_precision_close_to_fp32(tmp_path, models):
    """The half-precision path (on a GPU fp16 or bf16; bf16 is what the CPU runs): close to fp32, not equal."""
    planted = build_run(tmp_path / "run", models[0], label_space="classes")
    cfg = config.load(planted.run)
    cfg.score.precision = "bf16"
    clean_stage.run_clean(planted.run, cfg, pipeline_options([]), **QUIET)
    score_stage.run_score(planted.run, cfg, pipeline_options([]), **QUIET)
    rows = by_model(schemas.read_folder(planted.run / "scores", "scores"), "tiny")
    ok = [r["uid"] for r in rows]
    ref = direct(models[0], [planted.images[u] for u in ok], [0] * len(ok), [c.name for c in cfg.classes],
                 ["A photo of {}."], cfg.backgrounds, cfg.score.one_vs_k)
    emb = np.array([r["embedding"] for r in rows], dtype=np.float32)
    cosine = (emb * ref["embedding"]).sum(1) / np.linalg.norm(emb, axis=1)
    assert cosine.min() > 0.99, cosine.min()
    assert np.abs(emb - ref["embedding"]).max() > 1e-3      # it ran in bf16: an fp32 run is within fp16 storage error (5e-4)


def test_decoding_beside_or_between_forwards_gives_the_same_batches(scored, models):
    from concurrent.futures import ThreadPoolExecutor

    from curation import clip_models

    planted, _ = scored
    clip = clip_models.load(TINY_NAME, str(models[0]))
    samples = [score_stage.ImageSample(u, 0, "s", u, planted.images[u]) for u, want in sorted(planted.truth.items())
               if want == "ok"]
    batches = [samples[i:i + 5] for i in range(0, len(samples), 5)]
    out = {}
    for ahead in (0, score_stage.DECODE_AHEAD):
        scorer = score_stage.LoadedScorer(clip, None, {}, ThreadPoolExecutor(2), ahead=ahead)
        out[ahead] = [([s.uid for s in b], pixels) for b, pixels in score_stage.decode_ahead(scorer, batches)]
        direct_pixels = torch.stack([clip.preprocess(Image.open(io.BytesIO(s.data)).convert("RGB")) for s in samples])
        assert torch.equal(torch.cat([p for _, p in out[ahead]]), direct_pixels)     # bit for bit
    assert [u for u, _ in out[0]] == [u for u, _ in out[score_stage.DECODE_AHEAD]] == [[s.uid for s in b]
                                                                                         for b in batches]
    assert score_stage.overlaps("cuda", 64, 64) and score_stage.overlaps("cpu", 1, 64)
    assert not score_stage.overlaps("cpu", 4096, 4096)


def test_a_sample_marked_ok_but_missing_from_its_shard_stops_the_stage_by_name(scored, tmp_path):
    planted, cfg = scored
    run = tmp_path / "run"
    shutil.copytree(planted.run, run, ignore=shutil.ignore_patterns("scores"))
    for path in sorted((run / "samples").glob("*.parquet")):
        t = schemas.read(path, "samples")
        rows = [{**r, "status": "ok", "reason": None} if r["uid"] == "bad-missing" else r for r in t.to_pylist()]
        atomic.write_parquet(path, schemas.conform(pa.Table.from_pylist(rows, schema=t.schema), "samples"))
    with pytest.raises(Exception, match=r"\d{5}\.tar: sample \d+ is marked ok but not in the shard; re-run the clean"):
        score_stage.run_score(run, cfg, pipeline_options([]), **QUIET)


def test_draft_decoding_never_goes_below_twice_the_models_input(scored, tmp_path):
    """These pictures (128x112) are under 2x the tiny model's 64 px: draft decodes them whole, scores equal."""
    planted, cfg = scored
    run = tmp_path / "run"
    shutil.copytree(planted.run, run, ignore=shutil.ignore_patterns("scores"))
    draft = cfg.model_copy(update={"score": cfg.score.model_copy(update={"decode": "draft"})})
    score_stage.run_score(run, draft, pipeline_options([]), **QUIET)
    assert schemas.read_folder(run / "scores", "scores").equals(schemas.read_folder(planted.run / "scores", "scores"))


def test_draft_decoding_agrees_with_exact_on_the_planted_worlds_scenes(trained_world, tmp_path):
    """score.decode: draft on the world's scenes as fetch stores them by default (512 px): libjpeg really
    decodes them smaller, and the reference model's zero-shot top-1 stays for >= 98% of them."""
    from curation import clip_models, zeroshot
    from curation.world import generate
    from curation.world.spec import WorldSpec

    world = generate.World(WorldSpec(**{**trained_world.world["spec"], "image_size": 512}))
    items = [(i, it) for i, it in enumerate(world.pool_items()) if it.noise == "none" and not it.tiny][::2]
    samples = [score_stage.ImageSample(it.uid, 0, "pool", it.uid, world.render("pool", i, it, tmp_path))
               for i, it in items]
    clip = clip_models.load(trained_world.model, str(trained_world.checkpoint))
    per_image, normalize = score_stage.split_preprocess(clip.preprocess)
    size = score_stage.draft_size(clip)
    with Image.open(io.BytesIO(samples[0].data)) as img:
        img.draft("RGB", (size, size))
        assert img.size[0] < 512 and min(img.size) >= size          # a real scaled decode, not above the floor
    with torch.no_grad():
        texts = torch.nn.functional.normalize(clip.model.encode_text(clip.tokenizer(
            [f"a photo of a {c}." for c in trained_world.classes_list])), dim=-1).numpy()
        scale = float(clip.model.logit_scale.exp())
    p = {}
    for mode, draft in (("exact", None), ("draft", size)):
        pixels = torch.cat([score_stage.to_batch([score_stage.decode(per_image, normalize, draft, s)
                                                  for s in samples[i:i + 64]], normalize)
                            for i in range(0, len(samples), 64)])
        p[mode] = zeroshot.probabilities(zeroshot.encode_images(clip, pixels), texts, scale)
    assert len(samples) >= 300
    same = (p["exact"].argmax(1) == p["draft"].argmax(1)).mean()
    moved = np.abs(p["exact"] - p["draft"]).max(1)
    assert same >= 0.98, same
    assert 0 < np.median(moved) <= 0.02 and np.quantile(moved, 0.99) <= 0.15, (np.median(moved), moved.max())


def test_in_process_and_multi_processing_write_identical_outputs(scored, tmp_path):
    planted, cfg = scored
    runs = {}
    for mode, args in {"in_process": ["--direct_running_mode=in_memory"],
                       "multi": ["--direct_running_mode=multi_processing", "--direct_num_workers=2"]}.items():
        run = tmp_path / mode
        shutil.copytree(planted.run, run, ignore=shutil.ignore_patterns("scores", "clean"))
        shutil.copytree(planted.run / "samples", run / "samples", dirs_exist_ok=True)
        # start both from the fetched state: the samples as the fixture wrote them are already cleaned,
        # so re-cleaning must reproduce them exactly, then scoring runs from scratch.
        clean_stage.run_clean(run, cfg, pipeline_options(args), **QUIET)
        score_stage.run_score(run, cfg, pipeline_options(args), **QUIET)
        runs[mode] = run
    for folder, schema in (("samples", "samples"), ("clean", "image_checks"), ("scores", "scores")):
        a = schemas.read_folder(runs["in_process"] / folder, schema)
        b = schemas.read_folder(runs["multi"] / folder, schema)
        assert a.num_rows and a.equals(b), folder
    assert schemas.read_folder(runs["multi"] / "scores", "scores").equals(
        schemas.read_folder(planted.run / "scores", "scores"))


def test_a_lost_scores_file_is_redone_and_the_rest_skipped(scored, tmp_path):
    planted, cfg = scored
    run = tmp_path / "run"
    shutil.copytree(planted.run, run)
    assert score_stage.plan(run, cfg)[0] == []
    (run / "scores" / "00000.parquet").unlink()
    work, done, n = score_stage.plan(run, cfg)
    assert work == ["00000.tar"] and done == 1 and n > 0
    score_stage.run_score(run, cfg, pipeline_options([]), **QUIET)
    assert schemas.read_folder(run / "scores", "scores").equals(schemas.read_folder(planted.run / "scores", "scores"))


def test_nothing_to_score_loads_no_model_but_new_backgrounds_do(scored, tmp_path):
    planted, cfg = scored
    run = tmp_path / "run"
    shutil.copytree(planted.run, run)
    counts = score_stage.run_score(run, cfg, pipeline_options([]), **QUIET)
    assert counts["images"] == 0 and "model_load_s" not in counts     # no Beam pipeline, no model load
    assert schemas.read_folder(run / "scores", "scores").equals(schemas.read_folder(planted.run / "scores", "scores"))
    cfg = cfg.model_copy(deep=True)
    cfg.backgrounds = [*cfg.backgrounds, "desert"]                    # the text bank is stale: load and save it
    counts = score_stage.run_score(run, cfg, pipeline_options([]), **QUIET)
    assert "model_load_s" in counts
    assert score_stage.read_text_embeddings(run, cfg.models[0].model_id, "background")[0][-1] == "desert"


@pytest.mark.parametrize("change,message", [
    (lambda m, s: m.update(pretrained="/nonexistent/weights.pt"), "does not exist"),
    (lambda m, s: m.update(name="ViT-B-33"), "no model named 'ViT-B-33'"),
    (lambda m, s: s.update(device="cuda"), "no CUDA GPU"),
])
def test_bad_model_settings_fail_before_any_work(scored, tmp_path, change, message):
    planted, _ = scored
    run = tmp_path / "run"
    shutil.copytree(planted.run, run, ignore=shutil.ignore_patterns("scores"))
    data = config.load(run).model_dump(mode="json", by_alias=True)
    change(data["models"][0], data["score"])
    cfg = config.parse(data)
    with pytest.raises(UserError, match=message):
        score_stage.run_score(run, cfg, pipeline_options([]), **QUIET)
    assert not (run / "scores").exists()


def test_curate_command_runs_clean_and_score_and_refuses_bad_models_first(scored, tmp_path, capsys):
    from pipeline.cli import main

    planted, _ = scored
    run = tmp_path / "run"
    shutil.copytree(planted.run, run, ignore=shutil.ignore_patterns("scores", "clean"))
    text = (run / "config.yaml").read_text()
    assert "device: cpu" in text
    (run / "config.yaml").write_text(text.replace("device: cpu", "device: cuda"))
    assert main(["curate", str(run), "--stages", "clean,score"]) == 2
    assert "no CUDA GPU" in capsys.readouterr().err
    assert not (run / "clean").exists() and not (run / "scores").exists()
    (run / "config.yaml").write_text(text)
    assert main(["curate", str(run), "--stages", "clean,score"]) == 0
    assert schemas.read_folder(run / "scores", "scores").equals(schemas.read_folder(planted.run / "scores", "scores"))
    import json
    stages = json.loads((run / "manifest.json").read_text())["stages"]
    assert stages["clean"]["counts"]["ok"] == 12 and stages["score"]["counts"]["rows"] == 24
