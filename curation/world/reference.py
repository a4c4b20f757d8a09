"""A world with its reference model trained and its oracle computed, reusing whatever is done."""
from __future__ import annotations

import fcntl
import shutil
from pathlib import Path

from curation.world import generate, oracle, spec, train


def ensure_trained(folder: str | Path, size: str, seed: int) -> tuple[dict, str, Path]:
    """Build (or reuse) the world, train (or reuse) ca-tiny, compute (or reuse) the oracle.

    Returns the world description, the model name and its checkpoint file.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Several processes (tests, benchmarks) may ask for the same world at once: one builds, the rest wait.
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wanted = spec.preset(size, seed=seed)
        if generate.built_with_other_settings(folder, wanted):
            shutil.rmtree(folder)       # a cache built by an older version: build it anew, model included
        world = generate.build(folder, wanted)
        settings = train.TrainSettings()
        checkpoint = train.checkpoint_path(folder, settings.model)
        if not checkpoint.is_file():
            train.train(folder, settings)
        if not (folder / "oracle.json").is_file():
            oracle.compute(folder, settings.model, str(checkpoint), reference=True, threads=settings.threads)
    return world, settings.model, checkpoint
