"""The same DAG on Beam's portable runner, as a cluster runs it: a job service and an external
worker pool in their own processes (DESIGN.md, "Real components"), started here on 127.0.0.1 and
stopped by PID. Outputs must equal the in-process DirectRunner's, byte for byte in content.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from pipeline.cli import main
from tests.support.curated_world import curated_world  # noqa: F401  (pytest fixture)
from tests.support.object_store import RELEASE, bucket_runs, files, s3_server, tables  # noqa: F401  (fixtures)
from tests.support.world import trained_world  # noqa: F401  (pytest fixture)

LATER = ["samples", "clean", "scores", "groups", "proposals.parquet", "group_stats.parquet", "attributes.parquet"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_listening(port: int, proc: subprocess.Popen, log: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()[-2000:]
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"nothing listens on {port} after {seconds} s: {log.read_text()[-2000:]}")


@pytest.fixture(scope="module")
def portable(tmp_path_factory):
    """Beam arguments for a job service + external worker pool running in their own processes."""
    yield from _job_service_and_pool(tmp_path_factory.mktemp("portable"))


@pytest.fixture(scope="module")
def portable_elsewhere(tmp_path_factory):
    """The same, with the workers in a folder of their own (their cwd) and their own temp folder, and no
    AWS_* variables: whatever they read or write of the run must come through the run's URL and the
    Beam options, as on a cluster."""
    logs, cwd, tmp = (tmp_path_factory.mktemp(n) for n in ("portable-elsewhere", "worker-cwd", "worker-tmp"))
    yield from _job_service_and_pool(logs, cwd=cwd, env={"TMPDIR": str(tmp)}, drop=("AWS_",))


def _job_service_and_pool(logs: Path, cwd: Path | None = None, env: dict | None = None, drop: tuple = ()):
    env = {**{k: v for k, v in os.environ.items() if not any(k.startswith(d) for d in drop)}, **(env or {}),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    if cwd is not None:    # the project itself must still import there, as from an installed package
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[1]),
                                                          os.environ.get("PYTHONPATH")]))
    job_port, pool_port = _free_port(), _free_port()
    commands = {"job": ["apache_beam.runners.portability.local_job_service_main", f"--port={job_port}"],
                "pool": ["apache_beam.runners.worker.worker_pool_main", f"--service_port={pool_port}"]}
    procs = {}
    try:
        for name, (module, *args) in commands.items():
            with open(logs / f"{name}.log", "w") as log:
                procs[name] = subprocess.Popen([sys.executable, "-m", module, *args], stdout=log, stderr=log,
                                               env=env, cwd=cwd, start_new_session=True)
        _wait_listening(job_port, procs["job"], logs / "job.log")
        _wait_listening(pool_port, procs["pool"], logs / "pool.log")
        yield ["--runner=PortableRunner", f"--job_endpoint=localhost:{job_port}", "--environment_type=EXTERNAL",
               f"--environment_config=localhost:{pool_port}"]
    finally:
        for proc in procs.values():
            os.killpg(proc.pid, signal.SIGTERM)      # the pool's workers are in its process group
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _tables(run: Path) -> dict[str, object]:
    return {str(p.relative_to(run)): pq.read_table(p) for p in sorted(run.rglob("*.parquet"))
            if not p.name.startswith(".")}


def test_clean_to_propose_on_the_portable_runner_equals_in_process(curated_world, portable, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(curated_world.run, run, ignore=shutil.ignore_patterns("report"))
    for name in LATER[1:]:                           # everything after fetch is redone on the portable runner
        path = run / name
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    assert main(["curate", str(run), "--stages", "clean,score,backgrounds,propose", "--", *portable]) == 0
    want, got = _tables(curated_world.run), _tables(run)
    assert sorted(got) == sorted(want)
    different = [name for name in want if not got[name].equals(want[name])]
    assert different == []


def test_sources_and_fetch_on_the_portable_runner_equal_in_process(curated_world, portable, tmp_path):
    from curation import atomic
    from pipeline.imageserver import ImageServer
    from tests.support.fetching import shard_contents

    runs = {"direct": tmp_path / "direct", "portable": tmp_path / "portable"}
    with ImageServer(curated_world.world.pool_dir) as server:      # one server: uids hash the URLs
        for name, run in runs.items():
            atomic.write_text(run / "config.yaml", (curated_world.run / "config.yaml").read_text())
            curated_world.world.candidate_urls(server.base, run / "urls.csv")
            beam = portable if name == "portable" else []
            assert main(["curate", str(run), "--stages", "sources,fetch", "--", *beam]) == 0
    direct, ported = (_tables(r) for r in runs.values())
    assert sorted(ported) == sorted(direct)
    for name, table in direct.items():
        if name.startswith("shards/"):   # img2dataset's own per-shard files list rows as downloads finish
            table, ported[name] = (t.sort_by("key") for t in (table, ported[name]))
        assert ported[name].equals(table), name
    assert shard_contents(runs["portable"]) == shard_contents(runs["direct"])


def test_curate_and_release_in_a_bucket_on_the_portable_runner_equal_local_disk(bucket_runs, portable_elsewhere,
                                                                                 tmp_path, monkeypatch):
    """RUN in a moto S3 bucket, workers with another cwd and temp folder: the same artifacts, proposals
    and byte-identical release shards as the DirectRunner run on local disk (tests/support/object_store.py)."""
    monkeypatch.chdir(tmp_path)                  # the launcher's folder: nothing of the run may land there
    run = bucket_runs.new_run("portable")
    beam = [*portable_elsewhere, *bucket_runs.server.beam_args]
    assert main(["curate", str(run), "--", *beam]) == 0
    assert main(["release", str(run), *RELEASE, "--", *beam]) == 0
    want, got = tables(bucket_runs.local), tables(run)
    assert sorted(got) == sorted(want)
    assert [name for name in want if not got[name].equals(want[name])] == []      # proposals.parquet among them
    released, local = files(run / "release" / "world-1"), files(bucket_runs.local / "release" / "world-1")
    shards = [rel for rel in local if rel.endswith(".tar")]
    assert len(shards) >= 8 and sorted(released) == sorted(local)
    assert [rel for rel in shards if released[rel] != local[rel]] == []
    assert os.listdir(tmp_path) == []


@pytest.fixture(scope="module")
def portable_without_model_configs(tmp_path_factory):
    """Workers whose environment lacks COUNTERANIMAL_MODEL_CONFIG_DIRS, as on a cluster's machines."""
    from curation.clip_models import EXTRA_CONFIG_DIRS_ENV

    yield from _job_service_and_pool(tmp_path_factory.mktemp("portable-no-configs"), drop=(EXTRA_CONFIG_DIRS_ENV,))


def test_a_model_config_known_only_to_the_launcher_reaches_the_workers(portable_without_model_configs, tmp_path):
    """The launcher knows ca-test-tiny from COUNTERANIMAL_MODEL_CONFIG_DIRS; the workers do not have the
    variable (nor, on a cluster, the folder): the job carries the config, so the workers check, load and
    score the model."""
    from tests.support.score_run import build_run, tiny_checkpoint

    checkpoint = tiny_checkpoint(tmp_path / "models")
    run = build_run(tmp_path / "run", checkpoint).run
    assert main(["curate", str(run), "--stages", "clean,score", "--", *portable_without_model_configs]) == 0
    ids = [i for f in sorted((run / "scores").glob("*.parquet"))
           for i in pq.read_table(f, columns=["model_id"]).column("model_id").to_pylist()]
    assert len(ids) == 12 and set(ids) == {"tiny"}          # every clean photo scored by the model
