"""Compositing: an animal cut-out pasted on a random crop of a background photo.

Every random choice comes from the numpy Generator passed in, so an image is a pure function of
(assets, seed): the same seed gives the same pixels.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from curation.world.assets import BackgroundPhoto, Stamp

# Animal size: its longer side as a fraction of the canvas side. Small enough that the background
# fills most of the picture (as in a field photo), large enough that the animal is recognisable.
ANIMAL_SCALE = (0.45, 0.75)
CROP_SCALE = (0.55, 1.0)      # background crop side as a fraction of the region's shorter side
JITTER = 0.12                 # brightness / contrast / saturation factors in 1 ± JITTER


@lru_cache(maxsize=128)
def _stamp_image(path: Path) -> Image.Image:
    img = Image.open(path).convert("RGBA")
    return img.crop(img.getchannel("A").getbbox())   # trim the transparent margin


@lru_cache(maxsize=64)
def _region_image(path: Path, region: tuple[float, float, float, float]) -> Image.Image:
    img = Image.open(path).convert("RGB")             # grayscale textures become RGB
    w, h = img.size
    left, top, right, bottom = region
    return img.crop((round(left * w), round(top * h), round(right * w), round(bottom * h)))


def jitter(img: Image.Image, rng: np.random.Generator, strength: float = JITTER) -> Image.Image:
    """Mild colour jitter: brightness, contrast and saturation each scaled by 1 ± strength."""
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        img = enhance(img).enhance(float(rng.uniform(1 - strength, 1 + strength)))
    return img


def background_crop(photo: BackgroundPhoto, rng: np.random.Generator, size: int) -> Image.Image:
    """A random square crop of the photo's labelled region, resized to size×size, maybe mirrored."""
    region = _region_image(photo.path, photo.region)
    w, h = region.size
    side = max(8, int(min(w, h) * rng.uniform(*CROP_SCALE)))
    x = int(rng.integers(0, w - side + 1))
    y = int(rng.integers(0, h - side + 1))
    img = region.crop((x, y, x + side, y + side)).resize((size, size), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        img = ImageOps.mirror(img)
    return jitter(img, rng)


def paste_animal(canvas: Image.Image, stamp: Stamp, rng: np.random.Generator,
                 scale: tuple[float, float] = ANIMAL_SCALE) -> Image.Image:
    """Paste the cut-out at a random scale, position and orientation; returns a new RGB image."""
    animal = _stamp_image(stamp.path)
    size = canvas.size[0]
    longest = size * rng.uniform(*scale)
    factor = longest / max(animal.size)
    animal = animal.resize((max(1, round(animal.width * factor)), max(1, round(animal.height * factor))),
                           Image.Resampling.LANCZOS)
    if rng.random() < 0.5:
        animal = ImageOps.mirror(animal)
    rgb, alpha = animal.convert("RGB"), animal.getchannel("A")
    rgb = jitter(rgb, rng, JITTER / 2)
    x = int(rng.integers(0, size - animal.width + 1))
    y = int(rng.integers(0, size - animal.height + 1))
    out = canvas.copy()
    out.paste(rgb, (x, y), alpha)
    return out


def composite(stamp: Stamp, photo: BackgroundPhoto, rng: np.random.Generator, size: int) -> Image.Image:
    return paste_animal(background_crop(photo, rng, size), stamp, rng)
