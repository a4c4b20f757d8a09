"""`counteranimal import-official SRC DEST`: the official CounterAnimal folder layout → a release of ours."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser(
        "import-official", help="read the official CounterAnimal folder layout into a release folder",
        description="Read a folder in the official CounterAnimal layout (<imagenet idx> <name>/common-<bg>/ and "
                    "counter-<bg>/ folders of photos under one top folder, with imagenet_names.txt beside the "
                    "class folders or one level up) and write it as a release folder of ours at DEST: "
                    "common/ and counter/ WebDataset shards, classnames.txt (imagenet_names.txt, else "
                    "open_clip's 1,000 ImageNet names), templates, metadata.parquet, a card, croissant.json "
                    "and SHA256SUMS, so `counteranimal evaluate`, clip_benchmark, webdataset and HF datasets "
                    "read it. The photos are copied unchanged. DEST appears whole; an existing DEST is replaced.")
    p.add_argument("src", help="the official folder (the top folder, e.g. LAION-final/, or the folder above it)")
    p.add_argument("dest", help="the release folder to write")
    p.add_argument("--name", default="counteranimal-official", help="release name for the card (default: %(default)s)")
    p.add_argument("--version", default="1", help="release version for the card (default: %(default)s)")
    p.add_argument("--template", action="append", metavar="T",
                   help="zero-shot template with {c} (repeatable; default: the paper's 'A photo of {c}.')")
    p.set_defaults(func=run)


def run(args) -> int:
    from pathlib import Path

    from curation import release_official
    from curation.errors import UserError

    for t in args.template or []:
        if "{c}" not in t:
            raise UserError(f"template {t!r} has no '{{c}}' slot for the class name", where="--template")
    dest = Path(args.dest)
    if dest.exists() and not dest.is_dir():
        raise UserError("is a file, not a folder", where=str(dest))
    out = release_official.import_official(args.src, dest, name=args.name, version=args.version,
                                           templates=args.template)
    print(f"import-official: {args.src} -> {out}")
    return 0
