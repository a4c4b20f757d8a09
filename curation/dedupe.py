"""Exact and near duplicates across the whole run, within and across classes.

Exact: same content hash; the image with the most pixels (ties: smallest uid) is kept.

Near: a candidate pair comes within ``max_bits`` Hamming distance on the perceptual hashes (each
image has several: the whole picture and central crops, so a slightly cropped copy still matches),
found without comparing all pairs: the 64 bits are split into max_bits+1 bands, and two hashes
that differ in at most max_bits bits agree exactly on at least one band (pigeonhole), so only
hashes sharing a band are compared. The grey 8x8 DCT hash mostly sees the background, so two
different animals on one background photo often come within 4 bits; a candidate is therefore a
near duplicate only when its colour thumbnails agree too (``thumb_distance`` at most
``max_difference``), which a different animal covering part of the frame does not (on the
planted worlds no photo of another animal or background photo did: bench/RESULTS.md, "near duplicates").

No transitive chains: images are visited in preference order (most pixels, then uid), and each is
kept unless it matches an already kept image directly; then it is a near duplicate of that image
(the closest, when several). A, B, C with A~B and B~C but not A~C keep A and C. The outcome does
not depend on input order.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from curation.image_checks import THUMB_BYTES, THUMB_CROPS, THUMB_SIDE


@dataclass(frozen=True)
class Candidate:
    uid: str
    class_idx: int
    sha256: str
    phashes: tuple[int, ...]    # whole image first, then central crops; empty when undecodable
    pixels: int
    thumbnails: bytes | None = None   # image_checks.thumbnails; None: it cannot be a near duplicate


@dataclass(frozen=True)
class Duplicate:
    reason: str          # duplicate | near_duplicate
    duplicate_of: str    # uid of the kept image


def _preference(c: Candidate) -> tuple:
    return (-c.pixels, c.uid)


def _unpacked_bit_counts(x: np.ndarray) -> np.ndarray:
    """Set bits per uint64 element, for numpy 1.x (Beam allows it), which has no np.bitwise_count."""
    return np.unpackbits(np.ascontiguousarray(x)[..., None].view(np.uint8), axis=-1).sum(axis=-1)


_bit_counts = getattr(np, "bitwise_count", _unpacked_bit_counts)


def _band_splitter(n: int):
    """A function from a 64-bit hash to its n (band number, band value) keys."""
    edges = [round(i * 64 / n) for i in range(n + 1)]
    cuts = [(i, edges[i], (1 << (edges[i + 1] - edges[i])) - 1) for i in range(n)]
    return lambda h: [(i, (h >> shift) & mask) for i, shift, mask in cuts]


MAX_GAIN = 0.10      # a copy's colours may be scaled by 1 ± this per channel (brightness, contrast, saturation) ...
MAX_OFFSET = 12.0    # ... and shifted by this many levels: what re-encoding and a mild colour shift do, not a new scene


def prepared(thumbnails: bytes) -> np.ndarray:
    """image_checks.thumbnails as float (crop levels, cells, channels)."""
    if len(thumbnails) != THUMB_BYTES:
        raise ValueError(f"thumbnails hold {len(thumbnails)} bytes, expected {THUMB_BYTES}")
    return np.frombuffer(thumbnails, np.uint8).reshape(len(THUMB_CROPS), THUMB_SIDE * THUMB_SIDE, 3).astype(np.float32)


def thumb_distance(a: np.ndarray, b: np.ndarray) -> float:
    """How far apart two images' ``prepared`` thumbnails are at their best crop alignment (symmetric).

    A copy cropped by c per side lines up with the original's crop at c: each image's whole
    thumbnail is compared with every crop level of the other. At each alignment one image's colours
    are fitted to the other's per channel, within MAX_GAIN and MAX_OFFSET (a copy's colour jitter,
    not a different background), and the distance is the second-largest of the 64 cells' residuals
    (mean over channels, in units of the image's spread + 8 levels): one cell spoilt by a JPEG block
    does not break a copy, while a different animal, which covers many cells, does."""
    return float(thumb_distances(a, b[None])[0])


def thumb_distances(a: np.ndarray, others: np.ndarray) -> np.ndarray:
    """thumb_distance of ``a`` to each of ``others`` (k, levels, cells, channels), in one pass."""
    y = np.concatenate([np.broadcast_to(others[:, :1], others.shape), others], axis=1)
    x = np.broadcast_to(np.concatenate([a, np.broadcast_to(a[:1], a.shape)])[None], y.shape)
    return np.maximum(_fitted_residual(x, y), _fitted_residual(y, x)).min(axis=1)


def _fitted_residual(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(k, alignments): second-largest cell residual of y fitted to x per channel, within the jitter limits."""
    xm, ym = x.mean(axis=2, keepdims=True), y.mean(axis=2, keepdims=True)
    xc, yc = x - xm, y - ym
    gain = np.clip((xc * yc).sum(axis=2, keepdims=True) / ((yc * yc).sum(axis=2, keepdims=True) + 1e-6),
                   1 - MAX_GAIN, 1 + MAX_GAIN)
    fitted = ym + np.clip(xm - ym, -MAX_OFFSET, MAX_OFFSET) + gain * yc
    cells = np.abs(x - fitted).mean(axis=3) / (x.std(axis=(2, 3))[..., None] + 8.0)
    return np.partition(cells, -2, axis=2)[..., -2]


def find_duplicates(candidates: list[Candidate], max_bits: int,
                    max_difference: float) -> tuple[dict[str, Duplicate], set[str]]:
    """Return ({uid: Duplicate} for every image not kept, {kept uids with a duplicate of another class})."""
    dropped: dict[str, Duplicate] = {}
    exact: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        exact[c.sha256].append(c)
    for same in exact.values():
        keep = min(same, key=_preference)
        for c in same:
            if c is not keep:
                dropped[c.uid] = Duplicate("duplicate", keep.uid)
    survivors = sorted((c for c in candidates if c.uid not in dropped), key=_preference)
    width = max((len(c.phashes) for c in survivors), default=1) or 1
    kept: list[Candidate] = []
    kept_hashes = np.zeros((len(survivors), width), np.uint64)   # row k: kept[k]'s hashes, padded with its first
    thumbs: dict[int, np.ndarray] = {}           # kept index -> prepared thumbnails, made when first needed
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)   # hash band -> kept indices
    bands = _band_splitter(max_bits + 1)
    for c in survivors:
        keys = {key for h in c.phashes for key in bands(h)}
        if c.phashes and c.thumbnails is not None:
            near = {k for key in keys for k in buckets.get(key, ())}
            near_k = np.fromiter(sorted(near), np.int64, len(near))
            mine = np.array(c.phashes, np.uint64)
            bits = _bit_counts(kept_hashes[near_k][:, :, None] ^ mine[None, None, :]).min(axis=(1, 2))
            matched = [int(k) for k in near_k[bits <= max_bits] if kept[k].thumbnails is not None]
            if matched:
                mine = prepared(c.thumbnails)
                for k in matched:
                    if k not in thumbs:
                        thumbs[k] = prepared(kept[k].thumbnails)
                dist = thumb_distances(mine, np.stack([thumbs[k] for k in matched]))
                best = int(np.argmin(dist))          # first minimum: the most preferred of the closest
                if dist[best] <= max_difference:
                    dropped[c.uid] = Duplicate("near_duplicate", kept[matched[best]].uid)
                    continue
        k = len(kept)
        kept.append(c)
        if c.phashes:
            kept_hashes[k] = [*c.phashes, *[c.phashes[0]] * (width - len(c.phashes))]
        for key in keys:
            buckets[key].append(k)
    # An exact duplicate of an image that is itself a near duplicate points at that image's keeper.
    for uid, dup in list(dropped.items()):
        target = dup.duplicate_of
        while target in dropped:
            target = dropped[target].duplicate_of
        dropped[uid] = Duplicate(dup.reason, target)
    class_of = {c.uid: c.class_idx for c in candidates}
    classes: dict[str, set[int]] = defaultdict(set)
    for uid, dup in dropped.items():
        classes[dup.duplicate_of].add(class_of[uid])
    across = {uid for uid, cls in classes.items() if cls - {class_of[uid]}}
    return dropped, across
