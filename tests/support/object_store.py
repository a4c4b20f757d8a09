"""A real S3-compatible server for tests: moto's, started on 127.0.0.1 at a free port, stopped by PID.

    from tests.support.object_store import s3_server   # noqa: F401  (pytest fixture)

    def test_x(s3_server):
        s3_server.beam_args          # ["--s3_endpoint_url=http://127.0.0.1:P", access key, secret]
        s3_server.bucket("b")        # creates the bucket, returns "s3://b"

The launcher's storage (curation/storage.py) is configured the same way the CLI does it, from the
Beam S3 options, so a test can read and write s3:// paths itself.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.label_studio import free_port

KEY, SECRET, REGION = "testing", "testing", "us-east-1"


@dataclass
class S3Server:
    endpoint: str

    @property
    def beam_args(self) -> list[str]:
        return [f"--s3_endpoint_url={self.endpoint}", f"--s3_access_key_id={KEY}",
                f"--s3_secret_access_key={SECRET}", f"--s3_region_name={REGION}"]

    def configure(self) -> None:
        from curation import storage

        storage.configure_s3(endpoint_url=self.endpoint, access_key_id=KEY, secret_access_key=SECRET,
                             region_name=REGION)

    def bucket(self, name: str) -> str:
        import boto3

        boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                     region_name=REGION).create_bucket(Bucket=name)
        return f"s3://{name}"


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    port = free_port()
    moto = Path(sys.executable).parent / "moto_server"
    command = [str(moto)] if moto.exists() else [sys.executable, "-m", "moto.server"]
    with open(log_path, "w") as log:
        proc = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log_path.read_text()[-2000:]
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert time.monotonic() < deadline, f"moto does not listen on {port}: {log_path.read_text()[-2000:]}"
            time.sleep(0.2)
        server = S3Server(f"http://127.0.0.1:{port}")
        server.configure()
        yield server
    finally:
        from curation import storage

        storage.configure("s3")
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


# -- one planted world curated twice under one image server: on local disk and in a bucket ----------

@dataclass
class BucketRuns:
    """The same run, curated and released with the DirectRunner on local disk and in a moto bucket.

    The image server stays up for the session (candidate uids hash the URLs, so every run that is
    compared with these must fetch from the same server)."""
    server: S3Server
    image_base: str
    local: Path            # RUN on local disk, curated and released
    bucket: str            # s3://runs: the bucket's URL
    config_text: str       # the run's config.yaml
    urls: Path             # the candidate list (a local file; each run gets a copy)

    def new_run(self, name: str):
        """An empty run folder in the bucket holding config.yaml and urls.csv, as ``storage.path``."""
        from curation import atomic, storage

        run = storage.path(f"{self.bucket}/{name}")
        atomic.write_text(run / "config.yaml", self.config_text)
        (run / "urls.csv").put_file(self.urls)
        return run


RELEASE = ["--name", "world", "--version", "1", "--unverified"]
# The bucket runs curate half the test world's classes: the same stages, groups and release, at half
# the photos (three whole curates of this world — local, bucket, portable — are the suite's slowest part).
BUCKET_CLASSES = 6


def _fewer_classes(urls: Path, keep: list[str]) -> Path:
    import csv

    with open(urls, newline="") as f:
        rows = list(csv.DictReader(f))
    with open(urls, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(r for r in rows if r["class"] in keep)
    return urls


@pytest.fixture(scope="session")
def bucket_runs(trained_world, s3_server, tmp_path_factory):
    from curation import atomic, config
    from curation.world.run_config import run_config
    from pipeline.cli import main
    from pipeline.imageserver import ImageServer
    from tests.support.curated_world import MIN_GROUP_SIZE

    tw = trained_world
    root = tmp_path_factory.mktemp("bucket-runs")
    cfg = run_config(tw.dir, tw.model, tw.checkpoint, thresholds={"min_group_size": MIN_GROUP_SIZE})
    server = ImageServer(tw.pool_dir).start()
    try:
        urls = _fewer_classes(tw.candidate_urls(server.base, root / "urls.csv"), tw.classes_list[:BUCKET_CLASSES])
        runs = BucketRuns(s3_server, server.base, root / "local", s3_server.bucket("runs"), config.dump(cfg),
                          Path(urls))
        atomic.write_text(runs.local / "config.yaml", runs.config_text)
        atomic.write_bytes(runs.local / "urls.csv", runs.urls.read_bytes())
        assert main(["curate", str(runs.local)]) == 0
        assert main(["release", str(runs.local), *RELEASE]) == 0
        yield runs
    finally:
        server.stop()


def tables(run) -> dict[str, object]:
    """Every parquet artifact of a run (local or in a bucket) by its path in the run, temp names skipped.

    img2dataset's own per-shard tables list rows as downloads finish: those are sorted by key."""
    from curation import storage

    run = storage.path(run)
    out = {}
    for p in sorted(run.rglob("*.parquet")):
        rel = p.relative_to(run).as_posix()
        if p.name.startswith(".") or rel.startswith("release/"):
            continue
        table = storage.read_table(p)
        out[rel] = table.sort_by("key") if rel.startswith("shards/") else table
    return out


def files(folder) -> dict[str, bytes]:
    """Every file under a folder (local or in a bucket) by its relative path, with its bytes."""
    from curation import storage

    folder = storage.path(folder)
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
