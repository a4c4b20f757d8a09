"""The active verification loop: unanchored tasks, coverage of every group, a budget, simulated
annotators through the real Label Studio API, and a server killed mid-loop."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

import schemas
from annotation import client as lsclient
from annotation import estimate, export, loop, pull, simulate, sync
from annotation.estimate import OUT, Photo
from curation import config
from curation.errors import UserError
from tests.support.label_studio import make_custom_run, make_run

pytestmark = pytest.mark.timeout(900)


# -- the estimator, on plain rows --------------------------------------------------------------------

def _photos(stratum: str, n: int, right: int, background: str) -> list[Photo]:
    return [Photo(f"{stratum}{i:03d}", 1, "tiger", stratum, background, 0.9, i < right, 0.5) for i in range(n)]


def test_weights_undo_uneven_sampling():
    """Stratum A (100 photos, model right on 90) is sampled at 1 in 10, B (20 photos, right on 2) in
    full; all are on grass. The unweighted share of the 30 labels would be (9 + 2) / 30 = 37%; the
    stratified estimate gives the pool's (90 + 2) / 120 = 77%. The model's correctness is known on all
    120 photos, so the estimate is sharper than 30 labels (every label says grass) but not sharper
    than the 120 photos themselves."""
    a, b = _photos("a", 100, 90, "grass"), _photos("b", 20, 2, "grass")
    sample = a[:9] + a[90:91] + b     # 9 right + 1 wrong from A: A's own share
    labels = {p.uid: "grass" for p in sample}
    (e,) = estimate.estimate_class({"a": a, "b": b}, labels)
    assert e.acc == pytest.approx(92 / 120) and e.n_hat == pytest.approx(120) and e.n_labeled == 30
    assert 30 < e.n_eff < 120 and e.lo < e.acc < e.hi


def test_fully_labelled_is_the_plain_count_and_out_leaves_groups():
    a = _photos("a", 10, 7, "grass")
    labels = {p.uid: "grass" for p in a[:8]} | {a[8].uid: "snow", a[9].uid: OUT}
    ests = {e.background: e for e in estimate.estimate_class({"a": a}, labels)}
    assert ests["grass"].acc == pytest.approx(7 / 8) and ests["grass"].n_eff == pytest.approx(8)
    assert ests["snow"].acc == 0 and ests["snow"].n_hat == pytest.approx(1) and set(ests) == {"grass", "snow"}


def test_groups_too_small_by_peoples_labels_leave_the_class_undecided_with_what_to_collect():
    """Fully labelled: 60 photos on grass, 12 on snow (under the strict rule's 20): no pair can be
    tested, and the row says so (undecided, ≈8 more on snow) instead of a silent "dropped"."""
    from curation.propose import Rule

    grass, snow = _photos("a", 60, 50, "grass"), _photos("b", 12, 1, "snow")
    labels = {p.uid: p.model_background for p in grass + snow}
    ests = estimate.estimate_class({"a": grass, "b": snow}, labels)
    rule = Rule(kind="strict", min_group_size=20)
    (row,) = estimate.human_pairs(ests, rule, min_labels=5, model_id="m")
    assert (row["decision"], row["needs_background"], row["needs_n"]) == ("undecided", "snow", 8)
    assert "collect ≈8 more photos of tiger on snow" in row["needs"]
    state, why = estimate.class_state(row, ests, rule, 5, targetable=set(), exhausted=False, budget_left=True)
    assert state == estimate.NEEDS_PHOTOS and why == row["needs"]
    # With snow large enough the same labels give a tested pair, not a request for photos.
    (tested,) = estimate.human_pairs(ests, Rule(kind="strict", min_group_size=10), min_labels=5, model_id="m")
    assert tested["decision"] == "kept" and tested["needs"] is None


def test_peoples_groups_get_the_floor_of_their_class_size():
    """Under the default floor (15, or 5% of the class where fewer, at least 8) a fully labelled class
    of 72 photos has a floor of 8, so its 12 on snow form a group and a pair; in a class of 400 photos
    the same 12 stay under its floor of 15, and the row asks for the 3 more photos that floor needs."""
    from curation.propose import Rule
    from curation.config import Thresholds

    rule = Rule.from_config(Thresholds())
    for n_grass, kept, need in ((60, True, None), (388, False, 3)):
        grass, snow = _photos("a", n_grass, n_grass - 5, "grass"), _photos("b", 12, 0, "snow")
        labels = {p.uid: p.model_background for p in grass + snow}
        ests = estimate.estimate_class({"a": grass, "b": snow}, labels)
        (row,) = estimate.human_pairs(ests, rule, min_labels=5, model_id="m")
        assert (row["decision"] == "kept") is kept, row
        assert row["needs_n"] == need
        if kept:
            assert (row["common"], row["counter"]) == ("grass", "snow")
        else:
            assert "fewer than two background groups with ≥ 15 photos" in row["reason"]


def test_the_models_correctness_on_unlabelled_photos_counts():
    """30 photos the model put on grass, right on 3. Five are labelled, all wrong, all on grass: the
    labelled photos alone say 0 of 5; but the model's correctness is known on all 30, and the labels
    say the stratum is grass, so the estimate is the stratum's 3 of 30, with more than 5 photos' worth
    of certainty (and less than 30: which photo is where is still a sample)."""
    grass = _photos("g", 30, 3, "grass")
    labels = {p.uid: "grass" for p in grass[3:8]}
    (e,) = estimate.estimate_class({"grass": grass}, labels)
    assert e.acc == pytest.approx(3 / 30) and e.n_hat == pytest.approx(30)
    assert 5 < e.n_eff < 30 and e.sd_members > 0


def test_no_labels_are_spent_on_a_drop_that_labels_cannot_make_significant():
    """Two groups of 25 photos at 60% and 44%, a quarter labelled: the drop is above the range but not
    significant, and with every photo labelled it still would not be (25 photos a side cannot show
    16 points once the choice of pair is accounted for): the loop stops asking. The same accuracies on
    250 photos a side, 10 labelled in each, could become significant, so there it labels the pair."""
    from curation.propose import Rule

    rule = Rule(kind="strict", min_group_size=20)
    for n, step, expect_more in ((25, 4, False), (250, 25, True)):
        a, b = _photos("a", n, round(0.6 * n), "grass"), _photos("b", n, round(0.44 * n), "snow")
        labels = {p.uid: "grass" for p in a[::step]} | {p.uid: "snow" for p in b[::step]}
        ests = estimate.estimate_class({"grass": a, "snow": b}, labels)
        (row,) = estimate.human_pairs(ests, rule, min_labels=5, model_id="m")
        assert row["decision"] != "kept" and 100 * row["drop"] > rule.min_accuracy_range
        todo = estimate.uncertain_groups(row, ests, rule, min_labels=5)
        assert (todo.get("grass") == "drop not significant yet") is expect_more, (n, todo)


def test_labels_never_seen_strata_wait_for_coverage(tmp_path):
    run = make_run(tmp_path / "r", per_group=12, overlap=1, calibration_share=0.0, initial_per_stratum=4)
    cfg = config.load(run)
    pop = loop.population(run, cfg)
    lv = loop.view(pop, [], {}, set(), cfg)
    batch = loop.next_batch(pop, lv, [], cfg)
    per = Counter((p.class_idx, p.stratum) for p, _ in batch)
    assert {r for _, r in batch} == {"coverage"}
    for class_idx, strata in pop.items():     # every (class, stratum) gets its share
        assert loop.FLAGGED in strata and loop.UNSURE in strata
        for h, photos in strata.items():
            assert per[(class_idx, h)] == min(4, len(photos))


def test_simulated_answers_err_at_the_given_rate_and_lean_towards_a_prefill(tmp_path):
    vocabulary = ["grass", "snow", "water", "sky", "other"]
    truth = simulate.Truth("snow", "tiger")
    answers = [simulate.answer(truth, "tiger", vocabulary, 0.2, 0, simulate.email(1), f"u{i}") for i in range(2000)]
    wrong_bg = sum(a["background"] != "snow" for a in answers) / len(answers)
    wrong_cls = sum(a["is_class"] != "yes" for a in answers) / len(answers)
    assert 0.17 < wrong_bg < 0.23 and 0.17 < wrong_cls < 0.23
    assert {a["background"] for a in answers} == set(vocabulary)          # errors drawn from the vocabulary
    again = [simulate.answer(truth, "tiger", vocabulary, 0.2, 0, simulate.email(1), f"u{i}") for i in range(2000)]
    assert again == answers                                                 # seeded: a resumed run says the same
    biased = [simulate.answer(truth, "tiger", vocabulary, 0.0, 0, simulate.email(1), f"u{i}", prefilled="grass",
                              prefill_bias=0.5) for i in range(2000)]
    assert 0.45 < sum(a["background"] == "grass" for a in biased) / len(biased) < 0.55
    other = simulate.answer(simulate.Truth("rock", "lion"), "tiger", vocabulary, 0.0, 0, "x", "u")
    assert other == {"background": "other", "is_class": "no", "skip": False}
    assert simulate.is_simulated(simulate.email(3)) and not simulate.is_simulated("alice@example.org")
    with pytest.raises(UserError, match="no such truth file"):
        simulate.read_truth(tmp_path / "missing.parquet", tmp_path)


# -- against the real Label Studio ---------------------------------------------------------------------

def _conn(cfg):
    spec = cfg.annotation
    return lsclient.connect(spec.url, spec.files_root, retries=spec.retries, backoff=spec.backoff)


def _server_tasks(run):
    conn = _conn(config.load(run))
    return export.export_tasks(conn, sync.find_project(conn, run))


def _round(run, ls, annotators=2, error_rate=0.0, after=None, prefill_bias=0.0):
    cfg = config.load(run)
    pushed = sync.push(run, cfg, _conn(cfg), say=lambda s: None)
    sim = simulate.simulate(run, cfg, _conn(cfg), run / "truth.parquet", error_rate, annotators,
                            prefill_bias=prefill_bias, data_dir=ls.data_dir, gold_share=0.0, say=lambda s: None,
                            after=after)
    summary = pull.pull(run, cfg, _conn(cfg), say=lambda s: None)
    return pushed, sim, summary


def _hidden_water() -> list[dict]:
    """The model calls 30 tiger photos grass; 10 of them are on water, where it fails every time. It
    never says water, so its pair is sky → snow; the real pair is grass → water."""
    photos = [dict(class_name="tiger", model_bg="grass", true_bg="grass", correct=True) for _ in range(20)]
    photos += [dict(class_name="tiger", model_bg="grass", true_bg="water", correct=False) for _ in range(10)]
    photos += [dict(class_name="tiger", model_bg="snow", true_bg="snow", correct=i < 8) for i in range(12)]
    photos += [dict(class_name="tiger", model_bg="sky", true_bg="sky", correct=i < 10) for i in range(12)]
    return photos


def test_no_task_carries_a_class_prefill(label_studio, tmp_path_factory):
    base = tmp_path_factory.mktemp("runs")
    for prefill in (False, True):
        run = make_run(base / f"prefill-{prefill}", per_group=2, overlap=1, calibration_share=0.0,
                       prefill_background=prefill)
        cfg = config.load(run)
        sync.push(run, cfg, _conn(cfg), say=lambda s: None)
        tasks = _server_tasks(run)
        ledger = {r["uid"]: r for r in sync.read_ledger(run).to_pylist()}
        assert tasks and len(tasks) == len(ledger)
        admin = label_studio.admin()
        for t in tasks:
            regions = [r for p in admin.predictions.list(task=t["id"]) for r in p.result]
            assert all(r["from_name"] != "is_class" for r in regions)      # never the class question
            if prefill:
                assert [r["from_name"] for r in regions] == ["background"]
                assert regions[0]["value"]["choices"] == [ledger[t["data"]["uid"]]["model_background"]]
            else:
                assert regions == []
        # The labeling view answers by keyboard: one key per class answer and per background.
        project = label_studio.admin().projects.get(id=sync.find_project(_conn(cfg), run))
        assert 'hotkey="y"' in project.label_config and 'alias="grass" hotkey="1"' in project.label_config
    # Every verdict records whether a prediction was shown.
    alice = label_studio.annotator("prefill-alice@example.org")
    from annotation import config as lsconfig
    for t in tasks:
        alice.annotations.create(id=t["id"], result=lsconfig.annotation_result("grass", "yes"), lead_time=1.0)
    pull.pull(run, cfg, _conn(cfg), say=lambda s: None)
    verdicts = pull.read_verdicts(run).to_pylist()
    assert verdicts and all(v["prediction_shown"] is True for v in verdicts)
    raw = schemas.read(run / "annotation" / "annotations.parquet", "annotations").to_pylist()
    assert all(r["prediction_shown"] for r in raw)


def test_a_human_label_moves_photos_into_a_group_the_model_never_proposed(label_studio, tmp_path_factory):
    run = make_custom_run(tmp_path_factory.mktemp("runs") / "water", _hidden_water(),
                          {"tiger": ("sky", "snow", "dropped")}, thresholds={"min_group_size": 8},
                          round_size=6, initial_per_stratum=8)
    rounds = 0
    while True:
        pushed, sim, summary = _round(run, label_studio)
        rounds += 1
        if pushed["added"] == 0:
            break
        assert rounds < 12
    (tiger,) = summary["classes"]
    assert (tiger["model_common"], tiger["model_counter"]) == ("sky", "snow")
    assert (tiger["human_common"], tiger["human_counter"], tiger["human_decision"]) == ("grass", "water", "kept")
    assert tiger["state"] == estimate.KEPT and tiger["moved"] >= 5 and tiger["simulated"]
    assert "counter snow → water" in tiger["changed"] and "the model put 0 there" in tiger["changed"]
    assert tiger["tasks"] < 54        # settled before every photo was labelled
    est = {r["background"]: r for r in schemas.read(run / "annotation" / "estimates.parquet",
                                                    "human_estimates").to_pylist()}
    assert est["water"]["acc"] == 0 and est["water"]["model_n"] == 0 and est["grass"]["acc"] == 1
    people = schemas.read(run / "annotation" / "annotators.parquet", "annotators").column("annotator").to_pylist()
    assert people == [simulate.email(1), simulate.email(2)]      # separate users, named as simulated
    from pipeline.commands.annotate import loop_lines
    text = "\n".join(loop_lines(summary))
    assert "SIMULATED" in text and "tiger" in text and "grass → water (kept" in text
    from curation import report
    html = report.write(run).read_text()       # the report's section says the same, and "simulated"
    section = html[html.index('id="verification"'):]
    assert "Simulated annotators." in section and "grass → water (kept)" in section and "sky → snow" in section
    assert simulate.email(1) in section


def test_the_loop_stops_within_the_budget(label_studio, tmp_path_factory):
    run = make_custom_run(tmp_path_factory.mktemp("runs") / "budget", _hidden_water(),
                          {"tiger": ("sky", "snow", "dropped")}, thresholds={"min_group_size": 8},
                          round_size=6, initial_per_stratum=8, budget=30)
    for _ in range(8):
        pushed, _, summary = _round(run, label_studio)
        if pushed["added"] == 0:
            break
    ledger = sync.read_ledger(run).to_pylist()
    assert pushed["added"] == 0 and len(ledger) == 30 and summary["sent"] == 30
    (tiger,) = summary["classes"]
    assert tiger["state"] in (estimate.OUT_OF_BUDGET, estimate.KEPT, estimate.NO_SHORTCUT)
    cfg = config.load(run)
    assert sync.push(run, cfg, _conn(cfg), say=lambda s: None)["added"] == 0      # still nothing new


def test_killing_label_studio_mid_loop_loses_and_duplicates_nothing(label_studio, tmp_path_factory):
    run = make_custom_run(tmp_path_factory.mktemp("runs") / "killed-mid-loop", _hidden_water(),
                          {"tiger": ("sky", "snow", "dropped")}, thresholds={"min_group_size": 8},
                          round_size=6, initial_per_stratum=8, batch_size=4)
    cfg = config.load(run)
    killed = []

    def kill_once(done):
        if not killed:
            label_studio.kill()
            killed.append(done)

    # Killed during round 0's import, after the first batch of 4.
    with pytest.raises(lsclient.ServerDown):
        sync.push(run, cfg, _conn(cfg), say=lambda s: None, after_batch=kill_once)
    label_studio.restart()
    first = sync.push(run, cfg, _conn(cfg), say=lambda s: None)
    assert first["already"] == 4 and first["added"] == first["selected"] - 4
    # Killed while the simulated annotators label, after 7 annotations.
    killed.clear()
    with pytest.raises(lsclient.ServerDown):
        simulate.simulate(run, cfg, _conn(cfg), run / "truth.parquet", 0.0, 2, data_dir=label_studio.data_dir,
                          gold_share=0.0, threads=1, say=lambda s: None, after=lambda n: n >= 7 and kill_once(n))
    label_studio.restart()
    again = simulate.simulate(run, cfg, _conn(cfg), run / "truth.parquet", 0.0, 2, data_dir=label_studio.data_dir,
                              gold_share=0.0, say=lambda s: None)
    server_view = [(t["id"], t["data"]["uid"], sorted(a["completed_by"] for a in t["annotations"]))
                   for t in _server_tasks(run)]
    assert again["already"] >= 7 and again["already"] + again["annotations"] == 2 * first["selected"], server_view
    pull.pull(run, cfg, _conn(cfg), say=lambda s: None)
    # Round 1, killed mid-import too (its batch is the one the pull planned, chosen again after the crash).
    killed.clear()
    with pytest.raises(lsclient.ServerDown):
        sync.push(run, cfg, _conn(cfg), say=lambda s: None, after_batch=kill_once)
    label_studio.restart()
    planned = [r["uid"] for r in sync.read_ledger(run).to_pylist() if r["batch"] == 1]
    second = sync.push(run, cfg, _conn(cfg), say=lambda s: None)
    assert [r["uid"] for r in sync.read_ledger(run).to_pylist() if r["batch"] == 1] == planned and planned
    assert second["round"] == 1
    simulate.simulate(run, cfg, _conn(cfg), run / "truth.parquet", 0.0, 2, data_dir=label_studio.data_dir,
                      gold_share=0.0, say=lambda s: None)
    summary = pull.pull(run, cfg, _conn(cfg), say=lambda s: None)

    tasks = _server_tasks(run)
    uids = Counter(t["data"]["uid"] for t in tasks)
    ledger = sync.read_ledger(run).to_pylist()
    assert set(uids.values()) == {1} and set(uids) == {r["uid"] for r in ledger}
    per_task = [Counter(a["completed_by"] for a in t["annotations"]) for t in tasks]
    assert all(sorted(c.values()) == [1, 1] for c in per_task)          # each simulated user once per task
    raw = schemas.read(run / "annotation" / "annotations.parquet", "annotations")
    assert raw.num_rows == 2 * len(ledger) and summary["annotations"] == 2 * len(ledger)


def _run_with_terminal_stderr(argv):
    """Run argv with stdout captured and stderr on a pseudo-terminal; (completed process, stderr text)."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import termios
    import threading

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))   # a width, as a terminal has
    chunks: list[bytes] = []

    def read():
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:         # EIO once the child has closed its end
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=slave, text=True)
    finally:
        os.close(slave)
        reader.join(timeout=10)
        os.close(master)
    return proc, b"".join(chunks).decode(errors="replace")


def test_simulate_loop_command_runs_the_whole_loop(label_studio, tmp_path_factory):
    """`annotate simulate --loop`: what `make demo` runs. Every output says simulated; pair selection
    runs once at the end and puts source 'human' rows beside the model's."""
    import os
    import subprocess

    run = make_custom_run(tmp_path_factory.mktemp("runs") / "cli-loop", _hidden_water(),
                          {"tiger": ("sky", "snow", "dropped")}, thresholds={"min_group_size": 8},
                          round_size=6, initial_per_stratum=8)
    exe = os.path.join(os.path.dirname(os.sys.executable), "counteranimal")
    # stderr on a terminal (a pty, read as it comes so the child never blocks): where the bar shows
    proc, terminal = _run_with_terminal_stderr([exe, "annotate", "simulate", str(run), "--truth",
                                                str(run / "truth.parquet"), "--error-rate", "0", "--annotators",
                                                "2", "--gold-share", "0", "--loop"])
    assert proc.returncode == 0, terminal[-2000:]
    assert "SIMULATED" in proc.stdout and "loop done after" in proc.stdout
    assert "SIMULATED annotators labelling them" in proc.stdout       # said before each round's slow part
    assert "annotate simulate (SIMULATED)" in terminal                # its progress bar
    assert "verified grass → water (kept" in proc.stdout and "settled: kept" in proc.stdout
    proposals = schemas.read(run / "proposals.parquet", "proposals").to_pylist()
    assert {r["source"] for r in proposals} == {"model", "human"}
    status = subprocess.run([exe, "annotate", "status", str(run)], capture_output=True, text=True)
    assert status.returncode == 0 and "(simulated)" in status.stdout and "SIMULATED" in status.stdout


def test_runs_with_the_same_folder_name_get_their_own_project_title(tmp_path):
    a, b = make_run(tmp_path / "a" / "run", per_group=1), make_run(tmp_path / "b" / "run", per_group=1)
    ta, tb = sync.project_title(a, config.load(a)), sync.project_title(b, config.load(b))
    assert ta != tb and ta.startswith("counteranimal: lstest (run, ")
