"""Clean stage: planted faults each get their one outcome, dedupe is exact and order-free, re-runs resume."""
from __future__ import annotations

import random
import shutil

import numpy as np
import pytest
from PIL import Image

import schemas
from curation import clean, config, dedupe, image_checks
from curation.config import CleanSpec
from pipeline import clean as clean_stage
from pipeline.options import pipeline_options
from tests.support.score_run import build_run, jpeg, picture, tiny_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory, checkpoint):
    planted = build_run(tmp_path_factory.mktemp("clean") / "run", checkpoint)
    before = schemas.read_folder(planted.run / "samples", "samples")
    clean_stage.run_clean(planted.run, config.load(planted.run), pipeline_options([]), say=lambda s: None)
    return planted, before


def outcome(row):
    return row["status"] if row["status"] != "rejected" else row["reason"]


def test_every_planted_fault_gets_its_outcome_and_every_sample_exactly_one(cleaned):
    planted, before = cleaned
    after = schemas.read_folder(planted.run / "samples", "samples")
    assert after.column("uid").to_pylist() == before.column("uid").to_pylist()   # same rows, same order
    got = {r["uid"]: r for r in after.to_pylist()}
    assert {u: outcome(r) for u, r in got.items()} == planted.truth
    assert {u: r["duplicate_of"] for u, r in got.items() if r["duplicate_of"]} == planted.dup_of
    flagged = {u for u, r in got.items() if "duplicate_across_classes" in (r["flags"] or [])}
    assert flagged == planted.across_classes
    ok = [r for r in got.values() if r["status"] == "ok"]
    assert all(r["width"] and r["height"] and r["sha256"] for r in ok)


def test_rerun_changes_nothing_and_a_lost_shard_check_is_redone(cleaned, tmp_path):
    planted, _ = cleaned
    run = tmp_path / "run"
    shutil.copytree(planted.run, run)
    first = schemas.read_folder(run / "samples", "samples")
    assert clean_stage.plan(run)[0] == []                       # all shards current
    (run / "clean" / "00001.parquet").unlink()
    work, done, n = clean_stage.plan(run)
    assert work == ["00001.tar"] and done == 1 and n > 0
    clean_stage.run_clean(run, config.load(run), pipeline_options([]), say=lambda s: None)
    assert schemas.read_folder(run / "samples", "samples").equals(first)


def test_checks_from_an_older_image_checks_schema_are_redone(cleaned, tmp_path):
    import pyarrow.parquet as pq
    from schemas.tables import VERSION_KEY

    planted, _ = cleaned
    run = tmp_path / "run"
    shutil.copytree(planted.run, run)
    path = run / "clean" / "00000.parquet"
    table = pq.read_table(path).drop_columns(["thumbnails"])     # as image_checks v1 wrote it
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, VERSION_KEY: b"1"}), path)
    assert clean_stage.plan(run)[0] == ["00000.tar"]


def test_the_pipelines_per_key_decision_equals_the_whole_run_decision(cleaned, tmp_path):
    """Decide (per content hash, bucket and component, on the DirectRunner) against clean.decide in one
    process, on the same samples and checks; the planted run has exact, near and cross-class copies."""
    import apache_beam as beam

    planted, before = cleaned
    runs = {}
    for how in ("pipeline", "one_process"):
        run = runs[how] = tmp_path / how
        shutil.copytree(planted.run, run)
        for p, part in zip(sorted((run / "samples").glob("[0-9]*.parquet")), _parts(before, run)):
            _write(p, part)
    spec = config.load(planted.run).clean
    clean_stage.decide(runs["one_process"], spec)
    with beam.Pipeline(options=pipeline_options([])) as p:
        _ = (p | beam.Create(clean_stage.samples_files(runs["pipeline"]))
             | clean_stage.Decide(str(runs["pipeline"]), spec))
    want = schemas.read_folder(runs["one_process"] / "samples", "samples")
    assert {r["reason"] for r in want.to_pylist()} >= {"duplicate", "near_duplicate"}
    assert schemas.read_folder(runs["pipeline"] / "samples", "samples").equals(want)


def _parts(before, run):
    """The fetched samples (before clean), split back into the run's samples files."""
    import pyarrow.compute as pc

    for p in sorted((run / "samples").glob("[0-9]*.parquet")):
        uids = schemas.read(p, "samples").column("uid")
        yield before.filter(pc.is_in(before.column("uid"), uids))


def _write(path, table):
    from curation import atomic

    atomic.write_parquet(path, table)


def _greedy_brute_force(cands, max_bits):
    """The rule dedupe implements, by comparing every pair: in preference order, each image is a near
    duplicate of the first kept image within max_bits (thumbnails always agreeing), else kept."""
    kept, dropped = [], {}
    for c in sorted(cands, key=lambda c: (-c.pixels, c.uid)):
        match = next((k for k in kept
                      if min((x ^ y).bit_count() for x in c.phashes for y in k.phashes) <= max_bits), None)
        if match is None:
            kept.append(c)
        else:
            dropped[c.uid] = dedupe.Duplicate("near_duplicate", match.uid)
    return dropped


THUMBS = bytes(image_checks.THUMB_BYTES)   # identical (flat) thumbnails: every pHash candidate is confirmed


def test_hash_bands_find_every_pair_the_brute_force_finds():
    rng = random.Random(3)
    base = [rng.getrandbits(64) for _ in range(40)]
    cands = []
    for i, h in enumerate(base):
        cands.append(dedupe.Candidate(f"a{i}", 1, f"sa{i}", (h,), 100, THUMBS))
        flipped = h
        for bit in rng.sample(range(64), rng.randrange(0, 7)):     # 0..6 bits away
            flipped ^= 1 << bit
        cands.append(dedupe.Candidate(f"b{i}", 1, f"sb{i}", (flipped, rng.getrandbits(64)), 100, THUMBS))
    for i in range(5):                       # more copies sharing one hash value
        cands.append(dedupe.Candidate(f"c{i}", 1, f"sc{i}", (base[0],), 100, THUMBS))
    for max_bits in (0, 2, 4, 6):
        dropped, _ = dedupe.find_duplicates(cands, max_bits, max_difference=0.0)
        assert dropped == _greedy_brute_force(cands, max_bits)
    assert len(dedupe.find_duplicates([dedupe.Candidate(f"u{i}", 1, f"s{i}", (7,), 1, THUMBS) for i in range(1000)],
                                      4, 0.0)[0]) == 999


def test_dedupe_keeps_the_same_image_whatever_the_input_order():
    cands = [dedupe.Candidate("u3", 1, "s1", (0b1111,), 100, THUMBS),
             dedupe.Candidate("u1", 1, "s1", (0b1111,), 100, THUMBS),
             dedupe.Candidate("u2", 2, "s2", (0xFF00, 0b1110), 400, THUMBS),
             dedupe.Candidate("u4", 1, "s4", (0,), 100, THUMBS),
             dedupe.Candidate("u5", 1, "s5", (0b1111,), 100, None)]      # no thumbnails: never a near duplicate
    first = dedupe.find_duplicates(cands, max_bits=1, max_difference=0.3)
    for _ in range(5):
        random.shuffle(cands)
        assert dedupe.find_duplicates(cands, max_bits=1, max_difference=0.3) == first
    dropped, across = first
    # u1/u3 are exact copies; u2 (more pixels) is a near copy of them (through its second hash), so it is kept.
    assert dropped == {"u1": dedupe.Duplicate("near_duplicate", "u2"), "u3": dedupe.Duplicate("duplicate", "u2")}
    assert across == {"u2"}


def test_phash_survives_resize_reencode_and_a_small_crop_but_separates_different_pictures():
    def distance(x, y):
        return min((a ^ b).bit_count() for a in image_checks.crop_hashes(x) for b in image_checks.crop_hashes(y))

    a = picture(1, (128, 128))
    cropped = a.crop((8, 8, 120, 120)).resize((128, 128), Image.Resampling.BICUBIC)
    assert distance(a, a.resize((80, 70))) <= 4
    assert distance(a, cropped) <= 4
    assert (image_checks.phash(a) ^ image_checks.phash(cropped)).bit_count() > 4   # why the crops are there
    assert distance(a, picture(2, (128, 128))) > 12


def test_image_checks_name_each_fault():
    spec = CleanSpec(min_side=64, max_aspect_ratio=4)
    good = jpeg(picture(5))
    assert image_checks.check_image(good, spec)["reason"] is None
    assert image_checks.check_image(good[: len(good) // 2], spec)["reason"] == "truncated"
    assert image_checks.check_image(b"plain text", spec)["reason"] == "undecodable"
    assert image_checks.check_image(jpeg(picture(6, (50, 90))), spec)["reason"] == "too_small"
    assert image_checks.check_image(jpeg(picture(7, (330, 70))), spec)["reason"] == "aspect_ratio"


def test_review_flags_follow_the_thresholds():
    spec = CleanSpec(label_noise_top_k=1, label_noise_max_neighbor_share=0.2, ambiguity_min_second=0.4,
                     clarity_min_subject=0.1, clarity_min_animal=0.5)
    row = {"true_rank": 1, "top5_p": [0.9, 0.05], "p_subject": 0.8, "p_animal": 0.9}
    assert clean.review_flags(row, spec, 0.0) == []                         # the model picks its class
    assert clean.review_flags({**row, "true_rank": 2}, spec, 0.0) == ["label_noise"]
    assert clean.review_flags({**row, "true_rank": 2}, spec, 0.2) == ["label_noise"]
    assert clean.review_flags({**row, "true_rank": 2}, spec, 0.4) == []     # its neighbours carry its class
    assert clean.review_flags({**row, "true_rank": 2}, spec) == ["label_noise"]   # no neighbours: rank alone
    assert clean.review_flags({**row, "top5_p": [0.55, 0.4]}, spec) == ["ambiguous"]
    assert clean.review_flags({**row, "top5_p": [0.6, 0.39]}, spec) == []
    assert clean.review_flags({**row, "p_subject": 0.05, "p_animal": 0.2}, spec) == ["unclear"]
    assert clean.review_flags({**row, "p_subject": 0.05, "p_animal": 0.7}, spec) == []   # another animal is there
    assert clean.review_flags({**row, "p_subject": 0.05, "p_animal": None}, spec) == ["unclear"]


def test_neighbor_shares_single_out_the_photo_among_another_class():
    rng = random.Random(3)
    centres = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]
    emb, classes = [], []
    for c in (0, 1):
        for _ in range(12):
            v = [x + rng.uniform(-0.1, 0.1) for x in centres[c]]
            emb.append(v)
            classes.append(c)
    emb.append([0.02, 1.0, 0.03])       # looks like class 1, labelled 0
    classes.append(0)
    emb = np.asarray(emb, dtype=np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    for block in (4, 2048, None):       # blocks only split the work (None: sized by memory)
        shares = clean.neighbor_shares(emb, np.asarray(classes), k=5, block=block)
        assert shares[-1] == 0.0
        assert (shares[:-1] >= 0.8).all(), shares
    assert clean.neighbor_shares(emb[:1], np.asarray([0]), k=5).tolist() == [0.0]   # a lone photo has no neighbours
