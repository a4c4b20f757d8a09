"""Vote aggregation and the labeling config, on plain data (no server)."""
import itertools
import random
import xml.etree.ElementTree as ET

import pyarrow as pa
import pytest

import schemas
from annotation import config as lsconfig
from annotation import votes
from curation.config import parse


def _pairwise_alpha(units):
    """Krippendorff's nominal alpha the slow way: disagreement over every pair of values."""
    units = [[v for v in u if v is not None] for u in units]
    units = [u for u in units if len(u) >= 2]
    values = [v for u in units for v in u]
    n = len(values)
    d_o = sum(sum(a != b for a, b in itertools.permutations(u, 2)) / (len(u) - 1) for u in units) / n
    d_e = sum(a != b for a, b in itertools.permutations(values, 2)) / (n * (n - 1))
    return 1 - d_o / d_e


def test_majority_breaks_no_ties():
    assert votes.majority(["snow", "snow", "grass"]) == ("snow", pytest.approx(2 / 3))
    assert votes.majority(["snow", "grass"]) == (None, 0.5)
    assert votes.majority([None, None]) == (None, None)
    assert votes.majority(["yes", None]) == ("yes", 1.0)


def test_alpha_by_hand_and_against_pairwise_definition():
    # Two coders, four units: a/a, a/a, a/b, b/b -> 1 - 2 / (30/7) = 8/15.
    assert votes.krippendorff_alpha([["a", "a"], ["a", "a"], ["a", "b"], ["b", "b"]]) == pytest.approx(8 / 15)
    assert votes.krippendorff_alpha([["a", "a"], ["b", "b", "b"]]) == pytest.approx(1.0)
    assert votes.krippendorff_alpha([["a", "a"], ["a"]]) is None          # one category: undefined
    rng = random.Random(3)
    for _ in range(20):
        units = [[rng.choice("abc") for _ in range(rng.randint(1, 4))] for _ in range(rng.randint(3, 12))]
        if len({v for u in units if len(u) >= 2 for v in u}) < 2:
            continue
        assert votes.krippendorff_alpha(units) == pytest.approx(_pairwise_alpha(units))


def _tasks(rows):
    base = dict(class_idx=1, class_name="tiger", role="common", shard=None, key=None, image=None,
                model_background="grass", model_is_class=None, score=None, model_id=None, flags=[],
                gold_background=None, gold_is_class=None, task_id=1, status="pushed")
    return schemas.conform(pa.Table.from_pylist([{**base, **r} for r in rows]), "annotation_tasks")


def _votes(rows):
    base = dict(annotation_id=0, task_id=1, skipped=False, flags=[], lead_time=None, created_at=None,
                updated_at=None, on_server=True, is_class="yes")
    return schemas.conform(pa.Table.from_pylist([{**base, "annotation_id": i, **r} for i, r in enumerate(rows)]),
                           "annotations")


def test_verdicts_groups_and_calibration():
    tasks = _tasks([{"uid": "a", "gold_background": "snow", "gold_is_class": "yes"}, {"uid": "b"}, {"uid": "c"},
                    {"uid": "d"}, {"uid": "e"}])
    ann = _votes([
        {"uid": "a", "annotator": "x", "background": "snow"}, {"uid": "a", "annotator": "y", "background": "grass"},
        {"uid": "a", "annotator": "z", "background": "snow"},
        {"uid": "b", "annotator": "x", "background": "grass"}, {"uid": "b", "annotator": "y", "background": "snow"},
        {"uid": "c", "annotator": "x", "background": "grass", "flags": ["bad_photo"]},
        {"uid": "c", "annotator": "y", "background": "grass", "flags": ["bad_photo"]},
        {"uid": "d", "annotator": "x", "background": "sky", "is_class": "no"},
        {"uid": "d", "annotator": "y", "background": "sky", "is_class": "no"},
        {"uid": "e", "annotator": "x", "background": "grass"}, {"uid": "e", "annotator": "y", "skipped": True},
    ])
    v = {r["uid"]: r for r in votes.verdicts(ann, tasks, min_votes=2).to_pylist()}
    assert (v["a"]["status"], v["a"]["background"], v["a"]["n_votes"]) == ("verified", "snow", 3)
    assert (v["b"]["status"], v["b"]["background"]) == ("tie", None)
    assert v["c"]["flags"] == ["bad_photo"] and v["c"]["status"] == "verified"
    assert (v["d"]["is_class"], v["e"]["status"], v["e"]["n_votes"]) == ("no", "pending", 1)
    groups = votes.human_groups(votes.verdicts(ann, tasks, 2), ["grass", "snow", "sky"])
    assert groups.column("uid").to_pylist() == ["a"]          # b tie, c flagged, d not the class, e pending
    assert groups.column("method").to_pylist() == ["human"]
    people = {r["annotator"]: r for r in votes.annotator_table(ann, tasks).to_pylist()}
    assert people["x"]["background_accuracy"] == 1.0 and people["y"]["background_accuracy"] == 0.0
    assert people["y"]["n_skipped"] == 1 and people["x"]["n_calibration"] == 1


def test_labeling_config_from_vocabulary_round_trips():
    cfg = parse({"classes": [{"name": "ice bear"}], "backgrounds": ["snow", "grass & rocks"],
                 "models": [{"name": "RN50"}]})
    root = ET.fromstring(lsconfig.labeling_config(cfg))
    bgs = [c.get("alias") for c in root.find("Choices[@name='background']")]
    assert bgs == ["snow", "grass & rocks", "other"]
    assert lsconfig.question("ice bear") == "Is this an ice bear?"
    result = lsconfig.annotation_result("snow", "no", ["bad_photo", "several_animals"])
    assert lsconfig.parse_result(result) == {"background": "snow", "is_class": "no",
                                             "flags": ["bad_photo", "several_animals"]}
