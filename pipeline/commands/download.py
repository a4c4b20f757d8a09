"""`counteranimal download SRC DEST`: fetch a release folder and verify every file against SHA256SUMS."""
from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("download", help="download a release (URL, local path or gs:// / s3://) and verify it",
                       description="Download a release folder: its SHA256SUMS first, then every file it lists, "
                                   "in parallel. A file is written as NAME.part, continued from where it stopped "
                                   "on a re-run (HTTP Range), and renamed only once its SHA-256 matches; a "
                                   "tampered or truncated file is refused by name (exit 2). Files already in DEST "
                                   "with the right checksum are kept.")
    p.add_argument("src", help="the release folder: http(s):// URL, local path, or any path Beam's FileSystems "
                               "reads (gs://, s3://, …)")
    p.add_argument("dest", help="local folder to download into")
    p.add_argument("--workers", type=int, default=4, metavar="N", help="files fetched at once (default: %(default)s)")
    p.add_argument("--retries", type=int, default=3, metavar="N",
                   help="resumptions per file after a dropped connection (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=60.0, metavar="S",
                   help="seconds without data before a connection counts as dropped (default: %(default)s)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from pipeline.download import download

    r = download(args.src, args.dest, workers=args.workers, retries=args.retries, timeout=args.timeout,
                 progress=not args.no_progress)
    print(f"download: {r.files} files verified in {r.dest} ({r.fetched} fetched, {r.resumed} resumed, "
          f"{r.reused} already there; {r.bytes / 1e6:.1f} MB in {r.seconds:.1f} s)")
    return 0
