"""`counteranimal release` on the curated planted world: layout, counts, determinism, readers, licenses,
the verified path, and the official layout round trip. Real Beam (DirectRunner), webdataset, HF datasets,
mlcroissant."""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import schemas
from curation import atomic, config, release, release_layout as layout
from pipeline.cli import main
from tests.support.curated_world import curated_world  # noqa: F401  (pytest fixture)
from tests.support.world import trained_world  # noqa: F401  (pytest fixture)


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("release", "report"))
    return dst


def release_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def tar_samples(path: Path) -> dict[str, dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for m in tar.getmembers():
            key, ext = m.name.split(".", 1)
            out.setdefault(key, {})[ext] = tar.extractfile(m).read()
    return out


@pytest.fixture(scope="module")
def unverified(curated_world, tmp_path_factory):
    run = copy_run(curated_world.run, tmp_path_factory.mktemp("rel") / "run")
    assert main(["release", str(run), "--name", "world", "--version", "1", "--unverified"]) == 0
    return run, layout.release_dir(run, "world", "1")


def kept_model_pairs(run: Path) -> list[dict]:
    cfg = config.load(run)
    rows = pq.read_table(run / "proposals.parquet").to_pylist()
    return [r for r in rows if r["source"] == "model" and r["model_id"] == release.decision_model(cfg)
            and r["decision"] == "kept"]


# -- layout, counts, determinism ----------------------------------------------------------------------

def test_layout_and_counts(unverified):
    run, rel = unverified
    cfg = config.load(run)
    for name in (layout.CLASSNAMES, layout.TEMPLATES, layout.ONE_VS_K, layout.METADATA, layout.CHECKSUMS,
                 layout.CARD, layout.CROISSANT):
        assert (rel / name).is_file(), name
    assert not [p for p in rel.parent.iterdir() if p.name.startswith(".")], "temp folders left behind"
    meta = schemas.read(rel / layout.METADATA, "release_metadata").to_pylist()
    in_shards = {}
    for split in layout.SPLITS:
        paths = layout.shard_paths(rel, split)
        n = sum(1 for r in meta if r["group"] == split)
        assert len(paths) == (4 if n >= 4 else n)            # size-bounded: the world's shards are small
        assert [p.name for p in paths] == [f"{i}.tar" for i in range(len(paths))]
        for p in paths:
            for key, parts in tar_samples(p).items():
                assert "." not in key
                in_shards[key] = (split, p, parts)
    assert len(in_shards) == len(meta)
    for r in meta:
        split, path, parts = in_shards[r["key"]]
        assert (split, f"{split}/{path.name}") == (r["group"], r["shard"])
        assert set(parts) == {r["image_ext"], "cls", "json"}
        assert hashlib.sha256(parts[r["image_ext"]]).hexdigest() == r["sha256"]
        record = json.loads(parts["json"])
        assert record["verified"] == "model" and record["group"] == r["group"]
        assert int(parts["cls"]) == record["class_idx"] == r["class_idx"]
    names = (rel / layout.CLASSNAMES).read_text().splitlines()
    assert names == [c.name for c in cfg.classes]       # the world's label space is its classes
    assert all(names[r["class_idx"]] == r["class_name"] for r in meta)
    assert (rel / layout.TEMPLATES).read_text().splitlines() == [t.replace("{}", "{c}") for t in cfg.prompts.classes]
    # Every kept pair's groups, as the propose stage counted them, are released or excluded by name.
    excluded = Counter()
    card = (rel / layout.CARD).read_text()
    for pair in kept_model_pairs(run):
        got = Counter(r["group"] for r in meta if r["class_name"] == pair["class_name"])
        backgrounds = {r["background"] for r in meta if r["class_name"] == pair["class_name"] and r["group"] == "common"}
        assert backgrounds == {pair["common"]}
        excluded["common"] += pair["n_common"] - got["common"]
        excluded["counter"] += pair["n_counter"] - got["counter"]
        assert got["common"] > 0 and got["counter"] > 0
        assert f"| {pair['class_name']} | {pair['common']} | {pair['counter']} |" in card
    n_excluded = sum(excluded.values())
    assert min(excluded.values()) >= 0
    assert (f"{n_excluded} photos of the kept groups were left out" in card) == (n_excluded > 0)
    assert "**UNVERIFIED.**" in card and "configs:" in card and "split: counter" in card
    assert release.verify_checksums(rel) == []
    listed = {line.split("  ", 1)[1] for line in (rel / layout.CHECKSUMS).read_text().splitlines()}
    assert listed == set(layout.relative_files(rel))
    sets = json.loads((rel / layout.ONE_VS_K).read_text())
    k = min(cfg.score.one_vs_k, len(names))
    assert sets and all(len(v) == k and int(c) in v for c, v in sets.items())


def test_rerelease_is_byte_identical(unverified, tmp_path):
    """Released again, through the Beam pipeline on its multi-processing runner this time (workers in their
    own processes); the first release, small on the default runner, took the in-process path."""
    run, rel = unverified
    before = release_files(rel)
    again = copy_run(run, tmp_path / "again")
    assert main(["release", str(again), "--name", "world", "--version", "1", "--unverified", "--",
                 "--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]) == 0
    engines = [json.loads((r / "manifest.json").read_text())["stages"]["release"]["engine"] for r in (run, again)]
    assert engines == ["in-process", "beam"]
    after = release_files(layout.release_dir(again, "world", "1"))
    assert after == before
    members = tarfile.open(rel / "counter" / "0.tar").getmembers()
    assert {(m.mtime, m.uid, m.gid, m.mode, m.uname) for m in members} == {(release.TAR_MTIME, 0, 0, 0o644, "")}
    assert [m.name for m in members] == sorted(m.name for m in members)


def test_release_replaces_the_previous_one_whole(unverified, tmp_path):
    run = copy_run(unverified[0], tmp_path / "run")
    rel = layout.release_dir(run, "world", "1")
    rel.mkdir(parents=True)
    (rel / "stale.txt").write_text("from an earlier release")
    assert main(["release", str(run), "--name", "world", "--version", "1", "--unverified"]) == 0
    assert not (rel / "stale.txt").exists()
    assert release.verify_checksums(rel) == []
    assert sorted(p.name for p in rel.parent.iterdir()) == ["world-1"]


# -- readers ---------------------------------------------------------------------------------------

def test_webdataset_reads_the_shards(unverified):
    import webdataset as wds

    _, rel = unverified
    meta = {r["key"]: r for r in pq.read_table(rel / layout.METADATA).to_pylist()}
    seen = set()
    for split in layout.SPLITS:
        urls = [str(p) for p in layout.shard_paths(rel, split)]
        ds = wds.WebDataset(urls, shardshuffle=False).decode("pil").to_tuple("__key__", "jpg;webp;png", "cls", "json")
        for key, image, cls, record in ds:
            assert image.size[0] > 0
            assert cls == record["class_idx"] == meta[key]["class_idx"]
            assert record["group"] == split and record["uid"] == meta[key]["uid"]
            seen.add(key)
    assert seen == set(meta)


def test_clip_benchmark_wds_loader_calls_read_it(unverified):
    """The calls clip_benchmark's build_wds_dataset makes (v1.6): {split}/{0..n-1}.tar from nshards.txt, an
    image under webp/png/jpg/jpeg, the label from cls; class names and templates stripped per line."""
    import webdataset as wds

    _, rel = unverified
    meta = pq.read_table(rel / layout.METADATA).to_pylist()
    for split in layout.SPLITS:
        nshards = int((rel / split / "nshards.txt").read_text())
        pattern = str(rel / split / ("{0..%d}.tar" % (nshards - 1)))
        ds = (wds.WebDataset(pattern, nodesplitter=lambda src: src)
              .decode(wds.autodecode.ImageHandler("pil", extensions=["webp", "png", "jpg", "jpeg"]))
              .to_tuple(["webp", "png", "jpg", "jpeg"], "cls"))
        labels = Counter(cls for _, cls in ds)
        assert labels == Counter(r["class_idx"] for r in meta if r["group"] == split)
    classes = [line.strip() for line in (rel / "classnames.txt").read_text().splitlines()]
    templates = [line.strip() for line in (rel / "zeroshot_classification_templates.txt").read_text().splitlines()]
    assert all(t.format(c=classes[0]) != t for t in templates)


def test_hf_datasets_reads_the_release(unverified, tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    from datasets import load_dataset

    _, rel = unverified
    meta = pq.read_table(rel / layout.METADATA).to_pylist()
    ds = load_dataset(str(rel), cache_dir=str(tmp_path / "cache"))    # the card's configs: block names the tars
    assert set(ds) == set(layout.SPLITS)
    for split in layout.SPLITS:
        want = {r["key"]: r for r in meta if r["group"] == split}
        assert ds[split].num_rows == len(want)
        row = ds[split][0]
        assert row["cls"] == want[row["__key__"]]["class_idx"] == row["json"]["class_idx"]
        assert row["jpg"].size[0] > 0


def test_croissant_validates(unverified):
    mlc = pytest.importorskip("mlcroissant")
    _, rel = unverified
    ds = mlc.Dataset(jsonld=str(rel / layout.CROISSANT))      # raises on a validation error
    assert not ds.metadata.issues.errors
    n = pq.read_metadata(rel / layout.METADATA).num_rows
    photos = list(ds.records(record_set="photos"))
    assert len(photos) == n
    assert {r["photos/license"].decode() for r in photos} <= {lic.lower() for lic in config.DEFAULT_LICENSES} | {
        "gpl-2.0-or-later", "mit", "cc0"}
    first = next(iter(ds.records(record_set="counter_images")))
    assert first["counter_images/image"].size[0] > 0


# -- licenses ----------------------------------------------------------------------------------------

def test_license_exclusion_is_listed_and_gpl_carried(unverified, tmp_path):
    src_run, rel = unverified
    run = copy_run(src_run, tmp_path / "run")
    meta = pq.read_table(rel / layout.METADATA).to_pylist()
    by_group = sorted((r for r in meta if r["group"] == "common"), key=lambda r: r["uid"])
    unlisted, unlicensed = {r["uid"] for r in by_group[:3]}, by_group[3]["uid"]
    for path in sorted((run / "candidates").glob("*.parquet")):
        t = pq.read_table(path)
        rows = t.to_pylist()
        for r in rows:
            if r["uid"] in unlisted:
                r["license"] = "all-rights-reserved"
            elif r["uid"] == unlicensed:
                r["license"] = None
        atomic.write_parquet(path, pa.Table.from_pylist(rows, schema=t.schema))
    assert main(["release", str(run), "--name", "world", "--version", "1", "--unverified"]) == 0
    out = layout.release_dir(run, "world", "1")
    got = pq.read_table(out / layout.METADATA).to_pylist()
    assert {r["uid"] for r in got} == {r["uid"] for r in meta} - unlisted - {unlicensed}
    card = (out / layout.CARD).read_text()
    assert "| license all-rights-reserved is not in license_allow | 3 |" in card
    assert "| no license recorded (set source.license for sources without one) | 1 |" in card
    gpl = sum(1 for r in got if r["license"] == "gpl-2.0-or-later")
    assert gpl > 0 and f"| gpl-2.0-or-later | {gpl} |" in card
    assert "Tux Paint" in card                       # the GPL art's attribution travels with it
    assert all(r["attribution"] for r in got if r["license"] == "gpl-2.0-or-later")


# -- the verified path ----------------------------------------------------------------------------------

def make_verified(run: Path, classes: int = 3) -> tuple[list[dict], list[dict]]:
    """Human groups for a few kept classes (every other model-grouped photo) and their human proposals rows."""
    pairs = kept_model_pairs(run)[:classes]
    groups = schemas.read_folder(run / "groups", "groups").to_pylist()
    human = []
    for p in pairs:
        rows = sorted((g for g in groups if g["class_idx"] == p["class_idx"] and g["method"] != "human"
                       and g["background"] in (p["common"], p["counter"])), key=lambda g: g["uid"])
        for g in rows[::2]:
            human.append(dict(g, method="human", confidence=1.0, model_id=None, cluster=None))
    atomic.write_parquet(run / "groups" / "human.parquet", schemas.conform(pa.Table.from_pylist(human), "groups"))
    table = pq.read_table(run / "proposals.parquet")
    rows = table.to_pylist() + [dict(p, source="human") for p in pairs]
    atomic.write_parquet(run / "proposals.parquet", pa.Table.from_pylist(rows, schema=table.schema))
    return pairs, human


def test_verified_release_holds_only_human_groups(unverified, tmp_path):
    run = copy_run(unverified[0], tmp_path / "run")
    assert main(["release", str(run), "--name", "v"]) == 2          # no human rows yet: a clear error
    pairs, human = make_verified(run)
    # What annotate pull leaves behind: raw annotations (2 of them skipped), agreement, simulated annotators.
    ann = run / "annotation"
    ann.mkdir()
    rows = [dict(annotation_id=i, task_id=i, uid=h["uid"], annotator=f"a{i % 3}@example.org", skipped=i < 2,
                 on_server=True) for i, h in enumerate(human[:12])]
    atomic.write_parquet(ann / "annotations.parquet", schemas.conform(pa.Table.from_pylist(rows), "annotations"))
    atomic.write_text(ann / "agreement.json", json.dumps({"agreement": {"background": {"alpha": 0.8125, "units": 9},
                                                                        "is_class": {"alpha": None, "units": 0}}}))
    atomic.write_parquet(ann / "verification.parquet", pa.table({"class_idx": [0], "simulated": [True]}))
    assert main(["release", str(run), "--name", "v"]) == 0
    out = layout.release_dir(run, "v", "1.0")
    meta = pq.read_table(out / layout.METADATA).to_pylist()
    assert {r["uid"] for r in meta} <= {h["uid"] for h in human}
    assert {r["class_name"] for r in meta} == {p["class_name"] for p in pairs}
    assert {r["verified"] for r in meta} == {"human"}
    card = (out / layout.CARD).read_text()
    assert "UNVERIFIED" not in card and "verified by people" in card
    assert "**simulated annotators**" in card
    assert "10 labels spent on 12 photos by 3 annotators" in card and "(2 skipped)" in card
    assert "background 0.812 over 9 photos" in card and "is_class n/a over 0 photos" in card


def test_verified_release_without_human_rows_names_the_way_out(unverified, tmp_path, capsys):
    run = copy_run(unverified[0], tmp_path / "run")
    assert main(["release", str(run)]) == 2
    err = capsys.readouterr().err
    assert "proposals.parquet" in err and "--unverified" in err and "Traceback" not in err


# -- official layout -------------------------------------------------------------------------------------

def test_official_export_import_round_trip(unverified, tmp_path):
    src_run, rel = unverified
    run = copy_run(src_run, tmp_path / "run")
    official = tmp_path / "official"
    assert main(["release", str(run), "--name", "world", "--version", "1", "--unverified",
                 "--export-official", str(official)]) == 0
    top = official / "world-1"
    class_dirs = sorted(p.name for p in top.iterdir())
    names = (rel / layout.CLASSNAMES).read_text().splitlines()
    meta = pq.read_table(rel / layout.METADATA).to_pylist()
    assert set(class_dirs) == {f"{r['class_idx']} {names[r['class_idx']]}" for r in meta}
    n_files = sum(1 for p in top.rglob("*") if p.is_file())
    assert n_files == len(meta)
    assert (official / "imagenet_names.txt").read_text().splitlines()[0] == f"0\t{names[0]}"
    back = tmp_path / "imported"
    assert main(["import-official", str(official), str(back)]) == 0
    assert (back / layout.CLASSNAMES).read_text().splitlines() == names
    again = pq.read_table(back / layout.METADATA).to_pylist()
    fields = ("uid", "class_idx", "class_name", "group", "background", "sha256", "image_ext")
    assert sorted(tuple(r[f] for f in fields) for r in again) == sorted(tuple(r[f] for f in fields) for r in meta)
    assert release.verify_checksums(back) == []
    for split in layout.SPLITS:
        assert len(layout.shard_paths(back, split)) == len(layout.shard_paths(rel, split))


def test_export_and_import_never_replace_a_folder_of_the_users(unverified, tmp_path, capsys):
    _, rel = unverified
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    from curation import release_official
    from curation.errors import UserError

    with pytest.raises(UserError, match="refusing to replace"):
        release_official.export(rel, mine)
    assert main(["import-official", str(tmp_path / "nowhere"), str(mine)]) == 2
    official = release_official.export(rel, tmp_path / "official")
    assert main(["import-official", str(official), str(mine)]) == 2
    assert "refusing to replace" in capsys.readouterr().err
    assert (mine / "thesis.tex").read_text() == "keep me"
    release_official.export(rel, official)          # its own earlier export is replaced


def test_import_refuses_a_folder_not_in_the_layout(tmp_path, capsys):
    (tmp_path / "src" / "birds").mkdir(parents=True)
    assert main(["import-official", str(tmp_path / "src"), str(tmp_path / "out")]) == 2
    assert "official CounterAnimal layout" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- plain functions -------------------------------------------------------------------------------------

def test_shard_count_rules():
    mb = 2**20
    assert release.shard_count(1, 10, mb) == 1
    assert release.shard_count(3, 10, mb) == 3          # fewer photos than clip_benchmark's workers
    assert release.shard_count(4, 10, mb) == 4
    assert release.shard_count(1000, 10, mb) == 4
    assert release.shard_count(1000, 10 * mb + 1, mb) == 11   # size-bounded beyond 4
    assert release.shard_count(5, 100 * mb, mb) == 5     # never more shards than photos


def test_write_tar_is_deterministic_and_sorted(tmp_path):
    samples = [("b", {"jpg": b"\xff\xd8b", "cls": b"1", "json": b"{}"}), ("a", {"json": b"{}", "cls": b"0", "jpg": b"a"})]
    d1, n1 = release.write_tar(tmp_path / "1.tar", samples)
    d2, n2 = release.write_tar(tmp_path / "2.tar", list(reversed(samples)))
    assert (d1, n1) == (d2, n2) and (tmp_path / "1.tar").read_bytes() == (tmp_path / "2.tar").read_bytes()
    assert d1 == hashlib.sha256((tmp_path / "1.tar").read_bytes()).hexdigest()
    with tarfile.open(tmp_path / "1.tar") as tar:
        assert tar.getnames() == ["a.cls", "a.jpg", "a.json", "b.cls", "b.jpg", "b.json"]
    assert io.BytesIO((tmp_path / "1.tar").read_bytes()).read(2) != b"\x1f\x8b"   # not gzip


def test_write_tar_writes_what_tarfile_writes(tmp_path):
    """The headers write_tar builds itself are tarfile's GNU ones, byte for byte: sizes on and off the
    512-byte blocks, empty members, non-ASCII names, and names too long for one header."""
    samples = [("x0001", {"jpg": bytes(range(256)) * 2, "cls": b"7", "json": b"{}"}),
               ("chat-\u00e9t\u00e9", {"webp": b"", "cls": b"12", "json": b'{"a": 1}' * 70}),
               ("k" * 96, {"jpg": b"\xff" * 513, "json": b"1"}),       # 100 bytes with ".jpg", 101 with ".json"
               ("z" * 140, {"png": b"\x89PNG" * 1000})]
    digest, size = release.write_tar(tmp_path / "ours.tar", samples)
    with open(tmp_path / "ref.tar", "wb") as f, tarfile.open(fileobj=f, mode="w", format=tarfile.GNU_FORMAT,
                                                           encoding="utf-8") as tar:
        for key, parts in sorted(samples):
            for ext in sorted(parts):
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mtime, info.mode, info.uid, info.gid = len(parts[ext]), release.TAR_MTIME, 0o644, 0, 0
                info.uname = info.gname = ""
                tar.addfile(info, io.BytesIO(parts[ext]))
    ref = (tmp_path / "ref.tar").read_bytes()
    assert (tmp_path / "ours.tar").read_bytes() == ref
    assert (digest, size) == (hashlib.sha256(ref).hexdigest(), len(ref))


def test_sample_key_has_no_dots():
    assert layout.sample_key("abc123") == "abc123"
    assert "." not in layout.sample_key("a.b.c")


def _jpeg(color) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="JPEG")
    return buf.getvalue()


def test_official_archive_without_names_file_is_imagenet(tmp_path):
    """An archive like the official one (no imagenet_names.txt, paper names on the folders): labels are
    open_clip's 1,000 ImageNet names; our export names the paper's 45 classes by the paper's names."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    top = tmp_path / "archive" / "LAION-final"
    photos = {"20 water ouzel/common-water/1.jpg": (0, 0, 255), "20 water ouzel/counter-ground/2.jpg": (90, 60, 0),
              "9 ostrich/common-ground/1.jpg": (120, 90, 0), "9 ostrich/counter-water/7.jpg": (0, 0, 200)}
    for rel, color in photos.items():
        (top / rel).parent.mkdir(parents=True, exist_ok=True)
        (top / rel).write_bytes(_jpeg(color))
    ours = tmp_path / "ours"
    assert main(["import-official", str(tmp_path / "archive"), str(ours)]) == 0
    assert (ours / layout.CLASSNAMES).read_text().splitlines() == list(IMAGENET_CLASSNAMES)
    assert (ours / layout.TEMPLATES).read_text() == "A photo of {c}.\n"
    assert not (ours / layout.ONE_VS_K).exists()
    meta = pq.read_table(ours / layout.METADATA).to_pylist()
    assert sorted((r["class_idx"], r["class_name"], r["group"], r["background"]) for r in meta) == [
        (9, "ostrich", "common", "ground"), (9, "ostrich", "counter", "water"),
        (20, IMAGENET_CLASSNAMES[20], "common", "water"), (20, IMAGENET_CLASSNAMES[20], "counter", "ground")]
    assert len({r["uid"] for r in meta}) == 4            # the stems repeat ("1.jpg"): keys come from paths
    assert all(r["verified"] == "human" and r["license"] is None for r in meta)
    assert [len(layout.shard_paths(ours, s)) for s in layout.SPLITS] == [2, 2]   # fewer photos than 4 shards
    assert release.verify_checksums(ours) == []
    from curation import release_official

    back = release_official.export(ours, tmp_path / "back")
    assert sorted(p.name for p in (back / "ours").iterdir()) == ["20 water ouzel", "9 ostrich"]
    assert len((back / "imagenet_names.txt").read_text().splitlines()) == 1000
    got = {p.relative_to(back / "ours").parts[:2]: p.read_bytes() for p in (back / "ours").rglob("*.jpg")}
    assert sorted(got.values()) == sorted((top / rel).read_bytes() for rel in photos)


def test_imagenet_label_space_files():
    from curation import presets

    cfg = presets.counteranimal()
    names = release.label_names(cfg)
    assert len(names) == 1000 and release.true_labels(cfg)[291] == 291
    assert release.clip_templates(cfg) == ["A photo of {c}."]
    cfg.prompts.ensemble = "openai"
    assert len(release.clip_templates(cfg)) == 80 and all("{c}" in t for t in release.clip_templates(cfg))


def test_a_missing_or_changed_run_shard_is_named(unverified, tmp_path, capsys):
    run = copy_run(unverified[0], tmp_path / "run")
    meta = pq.read_table(unverified[1] / layout.METADATA).to_pylist()
    samples = {s["uid"]: s for s in schemas.read_folder(run / "samples", "samples").to_pylist()}
    shard = samples[meta[0]["uid"]]["shard"]
    kept = {s["key"] for s in samples.values() if s["shard"] == shard} - {samples[meta[0]["uid"]]["key"]}
    path = run / "shards" / shard
    with tarfile.open(path) as tar:    # the shard without the first released photo
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers() if m.name.split(".", 1)[0] in kept]
    with tarfile.open(path, "w") as tar:
        for m, data in members:
            tar.addfile(m, io.BytesIO(data))
    assert main(["release", str(run), "--unverified"]) == 2
    err = capsys.readouterr().err
    assert shard in err and meta[0]["uid"] in err and "Traceback" not in err
    path.unlink()
    assert main(["release", str(run), "--unverified"]) == 2
    assert f"e.g. {shard}" in capsys.readouterr().err
    assert not (run / "release").exists() or not any((run / "release").iterdir())
