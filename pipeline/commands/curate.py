"""`counteranimal curate RUN [--stages ...] [-- BEAM OPTIONS]`: run the curation DAG."""
from __future__ import annotations

from curation.errors import UserError
from pipeline import curate
from pipeline.commands.common import run_folder


def register(sub) -> None:
    p = sub.add_parser(
        "curate", help=f"run the curation pipeline ({', '.join(curate.STAGES)}) on a run directory",
        description="Run the curation stages in DAG order: candidates from the configured source, fetched "
                    "with img2dataset into WebDataset shards (RUN/shards) with one recorded outcome per "
                    "candidate (RUN/samples), then the later stages. Re-running the same command resumes. "
                    "Beam options go after `--`, e.g. "
                    "`-- --direct_num_workers 2 --direct_running_mode multi_processing`.")
    p.add_argument("run", help="run directory (holds config.yaml)")
    p.add_argument("--stages", default=",".join(curate.STAGES),
                   help="comma-separated stages to run, in DAG order (default: %(default)s)")
    p.set_defaults(func=run)


def run(args) -> int:
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    if not stages:
        raise UserError(f"no stage named; give one or more of {', '.join(curate.STAGES)}", where="--stages")
    curate.run(run_folder(args.run), stages=stages, beam_args=args.beam_args)
    return 0
