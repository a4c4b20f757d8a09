"""The run's label space without torch: its names, and where each class sits in it.

The label space is the 1,000 ImageNet-1K class names (the paper's "1 vs 1000") or the run's own
class list. Scoring (curation/zeroshot.py) and the release's classnames.txt both read it from here.
"""
from __future__ import annotations

from curation.config import RunConfig
from curation.errors import UserError


def label_names(cfg: RunConfig) -> list[str]:
    if cfg.label_space == "imagenet1k":
        from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

        return list(IMAGENET_CLASSNAMES)
    return [c.name for c in cfg.classes]


def true_labels(cfg: RunConfig) -> dict[int, int]:
    """class_idx (as stored on samples) -> the class's index in the label space."""
    if cfg.label_space == "imagenet1k":
        missing = [c.name for c in cfg.classes if c.imagenet_idx is None]
        if missing:
            raise UserError(f"label_space is imagenet1k, but class(es) {', '.join(missing)} have no imagenet_idx.",
                            where="config.yaml", hint="Set imagenet_idx for them, or use label_space: classes.")
        return {c.imagenet_idx: c.imagenet_idx for c in cfg.classes}
    return {cfg.class_index(c): i for i, c in enumerate(cfg.classes)}
