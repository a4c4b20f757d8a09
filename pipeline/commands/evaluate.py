"""`counteranimal evaluate DATASET --model NAME --pretrained TAG_OR_FILE [--model …]`: common vs counter accuracy."""
from __future__ import annotations

import argparse
import hashlib
import os
import re
from pathlib import Path

from curation.errors import UserError

NONE = ("", "none", "None")


class _Model(argparse.Action):
    """--model starts a model; the --pretrained after it belongs to it (pairs bind by order)."""

    def __call__(self, parser, ns, value, option_string=None):
        models = list(getattr(ns, "models", None) or [])
        if option_string == "--model":
            models.append([value, None])
        elif not models:
            parser.error("--pretrained comes after the --model it belongs to")
        elif models[-1][1] is not None:
            parser.error(f"--model {models[-1][0]} has two --pretrained values")
        else:
            models[-1][1] = value
        ns.models = models


def register(sub) -> None:
    from curation import evaluate

    p = sub.add_parser("evaluate", help="evaluate open_clip models on a release or the official CounterAnimal folder",
                       description="Zero-shot accuracy of one or more open_clip models on the common and counter "
                                   "photos of each class: class-balanced averages, the drop, worst-group "
                                   "accuracy, 1 vs N (every label) and 1 vs 20, each with a bootstrap interval. "
                                   "DATASET is a release folder (local path or URL: downloaded and verified into "
                                   "--cache first) or the official CounterAnimal layout "
                                   "('<imagenet idx> <name>/common-<bg>/…'), whose published figures are shown "
                                   "beside ours. Accuracies in percent.")
    p.add_argument("dataset", help="release folder, its http(s)/gs:///s3:// URL, or the official layout's folder")
    p.add_argument("--model", action=_Model, dest="models", required=True, metavar="NAME",
                   help="open_clip model: a config name (ViT-B-32), hf-hub:org/repo or local-dir:/folder; repeat "
                        "for several models")
    p.add_argument("--pretrained", action=_Model, dest="models", metavar="TAG_OR_FILE",
                   help="the preceding --model's weights: an open_clip tag (laion400m_e32) or a checkpoint file; "
                        "leave out for hf-hub:/local-dir: names")
    p.add_argument("--out", metavar="DIR", help="write summary.csv, per_class.csv, results.json (and "
                                                "effective_robustness.png/.svg for several models) here")
    p.add_argument("--k", type=int, default=evaluate.K, help="labels per class for 1 vs k when the dataset ships "
                                                             "no sets (default: %(default)s)")
    p.add_argument("--bootstrap", type=int, default=evaluate.BOOTSTRAP, metavar="N",
                   help="bootstrap replicates for the intervals (default: %(default)s; 0: none)")
    p.add_argument("--seed", type=int, default=evaluate.SEED, help="bootstrap seed (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=evaluate.BATCH_SIZE, metavar="N",
                   help="images per forward (default: %(default)s)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or mps (default: %(default)s)")
    p.add_argument("--precision", default="fp32", help="fp32, bf16 or fp16 (GPU) (default: %(default)s)")
    p.add_argument("--cache", metavar="DIR", help="where a dataset given by URL is downloaded (default: "
                                                  "$COUNTERANIMAL_CACHE or ~/.cache/counteranimal, under datasets/)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def dataset_folder(src: str, cache: str | None, progress: bool) -> Path:
    """A local folder for DATASET: itself, or its download (verified) under the cache."""
    if "://" not in src:
        return Path(src)
    from pipeline.download import download

    base = Path(cache or os.environ.get("COUNTERANIMAL_CACHE") or Path.home() / ".cache" / "counteranimal")
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", src.rstrip("/").rsplit("/", 1)[-1]) or "dataset"
    dest = base / "datasets" / f"{name}-{hashlib.sha256(src.encode()).hexdigest()[:10]}"
    r = download(src, dest, progress=progress)
    print(f"evaluate: {src} → {dest} ({r.files} files verified, {r.fetched} fetched)")
    return dest


def run(args) -> int:
    from curation import clip_models, evaluate, presets
    from curation.release_reader import open_dataset

    models = [(name, None if pre in NONE else pre) for name, pre in args.models]
    for name, pre in models:   # every model is checked before the first one spends minutes
        clip_models.check(name, pre, args.device, args.precision)
    if args.k < 1:
        raise UserError(f"--k must be at least 1, not {args.k}.")
    ds = open_dataset(dataset_folder(args.dataset, args.cache, not args.no_progress))
    results = []
    for name, pre in models:
        clip = clip_models.load(name, pre, device=args.device, precision=args.precision)
        results.append(evaluate.evaluate(ds, clip, k=args.k, n_boot=args.bootstrap, seed=args.seed,
                                         batch_size=args.batch_size, progress=not args.no_progress))
        del clip
    published = evaluate.published_beside(results, presets.paper_results()) if evaluate.is_official(ds) else None
    print(evaluate.format_table(results, published))
    if args.out:
        for path in evaluate.write_outputs(results, args.out, published):
            print(f"wrote {path}")
    return 0
