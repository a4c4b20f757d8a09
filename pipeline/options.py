"""Beam pipeline options from the arguments after `--` on the command line.

Unknown flags are an error naming the flag (Beam itself only logs and drops them), so a typo
such as `--direct_num_worker` does not silently run with defaults.
"""
from __future__ import annotations

import contextlib
import difflib
import io
import logging

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, _BeamArgumentParser

from curation.errors import UserError

DEFAULTS = ["--runner=DirectRunner"]
DIRECT_NAMES = (None, "DirectRunner", "direct", "SwitchingDirectRunner")
LOCAL_RUNNER = "pipeline.local_runner.DirectRunner"     # what a DirectRunner name runs (its doc says why)
RUNNERS = ["DirectRunner", "PortableRunner", "DataflowRunner", "FlinkRunner", "SparkRunner", "PrismRunner"]
WHERE = "arguments after --"
HINT = "Beam options go after `--`, e.g. `-- --runner DirectRunner --direct_num_workers 2`."


def pipeline_options(beam_args: list[str]) -> PipelineOptions:
    """Options from the arguments after `--`; any mistake in them is a UserError before a stage runs."""
    given = {a.split("=", 1)[0] for a in beam_args if a.startswith("--")}
    defaults = [d for d in DEFAULTS if d.split("=", 1)[0] not in given]
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG and "--default_sdk_harness_log_level" not in given:
        # Worker processes (multi_processing, portable runners) log at INFO by default: hundreds of
        # lines per stage. Their errors still come back to the driver; -v keeps their logs.
        defaults.append("--default_sdk_harness_log_level=ERROR")
    printed = io.StringIO()
    try:
        # A value of the wrong type or an unknown choice makes Beam's argparse print its usage and exit.
        with contextlib.redirect_stderr(printed):
            check_known(beam_args)
            options = PipelineOptions(defaults + list(beam_args))
            options.get_all_options()
    except SystemExit:
        lines = [ln for ln in printed.getvalue().strip().splitlines() if ln.strip()]
        raise UserError(lines[-1].split("error: ", 1)[-1] if lines else "invalid Beam options", where=WHERE,
                        hint=HINT) from None
    standard = options.view_as(StandardOptions)
    check_runner(standard.runner)
    if standard.runner in DIRECT_NAMES:
        standard.runner = LOCAL_RUNNER
    configure_storage(options)
    return options


def is_direct(runner) -> bool:
    """The runner named is the local DirectRunner (as the user spelt it, or as pipeline_options set it)."""
    return runner in DIRECT_NAMES or runner == LOCAL_RUNNER


def configure_storage_from_args(beam_args: list[str]) -> None:
    configure_storage(PipelineOptions(list(beam_args)))


def configure_storage(options: PipelineOptions) -> None:
    """Beam's S3 options also reach the run directory's own I/O (curation/storage.py), in the
    launcher and, carried inside every run path, in the workers; Beam's FileSystems (download)
    reads them itself."""
    from apache_beam.io.filesystems import FileSystems
    from apache_beam.options.pipeline_options import S3Options

    from curation import storage

    s3 = options.view_as(S3Options)
    if any([s3.s3_endpoint_url, s3.s3_access_key_id, s3.s3_secret_access_key, s3.s3_region_name,
            s3.s3_verify is not None]):
        storage.configure_s3(endpoint_url=s3.s3_endpoint_url, access_key_id=s3.s3_access_key_id,
                             secret_access_key=s3.s3_secret_access_key, region_name=s3.s3_region_name,
                             verify=s3.s3_verify)
    FileSystems.set_options(options)


def check_runner(runner) -> None:
    if not isinstance(runner, str):
        return
    from apache_beam.runners.runner import create_runner

    try:
        create_runner(runner)
    except ValueError:
        close = difflib.get_close_matches(runner, RUNNERS, n=1)
        raise UserError(f"unknown Beam runner {runner!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                        + f"; runners: {', '.join(RUNNERS)}, or a PipelineRunner class's full name",
                        where=WHERE) from None
    except ImportError as exc:
        raise UserError(f"the Beam runner {runner!r} cannot start here: {exc}", where=WHERE) from None


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
                    where=WHERE, hint=HINT)
