"""A world with its reference model trained and its oracle computed, reusing whatever is done."""
from __future__ import annotations

import fcntl
import shutil
from pathlib import Path

from curation.world import generate, oracle, spec, train

# The second model `counteranimal world train OUT --name background --balanced --scene-caption-share 1.0`
# trains: every class on every background, every animal caption naming its scene.
BACKGROUND_MODEL = "background"
BACKGROUND_SETTINGS = dict(name=BACKGROUND_MODEL, balanced=True, scene_caption_share=1.0)


def ensure_trained(folder: str | Path, size: str, seed: int, variant: str | None = None,
                   **overrides) -> tuple[dict, str, Path]:
    """Build (or reuse) the world, train (or reuse) ca-tiny, compute (or reuse) the oracle.

    ``variant`` and ``overrides`` go to spec.preset. Returns the world description, the model
    name and its checkpoint file.
    """
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    # Several processes (tests, benchmarks) may ask for the same world at once: one builds, the rest wait.
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wanted = spec.preset(size, variant=variant, seed=seed, **overrides)
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


def ensure_background_model(folder: str | Path) -> tuple[str, Path, dict]:
    """Train (or reuse) the world's second model and its oracle; returns (config name, checkpoint, oracle)."""
    import json

    folder = Path(folder)
    with open(folder.parent / f".{folder.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        settings = train.TrainSettings(**BACKGROUND_SETTINGS)
        checkpoint = train.checkpoint_path(folder, settings.checkpoint_name)
        if not checkpoint.is_file():
            train.train(folder, settings)
        stem = f"oracle-{oracle.model_slug(settings.model, str(checkpoint))}"
        if (folder / f"{stem}.json").is_file():
            result = json.loads((folder / f"{stem}.json").read_text())
        else:
            result = oracle.compute(folder, settings.model, str(checkpoint), threads=settings.threads)
    return settings.model, checkpoint, result
