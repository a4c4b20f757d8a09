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

KEY, SECRET, REGION = "testing", "testing", "us-east-1"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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
    port = _free_port()
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
