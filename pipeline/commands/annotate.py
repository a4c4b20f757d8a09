"""`counteranimal annotate push|status|pull RUN`: human verification in Label Studio.

The server URL comes from annotation.url, LABEL_STUDIO_URL or the local `label-studio start`;
the token from LABEL_STUDIO_API_KEY, LABEL_STUDIO_TOKEN_FILE or the local server's token file.
"""
from __future__ import annotations

from pathlib import Path

from curation import config
from curation.errors import UserError
from pipeline.commands.common import run_folder


def _need_sdk() -> None:
    # annotation.client needs label_studio_sdk (the `annotation` extra): each handler imports what it
    # uses, so `counteranimal --help` starts on a base install and a missing extra is named plainly.
    try:
        import label_studio_sdk  # noqa: F401
    except ModuleNotFoundError:
        raise UserError("`counteranimal annotate` needs the Label Studio client (label-studio-sdk), which the "
                        "base install leaves out",
                        hint="Install it with `pip install 'counteranimal[annotation]'`.") from None


def register(sub) -> None:
    p = sub.add_parser("annotate", help="verify backgrounds and labels in Label Studio (push, status, pull, simulate)",
                       description="An active loop: push sends the next round of photos to Label Studio "
                                   "(round 0 covers every class × model background; later rounds go where labels "
                                   "would most change a pair, within annotation.budget), pull re-estimates every "
                                   "class's verified pair, status says where each class stands.")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    for name, text in [("push", "send the next round of tasks (idempotent, resumable; nothing new until the last "
                                "round is pulled)"),
                       ("status", "per class: labels spent, the verified pair and its state; per annotator"),
                       ("pull", "export annotations, aggregate votes, re-estimate the verified pairs")]:
        a = actions.add_parser(name, help=text, description=text)
        a.add_argument("run", help="run directory")
        a.set_defaults(func=globals()[f"_{name}"])
    text = ("SIMULATED annotators (tests, benchmarks, demos): separate Label Studio users who answer every "
            "pushed task from a known truth with a given error rate")
    a = actions.add_parser("simulate", help=text, description=text + ". Their labels are named simulated "
                           "in every output.")
    a.add_argument("run", help="run directory")
    a.add_argument("--truth", required=True, help="ground truth parquet (uid, background, class_name), e.g. "
                                                 "WORLD/ground_truth.parquet of a planted world")
    a.add_argument("--error-rate", type=float, default=0.1, help="chance of a wrong background, and "
                                                                 "separately of a wrong class verdict (0.1)")
    a.add_argument("--annotators", type=int, default=3, help="simulated users (3)")
    a.add_argument("--prefill-bias", type=float, default=0.0,
                   help="chance of taking a pre-filled background as is (annotation.prefill_background)")
    a.add_argument("--seed", type=int, default=0)
    a.add_argument("--gold-share", type=float, default=0.05,
                   help="write RUN/annotation/gold.parquet from the truth for this share of photos, if absent")
    a.add_argument("--data-dir", help="the server's --data-dir (default: the local `label-studio start` one)")
    a.add_argument("--loop", action="store_true",
                   help="run the whole loop: push, label, pull, again until push sends nothing new (budget or "
                        "every class settled), then pair selection once")
    a.add_argument("--no-progress", action="store_true", help="no progress bar")
    a.set_defaults(func=_simulate)


def _connect(cfg) -> client.Connection:
    from annotation import client

    spec = cfg.annotation
    return client.connect(spec.url, spec.files_root, retries=spec.retries, backoff=spec.backoff)


def _push(args) -> int:
    _need_sdk()
    from annotation import sync

    args.run = str(run_folder(args.run))
    cfg = config.load(args.run)
    conn = _connect(cfg)
    counts = sync.push(Path(args.run), cfg, conn)
    roles = ", ".join(f"{n} {r}" for r, n in sorted(counts["roles"].items()))
    budget = f" of a budget of {counts['budget']}" if counts["budget"] else ""
    print(f"annotate push: project {counts['project_id']} at {conn.url}: {counts['selected']} photos sent in all"
          f"{budget} ({roles}); round {counts['round']}: {counts['added']} tasks added, {counts['already']} already "
          f"there, {counts['no_image']} without an image in the shards ({counts['seconds']} s).")
    if counts.get("kept_earlier"):
        print(f"  {counts['kept_earlier']} tasks pushed earlier are no longer selected; they stay in the project "
              "and their annotations still count.")
    if counts["recreated"]:
        print(f"  {counts['recreated']} tasks had been deleted in Label Studio and were created again.")
    if counts["duplicates_on_server"]:
        print(f"  {counts['duplicates_on_server']} duplicate tasks found on the server (same uid); pull merges them.")
    print(f"  Annotate at {conn.url}/projects/{counts['project_id']}/data")
    return 0


def _status(args) -> int:
    _need_sdk()
    from annotation import pull

    args.run = str(run_folder(args.run))
    cfg = config.load(args.run)
    report = pull.status(Path(args.run), cfg, _connect(cfg))
    print(f"annotate status: project {report['project_id']} ({report['url']}): {report['complete']} of "
          f"{report['tasks']} tasks have {cfg.annotation.overlap} annotations")
    print(f"  {'class':<28} {'tasks':>6} {'started':>8} {'complete':>9} {'annotations':>12} {'deleted':>8}")
    for name, c in report["per_class"].items():
        print(f"  {name[:28]:<28} {c.get('tasks', 0):>6} {c.get('started', 0):>8} {c.get('complete', 0):>9} "
              f"{c.get('annotations', 0):>12} {c.get('deleted', 0):>8}")
    for who, n in report["per_annotator"].items():
        print(f"  annotator {who}{' (simulated)' if _simulated(who) else ''}: {n} annotations")
    for line in loop_lines(report):
        print(line)
    if report["deleted_by_hand"]:
        print(f"  {len(report['deleted_by_hand'])} tasks were deleted in Label Studio (e.g. uid "
              f"{report['deleted_by_hand'][0]}); `annotate push` creates them again.")
    if report["unknown_tasks"] or report["duplicate_tasks"]:
        print(f"  {report['unknown_tasks']} tasks not from this run, {report['duplicate_tasks']} duplicate tasks.")
    return 0


def _reselect(run: Path, cfg, args) -> None:
    """Pair selection again, now over model and human groups (pipeline/propose.py)."""
    from pipeline.options import pipeline_options
    from pipeline.propose import run_propose

    if (run / "scores").is_dir():
        run_propose(run, cfg, pipeline_options(getattr(args, "beam_args", []) or []))


def _pull(args) -> int:
    _need_sdk()
    from annotation import pull

    args.run = str(run_folder(args.run))
    cfg = config.load(args.run)
    summary = pull.pull(Path(args.run), cfg, _connect(cfg), select=lambda run: _reselect(run, cfg, args))
    alpha = summary["agreement"]
    fmt = lambda a: "n/a" if a["alpha"] is None else f"{a['alpha']:.3f}"
    print(f"annotate pull: {summary['annotations']} annotations; verdicts {summary['verdicts']}; "
          f"{summary['human_group_rows']} photos in RUN/groups/human.parquet; Krippendorff's alpha "
          f"background {fmt(alpha['background'])}, class {fmt(alpha['is_class'])}.")
    if summary["kept_from_deleted_tasks"]:
        print(f"  {summary['kept_from_deleted_tasks']} annotations kept from tasks deleted in Label Studio.")
    for line in loop_lines(summary):
        print(line)
    for line in pair_lines(Path(args.run)):
        print(line)
    return 0


def _simulated(who: str) -> bool:
    from annotation.simulate import is_simulated

    return is_simulated(who)


def loop_lines(report: dict) -> list[str]:
    """Per class: labels spent, the verified pair beside the model's, the loop's state and what changed."""
    tag = " — SIMULATED annotators" if report.get("simulated") else ""
    budget = f" of {report['budget']}" if report.get("budget") else ""
    lines = [f"  verification{tag}: {report['sent']}{budget} photos sent, {report['outstanding']} awaiting labels"]
    open_ = 0
    for c in report["classes"]:
        human = (f"{c['human_common']} → {c['human_counter']} ({c['human_decision']}"
                 + (f", drop {100 * c['human_drop']:.0f} [{100 * c['human_drop_lo']:.0f}, {100 * c['human_drop_hi']:.0f}]"
                    if c["human_drop"] is not None and c["human_drop_lo"] is not None else "") + ")"
                 if c["human_common"] else f"no pair ({c['human_reason']})")
        model = f"{c['model_common']} → {c['model_counter']} ({c['model_decision']})" if c["model_common"] else "none"
        lines.append(f"  {c['class_name']}: {c['labeled']}/{c['photos']} labelled ({c['tasks']} sent); "
                     f"verified {human}; model {model}; {c['state']}" + (f" — {c['state_why']}" if c['state_why'] else ""))
        if c["changed"] not in ("same pair and decision", "nothing labelled yet"):
            lines.append(f"      changed: {c['changed']}")
        open_ += c["state"] == "open"
    if report["classes"]:
        lines.append(f"  {open_} classes open" + ("; `annotate push` sends the next round" if open_ and
                                                  not report["outstanding"] else ""))
    return lines


def _simulate(args) -> int:
    _need_sdk()
    from annotation import simulate

    args.run = str(run_folder(args.run))
    cfg = config.load(args.run)
    conn = _connect(cfg)
    if args.loop:
        return _simulate_loop(args, cfg, conn)
    counts = simulate.simulate(Path(args.run), cfg, conn, args.truth, args.error_rate, args.annotators,
                               args.prefill_bias, args.seed, args.data_dir, args.gold_share,
                               progress=not args.no_progress)
    print(f"annotate simulate: {len(counts['annotators'])} SIMULATED annotators (error rate {args.error_rate:g}"
          f"{f', prefill bias {args.prefill_bias:g}' if args.prefill_bias else ''}) made {counts['annotations']} "
          f"simulated annotations on {counts['tasks']} pushed tasks ({counts['already']} answered before).")
    if counts["gold_written"]:
        print(f"  wrote {counts['gold_written']} known answers from the truth to RUN/annotation/gold.parquet "
              "(calibration tasks from the next round on).")
    if counts["missing_truth"]:
        print(f"  {counts['missing_truth']} tasks have no truth row; the simulated annotators skipped them.")
    print("  These labels are simulated, not people's. Next: `counteranimal annotate pull RUN`.")
    return 0


def _simulate_loop(args, cfg, conn) -> int:
    """push → simulated labels → pull, until push adds nothing; pair selection once at the end."""
    from annotation import pull, simulate, sync

    run = Path(args.run)
    rounds, total = 0, 0
    while True:
        pushed = sync.push(run, cfg, conn, say=lambda s: None)
        if pushed["added"] == 0 and rounds:
            break
        print(f"annotate simulate: round {pushed['round']}: {pushed['added']} tasks pushed; "
              f"{args.annotators} SIMULATED annotators labelling them", flush=True)
        counts = simulate.simulate(run, cfg, conn, args.truth, args.error_rate, args.annotators, args.prefill_bias,
                                   args.seed, args.data_dir, args.gold_share, say=lambda s: None,
                                   progress=not args.no_progress)
        summary = pull.pull(run, cfg, conn, say=lambda s: None)
        rounds, total = rounds + 1, total + counts["annotations"]
        open_ = sum(c["state"] == "open" for c in summary["classes"])
        print(f"annotate simulate: round {pushed['round']}: {counts['annotations']} SIMULATED annotations; "
              f"{summary['sent']} photos sent in all, {open_} classes open", flush=True)
    summary = pull.pull(run, cfg, conn, select=lambda r: _reselect(r, cfg, args), say=lambda s: None)
    print(f"annotate simulate: loop done after {rounds} rounds: {summary['sent']} photos labelled by "
          f"{args.annotators} SIMULATED annotators (error rate {args.error_rate:g}), {total} simulated annotations")
    for line in loop_lines(summary):
        print(line)
    return 0


def pair_lines(run: Path) -> list[str]:
    """Per class with a human proposal: the model's pair beside the humans', or why one has none."""
    from annotation import reselect

    return [f"  {row['class_name']}: model {_side(row.get('model'))}; human {_side(row['human'])}"
            for row in reselect.side_by_side(run) if "human" in row]


def _side(side: dict | None) -> str:
    """One side of a class's proposals: its pair and decision, or why it has no pair."""
    if not side:
        return "no proposal"
    if side.get("common") and side.get("counter"):
        return f"{side['common']} → {side['counter']} ({side['decision']})"
    return f"no pair ({side['decision']}: {side.get('reason') or 'no reason given'})"
