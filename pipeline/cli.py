"""The `counteranimal` command. Each subcommand lives in pipeline/commands/<name>.py.

User mistakes (UserError, SchemaError) print one paragraph and exit 2; never a traceback.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys

from curation.errors import UserError
from schemas import SchemaError

# Order here is the order in --help. A command appears only once it is implemented.
MAX_MESSAGE = 1200   # characters of an error shown without -v

COMMANDS = ["init", "world", "curate", "report", "annotate", "label_studio", "release", "import_official",
            "download", "evaluate", "mitigate"]


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
    if not args.verbose:
        # A failing DoFn is logged by Beam's workers with its traceback before Beam re-raises it here;
        # the re-raised error is reported once below (one paragraph for a user mistake).
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
    try:
        if any(a.startswith("--s3_") for a in beam_args):   # RUN may be s3://…: reach it from the first check
            from pipeline.options import configure_storage_from_args
            configure_storage_from_args(beam_args)
        return args.func(args) or 0
    except (UserError, SchemaError) as exc:
        text = " ".join(str(exc).split())   # one paragraph, even when a library's message has lines
        if len(text) > MAX_MESSAGE and not args.verbose:   # e.g. a library's list of every missing key
            text = text[:MAX_MESSAGE].rstrip() + f" … ({len(text) - MAX_MESSAGE} more characters with -v)"
        print(f"counteranimal {args.command}: error: {text}", file=sys.stderr)
        return 2
    except OSError as exc:
        # The file system said no (a run folder that is a file, no permission, a full disk): name the
        # path and the reason in one paragraph; -v shows where it happened.
        if args.verbose:
            raise
        print(f"counteranimal {args.command}: error: {describe_os_error(exc)} (run with -v for details)",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"counteranimal {args.command}: interrupted; re-run the same command to resume.", file=sys.stderr)
        return 130


def describe_os_error(exc: OSError) -> str:
    what = exc.strerror or str(exc) or type(exc).__name__
    paths = [p for p in (exc.filename, exc.filename2) if p is not None]
    if not paths:
        return f"{what}"
    hint = {errno.EEXIST: " (a file is in the way of a folder the run needs)",
            errno.ENOTDIR: " (a file is in the way of a folder the run needs)",
            errno.EACCES: " (no permission: choose a run folder you can write to)",
            errno.EPERM: " (no permission: choose a run folder you can write to)",
            errno.EROFS: " (a read-only file system: choose a run folder you can write to)",
            errno.ENOSPC: " (the disk is full)"}.get(exc.errno, "")
    return f"{' -> '.join(str(p) for p in paths)}: {what}{hint}"


if __name__ == "__main__":
    sys.exit(main())
