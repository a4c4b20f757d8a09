"""`counteranimal mitigate INPUT --out DIR`: fine-tune CLIP's projections away from the found backgrounds."""
from __future__ import annotations

import argparse
from pathlib import Path

from curation.errors import UserError

METHODS = ("zero-shot", "erm", "group-dro", "clip-ft", "spurious", "spurious-ls")   # curation.mitigate.train.METHODS
TERMS = ("clip", "vc", "lc", "vs", "ls", "xs")


def _weights(text: str) -> dict[str, float]:
    out = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name not in TERMS:
            raise argparse.ArgumentTypeError(f"expected TERM=WEIGHT with TERM one of {', '.join(TERMS)}, got {part!r}")
        try:
            out[name] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"weight of {name} must be a number, got {value!r}") from None
        if out[name] < 0:
            raise argparse.ArgumentTypeError(f"weight of {name} must be at least 0, got {value}")
    return out


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        parts = tuple(float(p) for p in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers TRAIN,VAL,TEST, got {text!r}") from None
    if len(parts) != 3 or any(p < 0 for p in parts) or abs(sum(parts) - 1) > 1e-6 or parts[1] == 0 or parts[2] == 0:
        raise argparse.ArgumentTypeError(f"expected TRAIN,VAL,TEST shares summing to 1 with VAL and TEST > 0, got {text!r}")
    return parts


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    parse.__name__ = kind.__name__
    return parse


def register(sub) -> None:
    p = sub.add_parser(
        "mitigate", help="fine-tune only CLIP's projections with spurious-aware losses; compare with baselines",
        description="Fine-tune an open_clip model's image and text projections (encoders frozen, a fresh "
                    "temperature) with the losses of Yang et al. (ICML 2023): the CLIP loss over class prompts, "
                    "class-contrastive image (L_vc) and language (L_lc) terms, and the spurious term — L_vs on "
                    "the photos' background labels, or L_ls (class prompts pushed from background prompts). "
                    "Beside it: zero-shot, CLIP-loss fine-tuning, ERM and Group DRO linear heads. Every trained "
                    "method keeps the epoch with the best validation worst-group accuracy (groups = class x "
                    "background). Prints a table (average, worst-group accuracy, common, counter, drop on the "
                    "held-back test part) and writes OUT/results.{json,csv,md}, OUT/plot.svg and "
                    "OUT/<model>-mitigated.pt, a checkpoint open_clip loads as is.")
    p.add_argument("input", help="a run directory with groups (RUN/groups, RUN/shards), a release folder (ours or "
                                 "the official layout; needs --model), or a planted world directory (its "
                                 "ground-truth pool groups; grid for validation and test)")
    p.add_argument("--out", required=True, help="output folder (re-running reuses its cached features)")
    p.add_argument("--model", help="open_clip model name (default: the run's first model; ca-tiny for a world)")
    p.add_argument("--pretrained", help="tag or checkpoint file (default: the run's; a world's reference model)")
    p.add_argument("--groups", choices=["auto", "human", "model"], default="auto",
                   help="a run's groups: human (annotate pull), model, or auto: human when present (default)")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma-separated, in table order (default: %(default)s)")
    p.add_argument("--weights", type=_weights, default={},
                   help="loss weights of the spurious methods, e.g. clip=1,vc=0.5,lc=1,vs=1,ls=0 (0 switches a term "
                        "off; default 1 each, except xs, the released code's cross-modal spurious term: 0)")
    p.add_argument("--spurious", choices=["auto", "image", "language", "both"], default="auto",
                   help="the spurious term of method 'spurious': image (L_vs), language (L_ls), both, or auto: L_vs "
                        "when photos have background labels (default)")
    p.add_argument("--templates", choices=["openai", "source"], default="openai",
                   help="class prompts: open_clip's 80 OpenAI ImageNet templates (default), or the run's / world's own")
    p.add_argument("--epochs", type=_positive(int), default=30)
    p.add_argument("--batch-size", type=_positive(int), default=128)
    p.add_argument("--lr", type=_positive(float), default=1e-3, help="projections' learning rate (AdamW)")
    p.add_argument("--sampling", choices=["balanced", "natural"], default="balanced",
                   help="batches of the projection methods: group-balanced (default) or as the photos come")
    p.add_argument("--split", type=_fractions, default=(0.5, 0.2, 0.3), metavar="TRAIN,VAL,TEST",
                   help="a run's shares per group (default: 0.5,0.2,0.3)")
    p.add_argument("--min-group", type=_positive(int), default=5,
                   help="groups smaller than this in a part are left out of its worst group (default: %(default)s)")
    p.add_argument("--save", default="spurious", choices=["clip-ft", "spurious", "spurious-ls"],
                   help="whose projections go into the checkpoint (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N: where the photos are encoded")
    p.add_argument("--threads", type=_positive(int), help="torch threads (default: torch's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _model_for_run(run: Path, args) -> tuple[str, str | None]:
    if args.model:
        return args.model, args.pretrained
    from curation import config

    cfg = config.load(run / "config.yaml")
    spec = cfg.models[0]
    pretrained = args.pretrained or spec.pretrained
    if pretrained and not Path(pretrained).is_absolute() and (run / pretrained).is_file():
        pretrained = str(run / pretrained)
    return spec.name, pretrained


def run(args) -> int:
    from curation.mitigate import data as mdata, losses, report, train

    source = Path(args.input)
    if not source.is_dir():
        raise UserError("no such folder.", where=str(source), hint="Pass a run directory or a planted world directory.")
    methods = tuple(m.strip() for m in args.methods.split(",") if m.strip())
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise UserError(f"--methods: unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}.")
    if (source / "world.json").is_file():
        data = mdata.from_world(source, seed=args.seed)
        model = args.model or "ca-tiny"
        pretrained = args.pretrained or (str(source / "model" / f"{model}.pt") if not args.model else None)
    elif (source / "config.yaml").is_file():
        data = mdata.from_run(source, fractions=args.split, seed=args.seed, groups=args.groups)
        model, pretrained = _model_for_run(source, args)
    else:
        from curation import release_reader

        try:
            release_reader.detect_layout(source)
        except UserError:
            raise UserError("neither a run directory (config.yaml), a release folder nor a planted world "
                            "(world.json).", where=str(source)) from None
        if not args.model:
            raise UserError("a release names no model: pass --model (and --pretrained).", where=str(source))
        data = mdata.from_release(source, fractions=args.split, seed=args.seed)
        model, pretrained = args.model, args.pretrained
    settings = train.Settings(
        model=model, pretrained=pretrained, methods=methods, weights=losses.Weights(**args.weights),
        spurious=args.spurious, templates=args.templates, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, sampling=args.sampling, min_group=args.min_group,
        save=args.save if args.save in methods else None, device=args.device, threads=args.threads,
        seed=args.seed, progress=not args.no_progress)
    print(f"mitigate: {data.source}; {len(data.classes)} classes x {len(data.backgrounds)} backgrounds; "
          f"parts {data.counts()}; model {model} ({pretrained or 'random weights'})")
    summary = train.run(data, settings, args.out)
    print(report.table(summary))
    if summary["checkpoint"]:
        print(f"mitigate: checkpoint {summary['checkpoint']} (open_clip.create_model_and_transforms("
              f"{model!r}, pretrained=FILE))")
    print(f"mitigate: results in {Path(args.out) / 'results.json'}, .csv, .md and plot.svg")
    return 0
