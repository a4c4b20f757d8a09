"""Acceptance on the planted world: the proposed pairs are the oracle's, and nothing else is kept.

The oracle is the reference model's accuracy on every class × background of a balanced grid; the
run only sees a crawl-shaped pool (mostly common backgrounds, noise included) and names each
photo's background itself. Judged by curation/world/judge.py.
"""
from __future__ import annotations

import subprocess
import sys

import schemas
from curation.world.judge import judge
from tests.support.curated_world import curated_world  # noqa: F401  (pytest fixture)
from tests.support.world import trained_world  # noqa: F401  (pytest fixture)


def test_proposed_pairs_match_the_oracle(curated_world):
    cw = curated_world
    verdict = judge(cw.world.dir, cw.run)
    table = "\n".join(f"  {c}: {v}" for c, v in verdict["classes"].items())
    print(f"background assignment accuracy {verdict['background_accuracy']:.3f}\n{table}")
    assert verdict["significant"] >= 6, verdict            # the world plants real shortcuts
    assert verdict["recall"] >= 0.9, table
    assert verdict["false_positives"] == [], table
    assert verdict["background_accuracy"] >= 0.6


def test_every_clean_photo_is_grouped_once_and_every_class_has_a_reason(curated_world):
    run = curated_world.run
    samples = schemas.read_folder(run / "samples", "samples")
    ok = {r["uid"] for r in samples.to_pylist() if r["status"] == "ok"}
    groups = schemas.read_folder(run / "groups", "groups").column("uid").to_pylist()
    assert sorted(groups) == sorted(ok)
    proposals = schemas.read(run / "proposals.parquet", "proposals").to_pylist()
    assert len(proposals) == len(curated_world.world.classes_list)
    assert all(r["reason"] for r in proposals)


def test_report_of_the_curated_world_renders(curated_world, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(curated_world.run, run)
    out = subprocess.run([sys.executable, "-m", "pipeline.cli", "report", str(run),
                          "--truth", str(curated_world.world.ground_truth)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    page = (run / "report" / "index.html").read_text()
    kept = [r["class_name"] for r in schemas.read(run / "proposals.parquet", "proposals").to_pylist()
            if r["decision"] == "kept"]
    assert kept and all(name in page for name in kept)
    assert page.count("data:image/jpeg;base64,") >= 2 * len(kept)
