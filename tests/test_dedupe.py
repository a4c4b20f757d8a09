"""Near duplicates on real pixels: animal cut-outs composited on real background photos (the planted
world's assets, curation/world/compose.py). Different animals on one background photo are not near
duplicates even where their perceptual hashes are; re-encoded, resized and cropped copies are; a
match is direct, never through a chain; a copy in another class is flagged on the image kept."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from curation import dedupe, image_checks
from curation.config import CleanSpec
from curation.world import compose
from curation.world.assets import load_manifest
from curation.world.compose import _stamp_image

SPEC = CleanSpec()
SIDE = 160                                        # the default world's image size


@pytest.fixture(scope="module")
def manifest():
    return load_manifest()


def jpeg(img: Image.Image, quality: int = 90) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def candidate(uid: str, data: bytes, class_idx: int = 1) -> dedupe.Candidate:
    c = image_checks.check_image(data, SPEC)
    assert c["reason"] is None, c
    return dedupe.Candidate(uid, class_idx, c["sha256"], (c["phash"], *c["phash_crops"]), c["width"] * c["height"],
                            c["thumbnails"])


def phash_bits(a: dedupe.Candidate, b: dedupe.Candidate) -> int:
    return min((x ^ y).bit_count() for x in a.phashes for y in b.phashes)


def distance(a: dedupe.Candidate, b: dedupe.Candidate) -> float:
    return dedupe.thumb_distance(dedupe.prepared(a.thumbnails), dedupe.prepared(b.thumbnails))


def find(cands, max_difference=SPEC.near_duplicate_max_cell_difference):
    return dedupe.find_duplicates(cands, SPEC.near_duplicate_bits, max_difference)


def background(manifest, photo_name: str, seed: int = 5) -> Image.Image:
    photo = next(p for label in manifest.background_labels() for p in manifest.photos(label) if photo_name in p.id)
    return compose.background_crop(photo, np.random.default_rng(seed), SIDE)


ANIMALS = ["lion", "zebra", "green iguana", "ox", "tiger", "king penguin", "flamingo", "goose"]


def test_different_animals_on_one_background_photo_are_not_near_duplicates(manifest):
    # Each animal pasted with the same draws (scale, place, mirror) on the very same background pixels:
    # the hardest case for a hash of the whole frame. Each animal is its own class.
    cands = []
    for photo in ("mudstone", "cliff", "ocean_splash"):
        bg = background(manifest, photo)
        for cls, name in enumerate(ANIMALS):
            img = compose.paste_animal(bg, manifest.animal(name).stamps[0], np.random.default_rng(7))
            cands.append(candidate(f"{photo}-{name}", jpeg(img), class_idx=cls))
    same_photo = [(a, b) for i, a in enumerate(cands) for b in cands[i + 1:]
                  if a.uid.split("-")[0] == b.uid.split("-")[0]]
    phash_alike = [(a.uid, b.uid) for a, b in same_photo if phash_bits(a, b) <= SPEC.near_duplicate_bits]
    assert len(phash_alike) >= 3, phash_alike          # the pHash alone would reject these (the old rule did)
    assert min(distance(a, b) for a, b in same_photo) > 1.5 * SPEC.near_duplicate_max_cell_difference
    assert find(cands) == ({}, set())


def test_reencoded_resized_and_cropped_copies_are_near_duplicates(manifest):
    rng = np.random.default_rng(11)
    original = compose.composite(manifest.animal("zebra").stamps[0], manifest.photos("grass")[0], rng, SIDE)
    cands = [candidate("a-original", jpeg(original, 95))]
    copies = {"reencoded": jpeg(original, 70),
              "resized": jpeg(original.resize((120, 120), Image.Resampling.BICUBIC), 85)}
    for k, crop in enumerate((7, 12, 16)):               # 4-10% off each side, as the world plants them
        img = original.crop((crop, crop, SIDE - crop, SIDE - crop)).resize((SIDE, SIDE), Image.Resampling.BICUBIC)
        copies[f"cropped{crop}"] = jpeg(compose.jitter(img, np.random.default_rng(k), 0.04), 75)
    cands += [candidate(f"b-{name}", data) for name, data in copies.items()]
    dropped, across = find(cands)
    assert dropped == {f"b-{name}": dedupe.Duplicate("near_duplicate", "a-original") for name in copies}
    assert across == set()


def test_a_match_is_direct_never_through_a_chain(manifest):
    # A lion drifting across the same rock: A~B and B~C are near duplicates, A and C are too far apart.
    bg = background(manifest, "mudstone")
    lion = _stamp_image(manifest.animal("lion").stamps[0].path)
    f = 80 / max(lion.size)
    lion = lion.resize((round(lion.width * f), round(lion.height * f)), Image.Resampling.LANCZOS)

    def at(x: int) -> bytes:
        out = bg.copy()
        out.paste(lion.convert("RGB"), (x, 50), lion.getchannel("A"))
        return jpeg(out)

    a, b, c = candidate("a", at(30)), candidate("b", at(37)), candidate("c", at(43))   # same size: uid order
    assert max(phash_bits(a, b), phash_bits(b, c), phash_bits(a, c)) <= SPEC.near_duplicate_bits
    ab, bc, ac = distance(a, b), distance(b, c), distance(a, c)
    assert max(ab, bc) < ac, (ab, bc, ac)
    threshold = (max(ab, bc) + ac) / 2                   # joins A~B and B~C, not A~C
    dropped, _ = find([c, b, a], threshold)
    assert dropped == {"b": dedupe.Duplicate("near_duplicate", "a")}      # C is kept: B, its match, is not
    dropped, _ = find([a, c], threshold)
    assert dropped == {}


def test_across_classes_only_for_a_confirmed_copy(manifest):
    rng = np.random.default_rng(3)
    lion = compose.composite(manifest.animal("lion").stamps[0], manifest.photos("rock")[0], rng, SIDE)
    copy = lion.crop((10, 10, SIDE - 10, SIDE - 10)).resize((SIDE, SIDE), Image.Resampling.BICUBIC)
    other = compose.paste_animal(background(manifest, "mudstone"), manifest.animal("zebra").stamps[0],
                                 np.random.default_rng(7))
    lookalike = compose.paste_animal(background(manifest, "mudstone"), manifest.animal("lion").stamps[0],
                                     np.random.default_rng(7))
    cands = [candidate("lion", jpeg(lion), 291), candidate("lion-copy-as-tiger", jpeg(copy, 80), 292),
             candidate("zebra", jpeg(other), 340), candidate("lion-on-mudstone", jpeg(lookalike), 291)]
    dropped, across = find(cands)
    assert dropped == {"lion-copy-as-tiger": dedupe.Duplicate("near_duplicate", "lion")}
    assert across == {"lion"}


def test_bit_counts_without_numpy_2_agree_with_python():
    values = [0, 1, 2**63, 2**64 - 1, 0xF0F0_F0F0_F0F0_F0F0, 12345678901234567890]
    got = dedupe._unpacked_bit_counts(np.array(values, np.uint64).reshape(2, 3))
    assert got.ravel().tolist() == [v.bit_count() for v in values]


def synthetic(n: int, seed: int, families: int) -> list[dedupe.Candidate]:
    """Photos in scene families: hashes a few bits from the family's (many pHash candidates, chains),
    thumbnails either the family's with a little noise (a copy) or with many cells repainted (another
    animal); some exact copies; some without thumbnails or hashes."""
    rng = np.random.default_rng(seed)
    base_hash = rng.integers(0, 2**63, families, dtype=np.int64).astype(np.uint64)
    base_thumb = rng.integers(20, 236, (families, image_checks.THUMB_BYTES)).astype(np.int16)
    out = []
    for i in range(n):
        f = int(rng.integers(families))
        hashes = tuple(int(base_hash[f] ^ np.uint64(sum(1 << int(b) for b in rng.choice(64, rng.integers(0, 7),
                                                                                   replace=False))))
                       for _ in range(3))
        thumb = base_thumb[f] + rng.integers(-3, 4, image_checks.THUMB_BYTES)
        if rng.random() < 0.6:       # another animal: a third of the cells repainted
            cells = rng.random(image_checks.THUMB_BYTES) < 0.33
            thumb = np.where(cells, rng.integers(0, 256, image_checks.THUMB_BYTES), thumb)
        thumbs = np.clip(thumb, 0, 255).astype(np.uint8).tobytes()
        kind = rng.random()
        sha = f"s{i}" if kind > 0.05 or not out else out[int(rng.integers(len(out)))].sha256
        out.append(dedupe.Candidate(f"u{i:05d}", int(rng.integers(4)), sha, () if kind > 0.98 else hashes,
                                    int(rng.choice([4096, 9216, 16384])), None if 0.96 < kind <= 0.98 else thumbs))
    return out


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_blocked_decision_equals_the_whole_run_pass(seed):
    cands = synthetic(300, seed, families=15)
    whole = dedupe.find_duplicates(cands, SPEC.near_duplicate_bits, SPEC.near_duplicate_max_cell_difference)
    blocked = dedupe.find_duplicates_blocked(cands, SPEC.near_duplicate_bits, SPEC.near_duplicate_max_cell_difference)
    near = sum(d.reason == "near_duplicate" for d in whole[0].values())
    assert near > 25 and whole[1]          # the input has near duplicates, chains and cross-class copies to decide
    assert blocked == whole
    shuffled = list(reversed(cands))
    assert dedupe.find_duplicates_blocked(shuffled, SPEC.near_duplicate_bits,
                                          SPEC.near_duplicate_max_cell_difference) == whole


def test_blocked_decision_on_real_pixels(manifest):
    bg = background(manifest, "snow")
    img = compose.background_crop(next(p for p in manifest.photos("snow")), np.random.default_rng(1), SIDE)
    copies = [img, img.resize((SIDE - 8, SIDE - 8)), img.crop((6, 6, SIDE - 6, SIDE - 6)).resize((SIDE, SIDE))]
    cands = [candidate(f"c{i}", jpeg(x, 80 + i)) for i, x in enumerate(copies)]
    cands += [candidate(f"b{i}", jpeg(bg, 70 + 5 * i), class_idx=2 + i) for i in range(3)]
    cands.append(candidate("x0", jpeg(bg, 70), class_idx=7))      # an exact copy of b0
    whole = find(cands)
    assert whole[0] and whole == dedupe.find_duplicates_blocked(cands, SPEC.near_duplicate_bits,
                                                                SPEC.near_duplicate_max_cell_difference)


def test_components_join_pairs_and_name_each_by_its_smallest_uid():
    comp = dedupe.components([("b", "c"), ("d", "e"), ("c", "a"), ("e", "f")])
    assert comp == {"a": "a", "b": "a", "c": "a", "d": "d", "e": "d", "f": "d"}
