"""`counteranimal report RUN`: write RUN/report/index.html, one self-contained page about the run."""
from __future__ import annotations

from pipeline.commands.common import run_folder

PER_SIDE = 12   # curation.report.THUMBS_PER_SIDE, without importing matplotlib for --help


def register(sub) -> None:
    p = sub.add_parser("report", help="write RUN/report/index.html: funnel, pairs, drops, photo grids",
                       description="Write one self-contained HTML page summarising the run: the funnel from "
                                   "candidates to verified photos, the proposed pairs with their drops (in-sample "
                                   "and held-out) and intervals, the classes that need more photos, photo grids "
                                   "per kept pair, and background-assignment accuracy. Sections whose artifacts "
                                   "do not exist yet are listed as missing.")
    p.add_argument("run", help="run directory (with config.yaml)")
    p.add_argument("--truth", metavar="FILE",
                   help="parquet with columns uid, background: true backgrounds for the confusion matrix; uid "
                        "may be the run's uid or the candidate's source id, so the planted world's "
                        "ground_truth.parquet works as is (default: RUN/truth.parquet when present)")
    p.add_argument("--per-side", type=int, default=PER_SIDE, metavar="N",
                   help="thumbnails per group in each pair's grid (default: %(default)s)")
    p.set_defaults(func=run)


def run(args) -> int:
    from curation import report

    print(report.write(run_folder(args.run), truth=args.truth, per_side=args.per_side))
    return 0
