"""`counteranimal world build|train|oracle|urls|judge`: the planted world (test and demo data)."""
from __future__ import annotations

import argparse
from pathlib import Path

from curation.errors import UserError


def _count(minimum: int):
    """An argparse type: an integer of at least ``minimum`` (argparse names the flag on error)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    parse.__name__ = "integer"
    return parse


def _share(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


_share.__name__ = "share"

# The variant names, without importing numpy at --help time (curation.world.spec is light, but
# keep the import inside functions like the other commands).
VARIANTS = ("default", "shared-common", "emergent", "few-captions", "no-captions", "pool-common-0.7",
            "pool-common-0.3", "independent", "null")


def register(sub) -> None:
    p = sub.add_parser("world", help="build the planted world and train its reference model",
                       description="A world of real animal cut-outs on real background photos with a planted "
                                   "background bias, a small CLIP trained on it, and the oracle (ground truth) "
                                   "that discovery is judged against.")
    wsub = p.add_subparsers(dest="world_command", metavar="ACTION", required=True)

    b = wsub.add_parser("build", help="generate the training split, candidate pool, grid and ground truth")
    b.add_argument("out", help="world directory to create (re-running resumes)")
    b.add_argument("--seed", type=_count(0), default=0, help="draws the plant and every image (default: %(default)s)")
    b.add_argument("--size", default="default", choices=["default", "small", "tiny"],
                   help="default: the demo and bench world; small: the test world; tiny: variant tests")
    b.add_argument("--variant", default="default", choices=list(VARIANTS),
                   help="the bias structure: shared-common (3 commons shared by the biased classes), emergent "
                        "(no planted counter), few-captions / no-captions (10%% / 0%% of captions name the scene), "
                        "pool-common-0.7 / -0.3 (the pool's share on the common), independent (several at once), "
                        "null (nothing planted: every class trained balanced). Flags below override it.")
    b.add_argument("--classes", help="comma-separated class names from curation/data/world_manifest.yaml")
    b.add_argument("--n-classes", type=int, help="use the manifest's first N classes")
    b.add_argument("--n-control", type=int, help="classes with no planted bias")
    b.add_argument("--p-common", type=float, help="training: probability a biased class is on its common background")
    b.add_argument("--plant", action="append", default=[], metavar="CLASS=COMMON:COUNTER",
                   help="fix a class's planted backgrounds (repeatable); others are drawn from the seed")
    b.add_argument("--n-commons", type=_count(1), help="distinct common backgrounds, assigned round-robin to the "
                   "biased classes (default: every background)")
    b.add_argument("--plant-counter", action=argparse.BooleanOptionalAction, default=None,
                   help="--no-plant-counter: off-common training photos may use every other background, so a "
                        "counter must emerge (default: planted)")
    b.add_argument("--scene-caption-share", type=_share, help="training: share of animal captions that name the "
                   "background (default 0.5)")
    b.add_argument("--pool-common-share", type=_share, help="pool: share of a biased class's photos on its common "
                   "(default 0.4)")
    b.add_argument("--grid-per-cell", type=int, help="grid images per class x background")
    b.add_argument("--grid-draw", type=_count(0), help="draw another grid from the same settings (default 0, the "
                                                      "original; pool, training split and models stay)")
    b.add_argument("--class-backgrounds", action="append", default=[], metavar="CLASS=BG,BG[,...]",
                   help="a control class's pool and grid photos only on these backgrounds (training unchanged); "
                        "repeatable")
    b.add_argument("--pool-per-class", type=int, help="clean pool images per class (noise comes on top)")
    b.add_argument("--force", action="store_true", help="rebuild a folder that holds a world with other settings")
    b.set_defaults(func=run_build)

    t = wsub.add_parser("train", help="train the reference model on the training split, then compute the oracle")
    t.add_argument("out", help="a built world directory")
    t.add_argument("--model", default=None, help="open_clip model name (default: ca-tiny, our small config)")
    t.add_argument("--pretrained", help="start from these weights: an open_clip tag or a checkpoint file")
    t.add_argument("--epochs", type=_count(1), help="training epochs (default: the world's train_epochs: 12, or 8 for --size small)")
    t.add_argument("--threads", type=_count(1), help="torch CPU threads (default: 1)")
    t.add_argument("--name", help="train a second model, written as OUT/model/NAME.pt beside the reference one "
                   "(e.g. a background judge for `init --background-model NAME`)")
    t.add_argument("--balanced", action="store_true", help="train on a balanced split (every class on every "
                   "background, written once as OUT/train-balanced/); needs --name")
    t.add_argument("--scene-caption-share", type=_share, help="re-caption this share of the animal photos with "
                   "their background (1.0: all); needs --name")
    t.set_defaults(func=run_train)

    o = wsub.add_parser("oracle", help="score the grid with a model: accuracy per class x background")
    o.add_argument("out", help="a built world directory")
    o.add_argument("--model", default=None, help="open_clip model name (default: the world's reference model)")
    o.add_argument("--pretrained", help="open_clip tag or checkpoint file (default: the trained reference model)")
    o.add_argument("--device", default="cpu")
    o.set_defaults(func=run_oracle)

    u = wsub.add_parser("urls", help="write the candidate pool's URL list for a server at BASE_URL")
    u.add_argument("out", help="a built world directory")
    u.add_argument("base_url", help="the URL at which OUT/pool/ itself is served, so that BASE_URL/<file> is a pool "
                                    "image; e.g. http://127.0.0.1:8000 after `python -m http.server 8000 "
                                    "--bind 127.0.0.1 -d OUT/pool`")
    u.add_argument("csv", help="URL list to write")
    u.set_defaults(func=run_urls)

    j = wsub.add_parser("judge", help="compare a curated run's proposals with the world's oracle")
    j.add_argument("out", help="a built and trained world directory")
    j.add_argument("run", help="a run that curated the world's pool (holds proposals.parquet)")
    j.add_argument("--source", choices=["model", "human"], default="model",
                   help="judge the model-only pairs (default) or the verified pairs that `annotate pull` wrote")
    j.set_defaults(func=run_judge)


def run_build(args) -> int:
    from curation.world import generate, spec

    plant = {}
    for item in args.plant:
        cls, sep, pair = item.partition("=")
        common, sep2, counter = pair.partition(":")
        if not (sep and sep2 and cls and common and counter):
            raise UserError(f"--plant {item!r}: expected CLASS=COMMON:COUNTER, e.g. flamingo=water:sky")
        plant[cls.strip()] = [common.strip(), counter.strip()]
    class_backgrounds = {}
    for item in args.class_backgrounds:
        cls, sep, bgs = item.partition("=")
        names = [b.strip() for b in bgs.split(",") if b.strip()]
        if not (sep and cls.strip() and names):
            raise UserError(f"--class-backgrounds {item!r}: expected CLASS=BG,BG[,...], e.g. lion=grass,rock,snow")
        class_backgrounds[cls.strip()] = names
    classes = [c.strip() for c in args.classes.split(",")] if args.classes else None
    world_spec = spec.preset(args.size, variant=args.variant, seed=args.seed, classes=classes,
                             n_classes=args.n_classes, n_control=args.n_control, p_common=args.p_common,
                             plant=plant or None, grid_per_cell=args.grid_per_cell,
                             pool_per_class=args.pool_per_class, n_commons=args.n_commons,
                             plant_counter=args.plant_counter, scene_caption_share=args.scene_caption_share,
                             pool_common_share=args.pool_common_share, grid_draw=args.grid_draw,
                             class_backgrounds=class_backgrounds or None)
    desc = generate.build(args.out, world_spec, force=args.force)
    biased = {c: p for c, p in desc["plant"].items() if p["biased"]}
    print(f"world {args.out}: {len(desc['classes'])} classes ({len(biased)} biased), {len(desc['backgrounds'])} "
          f"backgrounds; {desc['counts']['train']} training, {desc['counts']['pool']} pool, "
          f"{desc['counts']['grid']} grid images.")
    for c, p in biased.items():
        print(f"  {c}: common {p['common']}, counter {p['counter'] or '(none planted)'}")
    print(f"Next: counteranimal world train {args.out}")
    return 0


def run_train(args) -> int:
    from curation.world import oracle, train

    settings = train.TrainSettings(**{k: v for k, v in {
        "model": args.model, "pretrained": args.pretrained, "epochs": args.epochs, "threads": args.threads,
        "name": args.name, "balanced": args.balanced or None,
        "scene_caption_share": args.scene_caption_share}.items() if v is not None})
    if settings.is_reference and (settings.balanced or settings.scene_caption_share is not None):
        raise UserError("--balanced and --scene-caption-share train a second model; give it a --name (e.g. "
                        "--name background) so the reference model, whose shortcut is being measured, stays")
    info = train.train(args.out, settings)
    print(f"trained {info['model']} ({info['name']}) in {info['seconds']:.0f}s: {info['checkpoint']}")
    # The reference model's oracle is the world's oracle.json; another model's is oracle-<model>-<name>.json.
    result = oracle.compute(args.out, info["model"], info["checkpoint"], reference=settings.is_reference,
                            threads=settings.threads)
    print_oracle(result)
    if not settings.is_reference:
        print(f"Use it to assign backgrounds: counteranimal init RUN --world {args.out} --background-model "
              f"{info['name']}")
    return 0


def run_oracle(args) -> int:
    from curation.world import oracle, train

    model = args.model or train.REFERENCE_MODEL
    pretrained = args.pretrained
    reference = args.model is None and args.pretrained is None
    if reference:
        pretrained = str(train.checkpoint_path(args.out, model))
        if not Path(pretrained).is_file():
            raise UserError(f"no reference model at {pretrained}; run `counteranimal world train {args.out}` first")
    result = oracle.compute(args.out, model, pretrained, device=args.device, reference=reference)
    print_oracle(result)
    return 0


def run_urls(args) -> int:
    from curation.world.candidates import write_candidate_urls

    if not args.base_url.lower().startswith(("http://", "https://")):
        raise UserError(f"BASE_URL must be an http(s) URL where the pool is served, e.g. http://127.0.0.1:8000; "
                        f"got {args.base_url!r}")
    path = write_candidate_urls(args.out, args.base_url, args.csv, route="")
    print(f"wrote {path}")
    return 0


def run_judge(args) -> int:
    from curation import config
    from curation.world.judge import judge

    world, run = Path(args.out), Path(args.run)
    if not (world / "oracle.json").is_file():
        raise UserError("has no oracle yet", where=str(world), hint=f"Run `counteranimal world train {world}` first.")
    if not (run / "proposals.parquet").is_file():
        raise UserError("has no proposals.parquet", where=str(run),
                        hint=f"Curate the world's pool first: `counteranimal curate {run}`.")
    cfg = config.load(run)
    if args.source == "human":
        import pyarrow.parquet as pq

        if "human" not in pq.read_table(run / "proposals.parquet", columns=["source"]).column("source").to_pylist():
            raise UserError("has no verified pairs yet", where=str(run / "proposals.parquet"),
                            hint=f"Label with `counteranimal annotate push {run}` / `annotate pull {run}` first.")
    verdict = judge(world, run, cfg.thresholds.min_accuracy_range, source=args.source)
    judged = "the verified pairs (human labels)" if args.source == "human" else f"model {verdict['model_id']}'s rows"
    print("A proposed background counts as the oracle's when their accuracies on the grid are within each "
          f"other's 95% intervals. Judged: {judged}.")
    print(f"  {'class':24s} {'oracle common→counter':26s} {'proposed common→counter':26s} verdict")
    for cls, v in verdict["classes"].items():
        proposed = "→".join(str(x) for x in v["proposed"]) + ("" if v["kept"] else f" ({v['decision']})")
        kind = "shortcut" if v["significant"] else "no shortcut"
        print(f"  {cls:24s} {'→'.join(map(str, v['oracle'])):26s} {proposed:26s} "
              f"{'right' if v['correct'] else 'wrong'} ({kind})")
    for cls, v in verdict["classes"].items():
        if not v["correct"]:
            print(f"  {cls} ({v['cause']}): {v['why']}")
    acc = verdict["background_accuracy"]
    fps, non = verdict["false_positives"], verdict["non_significant"]
    print(f"{verdict['found']} of {verdict['significant']} classes with a real shortcut found with the oracle's pair; "
          f"false positives: {(', '.join(fps) + ' of') if fps else 'none of'} the {non} classes without a significant "
          f"oracle drop; kept pairs not confirmed on the grid: {', '.join(verdict['unconfirmed']) or 'none'} "
          f"(of {verdict['kept']} kept); kept pairs whose reported drop interval misses their grid drop: "
          f"{', '.join(verdict['not_covered']) or 'none'}; background assignment accuracy "
          + ("n/a" if acc is None else f"{acc:.1%}") + ".")
    return 0


def print_oracle(result: dict) -> None:
    s = result["summary"]
    print(f"oracle for {result['model']} ({result['pretrained']}) on {s['grid_images']} grid images:")
    print(f"  {'class':24s} {'plant common→counter':24s} {'oracle common→counter':26s} {'drop [95% CI]':>20s} {'[selection-aware]':>17s}")
    for cls, e in result["classes"].items():
        plant = f"{e['planted_common']}→{e['planted_counter']}" if e["biased"] else "(control)"
        print(f"  {cls:24s} {plant:24s} {e['oracle_common'] + '→' + e['oracle_counter']:26s} "
              f"{100 * e['drop']:6.1f} [{100 * e['drop_lo']:5.1f}, {100 * e['drop_hi']:5.1f}] "
              f"[{100 * e['drop_selected_lo']:5.1f}, {100 * e['drop_selected_hi']:5.1f}]")
    fmt = lambda v: "n/a" if v is None else f"{100 * v:.1f}"
    print(f"  planted-common accuracy {fmt(s['acc_planted_common'])}; mean drop over biased classes "
          f"{fmt(s['mean_planted_drop_biased'])} (from planted common), {fmt(s['mean_oracle_drop_biased'])} (oracle); "
          f"control drops {fmt(s['control_drop_min'])}..{fmt(s['control_drop_max'])}; "
          f"background accuracy {fmt(s['background_accuracy'])}")
