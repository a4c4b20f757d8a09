"""`make demo`: the whole journey on the planted world, offline, as a user would run it.

    counteranimal world build demo-run/world         real animal cut-outs on real background photos
    counteranimal world train demo-run/world         a small CLIP learns the planted shortcut; the oracle
    counteranimal world train … --name scene …       a second model, trained differently (balanced, scene captions)
    (serve demo-run/world/pool on 127.0.0.1)         the candidate pool, shaped like a web crawl
    counteranimal curate demo-run/run                sources → fetch → clean → score → backgrounds → propose
    counteranimal label-studio start                 a local Label Studio on 127.0.0.1
    counteranimal annotate push|simulate|pull …      rounds of SIMULATED annotators through its API
    counteranimal release demo-run/run               verified pairs → WebDataset shards, card, checksums
    (serve the release on 127.0.0.1)
    counteranimal download URL demo-run/download     parallel, resumable, every checksum verified
    counteranimal evaluate demo-run/download/…       both models: common, counter, drop per class
    counteranimal report demo-run/run --truth …      the report, with the background confusion

The world and its trained models are reused when they already exist (a second `make demo`
re-curates and re-annotates). Ends with how the pairs compare to the oracle, and where to look.
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
DOWNLOAD, EVAL = DEMO / "download", DEMO / "evaluation"
SIZE, SEED = "default", 0
ANNOTATION_BUDGET = 1800      # photos sent to annotators in all (~35% of the demo pool's clean photos)
OTHER_MODEL = "scene"          # the second model: trained balanced, every caption naming the scene


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
    other = checkpoint.with_name(f"{OTHER_MODEL}.pt")
    if other.is_file():
        print(f"\ndemo: reusing the second model {other}")
    else:
        _step(["world", "train", str(WORLD), "--name", OTHER_MODEL, "--balanced", "--scene-caption-share", "1.0"])

    shutil.rmtree(RUN, ignore_errors=True)
    cfg = run_config(WORLD, model, checkpoint, name="demo")
    # The human step's cap: a third of the pool's photos (labelling every clean photo is the
    # alternative; bench/annotate.py measures what each budget buys).
    cfg.annotation.budget = ANNOTATION_BUDGET
    atomic.write_text(RUN / "config.yaml", "# counteranimal demo run (written by pipeline/demo.py)\n" + config.dump(cfg))
    with ImageServer(WORLD / "pool") as server:
        from curation.world.candidates import write_candidate_urls

        write_candidate_urls(WORLD, server.base, RUN / "urls.csv")
        print(f"\ndemo: serving the candidate pool ({WORLD / 'pool'}) on {server.base}")
        _step(["curate", str(RUN)])

    verdict = judge(WORLD, RUN, cfg.thresholds.min_accuracy_range)
    model_line = _judged("model-only pairs", verdict)
    _annotate()
    human = judge(WORLD, RUN, cfg.thresholds.min_accuracy_range, source="human")
    human_line = _judged("verified pairs (simulated annotators)", human)

    _step(["release", str(RUN), "--name", "demo", "--version", "1.0"])
    release = RUN / "release" / "demo-1.0"
    shutil.rmtree(DOWNLOAD, ignore_errors=True)
    from pipeline.fileserver import FileServer

    with FileServer(release).start() as files:
        print(f"\ndemo: serving the release ({release}) on {files.base}")
        _step(["download", files.base, str(DOWNLOAD / "demo-1.0")])
    _step(["evaluate", str(DOWNLOAD / "demo-1.0"), "--model", model, "--pretrained", str(checkpoint),
           "--model", model, "--pretrained", str(other), "--out", str(EVAL), "--bootstrap", "200"])
    _step(["report", str(RUN), "--truth", str(WORLD / "ground_truth.parquet")])

    print(f"\ndemo: against the oracle:\n  {model_line}\n  {human_line}")
    print(f"\ndemo: done. Open {RUN / 'report' / 'index.html'} in a browser.\n"
          f"  {WORLD}/      the planted world: pool/, grid/, train/, ground_truth.parquet, oracle.json, model/\n"
          f"  {RUN}/        the run: candidates/, shards/, samples/, scores/, groups/, proposals.parquet,\n"
          f"                annotation/, release/demo-1.0/ (shards, card README.md, croissant.json), manifest.json\n"
          f"  {EVAL}/       summary.csv, per_class.csv, results.json, effective_robustness.png/.svg\n"
          f"The labels above came from SIMULATED annotators. To label by hand instead: "
          f"`counteranimal label-studio start`, then `counteranimal annotate push {RUN.relative_to(ROOT)}`, "
          f"label in the browser, `counteranimal annotate pull {RUN.relative_to(ROOT)}`; repeat push/pull "
          f"until `annotate status` says every class is settled.")
    return 0


def _annotate() -> None:
    """Rounds of push → simulated labels → pull on a local Label Studio, until every class settles."""
    from annotation import server

    state = server.read_state()
    started_here = state is None or not server.responding(state.url)
    if started_here:
        _step(["label-studio", "start"])
    try:
        _step(["annotate", "simulate", str(RUN), "--truth", str(WORLD / "ground_truth.parquet"),
               "--error-rate", "0.1", "--annotators", "3", "--loop"])
        _step(["annotate", "status", str(RUN)])
    finally:
        if started_here:
            _step(["label-studio", "stop"])


def _judged(what: str, v: dict) -> str:
    return (f"{what}: {v['found']} of {v['significant']} classes with a real shortcut found with the oracle's "
            f"pair; false positives: {', '.join(v['false_positives']) or 'none'} "
            f"(of {v['non_significant']} classes without one)")


def _drop_outdated_world() -> None:
    """A demo world built by an older version (other world settings) is rebuilt, model included."""
    from curation.world import generate, spec

    if generate.built_with_other_settings(WORLD, spec.preset(SIZE, seed=SEED)):
        print(f"demo: {WORLD} was built with other world settings; building it anew")
        shutil.rmtree(WORLD)


if __name__ == "__main__":
    sys.exit(main())
