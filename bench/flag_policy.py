"""Issue 11's flagged-photo policy, measured: propose re-run under each `thresholds.flagged` and judged.

    .venv/bin/python bench/flag_policy.py WORLD RUN [include exclude both]

RUN is a curated run of WORLD's pool (bench/discovery.py leaves them under .cache/bench/discovery).
Each policy gets a copy of RUN (shards linked, not copied), `curate --stages propose`, and
`world judge`'s verdict: pairs found, non-significant classes, false positives, misses.
"""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curation.world.judge import judge  # noqa: E402
from pipeline.cli import main as cli  # noqa: E402


def main() -> int:
    world, run = Path(sys.argv[1]), Path(sys.argv[2]).resolve()
    scratch = Path(tempfile.mkdtemp(prefix="flag-policy-"))
    for policy in sys.argv[3:] or ["include", "exclude", "both"]:
        dst = scratch / policy
        shutil.copytree(run, dst, ignore=shutil.ignore_patterns("shards", "report", "release"))
        os.symlink(run / "shards", dst / "shards")
        cfg = yaml.safe_load((dst / "config.yaml").read_text())
        cfg.setdefault("thresholds", {})["flagged"] = policy
        (dst / "config.yaml").write_text(yaml.safe_dump(cfg))
        with contextlib.redirect_stdout(io.StringIO()):
            assert cli(["curate", str(dst), "--stages", "propose"]) == 0
        v = judge(world, dst)
        misses = [c for c, x in v["classes"].items() if x["significant"] and not x["correct"]]
        print(f"{policy}: found {v['found']}/{v['significant']}, non-significant {v['non_significant']}, "
              f"false positives {v['false_positives'] or 'none'}, misses {misses or 'none'}")
    shutil.rmtree(scratch)
    return 0


if __name__ == "__main__":
    sys.exit(main())
