"""`make demo`: the whole curation DAG on the planted world, offline, as a user would run it.

    counteranimal world build demo-run/world        real animal cut-outs on real background photos
    counteranimal world train demo-run/world        a small CLIP learns the planted shortcut; the oracle
    (serve demo-run/world/pool on 127.0.0.1)        the candidate pool, shaped like a web crawl
    counteranimal curate demo-run/run               sources → fetch → clean → score → backgrounds → propose
    counteranimal report demo-run/run --truth …     the report, with the background confusion

The world and its trained model are reused when they already exist (a second `make demo` only
re-curates). Ends with how the proposals compare to the oracle, and where everything is.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from curation import atomic, config
from pipeline import cli

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo-run"
WORLD, RUN = DEMO / "world", DEMO / "run"
SIZE, SEED = "default", 0


def _step(argv: list[str]) -> None:
    print(f"\n$ counteranimal {' '.join(argv)}", flush=True)
    code = cli.main(argv)
    if code != 0:
        raise SystemExit(code)


def main() -> int:
    from curation.world import train
    from curation.world.judge import judge
    from curation.world.run_config import run_config
    from pipeline.imageserver import ImageServer

    _drop_outdated_world()
    _step(["world", "build", str(WORLD), "--size", SIZE, "--seed", str(SEED)])
    model = train.TrainSettings().model
    checkpoint = train.checkpoint_path(WORLD, model)
    if checkpoint.is_file() and (WORLD / "oracle.json").is_file():
        print(f"\ndemo: reusing the trained reference model {checkpoint}")
    else:
        _step(["world", "train", str(WORLD)])

    shutil.rmtree(RUN, ignore_errors=True)
    cfg = run_config(WORLD, model, checkpoint, name="demo")
    atomic.write_text(RUN / "config.yaml", "# counteranimal demo run (written by pipeline/demo.py)\n" + config.dump(cfg))
    with ImageServer(WORLD / "pool") as server:
        from curation.world.candidates import write_candidate_urls

        write_candidate_urls(WORLD, server.base, RUN / "urls.csv")
        print(f"\ndemo: serving the candidate pool ({WORLD / 'pool'}) on {server.base}")
        _step(["curate", str(RUN)])
    _step(["report", str(RUN), "--truth", str(WORLD / "ground_truth.parquet")])

    verdict = judge(WORLD, RUN, cfg.thresholds.min_accuracy_range)
    print(f"\ndemo: against the oracle: {verdict['found']} of {verdict['significant']} classes with a real "
          f"shortcut found with the oracle's pair; false positives: {verdict['false_positives'] or 'none'}; "
          f"background assignment accuracy {verdict['background_accuracy']:.1%}.")
    print(f"\ndemo: done. Open {RUN / 'report' / 'index.html'} in a browser.\n"
          f"  {WORLD}/      the planted world: pool/, grid/, train/, ground_truth.parquet, oracle.json, model/\n"
          f"  {RUN}/        the run: candidates/, shards/, samples/, scores/, groups/, proposals.parquet, manifest.json\n"
          f"Next, to verify by hand: `counteranimal label-studio start`, then "
          f"`counteranimal annotate push {RUN.relative_to(ROOT)}`.")
    return 0


def _drop_outdated_world() -> None:
    """A demo world built by an older version (other world settings) is rebuilt, model included."""
    from curation.world import generate, spec

    if generate.built_with_other_settings(WORLD, spec.preset(SIZE, seed=SEED)):
        print(f"demo: {WORLD} was built with other world settings; building it anew")
        shutil.rmtree(WORLD)


if __name__ == "__main__":
    sys.exit(main())
