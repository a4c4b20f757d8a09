"""A run config for curating a planted world's candidate pool with its reference model.

The demo, the discovery tests and the benchmarks all curate the world the same way: the world's
classes and background vocabulary, its prompts, the trained checkpoint, the URL list written for
a loopback server (hence 127.0.0.0/8 allowed), and the licenses its sources carry.
"""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from curation import config
from curation.errors import UserError
from curation.world.generate import read_world


def run_config(world_dir: str | Path, model: str, checkpoint: str | Path, *, url_list: str = "urls.csv",
               name: str = "planted-world", background_model: tuple[str, str | Path, str] | None = None,
               **sections) -> config.RunConfig:
    """The RunConfig for the pool; ``sections`` override whole config sections (e.g. thresholds=...).

    ``background_model`` (config name, checkpoint, id): a second model, listed after the reference
    one, that assigns the backgrounds (background_assignment.model) so the model being measured
    is not also the judge of where its photos were taken. Pairs stay the reference model's
    decision: thresholds.require_all_models is false, so propose decides on models[0] alone.
    """
    world_dir = Path(world_dir)
    world = read_world(world_dir)
    classes = pq.read_table(world_dir / "classes.parquet").to_pylist()
    licenses = sorted({s["license"] for s in world["sources"].values() if s.get("license")})
    data = {
        "name": name,
        # No imagenet_idx: under label_space "classes" a class's index is its position in this list
        # (config validation rejects an ImageNet index outside that space).
        "classes": [{"name": c["class_name"]} for c in classes],
        "backgrounds": list(world["backgrounds"]),
        "label_space": "classes",      # the reference model knows only the world's classes
        "prompts": {"classes": list(world["class_templates"]), "backgrounds": list(world["background_templates"])},
        "models": [{"name": model, "pretrained": str(checkpoint), "id": "reference"}],
        "source": {"kind": "url_list", "path": url_list, "columns": {"id": "id"}},
        "fetch": {"image_size": 256, "chunk_size": 200, "thread_count": 8, "allowed_networks": ["127.0.0.0/8"]},
        "clean": {"min_side": 32},
        "license_allow": [*config.DEFAULT_LICENSES, *[lic for lic in licenses if lic not in config.DEFAULT_LICENSES]],
    }
    data.update({k: v.model_dump() if hasattr(v, "model_dump") else v for k, v in sections.items()})
    if background_model is not None:
        bg_name, bg_checkpoint, bg_id = background_model
        if bg_id in ("reference", "all"):
            raise UserError(f"a background model cannot be called {bg_id!r} (a model id the run already uses)")
        data["models"] = [*data["models"], {"name": bg_name, "pretrained": str(bg_checkpoint), "id": bg_id}]
        data["background_assignment"] = {**dict(data.get("background_assignment") or {}), "model": bg_id}
        data["thresholds"] = {**dict(data.get("thresholds") or {}), "require_all_models": False}
    return config.parse(data, f"run config for {world_dir}")
