"""Pair selection: the paper's rule on a hand-made table, and the stricter default."""
import pytest

from curation import stats
from curation.propose import AttributeCount, GroupCount, Rule, agree_across_models, attribute_deltas, count_groups, propose

PAPER = Rule(kind="paper", min_accuracy_range=5.0, min_group_size=1)
STRICT = Rule(kind="strict", min_accuracy_range=5.0, min_group_size=20, min_common_share=0.1, alpha=0.05)


def g(cls, bg, n, k, name=None):
    return GroupCount(cls, name or f"c{cls}", bg, n, k)


# Hand-made accuracies with known answers under the paper's rule.
TABLE = [
    g(296, "snow", 100, 90), g(296, "grass", 50, 40), g(296, "water", 10, 4),   # 90 / 80 / 40 → snow→water, kept
    g(130, "water", 40, 30), g(130, "sky", 40, 29),                                # 75 / 72.5 → range 2.5, dropped
    g(23, "sky", 20, 12), g(23, "tree", 20, 11), g(23, "rock", 1, 0),             # 60 / 55 / 0 → sky→rock, kept (n=1 counts)
    g(9, "ground", 30, 30),                                                         # one group, dropped
    g(10, "grass", 20, 17), g(10, "sky", 20, 16),                                  # 85 / 80 → range exactly 5, dropped (> 5 needed)
]


def test_paper_rule_on_hand_made_table():
    rows = {r["class_idx"]: r for r in propose(TABLE, PAPER)}
    assert [(r["class_idx"], r["decision"]) for r in rows.values()] == [
        (9, "dropped"), (10, "dropped"), (23, "kept"), (130, "dropped"), (296, "kept")]
    assert (rows[296]["common"], rows[296]["counter"]) == ("snow", "water")
    assert rows[296]["drop"] == pytest.approx(0.5)
    assert (rows[23]["common"], rows[23]["counter"]) == ("sky", "rock")
    assert (rows[130]["common"], rows[130]["counter"]) == ("water", "sky")
    assert "range 2.5 points" in rows[130]["reason"]
    assert "range 5.0 points ≤ 5" in rows[10]["reason"]
    assert "fewer than two background groups with ≥ 1 photos (1)" in rows[9]["reason"]


def test_strict_rule_needs_size_share_and_significance():
    rows = {r["class_idx"]: r for r in propose(TABLE, STRICT)}
    # 296: water has only 10 photos, so the counter is grass; 90 vs 80 on 100/50 is not significant,
    # and the interval does not rule out a drop above 5 points: undecided, with what would decide it.
    assert (rows[296]["common"], rows[296]["counter"]) == ("snow", "grass")
    assert rows[296]["decision"] == "undecided" and "not significant" in rows[296]["reason"]
    assert rows[296]["needs_n"] > 0 and "more photos of c296 on" in rows[296]["needs"]
    # 23: the single rock photo no longer counts.
    assert (rows[23]["common"], rows[23]["counter"]) == ("sky", "tree")
    big = [g(1, "snow", 200, 180), g(1, "grass", 100, 40), g(1, "sand", 5, 0)]
    (row,) = propose(big, STRICT)
    assert row["decision"] == "kept" and (row["common"], row["counter"]) == ("snow", "grass")
    assert row["drop_lo"] > 0 and row["p_adjusted"] < 0.05 and row["n_groups"] == 2


def test_paper_rule_ties_go_to_the_larger_group_and_the_range_is_exact():
    (row,) = propose([g(1, "snow", 100, 90), g(1, "grass", 50, 0), g(1, "rock", 1, 0)], PAPER)
    assert row["counter"] == "grass"               # 0/50 and 0/1 tie: the larger group, not the single photo
    tied = [g(2, "a", 100, 90), g(2, "b", 100, 90), g(2, "c", 30, 10)]
    assert propose(tied, PAPER)[0]["common"] == propose(tied[::-1], PAPER)[0]["common"]   # never input order
    # 16/20 − 15/20 is 5 points exactly; in floats it is 5.000000000000004 and was kept.
    (row,) = propose([g(3, "a", 20, 16), g(3, "b", 20, 15)], PAPER)
    assert row["decision"] == "dropped" and "≤ 5" in row["reason"]


def test_paper_rule_names_the_largest_group_below_its_floor():
    (row,) = propose([g(1, "snow", 250, 240), g(1, "grass", 40, 2), g(1, "rock", 62, 30)],
                     Rule(kind="paper", min_accuracy_range=5.0, min_group_size=100))
    assert row["decision"] == "dropped"
    assert row["reason"] == "fewer than two background groups with ≥ 100 photos (1); the largest below, rock, has 62"


def test_paper_rule_says_what_the_strict_rule_would_do():
    groups = [g(1, "snow", 200, 180), g(1, "grass", 100, 40), g(2, "a", 30, 20), g(2, "b", 30, 15)]
    rows = {r["class_idx"]: r for r in propose(groups, PAPER)}
    assert rows[1]["decision"] == rows[2]["decision"] == "kept"
    assert rows[1]["strict_decision"] == "kept" and "also keeps it" in rows[1]["reason"]
    assert rows[2]["strict_decision"] != "kept" and "does not" in rows[2]["reason"]


def test_paper_preset_group_size_is_the_rules_and_strict_gets_its_own():
    from curation import config, presets

    cfg = presets.build("counteranimal")
    assert cfg.thresholds.rule == "paper" and cfg.thresholds.group_size() == 100
    text = config.dump(cfg).replace("rule: paper", "rule: strict")
    import yaml

    switched = config.parse(yaml.safe_load(text))
    # the strict rule's own floor, not the paper's value carried over silently
    assert switched.thresholds.group_size() == config.Thresholds.RULE_GROUP_SIZE["strict"] < 100


def test_the_default_floor_admits_a_rare_backgrounds_group():
    """A class whose common holds 70% of its photos leaves 15-19 photos on each other background; the
    default rule must still be able to pick one of them as the counter (the floor of 20 it had could not)."""
    groups = [g(1, "snow", 210, 190), g(1, "grass", 16, 0), g(1, "rock", 17, 9), g(1, "sky", 14, 0)]
    (row,) = propose(groups, Rule())
    assert row["decision"] == "kept" and (row["common"], row["counter"]) == ("snow", "grass")
    # sky, below the floor, is not chosen although its accuracy is as low
    assert Rule().min_group_size > 14


def test_the_default_floor_shrinks_with_a_small_class_but_a_set_floor_does_not():
    """The config's unset floor is 15 photos, or 5% of the class's where fewer, never under 8. A class of
    150 photos with 90 on its common leaves ~10 on each other background: at a fixed 15 no counter can
    form, whoever labels the photos (bench/RESULTS.md, "the strict rule's floor on small classes")."""
    from curation.config import Thresholds

    default, fixed = Rule.from_config(Thresholds()), Rule.from_config(Thresholds(min_group_size=15))
    assert [default.floor(n) for n in (60, 160, 161, 200, 280, 281, 300, 5000)] == [8, 8, 9, 10, 14, 15, 15, 15]
    assert {fixed.floor(n) for n in (60, 160, 5000)} == {15}
    small = [g(1, "snow", 90, 86), g(1, "grass", 10, 0), g(1, "rock", 11, 5), g(1, "sky", 9, 4),
             g(1, "tree", 12, 6), g(1, "water", 10, 5)]                       # 142 photos: floor 8
    (row,) = propose(small, default)
    assert row["decision"] == "kept" and (row["common"], row["counter"]) == ("snow", "grass")
    (row,) = propose(small, fixed)
    assert row["decision"] != "kept" and "fewer than two background groups with ≥ 15 photos" in row["reason"]
    # the same rare group in a class of 400 photos is under that class's floor of 15
    big = [g(1, "snow", 300, 286), g(1, "grass", 10, 0), g(1, "rock", 40, 20), g(1, "sky", 50, 25)]
    (row,) = propose(big, default)
    assert row["counter"] != "grass"


def test_a_pair_whose_own_interval_reaches_zero_is_not_kept():
    """The permutation test rejects "every group alike" because the best group is unusually good (10 of
    100 where the class gets 3% right), but the published pair's drop, 10 of 100 against 0 of 15, has a
    selection-aware interval reaching zero: kept, it would print a drop it cannot back (ostrich on a flat
    null world, bench/flat_null.py)."""
    groups = [g(1, "rock", 100, 10), g(1, "indoor", 100, 1), g(1, "tree", 100, 1), g(1, "grass", 15, 0)]
    (row,) = propose(groups, Rule())
    assert (row["common"], row["counter"]) == ("rock", "grass")
    assert row["p_adjusted"] < 0.05 and row["drop_lo"] <= 0
    assert row["decision"] != "kept" and "reaches zero" in row["reason"]
    # The same test with a counter group large enough for its own interval: kept.
    (row,) = propose([g(1, "rock", 100, 10), g(1, "indoor", 100, 1), g(1, "tree", 100, 1), g(1, "grass", 100, 0)],
                     Rule())
    assert row["decision"] == "kept" and row["drop_lo"] > 0


def test_common_must_be_frequent():
    # A tiny but perfect group cannot be "common" for the class under the strict rule.
    groups = [g(1, "sky", 25, 25), g(1, "water", 500, 400), g(1, "grass", 300, 100)]
    (row,) = propose(groups, STRICT)
    assert row["common"] == "water" and row["counter"] == "grass"


def test_counter_ties_go_to_the_group_furthest_from_the_true_class():
    groups = [GroupCount(1, "c1", "snow", 100, 95, 90.0), GroupCount(1, "c1", "grass", 40, 0, 8.0),
              GroupCount(1, "c1", "rock", 30, 0, 1.5), GroupCount(1, "c1", "sky", 30, 3, 0.9)]
    (row,) = propose(groups, STRICT)
    assert (row["common"], row["counter"]) == ("snow", "rock")   # 0% on both; rock's mean p(true) 0.05 < 0.2


def test_multiple_testing_correction_drops_marginal_classes():
    # 20 classes with the same marginal drop: significant alone, not after Holm. (Choosing which of
    # two groups is common makes the test two-sided: 30/40 vs 21/40 is not significant even alone.)
    groups = [x for c in range(20) for x in (g(c, "a", 40, 31), g(c, "b", 40, 20))]
    (alone,) = propose(groups[:2], STRICT)
    assert alone["decision"] == "kept" and alone["p_value"] < 0.05
    rows = propose(groups, STRICT)
    assert all(r["decision"] != "kept" for r in rows)
    assert [r["p_adjusted"] for r in rows] == pytest.approx(stats.adjust([r["p_value"] for r in rows], "holm"))
    assert all(r["p_adjusted"] >= 0.05 for r in rows)


def test_models_must_agree():
    a = propose([g(1, "snow", 200, 180), g(1, "grass", 200, 60)], STRICT, model_id="a")
    b = propose([g(1, "snow", 200, 170), g(1, "grass", 200, 70)], STRICT, model_id="b")
    c = propose([g(1, "snow", 200, 100), g(1, "grass", 200, 99)], STRICT, model_id="c")
    (ab,) = agree_across_models({"a": a, "b": b})
    assert ab["decision"] == "kept" and ab["model_id"] == "all"
    # The figures are one model's (the first), never a mix of several models' numbers.
    assert (ab["drop"], ab["drop_lo"], ab["p_value"]) == (a[0]["drop"], a[0]["drop_lo"], a[0]["p_value"])
    (abc,) = agree_across_models({"a": a, "b": b, "c": c})
    assert abc["decision"] == "dropped" and "models disagree" in abc["reason"]


def test_count_groups_and_wilson():
    rows = [(1, "x", "snow", True), (1, "x", "snow", False), (1, "x", "grass", True)]
    counts = count_groups(rows)
    assert [(c.background, c.n, c.k) for c in counts] == [("grass", 1, 1), ("snow", 2, 1)]
    lo, hi = stats.wilson(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)


def test_attribute_deltas_rank_the_shortcut_first():
    groups = [g(1, "snow", 50, 45), g(1, "grass", 50, 10), g(2, "sky", 10, 5)]
    deltas = attribute_deltas(groups, ["snow", "grass", "sky"])
    assert [(d["class_idx"], d["attribute"]) for d in deltas] == [(1, "snow"), (1, "grass")]  # no estimate for 2
    assert deltas[0]["delta"] == pytest.approx(0.9 - 0.2) and deltas[0]["rank"] == 1
    assert deltas[1]["delta"] == pytest.approx(0.2 - 0.9) and deltas[0]["p_value"] < 1e-9


def test_extra_attributes_rank_beside_backgrounds():
    groups = [g(1, "snow", 50, 45), g(1, "grass", 50, 10)]
    extra = [AttributeCount(1, "c1", "at night", True, 20, 2), AttributeCount(1, "c1", "at night", False, 80, 53),
             AttributeCount(1, "c1", "in fog", True, 100, 55)]          # never absent: no estimate
    deltas = attribute_deltas(groups, ["snow", "grass"], extra)
    assert [d["attribute"] for d in deltas] == ["snow", "at night", "grass"]
    night = deltas[1]
    assert (night["n_present"], night["n_absent"], night["rank"]) == (20, 80, 2)
    assert night["delta"] == pytest.approx(0.1 - 53 / 80)


def test_attribute_presence_is_a_two_way_choice_against_the_baseline():
    import numpy as np

    from curation.attributes import presence

    bank = np.eye(3, dtype=np.float32)                    # baseline, "at night", "in fog"
    photos = np.asarray([[0.2, 0.9, 0.1], [0.9, 0.3, 0.95], [1.0, 0.0, 0.0]], dtype=np.float32)
    assert presence(photos, bank).tolist() == [[True, False], [False, True], [False, False]]


def test_wilson_and_newcombe_match_published_values():
    lo, hi = stats.wilson(81, 263)                 # Newcombe (1998) example: 0.2553 .. 0.3662
    assert (round(lo, 4), round(hi, 4)) == (0.2553, 0.3662)
    assert stats.wilson(0, 10)[0] == 0.0 and stats.wilson(0, 0) == (0.0, 1.0)
    lo, hi = stats.drop_interval(56, 70, 48, 80)  # Newcombe (1998), method 10: 0.0524 .. 0.3339
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)


def test_paper_rule_summary_says_why_nothing_was_kept():
    from curation import presets
    from pipeline.propose import summary

    cfg = presets.build("counteranimal")
    rows = propose([g(1, "snow", 250, 240), g(1, "rock", 62, 30), g(2, "sky", 300, 290), g(2, "grass", 120, 10)],
                   Rule.from_config(cfg.thresholds))
    assert [r["decision"] for r in rows] == ["dropped", "kept"]
    counts = dict(classes=2, kept=1, undecided=0, dropped=1, also_kept_by_strict_rule=1)
    text = summary(rows, counts, cfg, 0)
    assert "the default strict rule also keeps 1 of these 1 pairs" in text
    assert "1 classes have fewer than two groups of ≥ 100 photos" in text
    nothing = summary(rows[:1], dict(classes=1, kept=0, undecided=0, dropped=1, also_kept_by_strict_rule=0), cfg, 0)
    assert "also keeps" not in nothing and "set thresholds.min_group_size" in nothing
