"""`counteranimal release RUN --name N --version V [--unverified] [--export-official DIR] [-- BEAM OPTIONS]`."""
from __future__ import annotations

from pipeline.commands.common import run_folder


def register(sub) -> None:
    p = sub.add_parser(
        "release", help="write RUN/release/NAME-VERSION: WebDataset shards per group, metadata, card, checksums",
        description="Write the verified pairs' photos as a release: common/ and counter/ WebDataset shards "
                    "(readable by clip_benchmark's wds/ loader, webdataset and HF datasets), classnames.txt, "
                    "zero-shot templates, the reference model's 1-vs-k label sets, metadata.parquet, a dataset "
                    "card (README.md), croissant.json and SHA256SUMS. Only photos whose license is in "
                    "license_allow are released. The folder appears whole (written aside, then renamed); "
                    "re-running replaces it with byte-identical shards. Beam options go after `--`.")
    p.add_argument("run", help="run directory (holds config.yaml)")
    p.add_argument("--name", help="release name (default: the config's name)")
    p.add_argument("--version", default="1.0", help="release version (default: %(default)s)")
    p.add_argument("--unverified", action="store_true",
                   help="release the model-proposed pairs and model-assigned groups, marked unverified in every "
                        "record and in the card (default: the human-verified pairs and groups only)")
    p.add_argument("--shard-size", type=float, default=256, metavar="MB",
                   help="largest shard in MB (default: %(default)s); at least 4 shards per split when it has "
                        "4 photos or more")
    p.add_argument("--export-official", metavar="DIR",
                   help="also write the release in the official CounterAnimal layout: DIR/NAME-VERSION/<idx> "
                        "<name>/common-<bg>/ and counter-<bg>/, and DIR/imagenet_names.txt")
    p.set_defaults(func=run)


def run(args) -> int:
    from curation import config, release_official
    from curation.errors import UserError
    from pipeline import release
    from pipeline.options import pipeline_options

    run_dir = run_folder(args.run)
    cfg = config.load(run_dir)
    if args.shard_size <= 0:
        raise UserError("must be a positive number of MB", where="--shard-size")
    name = args.name or cfg.name
    if not name or "/" in name or name.startswith("."):
        raise UserError(f"{name!r} is not a usable folder name", where="--name")
    if "/" in args.version:
        raise UserError(f"{args.version!r} is not a usable version", where="--version")
    out = release.run_release(run_dir, cfg, pipeline_options(args.beam_args), name=name, version=args.version,
                              verified=not args.unverified, max_shard_bytes=int(args.shard_size * 2**20))
    if args.export_official:
        print(f"release: official layout -> {release_official.export(out, args.export_official)}")
    return 0
