"""`make demo`: the whole journey on the planted world, offline, as a user would run it.

    counteranimal world build demo-run/world         real animal cut-outs on real background photos
    counteranimal world train demo-run/world         a small CLIP learns the planted shortcut; the oracle
    counteranimal world train … --name scene …       a second model, trained differently (balanced, scene captions)
    (serve demo-run/world/pool on 127.0.0.1)         the candidate pool, shaped like a web crawl
    counteranimal curate demo-run/run                sources → fetch → clean → score → backgrounds → propose
    counteranimal label-studio start                 a local Label Studio on 127.0.0.1
    counteranimal annotate simulate --loop …         rounds of push → SIMULATED annotators → pull, through its API
    counteranimal release demo-run/run               verified pairs → WebDataset shards, card, checksums
    (serve the release on 127.0.0.1)
    counteranimal download URL demo-run/download     parallel, resumable, every checksum verified
    counteranimal evaluate demo-run/download/…       both models: common, counter, drop per class
    counteranimal report demo-run/run --truth …      the report, with the background confusion

The world is the small size with 6 of its classes (4 biased, 2 controls): it builds and trains in
about two minutes, and its active loop settles in about 1,500 simulated annotations, which a
Label Studio on 2 cores creates in minutes (the default world's 5,400 took 17). Two things run
beside the main line, since neither needs what it is waiting for: Label Studio starts while the
world is built, and the second model trains while the pool is curated and annotated.

The world and its trained models are reused when they already exist (a second `make demo`
re-curates and re-annotates, in a fresh Label Studio project). Ends with how the pairs compare
to the oracle, the time each step took, and where to look.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

from curation import atomic, config
from pipeline import cli

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "demo-run"
WORLD, RUN = DEMO / "world", DEMO / "run"
DOWNLOAD, EVAL = DEMO / "download", DEMO / "evaluation"
SIZE, SEED = "small", 0
WORLD_OPTIONS = ["--n-classes", "6", "--n-control", "2"]    # the small size's first 6 classes, 2 of them controls
WORLD_OVERRIDES = {"n_classes": 6, "n_control": 2}          # the same, for the stale-world check
MIN_GROUP_SIZE = 8            # the small pool has ~10 photos on each rarer background (as in the tests)
ANNOTATION_BUDGET = 600       # photos sent to annotators at most; the loop settles below it on this world
OTHER_MODEL = "scene"          # the second model: trained balanced, every caption naming the scene

TIMES: list[tuple[str, float]] = []     # (step, seconds), in the order they finished
CHILDREN: list["_BackgroundTrain"] = []  # background processes, stopped if the demo fails


def _step(argv: list[str], label: str | None = None) -> None:
    print(f"\n$ counteranimal {' '.join(argv)}", flush=True)
    start = time.monotonic()
    code = cli.main(argv)
    words = [a for a in argv[:2] if not any(c in a for c in "/:.")]     # "world build", "curate"
    TIMES.append((label or " ".join(words), time.monotonic() - start))
    if code != 0:
        raise SystemExit(code)


def main() -> int:
    began = time.monotonic()
    label_studio = _BackgroundLabelStudio()
    try:
        _journey(label_studio, began)
    finally:
        # On a failure too: nothing started here is left running.
        label_studio.stop()
        for child in CHILDREN:
            child.stop()
    return 0


def _journey(label_studio: "_BackgroundLabelStudio", began: float) -> None:
    from curation.world import train
    from curation.world.judge import judge
    from curation.world.run_config import run_config
    from pipeline.imageserver import ImageServer

    _drop_outdated_world()
    _step(["world", "build", str(WORLD), "--size", SIZE, *WORLD_OPTIONS, "--seed", str(SEED)])
    model = train.TrainSettings().model
    checkpoint = train.checkpoint_path(WORLD, model)
    if checkpoint.is_file() and (WORLD / "oracle.json").is_file():
        print(f"\ndemo: reusing the trained reference model {checkpoint}")
    else:
        _step(["world", "train", str(WORLD)], "world train (reference)")
    other = checkpoint.with_name(f"{OTHER_MODEL}.pt")
    second = None if other.is_file() else _BackgroundTrain(
        ["world", "train", str(WORLD), "--name", OTHER_MODEL, "--balanced", "--scene-caption-share", "1.0"])
    if second is None:
        print(f"\ndemo: reusing the second model {other}")

    shutil.rmtree(RUN, ignore_errors=True)
    cfg = run_config(WORLD, model, checkpoint, name="demo", thresholds={"min_group_size": MIN_GROUP_SIZE})
    # The human step's cap (labelling every clean photo is the alternative; bench/annotate.py
    # measures what each budget buys).
    cfg.annotation.budget = ANNOTATION_BUDGET
    atomic.write_text(RUN / "config.yaml", "# counteranimal demo run (written by pipeline/demo.py)\n" + config.dump(cfg))
    with ImageServer(WORLD / "pool") as server:
        from curation.world.candidates import write_candidate_urls

        write_candidate_urls(WORLD, server.base, RUN / "urls.csv")
        print(f"\ndemo: serving the candidate pool ({WORLD / 'pool'}) on {server.base}")
        _step(["curate", str(RUN)])

    verdict = judge(WORLD, RUN, cfg.thresholds.min_accuracy_range)
    model_line = _judged("model-only pairs", verdict)
    _annotate(cfg, label_studio)
    human = judge(WORLD, RUN, cfg.thresholds.min_accuracy_range, source="human")
    human_line = _judged("verified pairs (simulated annotators)", human)

    _step(["release", str(RUN), "--name", "demo", "--version", "1.0"])
    release = RUN / "release" / "demo-1.0"
    shutil.rmtree(DOWNLOAD, ignore_errors=True)
    from pipeline.fileserver import FileServer

    with FileServer(release).start() as files:
        print(f"\ndemo: serving the release ({release}) on {files.base}")
        _step(["download", files.base, str(DOWNLOAD / "demo-1.0")])
    if second is not None:
        second.wait()
    _step(["evaluate", str(DOWNLOAD / "demo-1.0"), "--model", model, "--pretrained", str(checkpoint),
           "--model", model, "--pretrained", str(other), "--out", str(EVAL), "--bootstrap", "200"])
    _step(["report", str(RUN), "--truth", str(WORLD / "ground_truth.parquet")])

    total = time.monotonic() - began
    print(f"\ndemo: against the oracle:\n  {model_line}\n  {human_line}")
    _print_times(total)
    print(f"\ndemo: done. Open {RUN / 'report' / 'index.html'} in a browser.\n"
          f"  {WORLD}/      the planted world: pool/, grid/, train/, ground_truth.parquet, oracle.json, model/\n"
          f"  {RUN}/        the run: candidates/, shards/, samples/, scores/, groups/, proposals.parquet,\n"
          f"                annotation/, release/demo-1.0/ (shards, card README.md, croissant.json), manifest.json\n"
          f"  {EVAL}/       summary.csv, per_class.csv, results.json, effective_robustness.png/.svg\n"
          f"  {DEMO / 'timings.json'}   the seconds above\n"
          f"The labels above came from SIMULATED annotators. To label by hand instead: "
          f"`counteranimal label-studio start`, then `counteranimal annotate push {RUN.relative_to(ROOT)}`, "
          f"label in the browser, `counteranimal annotate pull {RUN.relative_to(ROOT)}`; repeat push/pull "
          f"until `annotate status` says every class is settled.")


class _BackgroundLabelStudio:
    """`label-studio start` in a thread from the demo's first second: its first start migrates a fresh
    database (a minute or more on 2 cores) while the world is built. Reuses a server already running."""

    def __init__(self) -> None:
        from annotation import server

        state = server.read_state()
        self.started_here = state is None or not server.responding(state.url)
        self.error: BaseException | None = None
        self.seconds = 0.0
        self.thread = None
        if self.started_here:
            print("\n$ counteranimal label-studio start   (in the background, while the world is built)", flush=True)
            self.thread = threading.Thread(target=self._start, daemon=True)
            self.thread.start()

    def _start(self) -> None:
        from annotation import server

        start = time.monotonic()
        try:
            server.start()
        except BaseException as exc:     # re-raised in the main thread by ready()
            self.error = exc
        self.seconds = time.monotonic() - start

    def ready(self) -> None:
        if self.thread is None:
            return
        waited = time.monotonic()
        self.thread.join()
        TIMES.append(("label-studio start (background)", self.seconds))
        if self.error is not None:
            raise self.error
        from annotation import server

        state = server.read_state()
        print(f"\ndemo: Label Studio answers on {state.url} (started in {self.seconds:.0f} s in the background; "
              f"waited {time.monotonic() - waited:.0f} s for it here)", flush=True)

    def stop(self) -> None:
        if self.started_here:
            if self.thread is not None:
                self.thread.join()
            self.started_here = False
            _step(["label-studio", "stop"])


class _BackgroundTrain:
    """A `counteranimal world train` in a child process (one torch thread), its output in a log file: the
    second model is needed only by evaluate, so it trains on the core the main line leaves idle."""

    def __init__(self, argv: list[str]) -> None:
        self.argv = argv
        self.log = DEMO / "scene-train.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        print(f"\n$ counteranimal {' '.join(argv)}   (in the background; output in {self.log})", flush=True)
        self.start = time.monotonic()
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *argv], cwd=ROOT, stdout=out,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        CHILDREN.append(self)
        self.seconds = 0.0
        # A watcher notes when it ends: wait() is called only once evaluate needs the model.
        self.watcher = threading.Thread(target=self._watch, daemon=True)
        self.watcher.start()

    def _watch(self) -> None:
        self.proc.wait()
        self.seconds = time.monotonic() - self.start

    def wait(self) -> None:
        waited = time.monotonic()
        code = self.proc.wait()
        self.watcher.join()
        TIMES.append(("world train (second model, background)", self.seconds))
        if code != 0:
            print(self.log.read_text()[-3000:], file=sys.stderr)
            print(f"demo: `counteranimal {' '.join(self.argv)}` failed (exit {code}); its log: {self.log}",
                  file=sys.stderr)
            raise SystemExit(code)
        print(f"\ndemo: the second model is trained (waited {time.monotonic() - waited:.0f} s for it here; "
              f"log: {self.log})", flush=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait()


def _annotate(cfg, label_studio: _BackgroundLabelStudio) -> None:
    """Rounds of push → simulated labels → pull on a local Label Studio, until every class settles."""
    label_studio.ready()
    _drop_old_project(cfg)
    _step(["annotate", "simulate", str(RUN), "--truth", str(WORLD / "ground_truth.parquet"),
           "--error-rate", "0.1", "--annotators", "3", "--loop"], "annotate simulate --loop")
    _step(["annotate", "status", str(RUN)])
    label_studio.stop()


def _drop_old_project(cfg) -> None:
    """A previous demo's Label Studio project (same run folder, so the same title) is deleted: the new
    run's tasks are pushed and labelled afresh instead of resuming the old run's answers."""
    from annotation import client, sync

    conn = client.connect(cfg.annotation.url, cfg.annotation.files_root)
    api = conn.client()
    title = sync.project_title(RUN, cfg)
    for p in conn.call("list projects", lambda: list(api.projects.list(title=title))):
        if p.title == title:
            print(f"demo: deleting the previous demo's Label Studio project {p.id} ({title})")
            conn.call("delete the previous demo project", lambda: api.projects.delete(id=p.id))


def _print_times(total: float) -> None:
    print("\ndemo: seconds per step (background steps overlap the others):")
    for what, s in TIMES:
        print(f"  {what:<42} {s:7.1f}")
    print(f"  {'total (wall clock)':<42} {total:7.1f}")
    atomic.write_text(DEMO / "timings.json", json.dumps(
        {"steps": [{"step": w, "seconds": round(s, 1)} for w, s in TIMES], "total_seconds": round(total, 1),
         "world": {"size": SIZE, "seed": SEED, **WORLD_OVERRIDES}, "annotation_budget": ANNOTATION_BUDGET},
        indent=2) + "\n")


def _judged(what: str, v: dict) -> str:
    return (f"{what}: {v['found']} of {v['significant']} classes with a real shortcut found with the oracle's "
            f"pair; false positives: {', '.join(v['false_positives']) or 'none'} "
            f"(of {v['non_significant']} classes without one)")


def _drop_outdated_world() -> None:
    """A demo world built by an older version (other world settings) is rebuilt, model included."""
    from curation.world import generate, spec

    if generate.built_with_other_settings(WORLD, spec.preset(SIZE, seed=SEED, **WORLD_OVERRIDES)):
        print(f"demo: {WORLD} was built with other world settings; building it anew")
        shutil.rmtree(WORLD)


if __name__ == "__main__":
    sys.exit(main())
