"""`counteranimal curate` as a user runs it: a real process, killed and resumed; bad input; Beam workers."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from pipeline.imageserver import ImageServer, write_photos
from tests.support.fetching import read_samples, shard_contents, write_config

CLI = [sys.executable, "-m", "pipeline.cli"]
FETCH = ["--stages", "sources,fetch"]   # the stages under test; later stages have their own tests
N = 60


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    return folder, write_photos(folder, N, seed=2, sizes=(120, 300))


@pytest.fixture(scope="module")
def slow_server(photos):
    # 0.15 s per image with 2 threads: each chunk of 10 takes ~0.8 s, so a kill lands mid-run.
    with ImageServer(photos[0], delay=0.15) as srv:
        yield srv


def make_run(run: Path, server, names, **fetch) -> Path:
    write_config(run, fetch={"chunk_size": 10, "thread_count": 2, **fetch})
    with open(run / "urls.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["url", "class", "license"])
        for i, n in enumerate(names):
            w.writerow([server.url(f"/img/{n}"), ["tabby cat", "goldfish"][i % 2], "CC-BY 4.0"])
    return run


def curate(run: Path, *extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(CLI + ["curate", str(run), *FETCH, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    stdout, stderr = proc.communicate(timeout=240)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr), proc.pid


def outputs(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()} - {"config.yaml", "urls.csv"}


def test_killed_run_resumes_to_the_same_shards_as_an_uninterrupted_run(tmp_path, photos, slow_server):
    _, names = photos
    reference = make_run(tmp_path / "reference", slow_server, names)
    done, cli_pid = curate(reference)
    assert done.returncode == 0, done.stderr
    assert "fetch: done: 60 ok, 0 failed" in done.stdout and str(reference / "shards") in done.stdout

    run = make_run(tmp_path / "killed", slow_server, names)
    proc = subprocess.Popen(CLI + ["curate", str(run), *FETCH], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (run / "samples" / "00000.parquet").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before its first chunk"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)   # the whole process group: a real, abrupt kill
        proc.wait()
    finished_at_kill = sorted(p.name for p in (run / "samples").glob("*.parquet"))
    assert 1 <= len(finished_at_kill) < 6, finished_at_kill
    for tar_path in (run / "shards").glob("[0-9]*.tar"):   # a shard under its final name is whole
        with tarfile.open(tar_path) as tar:
            assert tar.getmembers()

    resumed, _ = curate(run)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(finished_at_kill)} already done" in resumed.stdout

    assert shard_contents(run) == shard_contents(reference)
    assert read_samples(run).equals(read_samples(reference))
    assert not list((run / "shards").glob(".tmp-*"))
    assert sorted(p.name for p in (run / "samples").glob("*")) == [f"{i:05d}.parquet" for i in range(6)]


def test_beam_workers_in_separate_processes(tmp_path, photos, slow_server):
    _, names = photos
    run = make_run(tmp_path / "run", slow_server, names[:30])
    done, cli_pid = curate(run, "--", "--direct_num_workers", "2", "--direct_running_mode", "multi_processing")
    assert done.returncode == 0, done.stderr
    assert "sdk harness" not in done.stderr.lower()   # the workers' INFO logs stay quiet without -v
    samples = read_samples(run)
    assert samples.num_rows == 30 and set(samples.column("status").to_pylist()) == {"ok"}
    workers = {json.loads(p.read_text())["worker"]["pid"] for p in (run / "shards").glob("*_stats.json")}
    assert workers and cli_pid not in workers   # the DoFn was pickled and ran in worker processes
    manifest = json.loads((run / "manifest.json").read_text())
    assert manifest["stages"]["fetch"]["counts"]["ok"] == 30
    assert manifest["stages"]["sources"]["counts"]["candidates"] == 30
    assert manifest["versions"]["img2dataset"]


def test_config_typo_is_one_paragraph_naming_the_key_and_writes_nothing(tmp_path, photos, slow_server):
    run = make_run(tmp_path / "run", slow_server, photos[1][:5])
    cfg = (run / "config.yaml").read_text().replace("chunk_size:", "chunk_sise:")
    (run / "config.yaml").write_text(cfg)
    done, cli_pid = curate(run)
    assert done.returncode == 2
    assert "fetch.chunk_sise" in done.stderr and "did you mean 'chunk_size'" in done.stderr
    assert str(run / "config.yaml") in done.stderr
    assert "Traceback" not in done.stderr and done.stderr.strip().count("\n") == 0
    assert outputs(run) == set()


def test_missing_source_file_names_the_file_and_writes_nothing(tmp_path, photos, slow_server):
    run = make_run(tmp_path / "run", slow_server, photos[1][:5])
    (run / "urls.csv").unlink()
    done, cli_pid = curate(run)
    assert done.returncode == 2
    assert "urls.csv" in done.stderr and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0
    assert outputs(run) == set()


def test_unknown_beam_option_is_refused_before_anything_runs(tmp_path, photos, slow_server):
    run = make_run(tmp_path / "run", slow_server, photos[1][:5])
    done, cli_pid = curate(run, "--", "--direct_num_worker", "2")
    assert done.returncode == 2
    assert "--direct_num_worker" in done.stderr and "did you mean '--direct_num_workers'" in done.stderr
    assert outputs(run) == set()


def test_fetch_without_candidates_says_what_to_run(tmp_path, photos, slow_server):
    run = make_run(tmp_path / "run", slow_server, photos[1][:5])
    done = subprocess.run(CLI + ["curate", str(run), "--stages", "fetch"], capture_output=True, text=True)
    assert done.returncode == 2 and "--stages sources,fetch" in done.stderr
    assert outputs(run) == set()


def test_a_changed_stored_photo_setting_is_named_on_the_next_fetch(tmp_path, photos, slow_server):
    run = make_run(tmp_path / "run", slow_server, photos[1][:4])
    first, _ = curate(run)
    assert first.returncode == 0, first.stderr
    assert "since" not in first.stdout
    (run / "config.yaml").write_text((run / "config.yaml").read_text().replace("image_size: 256", "image_size: 128"))
    again, _ = curate(run)
    assert again.returncode == 0, again.stderr
    assert "fetch.image_size 256 → 128 since" in again.stdout and "the 1 chunk(s) already done keep their photos" in again.stdout
    third, _ = curate(run)                   # said once: the marker now holds the settings in force
    assert "since" not in third.stdout
