"""Beam pipeline options from the arguments after `--` on the command line.

Unknown flags are an error naming the flag (Beam itself only logs and drops them), so a typo
such as `--direct_num_worker` does not silently run with defaults.
"""
from __future__ import annotations

import difflib
import logging


def _import_beam_quietly():
    # Beam's GCP modules log "apitools not found" on the root logger at import time; a local
    # run has no use for GCP, and the line would break the CLI's one-paragraph messages.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        import apache_beam  # noqa: F401
    finally:
        root.setLevel(level)


_import_beam_quietly()

from apache_beam.options.pipeline_options import PipelineOptions, _BeamArgumentParser  # noqa: E402

from curation.errors import UserError  # noqa: E402

DEFAULTS = ["--runner=DirectRunner"]


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    check_known(beam_args)
    given = {a.split("=", 1)[0] for a in beam_args if a.startswith("--")}
    defaults = [d for d in DEFAULTS if d.split("=", 1)[0] not in given]
    return PipelineOptions(defaults + list(beam_args))


def check_known(beam_args: list[str]) -> None:
    parser = _BeamArgumentParser(allow_abbrev=False)
    for cls in {str(c): c for c in PipelineOptions.__subclasses__()}.values():
        cls._add_argparse_args(parser)  # pylint: disable=protected-access
    _, unknown = parser.parse_known_args(beam_args)
    flags = [u for u in unknown if u.startswith("-")]
    if not flags:
        return
    known = [s for a in parser._actions for s in a.option_strings]  # pylint: disable=protected-access
    flag = flags[0].split("=", 1)[0]
    close = difflib.get_close_matches(flag, known, n=1)
    raise UserError(f"unknown Beam option '{flag}'" + (f" (did you mean '{close[0]}'?)" if close else ""),
                    where="arguments after --",
                    hint="Beam options go after `--`, e.g. `-- --runner DirectRunner --direct_num_workers 2`.")
