"""Benchmarks of the human step. Two of them:

``timing`` (the default): push 5,000 tasks to a local Label Studio and pull 5,000 annotations back.
``verify``: the active verification loop on curated planted worlds — see verify_main() below.

Starts its own server (own data dir, free port), builds a run of ~5,000 photos to verify, then
times, in one process run: the first push (selection, image extraction, batched imports), a
second push (idempotent, nothing to add), creating one annotation per task through the API (as an
annotator would, not a goal), and the pull (export, aggregation, writes). Goals: push ≤ 60 s,
pull ≤ 30 s. Usage: .venv/bin/python bench/annotate.py [timing] [--tasks 5000] [--keep]
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
    if len(sys.argv) > 1 and sys.argv[1] == "verify":
        return verify_main(sys.argv[2:])
    if len(sys.argv) > 1 and sys.argv[1] == "timing":
        sys.argv.pop(1)
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
                   shard_size=1000, batch_size=500, initial_per_stratum=10**6)   # every photo in round 0
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
                task["model_background"] or "grass", "yes"), lead_time=1.0)

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


# -- verify: the active loop on planted worlds ------------------------------------------------------

VERIFY_DOC = """The active verification loop on curated planted worlds, against the oracle.

    .venv/bin/python bench/annotate.py verify [--worlds small:0 default:0 default:0:few-captions …] [--error-rate 0.1]
        [--annotators 3] [--budget-share 0.4] [--ls-world small:0]
    .venv/bin/python bench/annotate.py verify --tuning       # TUNING: acceptance-size worlds, tuning seeds
    .venv/bin/python bench/annotate.py verify --acceptance   # bench/discovery.py's acceptance worlds

Per world: build and train it (curation/world/reference.ensure_trained, reused when there), curate
its pool (`counteranimal curate`, reused when the run is there), then three strategies side by
side, each with 3 simulated annotators at 10% error (annotation/simulate.answer, the same answers
the `annotate simulate` command gives): "label everything" (every clean photo), "model's pair" (the
old selection: the photos the model put in its kept pairs' two groups) and the active loop
(annotation/loop.py, rounds until every class is settled or the budget is spent). Each strategy's
verified pairs are judged against the oracle as curation/world/judge.py judges the model's
(common and counter right up to oracle ties; a class without a significant oracle drop must not
be kept). The curve is oracle-pair agreement after each round against photos labelled.

These strategy runs vote in-process (no server: 3 × 5,000 annotations through the API take
40 minutes here); --ls-world runs the active loop once more end to end through a real Label
Studio (push, `annotate simulate` as 3 users, pull) and checks it reaches the same pairs.
"""


def _world(root: Path, name: str, seed: int, min_group_size: int | None, variant: str | None = None):
    from curation import atomic
    from curation.world.candidates import write_candidate_urls
    from curation.world.reference import ensure_trained
    from curation.world.run_config import run_config
    from pipeline.cli import main as cli
    from pipeline.imageserver import ImageServer

    tag = f"{name}-{variant}" if variant and variant != "default" else name
    world = root / f"{tag}-seed{seed}"
    _, model, checkpoint = ensure_trained(world, name, seed, variant=variant)
    run = root / f"{tag}-seed{seed}-run"
    if (run / "proposals.parquet").exists():
        try:
            config.load(run)
        except Exception as exc:      # a run cached under an older config format: curate it again
            print(f"re-curating {run}: {exc}")
            shutil.rmtree(run)
    if not (run / "proposals.parquet").exists():
        thresholds = {"min_group_size": min_group_size} if min_group_size else {}
        cfg = run_config(world, model, checkpoint, thresholds=thresholds)
        atomic.write_text(run / "config.yaml", config.dump(cfg))
        with ImageServer(world / "pool") as srv:
            write_candidate_urls(world, srv.base, run / "urls.csv")
            assert cli(["curate", str(run)]) == 0
    return world, run


# Worlds the loop's settings were chosen on: the acceptance worlds' size and variants, tuning seeds
# only (bench/discovery.py TUNING_SEEDS), built and curated the way bench/discovery.py builds its own.
TUNING = (("emergent", 1), ("few-captions", 1), ("shared-common", 2), ("default", 1), ("null", 2),
          ("pool-common-0.7", 1), ("independent", 2), ("emergent", 3))


TUNING_ROOT = Path(__file__).resolve().parents[1] / ".cache" / "bench" / "annotate-tuning"


def _tuning_world(root: Path, variant: str, seed: int) -> tuple[Path, Path]:
    from bench.discovery import ACCEPTANCE_SIZE, TUNING_SEEDS, curate, prepare

    assert seed in TUNING_SEEDS, seed
    world = prepare(root, ACCEPTANCE_SIZE[0], variant, seed, False, **ACCEPTANCE_SIZE[1])
    run = world.with_name(world.name + "-run")
    if not (run / "proposals.parquet").is_file():
        curate(world, run, background=False)
    return world, run


def _acceptance_specs() -> list[str]:
    from bench.discovery import ACCEPTANCE, ACCEPTANCE_SIZE

    return [f"{ACCEPTANCE_SIZE[0]}:{seed}:{variant}" for variant, seed in ACCEPTANCE]


def _acceptance_world(size: str, seed: int, variant: str) -> tuple[Path, Path]:
    """bench/discovery.py's acceptance world and its run (curated there, default thresholds)."""
    from bench.discovery import ROOT, world_dir

    world = world_dir(ROOT / ".cache" / "bench" / "discovery" / "acceptance", size, variant, seed)
    run = world.with_name(world.name + "-run")
    if not (run / "proposals.parquet").is_file():
        raise SystemExit(f"{run} is not curated: run `.venv/bin/python bench/discovery.py --acceptance` first")
    return world, run


class Oracle:
    """The world's oracle pairs and the judge's tie rule (curation/world/judge.py), for any pair."""

    def __init__(self, world: Path, min_range_points: float):
        import pyarrow.parquet as pq
        from curation.world.judge import is_significant
        from curation.world.oracle import read_oracle

        self.classes = read_oracle(world)["classes"]
        self.cells = {(c["class_name"], c["background"]): c for c in pq.read_table(world / "oracle.parquet").to_pylist()}
        self.significant = {c: is_significant(o, min_range_points) for c, o in self.classes.items()}

    def _tied(self, cls, a, b) -> bool:
        if a is None or (cls, a) not in self.cells:
            return False
        x, y = self.cells[(cls, a)], self.cells[(cls, b)]
        return a == b or (x["accuracy_lo"] <= y["accuracy_hi"] and y["accuracy_lo"] <= x["accuracy_hi"])

    def right(self, cls: str, common, counter, kept: bool) -> bool:
        o = self.classes[cls]
        if not self.significant[cls]:
            return not kept
        return kept and self._tied(cls, common, o["planted_common"] or o["oracle_common"]) and \
            self._tied(cls, counter, o["oracle_counter"])

    def score(self, rows: dict[str, dict]) -> dict:
        sig = [c for c in self.classes if self.significant[c]]
        found = sum(self.right(c, rows.get(c, {}).get("common"), rows.get(c, {}).get("counter"),
                               rows.get(c, {}).get("decision") == "kept") for c in sig)
        fp = sorted(c for c in self.classes if not self.significant[c] and rows.get(c, {}).get("decision") == "kept")
        return {"significant": len(sig), "found": found, "false_positives": fp}


def model_pairs(run: Path, cfg) -> dict[str, dict]:
    """class name → the run's model-only proposals row of its first model."""
    import schemas

    return {r["class_name"]: r for r in schemas.read(run / "proposals.parquet", "proposals").to_pylist()
            if r["source"] == "model" and r["model_id"] == cfg.models[0].model_id}


def offline_loop(run: Path, cfg, truth: dict, strategy: str, error_rate: float, annotators: int, seed: int,
                 oracle: Oracle, model_rows: dict[str, dict], prefill_bias: float = 0.0) -> dict:
    """One strategy, rounds of simulated votes in-process; returns the curve and the final judgement."""
    from annotation import loop, simulate, votes
    from annotation import config as lsconfig

    pop = loop.population(run, cfg)
    photos = [p for strata in pop.values() for ps in strata.values() for p in ps]
    vocabulary = lsconfig.vocabulary(cfg)
    ledger: list[dict] = []
    verdict_rows: list[dict] = []
    curve = []
    who = [simulate.email(i) for i in range(1, annotators + 1)]
    done = False
    while True:
        labels = loop.resolved_labels(verdict_rows, list(cfg.backgrounds))
        lv = loop.view(pop, ledger, labels, set(), cfg)
        rows = {c.class_name: c.row for c in lv.classes.values()}
        curve.append((len(ledger), oracle.score(rows)["found"]))
        if strategy == "active":
            batch = [p for p, _ in loop.next_batch(pop, lv, ledger, cfg)]
        elif done:
            batch = []
        elif strategy == "everything":
            batch = photos
        else:   # the old selection: members of the model's kept pairs' two groups
            pairs = {r["class_idx"]: (r["common"], r["counter"]) for r in model_rows.values() if r["decision"] == "kept"}
            batch = [p for p in photos if p.model_background in pairs.get(p.class_idx, ())]
        done = True
        if not batch:
            break
        for p in batch:
            ledger.append({"uid": p.uid, "status": "pushed"})
            shown = p.model_background if cfg.annotation.prefill_background else None
            answers = [simulate.answer(truth.get(p.uid), p.class_name, vocabulary, error_rate, seed, w, p.uid,
                                       shown, prefill_bias) for w in who]
            bg, _ = votes.majority(a["background"] for a in answers)
            cls, _ = votes.majority(a["is_class"] for a in answers)
            verdict_rows.append(dict(uid=p.uid, background=bg, is_class=cls, flags=[],
                                     status="verified" if bg is not None and cls is not None else "tie"))
    states = {}
    for c in lv.classes.values():
        states[c.state] = states.get(c.state, 0) + 1
    return {"labels": len(ledger), "curve": curve, "states": states,
            "rows": {c.class_name: c.row for c in lv.classes.values()}, **oracle.score(rows)}


def ls_loop(run: Path, cfg_updates: dict, truth_path: Path, error_rate: float, annotators: int, seed: int,
            oracle: Oracle, base: Path) -> dict:
    """The active loop end to end through a real Label Studio: push, `annotate simulate`, pull, until
    push adds nothing. The run is copied (its annotation folder fresh) so the strategies stay apart."""
    import yaml
    import schemas
    from annotation import pull as lspull
    from annotation import simulate

    copy = base / "run"
    for part in ("config.yaml", "samples", "groups", "scores", "shards", "candidates", "proposals.parquet"):
        src = run / part
        if src.is_dir():
            shutil.copytree(src, copy / part, ignore=shutil.ignore_patterns("human.parquet"))
        elif src.exists():
            copy.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, copy / part)
    data = yaml.safe_load((copy / "config.yaml").read_text())
    data.setdefault("annotation", {}).update(cfg_updates)
    (copy / "config.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    os.environ["COUNTERANIMAL_HOME"] = str(base / "home")
    for k in ("LABEL_STUDIO_API_KEY", "LABEL_STUDIO_URL", "LABEL_STUDIO_TOKEN_FILE"):
        os.environ.pop(k, None)
    state = server.start(port=free_port(), data_dir=base / "data", files_root=base)
    rounds, started = 0, time.monotonic()
    try:
        cfg = config.load(copy)
        conn = lsclient.connect(retries=cfg.annotation.retries, backoff=cfg.annotation.backoff)
        while True:
            pushed = sync.push(copy, cfg, conn, say=lambda s: None)
            if pushed["added"] == 0 and rounds:
                break
            simulate.simulate(copy, cfg, conn, truth_path, error_rate, annotators, seed=seed,
                              data_dir=state.data_dir, say=lambda s: None)
            summary = lspull.pull(copy, cfg, conn, say=lambda s: None)
            rounds += 1
            print(f"    LS round {rounds}: {summary['sent']} photos sent, {summary['annotations']} simulated "
                  f"annotations, {sum(c['state'] == 'open' for c in summary['classes'])} classes open", flush=True)
    finally:
        server.stop()
    rows = {c["class_name"]: dict(common=c["human_common"], counter=c["human_counter"], decision=c["human_decision"])
            for c in summary["classes"]}
    people = summary.get("agreement") or {}
    return {"labels": summary["sent"], "annotations": summary["annotations"], "rounds": rounds,
            "seconds": time.monotonic() - started, "alpha": {k: v["alpha"] for k, v in people.items()},
            "annotators": schemas.read(copy / "annotation" / "annotators.parquet", "annotators").to_pylist(),
            **oracle.score(rows)}


def verify_main(argv: list[str]) -> int:
    from annotation import simulate

    ap = argparse.ArgumentParser(description=VERIFY_DOC, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--worlds", nargs="+", default=["small:0", "default:0"],
                    help="size:seed[:variant] of each world (variants: curation/world/spec.py VARIANTS)")
    ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1] / ".cache" / "bench" / "annotate"))
    ap.add_argument("--error-rate", type=float, default=0.1)
    ap.add_argument("--annotators", type=int, default=3)
    ap.add_argument("--budget-share", type=float, default=None,
                    help="annotation.budget as a share of the clean photos (default: no budget)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ls-world", default=None, help="size:seed: run the active loop on it through a real Label "
                                                     "Studio too (push, annotate simulate, pull)")
    ap.add_argument("--prefill-bias", type=float, default=None,
                    help="pre-fill the model's background and let annotators take it with this probability")
    ap.add_argument("--initial-per-stratum", type=int, default=None)
    ap.add_argument("--round-size", type=int, default=None)
    ap.add_argument("--acceptance", action="store_true",
                    help="the acceptance worlds of bench/discovery.py (ACCEPTANCE: seeds 101-108 over the variants, "
                         "none a tuning seed), curated by it with the default rule; run that first")
    ap.add_argument("--tuning", action="store_true",
                    help="the TUNING worlds: the acceptance worlds' size and variants on tuning seeds "
                         "(built and curated under .cache/bench/annotate-tuning when missing)")
    ap.add_argument("--curated", nargs="+", metavar="WORLD=RUN",
                    help="worlds and runs curated elsewhere (bench/flat_null.py's, say), as they stand")
    ap.add_argument("--small-group-size", type=int, default=8,
                    help="thresholds.min_group_size for the small world (its rarer groups hold ~10 photos)")
    args = ap.parse_args(argv)
    root = Path(args.root)
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"simulated annotators: {args.annotators} at {args.error_rate:.0%} error (votes in-process)\n")
    table = []
    specs = _acceptance_specs() if args.acceptance else \
        [f"small:{seed}:{variant}" for variant, seed in TUNING] if args.tuning else args.curated or args.worlds
    for spec in specs:
        name, seed, variant = (spec.split(":") + [None, None])[:3]
        if args.curated:
            world, run = (Path(p) for p in spec.split("=", 1))
        elif args.acceptance:
            world, run = _acceptance_world(name, int(seed), variant)
        elif args.tuning:
            world, run = _tuning_world(TUNING_ROOT, variant, int(seed))
        else:
            world, run = _world(root, name, int(seed), args.small_group_size if name == "small" else None, variant)
        cfg = config.load(run)
        oracle = Oracle(world, cfg.thresholds.min_accuracy_range)
        truth = simulate.read_truth(world / "ground_truth.parquet", run)
        model_rows = model_pairs(run, cfg)
        model_score = oracle.score(model_rows)
        results = {}
        updates = {k: v for k, v in (("initial_per_stratum", args.initial_per_stratum),
                                     ("round_size", args.round_size),
                                     ("prefill_background", True if args.prefill_bias else None)) if v is not None}
        if updates:
            cfg = cfg.model_copy(update={"annotation": cfg.annotation.model_copy(update=updates)})
        for strategy in ("everything", "model_pair", "active"):
            c = cfg
            if strategy == "active" and args.budget_share:
                from annotation import loop
                n = sum(len(ps) for s in loop.population(run, cfg).values() for ps in s.values())
                c = cfg.model_copy(update={"annotation": cfg.annotation.model_copy(
                    update={"budget": max(1, round(args.budget_share * n))})})
            t = time.monotonic()
            results[strategy] = offline_loop(run, c, truth, strategy, args.error_rate, args.annotators, args.seed,
                                             oracle, model_rows, args.prefill_bias or 0.0)
            results[strategy]["seconds"] = time.monotonic() - t
        everything = results["everything"]["labels"]
        print(f"world {spec}: {everything} clean photos; model's own pairs {model_score['found']}/"
              f"{model_score['significant']} (false positives {len(model_score['false_positives'])})")
        for strategy, r in results.items():
            print(f"  {strategy:<11} labels {r['labels']:>5} ({r['labels'] / everything:6.1%} of everything), "
                  f"oracle pairs {r['found']}/{r['significant']}, false positives {r['false_positives'] or 'none'}, "
                  f"{r['seconds']:.0f} s")
        a = results["active"]
        print(f"  active states: {a['states']}")
        print("  active curve (labels: oracle pairs right): " + ", ".join(f"{n}: {k}" for n, k in a["curve"]))
        misses = [c for c in oracle.classes if not oracle.right(c, a["rows"].get(c, {}).get("common"),
                  a["rows"].get(c, {}).get("counter"), a["rows"].get(c, {}).get("decision") == "kept")]
        for c in misses:
            r, o = a["rows"].get(c, {}), oracle.classes[c]
            print(f"    miss {c}: verified {r.get('common')} → {r.get('counter')} ({r.get('decision')}); oracle "
                  f"{o['planted_common'] or o['oracle_common']} → {o['oracle_counter']} "
                  f"(significant {oracle.significant[c]}); {r.get('reason')}")
        if args.ls_world == spec:
            base = Path(tempfile.mkdtemp(prefix="bench-verify-ls-"))
            try:
                ls = ls_loop(run, updates, world / "ground_truth.parquet", args.error_rate, args.annotators,
                             args.seed, oracle, base)
            finally:
                shutil.rmtree(base, ignore_errors=True)
            print(f"  through Label Studio: labels {ls['labels']} ({ls['labels'] / everything:.1%}), "
                  f"{ls['annotations']} simulated annotations in {ls['rounds']} rounds, oracle pairs "
                  f"{ls['found']}/{ls['significant']}, false positives {ls['false_positives'] or 'none'}, "
                  f"alpha {ls['alpha']}, {ls['seconds']:.0f} s")
            for a in ls["annotators"]:
                print(f"    {a['annotator']} (simulated): {a['n_annotations']} annotations, on {a['n_calibration']} "
                      f"known answers background {a['background_accuracy']}, class {a['is_class_accuracy']}")
        table.append((spec, everything, model_score, results))
    print("\n| world | clean photos | model pairs | everything: labels, pairs, FP | model's pair: labels, pairs, FP "
          "| active: labels (share), pairs, FP |")
    print("| --- | ---: | ---: | --- | --- | --- |")
    for spec, everything, m, results in table:
        cells = []
        for strategy in ("everything", "model_pair", "active"):
            r = results[strategy]
            share = f" ({r['labels'] / everything:.0%})" if strategy == "active" else ""
            cells.append(f"{r['labels']}{share}, {r['found']}/{r['significant']}, {len(r['false_positives'])}")
        print(f"| {spec} | {everything} | {m['found']}/{m['significant']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
