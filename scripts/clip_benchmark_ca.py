"""clip_benchmark's command line with counteranimal's model configs registered first.

clip_benchmark runs in its own venv (.venv-clipbench, `make clipbench`: its pins clash with ours) and
knows only open_clip's built-in configs; this registers curation/model_configs/ (ca-tiny, …) and the
folders in COUNTERANIMAL_MODEL_CONFIG_DIRS, as curation/clip_models.py does, then hands over:

    .venv-clipbench/bin/python scripts/clip_benchmark_ca.py eval --dataset wds/NAME \
        --dataset_root RUN/release/NAME-VERSION --split counter --model ca-tiny \
        --pretrained /path/to/ca-tiny.pt --no_amp --output counter.json
"""
import os
import sys
from pathlib import Path

import open_clip

open_clip.add_model_config(Path(__file__).resolve().parents[1] / "curation" / "model_configs")
for extra in filter(None, os.environ.get("COUNTERANIMAL_MODEL_CONFIG_DIRS", "").split(os.pathsep)):
    if Path(extra).is_dir():
        open_clip.add_model_config(extra)

from clip_benchmark.cli import main  # noqa: E402  (after the configs are registered)

if __name__ == "__main__":
    sys.argv[0] = "clip_benchmark"
    sys.exit(main())
