"""What a planted world is made of: its settings (WorldSpec) and its plant (per class, the
background it is planted on and the one it never appears on in training).

The plant is drawn from the seed unless given: biased classes get their common backgrounds
round-robin over a shuffled background list (so every background is common for someone; with
``n_commons`` only the list's first N, so several classes share one common), and a counter
background that is common for another class — the background that pulls predictions away.
Control classes have no planted bias: uniform backgrounds everywhere. With ``plant_counter`` off
no counter is planted (off-common training photos use every other background) and whatever
counter a class has must emerge; with ``n_control == n_classes`` (the ``null`` variant) no class
is biased at all.

Sizes (``PRESETS``: default, small) and variants (``VARIANTS``: the bias structure) compose:
``preset("default", variant="null")`` is the default-size null world.
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
    # Variant settings (issue 11). At their defaults they are left out of to_json(), so every world
    # built before they existed keeps its .spec.json and is not rebuilt.
    n_commons: int | None = None         # distinct common backgrounds among biased classes; None: all
    plant_counter: bool = True           # False: off-common training photos use every other background
    # Per control class, the only backgrounds its pool and grid photos are on (training is untouched,
    # so the model is the same). With sets on which a trained model is flat, a null world has
    # classes without a significant oracle drop: the false-positive check has something to count.
    class_backgrounds: dict[str, list[str]] = field(default_factory=dict)
    grid_draw: int = 0                   # another grid from the same settings (0: the original draw)

    def validate(self, manifest: Manifest) -> "WorldSpec":
        """Resolve defaults against the manifest; UserError naming the setting when one is wrong."""
        spec = dataclasses.replace(self, plant={k: list(v) for k, v in self.plant.items()},
                                   pool_noise=dict(self.pool_noise),
                                   class_backgrounds={k: list(v) for k, v in self.class_backgrounds.items()})
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
        # n_control == n_classes is a null world: nothing planted, every class balanced.
        if not 0 <= spec.n_control <= spec.n_classes:
            raise UserError(f"n_control must be between 0 and n_classes ({spec.n_classes}), got {spec.n_control}")
        if not 0 < spec.p_common <= 1 or not 0 < spec.pool_common_share <= 1:
            raise UserError("p_common and pool_common_share must be in (0, 1]")
        if not 0 <= spec.scene_caption_share <= 1:
            raise UserError(f"scene_caption_share must be in [0, 1], got {spec.scene_caption_share}")
        if spec.n_commons is not None and not 1 <= spec.n_commons <= len(spec.backgrounds):
            raise UserError(f"n_commons must be between 1 and the number of backgrounds ({len(spec.backgrounds)}), "
                            f"got {spec.n_commons}")
        if spec.plant and spec.n_control == spec.n_classes:
            raise UserError("plant fixes a biased class, but n_control equals n_classes (a null world has none)")
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
        resolved = {}
        for cls, bgs in spec.class_backgrounds.items():
            name = manifest.animal(cls).name
            if name not in spec.classes:
                raise UserError(f"class_backgrounds names {cls!r}, which is not one of the world's classes")
            if len(set(bgs)) < 2 or len(set(bgs)) != len(bgs) or any(b not in spec.backgrounds for b in bgs):
                raise UserError(f"class_backgrounds for {cls!r} must be two or more different backgrounds of "
                                f"{spec.backgrounds}, got {bgs}")
            resolved[name] = list(bgs)
        spec.class_backgrounds = resolved
        if spec.grid_draw < 0:
            raise UserError(f"grid_draw must be 0 or more, got {spec.grid_draw}")
        return spec

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        for name, default in VARIANT_DEFAULTS.items():
            if data[name] == default:
                del data[name]
        return json.dumps(data, sort_keys=True)

    @property
    def is_null(self) -> bool:
        return self.n_control == self.n_classes


VARIANT_DEFAULTS = {"n_commons": None, "plant_counter": True, "class_backgrounds": {}, "grid_draw": 0}


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
    bgs = bgs[:spec.n_commons] if spec.n_commons else bgs
    common = {c: bgs[i % len(bgs)] for i, c in enumerate(biased)}
    for c, (com, _) in spec.plant.items():
        common[c] = com
    out = {}
    for c in spec.classes:
        if c in control:
            out[c] = Plant(c, False, None, None)
            continue
        if c in spec.plant:
            com, cnt = spec.plant[c]
            out[c] = Plant(c, True, com, cnt if spec.plant_counter else None)
            continue
        if not spec.plant_counter:
            out[c] = Plant(c, True, common[c], None)
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
    # For tests of variants (a null world, say): builds and trains in well under a minute.
    "tiny": dict(n_classes=6, n_control=2, image_size=64, train_per_class=40, train_background_per_label=40,
                 pool_per_class=40, grid_per_cell=16, train_epochs=4),
}


# Variants: the bias structure, on top of a size. Each changes one thing against "default" (the
# "independent" one several at once, like a world built by someone else); "null" plants nothing.
# "n_control": "all" means every class (resolved once the class list is known).
VARIANTS = {
    "default": {},
    # Four classes on each of three common backgrounds: a common is no longer unique to a class.
    "shared-common": dict(n_commons=3),
    # No planted counter: off-common training photos may be on any other background.
    "emergent": dict(plant_counter=False),
    # Few training captions name the scene, so the reference model names backgrounds badly.
    "few-captions": dict(scene_caption_share=0.1),
    "no-captions": dict(scene_caption_share=0.0),
    # The pool's share on a biased class's common: fewer (0.7) or more (0.3) photos elsewhere.
    "pool-common-0.7": dict(pool_common_share=0.7),
    "pool-common-0.3": dict(pool_common_share=0.3),
    # Several of the above at once: shared commons, emergent counters, few scene captions.
    "independent": dict(n_commons=3, plant_counter=False, scene_caption_share=0.2, pool_common_share=0.5),
    # Nothing planted: every class is trained balanced across backgrounds.
    "null": dict(n_control="all"),
}


def preset(name: str, variant: str | None = None, **overrides) -> WorldSpec:
    """The WorldSpec of size ``name`` with ``variant``'s bias structure; ``overrides`` (not None) win."""
    if name not in PRESETS:
        raise UserError(f"unknown world size {name!r}; known: {', '.join(PRESETS)}")
    if variant is not None and variant not in VARIANTS:
        raise UserError(f"unknown world variant {variant!r}; known: {', '.join(VARIANTS)}")
    data = {**PRESETS[name], **VARIANTS.get(variant or "default", {}),
            **{k: v for k, v in overrides.items() if v is not None}}
    if data.get("n_control") == "all":
        classes = data.get("classes")
        data["n_control"] = len(classes) if classes else data.get("n_classes", WorldSpec.n_classes)
    return WorldSpec(**data)
