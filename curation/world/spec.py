"""What a planted world is made of: its settings (WorldSpec) and its plant (per class, the
background it is planted on and the one it never appears on in training).

The plant is drawn from the seed unless given: biased classes get their common backgrounds
round-robin over a shuffled background list (so every background is common for someone), and a
counter background that is common for another class — the background that pulls predictions
away. Control classes have no planted bias: uniform backgrounds everywhere.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

import numpy as np

from curation.errors import UserError
from curation.world.assets import Manifest

NOISE_KINDS = ("exact_dup", "near_dup", "corrupted", "tiny", "no_animal", "wrong_label")


@dataclass
class WorldSpec:
    seed: int = 0
    classes: list[str] = field(default_factory=list)        # empty: the manifest's first n_classes
    n_classes: int = 16
    backgrounds: list[str] = field(default_factory=list)    # empty: every label in the manifest
    n_control: int = 4
    p_common: float = 0.9                                   # training: P(biased class on its common)
    scene_caption_share: float = 0.5     # training: composites captioned "a photo of a {class} on {bg}."
    plant: dict[str, list[str]] = field(default_factory=dict)   # class -> [common, counter] overrides
    image_size: int = 160
    train_per_class: int = 120
    train_background_per_label: int = 120
    # The pool: ~30 photos on each rarer background, so a counter group can tell a background the
    # model gets 20% right from one it gets 0% right (with ~13, as at 200 x 0.6, it often cannot).
    pool_per_class: int = 300
    pool_common_share: float = 0.4       # pool: P(biased class on its common); the rest spread evenly
    pool_noise: dict[str, float] = field(default_factory=lambda: {
        "exact_dup": 0.04, "near_dup": 0.04, "corrupted": 0.02, "tiny": 0.02, "no_animal": 0.04, "wrong_label": 0.04})
    grid_per_cell: int = 60
    train_epochs: int = 12               # the reference model's training length for this world

    def validate(self, manifest: Manifest) -> "WorldSpec":
        """Resolve defaults against the manifest; UserError naming the setting when one is wrong."""
        spec = dataclasses.replace(self, plant={k: list(v) for k, v in self.plant.items()},
                                   pool_noise=dict(self.pool_noise))
        if not spec.classes:
            if not 2 <= spec.n_classes <= len(manifest.classes):
                raise UserError(f"n_classes must be between 2 and {len(manifest.classes)}, got {spec.n_classes}")
            spec.classes = [c.name for c in manifest.classes[:spec.n_classes]]
        spec.classes = [manifest.animal(c).name for c in spec.classes]
        if len(set(spec.classes)) != len(spec.classes):
            raise UserError(f"classes listed twice: {spec.classes}")
        spec.n_classes = len(spec.classes)
        labels = manifest.background_labels()
        spec.backgrounds = spec.backgrounds or labels
        unknown = [b for b in spec.backgrounds if b not in labels]
        if unknown:
            raise UserError(f"unknown background(s) {unknown}; the manifest has {labels}")
        if len(spec.backgrounds) < 3:
            raise UserError("a world needs at least 3 backgrounds")
        if not 0 <= spec.n_control < spec.n_classes:
            raise UserError(f"n_control must be between 0 and n_classes - 1 ({spec.n_classes - 1}), got {spec.n_control}")
        if not 0 < spec.p_common <= 1 or not 0 < spec.pool_common_share <= 1:
            raise UserError("p_common and pool_common_share must be in (0, 1]")
        for name in ("image_size", "train_per_class", "pool_per_class", "grid_per_cell", "train_epochs"):
            if getattr(spec, name) < 1:
                raise UserError(f"{name} must be positive")
        if spec.image_size < 32:
            raise UserError("image_size must be at least 32")
        bad = set(spec.pool_noise) - set(NOISE_KINDS)
        if bad:
            raise UserError(f"unknown pool noise kind(s) {sorted(bad)}; known: {', '.join(NOISE_KINDS)}")
        for cls, pair in spec.plant.items():
            if manifest.animal(cls).name not in spec.classes:
                raise UserError(f"plant names {cls!r}, which is not one of the world's classes")
            if len(pair) != 2 or pair[0] == pair[1] or any(b not in spec.backgrounds for b in pair):
                raise UserError(f"plant for {cls!r} must be two different backgrounds of {spec.backgrounds}, got {pair}")
        return spec

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Plant:
    cls: str
    biased: bool
    common: str | None      # None for control classes
    counter: str | None


def draw_plant(spec: WorldSpec) -> dict[str, Plant]:
    """Per class, its planted (common, counter) pair; deterministic in spec.seed."""
    rng = np.random.default_rng([spec.seed, 1])
    order = [spec.classes[i] for i in rng.permutation(len(spec.classes))]
    overridden = {cls for cls in spec.plant}
    # Classes with an explicit plant are biased; control classes come from the rest.
    free = [c for c in order if c not in overridden]
    control = set(free[len(free) - spec.n_control:]) if spec.n_control else set()
    biased = [c for c in order if c not in control]
    bgs = [spec.backgrounds[i] for i in rng.permutation(len(spec.backgrounds))]
    common = {c: bgs[i % len(bgs)] for i, c in enumerate(biased)}
    for c, (com, _) in spec.plant.items():
        common[c] = com
    out = {}
    for c in spec.classes:
        if c in control:
            out[c] = Plant(c, False, None, None)
            continue
        if c in spec.plant:
            out[c] = Plant(c, True, *spec.plant[c])
            continue
        others = sorted({common[o] for o in biased if o != c} - {common[c]})
        choices = others or [b for b in spec.backgrounds if b != common[c]]
        out[c] = Plant(c, True, common[c], choices[int(rng.integers(len(choices)))])
    return out


PRESETS = {
    # The demo and benchmark world.
    "default": {},
    # The test world: small enough to build and train within a test session's budget; its pool is
    # large enough (150 per class) that the rarer backgrounds form groups a drop can be measured on.
    "small": dict(n_classes=12, n_control=3, image_size=128, train_per_class=100, train_background_per_label=100,
                  pool_per_class=150, pool_common_share=0.6, grid_per_cell=24, train_epochs=8),
}


def preset(name: str, **overrides) -> WorldSpec:
    if name not in PRESETS:
        raise UserError(f"unknown world size {name!r}; known: {', '.join(PRESETS)}")
    return WorldSpec(**{**PRESETS[name], **{k: v for k, v in overrides.items() if v is not None}})
