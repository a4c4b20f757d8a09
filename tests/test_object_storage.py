"""The run directory in an object store: a moto S3 server on 127.0.0.1 (tests/support/object_store.py),
reached through `--s3_endpoint_url` by the launcher and the Beam workers. A full `curate` + `release`
with RUN = s3://runs/r1 gives the local run's artifacts, byte-identical release files, and `download`
fetches and verifies the release from the bucket. Real Beam (DirectRunner), real S3 protocol."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from curation import atomic, card, storage
from pipeline.cli import main
from tests.support.object_store import RELEASE, bucket_runs, files, s3_server, tables  # noqa: F401  (fixtures)
from tests.support.world import trained_world  # noqa: F401  (pytest fixture)


@pytest.fixture(scope="module")
def in_bucket(bucket_runs, tmp_path_factory, monkeypatch_module):
    """curate + release with RUN in the bucket, launched from a folder of its own (nothing may land there)."""
    cwd = tmp_path_factory.mktemp("launcher-cwd")
    monkeypatch_module.chdir(cwd)
    run = bucket_runs.new_run("r1")
    beam = bucket_runs.server.beam_args
    assert main(["curate", str(run), "--", *beam]) == 0
    assert main(["release", str(run), *RELEASE, "--", *beam]) == 0
    return run, cwd


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


def test_curate_in_a_bucket_gives_the_local_runs_artifacts(bucket_runs, in_bucket):
    run, cwd = in_bucket
    want, got = tables(bucket_runs.local), tables(run)
    assert sorted(got) == sorted(want)
    assert [name for name in want if not got[name].equals(want[name])] == []
    assert os.listdir(cwd) == []          # nothing written beside the launcher (no "s3:/runs/…" folder)


def _dated(run) -> bytes:
    """The day the run's pairs were selected, as croissant.json gives it (the card's date)."""
    return card.built_date(storage.path(run)).encode()


def test_release_in_a_bucket_is_byte_identical_and_whole(bucket_runs, in_bucket):
    run, _ = in_bucket
    want = files(bucket_runs.local / "release" / "world-1")
    got = files(run / "release" / "world-1")
    assert sorted(got) == sorted(want) and "common/0.tar" in got and "SHA256SUMS" in got
    assert [rel for rel in want if got[rel] != want[rel] and rel not in ("croissant.json", "SHA256SUMS")] == []
    # croissant.json dates the release by the day propose ran, which may differ across midnight.
    local_day, bucket_day = _dated(bucket_runs.local), _dated(run)
    assert got["croissant.json"].replace(bucket_day, local_day) == want["croissant.json"]
    if local_day == bucket_day:
        assert got["SHA256SUMS"] == want["SHA256SUMS"]
    # No temp objects left: the photo list and the temp release are gone once published.
    assert [p.name for p in (run / "release").iterdir()] == ["world-1"]


def test_download_from_the_bucket_verifies_every_file(bucket_runs, in_bucket, tmp_path):
    run, _ = in_bucket
    out = tmp_path / "dl"
    beam = bucket_runs.server.beam_args
    assert main(["download", str(run / "release" / "world-1"), str(out), "--no-progress", "--", *beam]) == 0
    assert files(out) == files(run / "release" / "world-1")


def test_a_run_folder_missing_from_the_bucket_is_named(bucket_runs, capsys):
    assert main(["curate", f"{bucket_runs.bucket}/nothing-here", "--", *bucket_runs.server.beam_args]) == 2
    err = capsys.readouterr().err
    assert "s3://runs/nothing-here: no such run folder" in err and "Traceback" not in err


def test_a_failed_write_leaves_no_object(s3_server):
    bucket = storage.path(s3_server.bucket("atomic"))
    target = bucket / "run" / "proposals.parquet"
    with pytest.raises(RuntimeError, match="killed"):
        with atomic.atomic_path(target) as tmp:
            tmp.write_bytes(b"half a table")
            raise RuntimeError("killed")
    assert not target.exists() and list(bucket.rglob("*")) == []
    atomic.write_text(target, "whole")
    assert target.read_text() == "whole" and [p.name for p in bucket.rglob("*")] == ["proposals.parquet"]


def test_a_url_path_is_never_taken_for_a_local_one(s3_server):
    """pathlib would turn s3://b/x into the local folder s3:/b/x; a UrlPath refuses to be one."""
    run = storage.path("s3://runs/r1")
    with pytest.raises(TypeError):
        Path(run)
    with pytest.raises(TypeError):
        os.fspath(run)
    assert str(run / "shards" / "00000.tar") == "s3://runs/r1/shards/00000.tar"
    assert (run / "samples").relative_to(run).as_posix() == "samples"
