"""The `counteranimal` command. Each subcommand lives in pipeline/commands/<name>.py.

User mistakes (UserError, SchemaError) print one paragraph and exit 2; never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from curation.errors import UserError
from schemas import SchemaError

# Order here is the order in --help. A command appears only once it is implemented.
COMMANDS = ["init", "world", "curate", "report", "annotate", "label_studio"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="counteranimal",
        description="Build CounterAnimal-style benchmarks: photos split into common and counter "
                    "background groups per class.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        importlib.import_module(f"pipeline.commands.{name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # Everything after a bare `--` belongs to Beam (--runner, --direct_num_workers, ...).
    beam_args: list[str] = []
    if "--" in argv:
        i = argv.index("--")
        argv, beam_args = argv[:i], argv[i + 1:]
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    args = build_parser().parse_args(argv)
    args.beam_args = beam_args
    # Progress goes to stdout through each stage's own lines; library INFO logs only with -v.
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    for noisy in ("apache_beam", "urllib3", "httpx", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return args.func(args) or 0
    except (UserError, SchemaError) as exc:
        print(f"counteranimal {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"counteranimal {args.command}: interrupted; re-run the same command to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
