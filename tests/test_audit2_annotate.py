"""Second CLI audit: what `counteranimal annotate pull` prints after a partial annotation round.

A class whose human groups are still too small has no human pair: the line says why (the
proposal's reason) instead of "human None → None (dropped)".
"""
from __future__ import annotations

import pyarrow as pa

import schemas
from curation import atomic
from pipeline.commands.annotate import pair_lines


def _row(source: str, common, counter, decision: str, reason: str) -> dict:
    fields = {f.name: None for f in schemas.SCHEMAS["proposals"]}
    return {**fields, "class_idx": 8, "class_name": "hen", "source": source, "model_id": "reference",
            "common": common, "counter": counter, "decision": decision, "reason": reason,
            "n_common": 0, "n_counter": 0}


def test_a_human_side_without_a_pair_says_why(tmp_path):
    rows = [_row("model", "grass", "tree", "kept", "grass → tree: 100.0% → 10.0%"),
            _row("human", None, None, "dropped", "fewer than two background groups with ≥ 20 photos (1)")]
    table = schemas.conform(pa.Table.from_pylist(rows), "proposals")
    atomic.write_parquet(tmp_path / "proposals.parquet", table)
    assert pair_lines(tmp_path) == [
        "  hen: model grass → tree (kept); human no pair "
        "(dropped: fewer than two background groups with ≥ 20 photos (1))"]


def test_both_sides_with_pairs_read_as_before(tmp_path):
    rows = [_row("model", "grass", "tree", "kept", "r1"), _row("human", "grass", "snow", "kept", "r2")]
    atomic.write_parquet(tmp_path / "proposals.parquet", schemas.conform(pa.Table.from_pylist(rows), "proposals"))
    assert pair_lines(tmp_path) == ["  hen: model grass → tree (kept); human grass → snow (kept)"]


# -- against a real Label Studio ------------------------------------------------------------------

import pytest  # noqa: E402

from tests.support.label_studio import make_run  # noqa: E402


@pytest.mark.timeout(900)
def test_annotations_of_photos_no_longer_selected_still_count(label_studio, tmp_path_factory):
    """The run is re-curated after a first round (config.yaml edited): a class's pair is dropped.
    The ledger keeps every photo sent, so pull still turns their votes into verdicts."""
    from annotation import client as lsclient
    from annotation import config as lsconfig
    from annotation import pull, sync
    from curation import config

    run = make_run(tmp_path_factory.mktemp("runs") / "reselected", per_group=2, overlap=1, calibration_share=0.0,
                   gold=False)
    cfg = config.load(run)
    conn = lambda: lsclient.connect(cfg.annotation.url, cfg.annotation.files_root, retries=2, backoff=0.5)  # noqa: E731
    sync.push(run, cfg, conn(), say=lambda s: None)
    ledger = sync.read_ledger(run).to_pylist()
    first_class = ledger[0]["class_name"]
    alice = label_studio.annotator("reselect-alice@example.org")
    for t in ledger:
        alice.annotations.create(id=t["task_id"], lead_time=1.0,
                                 result=lsconfig.annotation_result(t["model_background"] or "grass", "yes"))
    proposals = schemas.read(run / "proposals.parquet", "proposals")
    dropped = [dict(r, decision="dropped", reason="re-curated") if r["class_name"] == first_class else r
               for r in proposals.to_pylist()]
    atomic.write_parquet(run / "proposals.parquet", schemas.conform(pa.Table.from_pylist(dropped), "proposals"))

    counts = sync.push(run, cfg, conn(), say=lambda s: None)
    gone = [t["uid"] for t in ledger if t["class_name"] == first_class]
    assert gone and counts["added"] == 0 and {t["uid"] for t in sync.read_ledger(run).to_pylist()} >= set(gone)
    pull.pull(run, cfg, conn(), say=lambda s: None)
    verdicts = {r["uid"]: r["status"] for r in pull.read_verdicts(run).to_pylist()}
    assert all(verdicts.get(u) == "verified" for u in gone), {u: verdicts.get(u) for u in gone}
    assert pull.status(run, cfg, conn())["unknown_tasks"] == 0
