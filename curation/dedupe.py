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


# -- the same decision, per block (what the clean stage's pipeline runs) ---------------------------
#
# find_duplicates visits every image once, in preference order, against all kept ones: one process
# holds the whole run. Its decision splits into blocks that are each small and independent:
#
#   1. exact duplicates: per content hash (exact_split), a per-key step;
#   2. confirmed pairs: per pHash band bucket (close_pairs), the pairs of members within max_bits (a
#      pair sharing several buckets comes from the smallest one only), then per pair, whether the
#      thumbnails agree (confirmed);
#   3. components: the confirmed pairs joined (union-find over pairs, whose number grows with the
#      near duplicates, not with the photos);
#   4. per component, find_duplicates itself on its members.
#
# Step 4 gives each image the decision the whole-run pass gives it: an image is dropped exactly when
# a kept, more preferred image is a confirmed match, and it then points at the closest of those; all
# of them are in its component, and whether they are kept depends only on their own confirmed
# matches, in the same component. find_duplicates_blocked chains the four steps in one process (tests
# compare it with find_duplicates; bench/scale.py times it); pipeline/clean.py runs each as Beam steps.

def band_keys(c: Candidate, max_bits: int) -> set[tuple[int, int]]:
    """The (band, value) buckets an image's hashes fall in; two images within max_bits share one."""
    bands = _band_splitter(max_bits + 1)
    return {key for h in c.phashes for key in bands(h)}


def near_candidate(c: Candidate) -> bool:
    """Whether an image can be a near duplicate (or the kept image of one): hashes and thumbnails."""
    return bool(c.phashes) and c.thumbnails is not None


def exact_split(same: list[Candidate]) -> tuple[Candidate, list[tuple[str, Duplicate]]]:
    """One content hash's images: (the kept one, [(uid, Duplicate) for the others])."""
    keep = min(same, key=_preference)
    return keep, [(c.uid, Duplicate("duplicate", keep.uid)) for c in same if c is not keep]


def close_pairs(key: tuple[int, int], members: list[Candidate], max_bits: int) -> list[tuple[str, str]]:
    """Pairs (uid, uid) of one bucket's members within max_bits pHash bits whose smallest shared bucket
    is ``key`` (so each pair comes from one bucket). Members need no thumbnails: confirmed() judges
    the pairs, so a bucket's step moves hashes, not pictures."""
    members = sorted(members, key=lambda c: c.uid)
    if len(members) < 2:
        return []
    width = max(len(c.phashes) for c in members)
    hashes = np.array([[*c.phashes, *[c.phashes[0]] * (width - len(c.phashes))] for c in members], np.uint64)
    keys = [band_keys(c, max_bits) for c in members]
    out = []
    for i in range(len(members) - 1):
        bits = _bit_counts(hashes[i + 1:, :, None] ^ hashes[i][None, None, :]).min(axis=(1, 2))
        out += [(members[i].uid, members[int(j)].uid) for j in np.nonzero(bits <= max_bits)[0] + i + 1
                if min(keys[i] & keys[int(j)]) == key]
    return out


def confirmed(a: bytes, b: bytes, max_difference: float) -> bool:
    """Whether two images' thumbnails (image_checks.thumbnails) agree as a copy's do."""
    return thumb_distance(prepared(a), prepared(b)) <= max_difference


def components(pairs) -> dict[str, str]:
    """{uid: its component's name (the smallest uid in it)} for every uid in ``pairs``."""
    parent: dict[str, str] = {}

    def root(u: str) -> str:
        while parent.setdefault(u, u) != u:
            parent[u] = parent[parent[u]]
            u = parent[u]
        return u

    for a, b in pairs:
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {u: root(u) for u in list(parent)}


def resolve(exact: dict[str, Duplicate], near: dict[str, Duplicate]) -> dict[str, Duplicate]:
    """Every dropped image: an exact duplicate of a near duplicate points at that image's keeper."""
    out = dict(near)
    for uid, dup in exact.items():
        target = near.get(dup.duplicate_of)
        out[uid] = Duplicate(dup.reason, target.duplicate_of if target else dup.duplicate_of)
    return out


def across_classes(dropped: dict[str, Duplicate], class_of: dict[str, int]) -> set[str]:
    """Kept uids with a duplicate of another class."""
    return {dup.duplicate_of for uid, dup in dropped.items() if class_of[uid] != class_of[dup.duplicate_of]}


def find_duplicates_blocked(candidates: list[Candidate], max_bits: int,
                            max_difference: float) -> tuple[dict[str, Duplicate], set[str]]:
    """find_duplicates' result, computed block by block (the four steps above) in one process."""
    by_hash: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        by_hash[c.sha256].append(c)
    exact, survivors = {}, []
    for same in by_hash.values():
        keep, dups = exact_split(same)
        survivors.append(keep)
        exact.update(dups)
    buckets: dict[tuple[int, int], list[Candidate]] = defaultdict(list)
    for c in survivors:
        if near_candidate(c):
            for key in band_keys(c, max_bits):
                buckets[key].append(c)
    thumbs = {c.uid: c.thumbnails for c in survivors}
    pairs = [(a, b) for key, members in buckets.items() for a, b in close_pairs(key, members, max_bits)
             if confirmed(thumbs[a], thumbs[b], max_difference)]
    comp = components(pairs)
    groups: dict[str, list[Candidate]] = defaultdict(list)
    for c in survivors:
        if c.uid in comp:
            groups[comp[c.uid]].append(c)
    near: dict[str, Duplicate] = {}
    for members in groups.values():
        near.update(find_duplicates(members, max_bits, max_difference)[0])
    dropped = resolve(exact, near)
    return dropped, across_classes(dropped, {c.uid: c.class_idx for c in candidates})
