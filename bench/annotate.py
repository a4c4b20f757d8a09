"""Benchmark: push 5,000 tasks to a local Label Studio and pull 5,000 annotations back.

Starts its own server (own data dir, free port), builds a run of ~5,000 photos to verify, then
times, in one process run: the first push (selection, image extraction, batched imports), a
second push (idempotent, nothing to add), creating one annotation per task through the API (as an
annotator would, not a goal), and the pull (export, aggregation, writes). Goals: push ≤ 60 s,
pull ≤ 30 s. Usage: .venv/bin/python bench/annotate.py [--tasks 5000] [--keep]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from annotation import client as lsclient  # noqa: E402
from annotation import config as lsconfig  # noqa: E402
from annotation import pull, server, sync  # noqa: E402
from curation import config  # noqa: E402
from tests.support.label_studio import free_port, make_run  # noqa: E402

GOALS = {"push": 60.0, "pull": 30.0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=5000)
    ap.add_argument("--keep", action="store_true", help="keep the temp folder (server data, run)")
    args = ap.parse_args()
    base = Path(tempfile.mkdtemp(prefix="bench-annotate-"))
    os.environ["COUNTERANIMAL_HOME"] = str(base / "home")
    for k in ("LABEL_STUDIO_API_KEY", "LABEL_STUDIO_URL", "LABEL_STUDIO_TOKEN_FILE"):
        os.environ.pop(k, None)
    per_group = max(1, round((args.tasks - 3) / 6))     # 3 classes x (common + counter) + 1 flagged each
    t = time.monotonic()
    run = make_run(base / "run", per_group=per_group, overlap=1, calibration_share=0.0, gold=False,
                   shard_size=1000, batch_size=500)
    print(f"setup: run with {3 * (4 * per_group + 1)} photos built in {time.monotonic() - t:.1f} s")
    t = time.monotonic()
    state = server.start(port=free_port(), data_dir=base / "data", files_root=base)
    print(f"setup: label-studio up at {state.url} in {time.monotonic() - t:.1f} s")
    times = {}
    try:
        cfg = config.load(run)
        conn = lsclient.connect(retries=cfg.annotation.retries, backoff=cfg.annotation.backoff)
        t = time.monotonic()
        first = sync.push(run, cfg, conn, say=lambda s: None)
        times["push"] = time.monotonic() - t
        t = time.monotonic()
        second = sync.push(run, cfg, conn, say=lambda s: None)
        times["push_again"] = time.monotonic() - t
        assert first["added"] == first["selected"] and second["added"] == 0, (first, second)
        n = first["selected"]

        ledger = sync.read_ledger(run).to_pylist()
        ls = conn.client()
        t = time.monotonic()

        def annotate(task):
            ls.annotations.create(id=task["task_id"], result=lsconfig.annotation_result(
                task["model_background"], "yes"), lead_time=1.0)

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(annotate, ledger))
        times["annotate_api"] = time.monotonic() - t

        t = time.monotonic()
        summary = pull.pull(run, cfg, conn, say=lambda s: None)
        times["pull"] = time.monotonic() - t
        assert summary["annotations"] == n, summary
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(f"\nmachine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, label-studio {server.LABEL_STUDIO_VERSION} (sqlite)")
    print(f"{'step':<34} {'seconds':>8} {'per item':>10} {'goal':>6} {'time/goal':>10}")
    for step, label in [("push", f"push {n} tasks (extract+import)"), ("push_again", "push again (no-op)"),
                        ("annotate_api", f"create {n} annotations (API x4)"), ("pull", f"pull {n} annotations")]:
        goal = GOALS.get(step)
        ratio = f"{times[step] / goal:.2f}" if goal else "-"
        print(f"{label:<34} {times[step]:>8.1f} {1000 * times[step] / n:>8.2f}ms {goal or '-':>6} {ratio:>10}")
    print(f"ratio push-again / push: {times['push_again'] / times['push']:.2f}; "
          f"pull / push: {times['pull'] / times['push']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
