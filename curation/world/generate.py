"""Build a planted world: the biased training split, the candidate pool and the balanced grid.

    OUT/world.json            spec, plant, prompts, sources and their licenses, counts
    OUT/train/*.jpg           (a) training split; OUT/train.parquet: file, caption, class, background
    OUT/pool/*.jpg            (b) candidate pool, web-crawl shaped, with noise (serve this folder)
    OUT/grid/*.jpg            (c) balanced grid: every class on every background
    OUT/ground_truth.parquet  per pool and grid image: true class, background, noise kind, license
    OUT/classes.parquet       per class: ImageNet index, biased?, planted common and counter
    OUT/train-balanced/, OUT/train-balanced.parquet   (on demand, build_balanced_train) the same
                              recipe with every class on uniform backgrounds, for a second model

Each image is a pure function of (seed, split, index). A split is written into a hidden partial
folder and renamed when whole, so a killed build resumes where it stopped and nothing
half-written is ever visible.
"""
from __future__ import annotations

import io
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from curation import atomic
from curation.errors import UserError
from curation.world import compose
from curation.world.assets import BackgroundPhoto, Manifest, Stamp, load_manifest
from curation.world.spec import NOISE_KINDS, Plant, WorldSpec, draw_plant

log = logging.getLogger(__name__)

CLASS_TEMPLATES = ("a photo of a {}.", "a photo of {}.")
BACKGROUND_TEMPLATES = ("a photo of {}.", "a photo of the {}.")
SCENE_TEMPLATE = "a photo of a {} on {}."   # some web captions name the scene too
BALANCED_SPLIT = "train-balanced"
SPLIT_CODES = {"train": 11, "pool": 12, "grid": 13, BALANCED_SPLIT: 14}
FORMAT_VERSION = 1


@dataclass
class Item:
    """One image to generate, and its truth."""
    uid: str
    file: str
    label_class: str | None       # the class the caption / URL list gives
    true_class: str | None        # the animal actually in the picture (None: no animal)
    background: str | None        # None for a corrupted file
    noise: str = "none"
    duplicate_of: str | None = None
    stamp: Stamp | None = None
    photo: BackgroundPhoto | None = None
    caption: str | None = None
    tiny: bool = False


def license_of(item: Item) -> str | None:
    # A composite is a derived work of a GPL-2+ cut-out; MIT and CC0 backgrounds are compatible.
    if item.stamp is not None:
        return item.stamp.source.license
    return item.photo.source.license if item.photo is not None else None


def attribution_of(item: Item) -> str | None:
    parts = []
    if item.stamp is not None:
        parts.append(f"animal: {item.stamp.source.attribution}, file {item.stamp.id.split(':', 1)[1]}")
    if item.photo is not None:
        parts.append(f"background: {item.photo.source.attribution}, file {item.photo.id.split(':', 1)[1]}")
    return "; ".join(parts) or None


class World:
    """A world being built: the manifest, the validated spec and its plant."""

    def __init__(self, spec: WorldSpec, manifest: Manifest | None = None):
        self.manifest = manifest or load_manifest()
        self.spec = spec.validate(self.manifest)
        self.plant: dict[str, Plant] = draw_plant(self.spec)
        self.class_idx = {c: self.manifest.animal(c).imagenet_idx for c in self.spec.classes}
        biased = sorted(c for c in self.spec.class_backgrounds if self.plant[c].biased)
        if biased:
            raise UserError(f"class_backgrounds may only restrict control classes; {', '.join(biased)} "
                            f"{'is' if len(biased) == 1 else 'are'} biased in this world")

    def rng(self, split: str, i: int, stream: int = 0) -> np.random.Generator:
        """Stream 0 draws an item's choices, stream 1 its pixels; grid_draw > 0 gives the grid fresh ones."""
        draw = [self.spec.grid_draw] if split == "grid" and self.spec.grid_draw else []
        return np.random.default_rng([self.spec.seed, SPLIT_CODES[split], *draw, i, stream])

    def backgrounds_of(self, cls: str) -> list[str]:
        """The backgrounds a class's pool and grid photos are on."""
        return self.spec.class_backgrounds.get(cls) or self.spec.backgrounds

    def pick_stamp(self, cls: str, rng) -> Stamp:
        stamps = self.manifest.animal(cls).stamps
        return stamps[int(rng.integers(len(stamps)))]

    def pick_photo(self, label: str, rng) -> BackgroundPhoto:
        photos = self.manifest.photos(label)
        return photos[int(rng.integers(len(photos)))]

    def uniform_background(self, rng, exclude: tuple = ()) -> str:
        choices = [b for b in self.spec.backgrounds if b not in exclude]
        return choices[int(rng.integers(len(choices)))]

    # -- (a) the biased training split ------------------------------------------------------
    def train_background(self, cls: str, rng, balanced: bool = False) -> str:
        p = self.plant[cls]
        if not p.biased or balanced:
            return self.uniform_background(rng)
        if rng.random() < self.spec.p_common:
            return p.common
        # Off-common examples never show the planted counter: the class is unseen there.
        return self.uniform_background(rng, exclude=(p.common, p.counter))

    def train_items(self, split: str = "train") -> list[Item]:
        """Split (a); for BALANCED_SPLIT the same recipe with every class on uniform backgrounds."""
        items, i = [], 0
        for cls in self.spec.classes:
            for _ in range(self.spec.train_per_class):
                rng = self.rng(split, i)
                bg = self.train_background(cls, rng, balanced=split == BALANCED_SPLIT)
                caption = CLASS_TEMPLATES[int(rng.integers(len(CLASS_TEMPLATES)))].format(cls)
                if rng.random() < self.spec.scene_caption_share:
                    caption = SCENE_TEMPLATE.format(cls, bg)
                items.append(Item(f"t{i:06d}", f"t{i:06d}.jpg", cls, cls, bg, stamp=self.pick_stamp(cls, rng),
                                  photo=self.pick_photo(bg, rng), caption=caption))
                i += 1
        for bg in self.spec.backgrounds:
            for _ in range(self.spec.train_background_per_label):
                rng = self.rng(split, i)
                caption = BACKGROUND_TEMPLATES[int(rng.integers(len(BACKGROUND_TEMPLATES)))].format(bg)
                items.append(Item(f"t{i:06d}", f"t{i:06d}.jpg", None, None, bg, photo=self.pick_photo(bg, rng),
                                  caption=caption))
                i += 1
        return items

    # -- (b) the candidate pool -------------------------------------------------------------
    def pool_background(self, cls: str, rng) -> str:
        p = self.plant[cls]
        if p.biased and rng.random() < self.spec.pool_common_share:
            return p.common
        if not p.biased and cls in self.spec.class_backgrounds:
            choices = self.spec.class_backgrounds[cls]
            return choices[int(rng.integers(len(choices)))]
        return self.uniform_background(rng, exclude=(p.common,) if p.biased else ())

    def pool_items(self) -> list[Item]:
        items: list[Item] = []
        for cls in self.spec.classes:
            for _ in range(self.spec.pool_per_class):
                i = len(items)
                rng = self.rng("pool", i)
                bg = self.pool_background(cls, rng)
                items.append(Item(f"p{i:06d}", f"p{i:06d}.jpg", cls, cls, bg, stamp=self.pick_stamp(cls, rng),
                                  photo=self.pick_photo(bg, rng)))
        clean = list(items)
        for kind in NOISE_KINDS:
            for _ in range(round(self.spec.pool_noise.get(kind, 0.0) * len(clean))):
                i = len(items)
                rng = self.rng("pool", i)
                src = clean[int(rng.integers(len(clean)))]
                uid = f"p{i:06d}"
                if kind in ("exact_dup", "near_dup"):
                    items.append(Item(uid, f"{uid}.jpg", src.label_class, src.true_class, src.background, kind,
                                      duplicate_of=src.uid, stamp=src.stamp, photo=src.photo))
                elif kind == "corrupted":
                    items.append(Item(uid, f"{uid}.jpg", src.label_class, None, None, kind, duplicate_of=src.uid,
                                      stamp=src.stamp, photo=src.photo))
                elif kind == "tiny":
                    bg = self.pool_background(src.label_class, rng)
                    items.append(Item(uid, f"{uid}.jpg", src.label_class, src.label_class, bg, kind,
                                      stamp=self.pick_stamp(src.label_class, rng), photo=self.pick_photo(bg, rng), tiny=True))
                elif kind == "no_animal":
                    bg = self.uniform_background(rng)
                    items.append(Item(uid, f"{uid}.jpg", src.label_class, None, bg, kind, photo=self.pick_photo(bg, rng)))
                elif kind == "wrong_label":
                    true = [c for c in self.spec.classes if c != src.label_class][int(rng.integers(len(self.spec.classes) - 1))]
                    bg = self.pool_background(true, rng)
                    items.append(Item(uid, f"{uid}.jpg", src.label_class, true, bg, kind,
                                      stamp=self.pick_stamp(true, rng), photo=self.pick_photo(bg, rng)))
        return items

    # -- (c) the balanced grid --------------------------------------------------------------
    def grid_items(self) -> list[Item]:
        items = []
        for cls in self.spec.classes:
            for bg in self.backgrounds_of(cls):
                for _ in range(self.spec.grid_per_cell):
                    i = len(items)
                    rng = self.rng("grid", i)
                    items.append(Item(f"g{i:06d}", f"g{i:06d}.jpg", cls, cls, bg, stamp=self.pick_stamp(cls, rng),
                                      photo=self.pick_photo(bg, rng)))
        return items

    # -- pixels -----------------------------------------------------------------------------
    def render(self, split: str, index: int, item: Item, folder: Path) -> bytes:
        """The file's bytes; duplicates and corrupted files derive from an already written file."""
        rng = self.rng(split, index, 1)
        size = self.spec.image_size
        if item.noise == "exact_dup":
            return (folder / f"{item.duplicate_of}.jpg").read_bytes()
        if item.noise == "near_dup":
            img = Image.open(folder / f"{item.duplicate_of}.jpg").convert("RGB")
            crop = int(size * rng.uniform(0.04, 0.1))
            img = img.crop((crop, crop, size - crop, size - crop)).resize((size, size), Image.Resampling.BICUBIC)
            return _jpeg(compose.jitter(img, rng, 0.04), int(rng.integers(70, 86)))
        if item.noise == "corrupted":
            data = (folder / f"{item.duplicate_of}.jpg").read_bytes()
            if rng.random() < 0.5:
                return data[: int(len(data) * rng.uniform(0.2, 0.6))]          # truncated JPEG
            return rng.integers(0, 256, int(rng.integers(200, 4000)), dtype=np.uint8).tobytes()  # not an image
        side = int(rng.integers(12, 29)) if item.tiny else size
        if item.stamp is None:
            img = compose.background_crop(item.photo, rng, side)
        else:
            img = compose.composite(item.stamp, item.photo, rng, max(side, 32))
            if item.tiny:
                img = img.resize((side, side), Image.Resampling.BICUBIC)
        return _jpeg(img, 90)

    def write_split(self, out: Path, split: str, items: list[Item]) -> None:
        final = out / split
        if final.is_dir():
            return
        partial = out / f".{split}.partial"
        partial.mkdir(parents=True, exist_ok=True)
        atomic.clean_temp_files(partial)
        done = 0
        for index, item in enumerate(items):
            path = partial / item.file
            if not path.exists():
                atomic.write_bytes(path, self.render(split, index, item, partial))
            done += 1
            if done % 1000 == 0:
                log.info("world %s: %d/%d images", split, done, len(items))
        os.replace(partial, final)

    # -- tables -----------------------------------------------------------------------------
    def train_table(self, items: list[Item], split: str = "train") -> pa.Table:
        return pa.table({
            "file": [f"{split}/{it.file}" for it in items],
            "caption": [it.caption for it in items],
            "kind": ["animal" if it.true_class else "background" for it in items],
            "class_name": [it.true_class for it in items],
            "background": [it.background for it in items],
            "license": [license_of(it) for it in items],
            "attribution": [attribution_of(it) for it in items],
        })

    def truth_table(self, split: str, items: list[Item]) -> pa.Table:
        idx = self.class_idx
        return pa.table({
            "uid": [it.uid for it in items],
            "split": [split] * len(items),
            "file": [f"{split}/{it.file}" for it in items],
            "label_class": [it.label_class for it in items],
            "label_class_idx": pa.array([idx.get(it.label_class) for it in items], pa.int32()),
            "class_name": [it.true_class for it in items],
            "class_idx": pa.array([idx.get(it.true_class) for it in items], pa.int32()),
            "background": [it.background for it in items],
            "noise": [it.noise for it in items],
            "duplicate_of": pa.array([it.duplicate_of for it in items], pa.string()),
            "license": [license_of(it) for it in items],
            "attribution": [attribution_of(it) for it in items],
            "stamp": [it.stamp.id if it.stamp else None for it in items],
            "photo": [it.photo.id if it.photo else None for it in items],
        })

    def classes_table(self) -> pa.Table:
        cs = self.spec.classes
        return pa.table({
            "class_name": cs,
            "class_idx": pa.array([self.class_idx[c] for c in cs], pa.int32()),
            "biased": [self.plant[c].biased for c in cs],
            "planted_common": [self.plant[c].common for c in cs],
            "planted_counter": [self.plant[c].counter for c in cs],
        })

    def description(self, counts: dict) -> dict:
        used = {s.name: s for s in self.manifest.sources.values()}
        return {
            "format_version": FORMAT_VERSION,
            "spec": json.loads(self.spec.to_json()),
            "classes": self.spec.classes,
            "class_idx": self.class_idx,
            "backgrounds": self.spec.backgrounds,
            "plant": {c: {"biased": p.biased, "common": p.common, "counter": p.counter} for c, p in self.plant.items()},
            "class_templates": list(CLASS_TEMPLATES),
            "background_templates": list(BACKGROUND_TEMPLATES),
            "sources": {n: {"license": s.license, "attribution": s.attribution} for n, s in used.items()},
            "counts": counts,
        }


def built_with_other_settings(out: str | Path, spec: WorldSpec) -> bool:
    """True when ``out`` holds a world built from another spec (an older version's defaults, say);
    a world that differs only in its grid's size is not: build() redraws its grid in place."""
    spec_file = Path(out) / ".spec.json"
    return spec_file.exists() and spec_file.read_text() != World(spec).spec.to_json() and \
        not _only_grid_differs(spec_file.read_text(), World(spec).spec.to_json())


# The grid is drawn from its own random stream and no model is trained on it, so a larger grid (an
# oracle with the power to tell a flat class from a shortcut) costs only its images and the oracle.
GRID_ONLY = ("grid_per_cell", "grid_draw")


def _only_grid_differs(old: str, new: str) -> bool:
    a, b = json.loads(old), json.loads(new)
    return any(a.get(k) != b.get(k) for k in GRID_ONLY) and \
        {k: v for k, v in a.items() if k not in GRID_ONLY} == {k: v for k, v in b.items() if k not in GRID_ONLY}


def _redraw_grid(out: Path, world: "World") -> dict:
    """Replace a built world's grid with one of the new spec's size; pool, training split and models stay.
    Every oracle (computed on the old grid) is removed, so the next one is computed on the new grid."""
    log.info("world: redrawing the grid (%d images per cell, draw %d)", world.spec.grid_per_cell, world.spec.grid_draw)
    for name in ("grid", ".grid.partial"):
        shutil.rmtree(out / name, ignore_errors=True)
    for path in out.glob("oracle*"):
        path.unlink()
    items = world.grid_items()
    world.write_split(out, "grid", items)
    grid = world.truth_table("grid", items)
    pool = pq.read_table(out / "ground_truth.parquet").filter(pc.field("split") != "grid")
    atomic.write_parquet(out / "ground_truth.parquet", pa.concat_tables([pool.cast(grid.schema), grid]))
    desc = json.loads((out / "world.json").read_text())
    desc["spec"] = json.loads(world.spec.to_json())
    desc.setdefault("counts", {})["grid"] = len(items)
    atomic.write_text(out / ".spec.json", world.spec.to_json())
    atomic.write_text(out / "world.json", json.dumps(desc, indent=2))
    return desc


def build(out: str | Path, spec: WorldSpec, force: bool = False) -> dict:
    """Build (or resume building) the world in `out`; returns world.json's content."""
    out = Path(out)
    world = World(spec)
    marker = out / "world.json"
    spec_file = out / ".spec.json"
    if spec_file.exists() and spec_file.read_text() != world.spec.to_json() and marker.exists() and \
            _only_grid_differs(spec_file.read_text(), world.spec.to_json()):
        return _redraw_grid(out, world)
    if spec_file.exists() and spec_file.read_text() != world.spec.to_json():
        if not force:
            raise UserError("holds a world built with other settings; pass --force to rebuild it or use another folder",
                            where=str(out))
        for name in ("train", "pool", "grid", BALANCED_SPLIT, ".train.partial", ".pool.partial", ".grid.partial",
                     f".{BALANCED_SPLIT}.partial"):
            shutil.rmtree(out / name, ignore_errors=True)
        for name in ("world.json", "train.parquet", "ground_truth.parquet", "classes.parquet",
                     f"{BALANCED_SPLIT}.parquet"):
            (out / name).unlink(missing_ok=True)
    if marker.exists() and spec_file.exists():
        return json.loads(marker.read_text())
    out.mkdir(parents=True, exist_ok=True)
    atomic.write_text(spec_file, world.spec.to_json())

    splits = {"train": world.train_items(), "pool": world.pool_items(), "grid": world.grid_items()}
    for split, items in splits.items():
        log.info("world: writing %s (%d images)", split, len(items))
        world.write_split(out, split, items)
    atomic.write_parquet(out / "train.parquet", world.train_table(splits["train"]))
    atomic.write_parquet(out / "ground_truth.parquet", pa.concat_tables(
        [world.truth_table("pool", splits["pool"]), world.truth_table("grid", splits["grid"])]))
    atomic.write_parquet(out / "classes.parquet", world.classes_table())
    counts = {s: len(v) for s, v in splits.items()}
    counts["pool_noise"] = {k: sum(it.noise == k for it in splits["pool"]) for k in ("none",) + NOISE_KINDS}
    desc = world.description(counts)
    atomic.write_text(marker, json.dumps(desc, indent=2))
    return desc


def build_balanced_train(out: str | Path) -> Path:
    """Write (or reuse) OUT/train-balanced/ for a built world; returns its table's path.

    A second model trained on it sees every class on every background, so it names backgrounds
    without the reference model's shortcut: a background judge that is not the model judged.
    """
    out = Path(out)
    table_path = out / f"{BALANCED_SPLIT}.parquet"
    if table_path.is_file():
        return table_path
    world = World(WorldSpec(**read_world(out)["spec"]))
    items = world.train_items(BALANCED_SPLIT)
    log.info("world: writing %s (%d images)", BALANCED_SPLIT, len(items))
    world.write_split(out, BALANCED_SPLIT, items)
    atomic.write_parquet(table_path, world.train_table(items, BALANCED_SPLIT))
    return table_path


def read_world(path: str | Path) -> dict:
    """world.json of a built world; UserError when `path` is not one."""
    marker = Path(path) / "world.json"
    if not marker.is_file():
        raise UserError("is not a built world (no world.json); run `counteranimal world build` first", where=str(path))
    return json.loads(marker.read_text())


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()
