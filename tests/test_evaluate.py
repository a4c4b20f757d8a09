"""`counteranimal evaluate` on a release written from the planted world (and its official-layout
export), with the world's trained ca-tiny checkpoint through open_clip's real factory."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import tarfile
import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from curation import clip_models, evaluate, release_layout as layout
from curation.errors import UserError
from curation.release_reader import OFFICIAL, RELEASE, open_dataset
from pipeline.cli import main
from tests.support.world import trained_world  # noqa: F401  (pytest fixture)

PER_CELL = 10


# -- a small release in the documented layout (curation/release_layout.py), from the world's pool --------

def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))


def write_world_release(tw, out: Path, per_cell: int = PER_CELL, one_vs_k: dict | None = None) -> Path:
    """Per class, pool photos on the oracle's common and counter backgrounds, as a release folder.

    classnames.txt is the world's label space (its classes in order), so .cls is a class's position.
    """
    classes = tw.classes_list
    gt = pq.read_table(tw.ground_truth).to_pylist()
    splits: dict[str, list] = {s: [] for s in layout.SPLITS}
    for label, name in enumerate(classes):
        o = tw.oracle["classes"][name]
        for group, bg in (("common", o["oracle_common"]), ("counter", o["oracle_counter"])):
            rows = sorted((r for r in gt if r["split"] == "pool" and r["class_name"] == name and r["background"] == bg
                           and r["noise"] == "none" and not r["duplicate_of"]), key=lambda r: r["uid"])
            for r in rows[:per_cell]:
                splits[group].append((r, label, bg))
    out.mkdir(parents=True)
    for split, rows in splits.items():
        (out / split).mkdir()
        n = layout.MIN_SHARDS
        for i in range(n):
            members = []
            for r, label, bg in sorted(rows[i::n], key=lambda x: x[0]["uid"]):
                key = layout.sample_key(r["uid"])
                meta = {"uid": r["uid"], "class_idx": label, "class_name": r["class_name"], "background": bg,
                        "group": split, "license": r["license"]}
                members += [(f"{key}.cls", str(label).encode()), (f"{key}.jpg", (tw.dir / r["file"]).read_bytes()),
                            (f"{key}.json", json.dumps(meta, sort_keys=True).encode())]
            _tar(out / split / layout.shard_name(i), members)
        (out / split / layout.NSHARDS).write_text(f"{n}\n")
    (out / layout.CLASSNAMES).write_text("".join(f"{c}\n" for c in classes))
    (out / layout.TEMPLATES).write_text("".join(t.replace("{}", "{c}") + "\n" for t in tw.world["class_templates"]))
    if one_vs_k is not None:
        (out / layout.ONE_VS_K).write_text(json.dumps({str(k): v for k, v in one_vs_k.items()}))
    sums = "".join(f"{hashlib.sha256((out / rel).read_bytes()).hexdigest()}  {rel}\n"
                   for rel in layout.relative_files(out))
    (out / layout.CHECKSUMS).write_text(sums)
    return out


def export_official(release: Path, out: Path) -> Path:
    """Our release in the official folder layout (with the label space and templates beside it)."""
    ds = open_dataset(release)
    top = out / "LAION-final"
    for split in ds.splits:
        for s in ds.samples(split):
            folder = top / f"{s.label} {s.class_name}" / f"{split}-{s.background}"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{s.key}.jpg").write_bytes(s.image)
    (out / "imagenet_names.txt").write_text("".join(f"{i}\t{n}\n" for i, n in enumerate(ds.classnames)))
    shutil.copy(release / layout.TEMPLATES, out / layout.TEMPLATES)
    return out


@pytest.fixture(scope="module")
def release(trained_world, tmp_path_factory):
    return write_world_release(trained_world, tmp_path_factory.mktemp("rel") / "planted-world-1.0")


@pytest.fixture(scope="module")
def clip(trained_world):
    return clip_models.load(trained_world.model, str(trained_world.checkpoint))


@pytest.fixture(scope="module")
def result(release, clip):
    return evaluate.evaluate(open_dataset(release), clip, n_boot=200, progress=False)


# -- reading --------------------------------------------------------------------------------------

def test_reader_reads_the_release_and_its_official_export_alike(release, tmp_path):
    ours = open_dataset(release)
    official = open_dataset(export_official(release, tmp_path))
    assert (ours.layout, official.layout) == (RELEASE, OFFICIAL)
    assert official.classnames == ours.classnames and official.templates == ours.templates
    for split in ours.splits:
        a = sorted((s.key, s.label, s.background, hashlib.sha256(s.image).hexdigest()) for s in ours.samples(split))
        b = sorted((Path(s.key).stem, s.label, s.background, hashlib.sha256(s.image).hexdigest())
                   for s in official.samples(split))
        assert a == b and len(a) > 0
        assert official.count(split) == len(a)


def test_official_layout_without_names_uses_the_imagenet_label_space(tmp_path):
    folder = tmp_path / "LAION-final" / "296 ice bear" / "counter-grass"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(b"x")
    ds = open_dataset(tmp_path)
    assert ds.layout == OFFICIAL and len(ds.classnames) == 1000 and ds.templates == ["A photo of {c}."]
    assert [(s.label, s.group, s.background) for s in ds.samples("counter")] == [(296, "counter", "grass")]


def test_bad_label_is_named_with_its_shard_and_key(release, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(release, bad)
    _tar(bad / "common" / "0.tar", [("abc.cls", b"99"), ("abc.jpg", b"not read")])
    with pytest.raises(UserError, match=r"common/0\.tar: sample abc: \.cls 99 is outside classnames\.txt"):
        list(open_dataset(bad).samples("common"))
    with pytest.raises(UserError, match="neither a release"):
        open_dataset(tmp_path)


def test_embed_reads_ahead_in_order_and_raises_the_readers_errors(release, clip, tmp_path, monkeypatch):
    """Decoding beside the forward (a reader thread, a decode pool) gives the very embeddings of the
    sequential path, in the samples' order; a bad sample met by the reader thread is raised here,
    and no thread is left running."""
    samples = list(open_dataset(release).samples("common"))
    got = {}
    for overlap in (False, True):
        monkeypatch.setattr(evaluate, "_overlap", lambda *a, o=overlap: o)
        got[overlap] = evaluate.embed(clip, iter(samples), batch_size=5, threads=3)
    assert np.array_equal(got[False][0], got[True][0]) and len(got[True][0]) == len(samples) > 10
    assert [s.key for s in got[True][1]] == [s.key for s in samples]
    bad = tmp_path / "bad"
    shutil.copytree(release, bad)
    last = layout.shard_paths(bad, "common")[-1]     # met after several batches
    _tar(last, [("abc.cls", b"99"), ("abc.jpg", b"not read")])
    threads = threading.active_count()
    with pytest.raises(UserError, match=rf"common/{last.name}: sample abc: \.cls 99 is outside"):
        evaluate.embed(clip, open_dataset(bad).samples("common"), batch_size=5, threads=3)
    assert threading.active_count() == threads


# -- metrics --------------------------------------------------------------------------------------

def test_per_photo_predictions_match_an_independent_zero_shot(release, clip, result, trained_world):
    """Per-class accuracy equals the oracle's own text classifier (curation/world/oracle.py) on a plain forward."""
    from PIL import Image

    from curation.world.oracle import text_classifier

    ds = open_dataset(release)
    text = text_classifier(clip, ds.classnames, [t.replace("{c}", "{}") for t in ds.templates])
    by_class = {c["class_idx"]: c for c in result["per_class"]}
    for split in ds.splits:
        samples = list(ds.samples(split))
        with torch.no_grad():   # one forward over the split, apart from evaluate's batching and decode threads
            x = torch.stack([clip.preprocess(Image.open(io.BytesIO(s.image)).convert("RGB")) for s in samples])
            pred = (clip.model.encode_image(x, normalize=True) @ text.T).argmax(1).tolist()
        hits: dict[int, list[bool]] = {}
        for s, p in zip(samples, pred):
            hits.setdefault(s.label, []).append(p == s.label)
        for label, h in hits.items():
            assert by_class[label][f"{split}_full"] == pytest.approx(100 * np.mean(h), abs=1e-9), (split, label)
        balanced = np.mean([100 * np.mean(h) for h in hits.values()])
        assert result["summary"]["full"][split]["value"] == pytest.approx(balanced, abs=1e-9)


def test_summary_is_consistent_with_the_per_class_rows(result):
    rows = result["per_class"]
    s = result["summary"]["full"]
    assert s["drop"]["value"] == pytest.approx(np.mean([r["drop_full"] for r in rows]))
    worst = min((r[f"{g}_full"], r["class_name"], g) for r in rows for g in ("common", "counter"))
    assert s["worst_group"]["value"] == pytest.approx(worst[0])
    for name in evaluate.SUMMARY_FIELDS:
        assert s[name]["low"] <= s[name]["value"] <= s[name]["high"], name
    # The planted world has a real shortcut: counter is far below common.
    assert s["drop"]["low"] > 10
    # With 12 labels, "1 vs 20" without shipped sets is the whole label space.
    assert result["protocols"]["k"].startswith("1 vs 12 sets: per class, this model's 12 labels")
    assert [r["common_k"] for r in rows] == [r["common_full"] for r in rows]


def test_bootstrap_is_seeded(release, clip, result):
    again = evaluate.evaluate(open_dataset(release), clip, n_boot=200, progress=False)
    other = evaluate.evaluate(open_dataset(release), clip, n_boot=200, seed=1, progress=False)
    assert again["summary"] == result["summary"]
    assert other["summary"]["full"]["drop"]["value"] == result["summary"]["full"]["drop"]["value"]
    assert other["summary"]["full"]["drop"]["low"] != result["summary"]["full"]["drop"]["low"]


def test_shipped_one_vs_k_sets_are_used(trained_world, clip, tmp_path, result):
    """A release's 1-vs-k sets restrict each class's choice; with its own label among them it can only gain."""
    n = len(trained_world.classes_list)
    sets = {t: sorted({t, (t + 1) % n, (t + 5) % n}) for t in range(n)}
    rel = write_world_release(trained_world, tmp_path / "r", one_vs_k=sets)
    r = evaluate.evaluate(open_dataset(rel), clip, n_boot=0, progress=False)
    assert r["protocols"]["k"].startswith("1 vs 3: the release's one_vs_k.json")
    assert r["one_vs_k"] == {str(t): v for t, v in sets.items()}
    for c in r["per_class"]:
        assert c["common_k"] >= c["common_full"] and c["counter_k"] >= c["counter_full"]
    assert r["summary"]["k"]["counter"]["value"] > r["summary"]["full"]["counter"]["value"]


# -- the command ----------------------------------------------------------------------------------

def _perturbed_checkpoint(tw, path: Path) -> Path:
    """A second, worse model: the reference weights with noise (a model 'trained differently')."""
    sd = torch.load(tw.checkpoint, map_location="cpu", weights_only=True)
    sd = sd.get("state_dict", sd)
    g = torch.Generator().manual_seed(0)
    noisy = {k: (v + 0.5 * v.std() * torch.randn(v.shape, generator=g) if v.is_floating_point() and v.numel() > 1
                 else v) for k, v in sd.items()}
    torch.save(noisy, path)
    return path


def test_command_two_models_tables_csv_json_and_plot(trained_world, release, tmp_path, capsys, result):
    other = _perturbed_checkpoint(trained_world, tmp_path / "noisy.pt")
    out = tmp_path / "eval"
    assert main(["evaluate", str(release), "--model", "ca-tiny", "--pretrained", str(trained_world.checkpoint),
                 "--model", "ca-tiny", "--pretrained", str(other), "--bootstrap", "200", "--out", str(out),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "== models side by side" in text and "ca-tiny (noisy.pt)" in text and "1 vs k sets: per class" in text
    assert "published figures" not in text          # only for the official layout
    for name in ("summary.csv", "per_class.csv", "results.json", "effective_robustness.png",
                 "effective_robustness.svg"):
        assert (out / name).stat().st_size > 0, name
    assert (out / "effective_robustness.png").read_bytes()[:4] == b"\x89PNG"
    assert "fit: counter =" in (out / "effective_robustness.svg").read_text()
    data = json.loads((out / "results.json").read_text())["results"]
    assert data[0]["summary"] == json.loads(json.dumps(result["summary"]))   # the same numbers as the API
    summary = list(csv.DictReader((out / "summary.csv").open()))
    assert [(r["pretrained"].endswith("noisy.pt"), r["protocol"]) for r in summary] == [
        (False, "1 vs 12"), (False, "1 vs 12 sets"), (True, "1 vs 12"), (True, "1 vs 12 sets")]
    per_class = list(csv.DictReader((out / "per_class.csv").open()))
    assert len(per_class) == 2 * len(trained_world.classes_list)


def test_command_on_the_official_layout_shows_the_published_figures(release, trained_world, tmp_path, capsys, result):
    official = export_official(release, tmp_path / "off")
    out = tmp_path / "eval"
    assert main(["evaluate", str(official), "--model", "ca-tiny", "--pretrained", str(trained_world.checkpoint),
                 "--bootstrap", "200", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "== published figures (CounterAnimal paper v1" in text and "67.13" in text and "LAION-400M" in text
    data = json.loads((out / "results.json").read_text())
    assert data["published"][0]["paper_common"] == 67.13 and data["published"][0]["ours_common"] is None
    # Same photos, labels and templates as the release: the same numbers (the round trip).
    assert data["results"][0]["summary"] == json.loads(json.dumps(result["summary"]))
    assert (out / "published.csv").is_file()


def test_command_downloads_a_release_url_first(release, trained_world, tmp_path, capsys, result):
    from pipeline.fileserver import FileServer

    with FileServer(release.parent).start() as server:
        assert main(["evaluate", server.base + release.name + "/", "--model", "ca-tiny", "--pretrained",
                     str(trained_world.checkpoint), "--bootstrap", "200", "--cache", str(tmp_path / "cache"),
                     "--out", str(tmp_path / "eval"), "--no-progress"]) == 0
    assert "files verified" in capsys.readouterr().out
    data = json.loads((tmp_path / "eval" / "results.json").read_text())["results"][0]
    assert data["summary"] == json.loads(json.dumps(result["summary"]))
    assert list((tmp_path / "cache" / "datasets").iterdir())[0].joinpath("SHA256SUMS").is_file()


def test_published_rows_are_matched_by_backbone_and_pretraining():
    assert evaluate.published_match("ViT-B-32", "laion400m_e32") == ("ViT-B/32", "LAION-400M")
    assert evaluate.published_match("ViT-L-14-quickgelu", "dfn2b") == ("ViT-L/14", "DFN-2B")
    assert evaluate.published_match("ViT-B-16", "datacomp_xl_s13b_b90k") == ("ViT-B/16", "DataComp-1B")
    assert evaluate.published_match("ca-tiny", "x.pt") is None


# -- hf-hub: and local-dir: names (clip_models.check, for every command) ----------------------------

def _hf_folder(tw, folder: Path, weights: bool = True) -> Path:
    folder.mkdir(parents=True)
    cfg = json.loads((Path(clip_models.MODEL_CONFIG_DIR) / f"{tw.model}.json").read_text())
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": cfg, "preprocess_cfg": {}}))
    if weights:
        shutil.copy(tw.checkpoint, folder / "open_clip_pytorch_model.bin")
    return folder


def test_local_dir_and_hf_hub_names_load_and_give_the_same_numbers(trained_world, release, tmp_path, monkeypatch,
                                                                   result):
    import huggingface_hub.constants as c

    local = _hf_folder(trained_world, tmp_path / "local")
    snap = tmp_path / "hub" / "models--someone--ca-tiny"
    (snap / "refs").mkdir(parents=True)
    (snap / "refs" / "main").write_text("abc123")
    _hf_folder(trained_world, snap / "snapshots" / "abc123")
    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for name in (f"local-dir:{local}", "hf-hub:someone/ca-tiny"):
        clip = clip_models.load(name)
        r = evaluate.evaluate(open_dataset(release), clip, n_boot=200, progress=False)
        assert r["summary"] == result["summary"], name


def test_hf_hub_and_local_dir_without_weights_fail_fast(trained_world, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "empty-hub"))
    monkeypatch.delenv("COUNTERANIMAL_ALLOW_DOWNLOAD", raising=False)
    with pytest.raises(UserError, match="hf-hub repo|Hugging Face repo someone/absent is not in the local cache"):
        clip_models.check("hf-hub:someone/absent")
    no_weights = _hf_folder(trained_world, tmp_path / "noweights", weights=False)
    with pytest.raises(UserError, match="has no weights file"):
        clip_models.check(f"local-dir:{no_weights}")
    with pytest.raises(UserError, match="does not exist"):
        clip_models.check(f"local-dir:{tmp_path / 'nowhere'}")
    with pytest.raises(UserError, match="carries its own weights"):
        clip_models.check(f"local-dir:{no_weights}", "laion400m_e32")
    # Through a command: exit 2, one paragraph, before any work.
    assert main(["evaluate", str(tmp_path), "--model", "hf-hub:someone/absent"]) == 2
    assert "not in the local cache" in capsys.readouterr().err
