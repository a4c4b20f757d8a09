"""What the clean stage learns from one stored image: decodable, size, shape, content and perceptual hash,
and the small colour thumbnails that confirm a near-duplicate match (curation/dedupe.py).

Each check records a reason instead of raising, so every sample ends with exactly one outcome.
"""
from __future__ import annotations

import hashlib
import io
import re
import warnings

import numpy as np
from PIL import Image

from curation.config import CleanSpec
from curation.image_header import is_complete

warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

HASH_SIZE = 8          # 8x8 low-frequency DCT coefficients -> 64 bits
_DCT_SIZE = 32
CROP_FRACTIONS = (0.0, 0.04, 0.08, 0.12)   # trimmed from each side before hashing
THUMB_SIDE = 8                                          # 8x8 RGB cells per thumbnail
THUMB_CROPS = tuple(k / 100 for k in range(13))         # 0-12% trimmed from each side, 1% steps
THUMB_BYTES = THUMB_SIDE * THUMB_SIDE * 3 * len(THUMB_CROPS)


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    m = np.cos(np.pi * (2 * np.arange(n)[None, :] + 1) * k / (2 * n))
    m[0] /= np.sqrt(2)
    return m * np.sqrt(2 / n)


_DCT = _dct_matrix(_DCT_SIZE)


def crop_hashes(img: Image.Image) -> list[int]:
    """pHash of the whole image and of central crops: a near copy that was cropped a little matches
    one of the original's crops (a plain pHash moves by 6-24 bits under a 4-10% crop)."""
    w, h = img.size
    out = []
    for f in CROP_FRACTIONS:
        dx, dy = int(w * f), int(h * f)
        out.append(phash(img.crop((dx, dy, w - dx, h - dy)) if f else img))
    return out


def thumbnails(img: Image.Image) -> bytes:
    """8x8 RGB cell means of the image and of central crops 1% apart, concatenated (uint8).

    They confirm a pHash match (dedupe.thumb_distance): colour and cell-level detail see the animal
    where the grey 8x8 DCT hash mostly sees the background. 1% steps because a copy cropped by c
    lines up with the original's crop at c only to within half a step, and at 4% steps that
    misalignment alone moves cells as much as a different animal does."""
    rgb = img.convert("RGB")
    w, h = rgb.size
    side = (THUMB_SIDE, THUMB_SIDE)
    return b"".join(rgb.resize(side, Image.Resampling.BOX, box=(w * f, h * f, w - w * f, h - h * f)).tobytes()
                    for f in THUMB_CROPS)


def phash(img: Image.Image) -> int:
    """64-bit DCT perceptual hash (the imagehash.phash recipe): robust to resizing and re-encoding."""
    gray = np.asarray(img.convert("L").resize((_DCT_SIZE, _DCT_SIZE), Image.Resampling.LANCZOS), dtype=np.float64)
    low = (_DCT @ gray @ _DCT.T)[:HASH_SIZE, :HASH_SIZE]
    bits = (low > np.median(low)).flatten()
    return int(np.packbits(bits).view(">u8")[0])


def check_image(data: bytes, spec: CleanSpec) -> dict:
    """Return width, height, bytes, sha256, phash(es), thumbnails, and reason/detail (None when the image passes)."""
    out = {"reason": None, "detail": None, "width": None, "height": None, "bytes": len(data),
           "sha256": hashlib.sha256(data).hexdigest(), "phash": None, "phash_crops": None, "thumbnails": None}
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = img.format or ""
            img.load()                          # full decode: a corrupt stream fails here
            out["width"], out["height"] = img.width, img.height
            if not is_complete(data, fmt):
                return {**out, "reason": "truncated", "detail": f"{fmt} data ends before its end marker"}
            hashes = crop_hashes(img)
            out["phash"], out["phash_crops"] = hashes[0], hashes[1:]
            out["thumbnails"] = thumbnails(img)
    except Exception as exc:                    # noqa: BLE001 - any decoder failure is a recorded outcome
        text = re.sub(r"<[^>]* at 0x[0-9a-f]+>", "the data", str(exc))   # no memory addresses: same text every run
        reason = "truncated" if "truncated" in text.lower() else "undecodable"
        return {**out, "reason": reason, "detail": f"{type(exc).__name__}: {text}"[:300]}
    problem = shape_problem(out["width"], out["height"], spec)
    return {**out, "reason": problem[0], "detail": problem[1]} if problem else out


SHAPE_REASONS = ("too_small", "aspect_ratio")


def shape_problem(w: int, h: int, spec: CleanSpec) -> tuple[str, str] | None:
    """(reason, detail) when a decoded image's size breaks clean.min_side or clean.max_aspect_ratio.

    Kept apart from decoding: the clean stage re-applies it to cached checks on every run, so an
    edited threshold takes effect without decoding the shards again."""
    if min(w, h) < spec.min_side:
        return "too_small", f"{w}x{h}: shorter side under {spec.min_side}px"
    if max(w, h) / min(w, h) > spec.max_aspect_ratio:
        return "aspect_ratio", f"{w}x{h}: aspect ratio over {spec.max_aspect_ratio}"
    return None
