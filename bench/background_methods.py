"""Issue 11 item 6: what each background-assignment choice does, on bench/discovery.py's acceptance runs.

    .venv/bin/python bench/background_methods.py small-few-captions-seed105,small-independent-seed107 zero-shot hybrid cluster zero-shot/both

Each METHOD[/PROMPTS] gets a copy of the run (shards linked), `curate --stages backgrounds,propose`
with `background_assignment.method` (and `.prompts`) set, and `world judge`'s verdict.
"""
import contextlib, io, os, shutil, sys, tempfile, time
from pathlib import Path
import yaml
sys.path.insert(0, ".")
from curation.world.judge import judge
from pipeline.cli import main as cli
scratch = Path(tempfile.mkdtemp(prefix="bgm-"))
runs = sys.argv[1].split(",")
for name in runs:
    run = Path(f".cache/bench/discovery/acceptance/{name}-run").resolve(); world = run.with_name(name)
    for method in sys.argv[2:]:
        m, _, prompts = method.partition("/")
        dst = scratch / f"{name}-{method.replace('/', '_')}"
        shutil.copytree(run, dst, ignore=shutil.ignore_patterns("shards", "report", "release", "annotation", "groups", "proposals.parquet", "group_stats.parquet"))
        os.symlink(run / "shards", dst / "shards")
        cfg = yaml.safe_load((dst / "config.yaml").read_text())
        cfg["background_assignment"]["method"] = m
        if prompts: cfg["background_assignment"]["prompts"] = prompts
        (dst / "config.yaml").write_text(yaml.safe_dump(cfg))
        t = time.time()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            assert cli(["curate", str(dst), "--stages", "backgrounds,propose"]) == 0
        v = judge(world, dst)
        misses = [c for c, x in v["classes"].items() if x["significant"] and not x["correct"]]
        print(f"{name[6:]:24} {method:16}: found {v['found']}/{v['significant']}, bg acc {v['background_accuracy']:.3f}, FP {v['false_positives'] or '-'}, unconf {v['unconfirmed'] or '-'}, undec {v['undecided'] or '-'} misses {misses or '-'} ({time.time()-t:.0f}s)", flush=True)
        shutil.rmtree(dst)
