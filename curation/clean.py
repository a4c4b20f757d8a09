"""The clean stage's rules, on plain rows: one outcome per sample, flags for what people must judge.

Automatic rejections (status ``rejected``, with a reason): undecodable, truncated, too_small,
aspect_ratio, missing_in_shard (checked per image), then duplicate / near_duplicate (across the
whole run, ``duplicate_of`` names the kept image; a near duplicate is a pHash match confirmed by
colour thumbnails, matched directly to a kept image, never through a chain: curation/dedupe.py).

The paper's manual rules become model signals, added to ``flags`` for human review, never drops:
label_noise (the model does not rank the class in its top k and none of the photo's nearest photos
in the run carries it), ambiguous (a second class is also likely), unclear (no animal prompt, the
photo's own or another, beats the background prompts: the animal is not prominent). Thresholds are
in ``CleanSpec``; bench/flags.py measures each flag on planted worlds (bench/RESULTS.md).
A kept image whose duplicates carry another class gets duplicate_across_classes.

Re-running is idempotent: samples rejected by an earlier clean are judged again from scratch;
fetch failures are left as they are.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curation import arrays, dedupe, image_checks, shard_reader
from curation.config import CleanSpec
from schemas.validate import conform

IMAGE_REASONS = ("undecodable", "truncated", "too_small", "aspect_ratio", "missing_in_shard")
DUPLICATE_REASONS = ("duplicate", "near_duplicate")
CLEAN_REASONS = IMAGE_REASONS + DUPLICATE_REASONS
CLEAN_FLAGS = ("duplicate_across_classes",)
MODEL_FLAGS = ("label_noise", "ambiguous", "unclear")


def is_cleanable(row: dict) -> bool:
    return row["status"] == "ok" or (row["status"] == "rejected" and row["reason"] in CLEAN_REASONS)


def check_shard(shard: str, wanted: dict[str, str], samples: Iterable[tuple[str, dict[str, bytes]]],
                spec: CleanSpec) -> list[dict]:
    """Image checks for the samples ``wanted`` ({key: uid}) of one shard, one row per wanted uid."""
    rows, seen = [], set()
    for key, parts in samples:
        uid = wanted.get(key)
        if uid is None or key in seen:
            continue
        seen.add(key)
        data = shard_reader.image_bytes(parts)
        if data is None:
            rows.append(_missing(uid, shard, key, f"no image file for key {key} (have: {', '.join(sorted(parts))})"))
            continue
        rows.append({"uid": uid, "shard": shard, "key": key, **image_checks.check_image(data, spec)})
    for key, uid in wanted.items():
        if key not in seen:
            rows.append(_missing(uid, shard, key, f"key {key} is not in {shard}"))
    return sorted(rows, key=lambda r: r["uid"])


def _missing(uid: str, shard: str, key: str | None, detail: str) -> dict:
    return {"uid": uid, "shard": shard, "key": key, "reason": "missing_in_shard", "detail": detail,
            "width": None, "height": None, "bytes": None, "sha256": None, "phash": None, "phash_crops": None,
            "thumbnails": None}


def checks_table(rows: list[dict]) -> pa.Table:
    from schemas.tables import IMAGE_CHECKS

    return conform(pa.Table.from_pylist(rows, schema=IMAGE_CHECKS), "image_checks")


def wanted_by_shard(samples: pa.Table) -> Iterator[tuple[str | None, dict[str, str]]]:
    """(shard, {key: uid}) for the cleanable samples, grouped by shard (None: stored nowhere)."""
    groups: dict[str | None, dict[str, str]] = {}
    for row in samples.select(["uid", "status", "reason", "shard", "key"]).to_pylist():
        if is_cleanable(row):
            groups.setdefault(row["shard"], {})[row["key"] or row["uid"]] = row["uid"]
    return iter(sorted(groups.items(), key=lambda kv: (kv[0] is None, kv[0] or "")))


def decide(samples: pa.Table, checks: pa.Table, spec: CleanSpec) -> pa.Table:
    """Samples with each cleanable row's one outcome set from its image checks and the run-wide dedupe.

    In one process; the clean stage's pipeline runs the same two halves per samples file
    (image_outcomes, apply_duplicates) around dedupe's per-block steps."""
    rows, passed = image_outcomes(samples.to_pylist(), {r["uid"]: r for r in checks.to_pylist()}, spec)
    dropped, across = dedupe.find_duplicates(passed, spec.near_duplicate_bits, spec.near_duplicate_max_cell_difference)
    return conform(pa.Table.from_pylist(apply_duplicates(rows, dropped, across), schema=samples.schema), "samples")


def image_outcomes(rows: list[dict], checks_by_uid: dict[str, dict],
                   spec: CleanSpec) -> tuple[list[dict], list[dedupe.Candidate]]:
    """Samples rows with each cleanable row's image-check outcome (ok or rejected), and the images
    that passed as dedupe candidates. Rows are updated in place; other rows are left as they are."""
    passed = []
    for row in rows:
        if not is_cleanable(row):
            continue
        check = checks_by_uid.get(row["uid"]) or _missing(row["uid"], row["shard"] or "", row["key"],
                                                          "no image checks recorded")
        if check["reason"] in (None, *image_checks.SHAPE_REASONS) and check["width"] and check["height"]:
            # Size rules from this run's config, not the one the shard was checked with.
            problem = image_checks.shape_problem(check["width"], check["height"], spec)
            check = {**check, "reason": problem[0] if problem else None, "detail": problem[1] if problem else None}
        row.update(status="ok", reason=None, duplicate_of=None,
                   flags=[f for f in (row["flags"] or []) if f not in CLEAN_FLAGS])
        for col in ("width", "height", "bytes", "sha256"):
            if check[col] is not None:
                row[col] = check[col]
        if check["reason"]:
            row.update(status="rejected", reason=check["reason"])
        else:
            hashes = (check["phash"], *(check["phash_crops"] or [])) if check["phash"] is not None else ()
            passed.append(dedupe.Candidate(row["uid"], row["class_idx"], check["sha256"], hashes,
                                           check["width"] * check["height"], check.get("thumbnails")))
    return rows, passed


def apply_duplicates(rows: list[dict], dropped: dict[str, dedupe.Duplicate], across: set[str]) -> list[dict]:
    """image_outcomes' rows with the dedupe's decisions: duplicates rejected, kept images flagged."""
    for row in rows:
        dup = dropped.get(row["uid"])
        if dup is not None:
            row.update(status="rejected", reason=dup.reason, duplicate_of=dup.duplicate_of)
        elif row["uid"] in across:
            row["flags"] = [*row["flags"], "duplicate_across_classes"]
    return rows


def review_flags(score: dict, spec: CleanSpec, neighbor_share: float | None = None) -> list[str]:
    """The paper's manual rules as model signals, from one scores row (see CleanSpec for each rule).

    ``neighbor_share``: the share of the photo's nearest photos in the run that carry its class
    (``neighbor_shares``); None when not computed, and then label_noise rests on the rank alone.
    """
    flags = []
    if score["true_rank"] > spec.label_noise_top_k and (
            neighbor_share is None or neighbor_share <= spec.label_noise_max_neighbor_share):
        flags.append("label_noise")
    if len(score["top5_p"]) > 1 and score["top5_p"][1] >= spec.ambiguity_min_second:
        flags.append("ambiguous")
    p_animal = score.get("p_animal")
    if score["p_subject"] < spec.clarity_min_subject and (p_animal is None or p_animal < spec.clarity_min_animal):
        flags.append("unclear")
    return flags


NEIGHBOR_BLOCK_BYTES = 256 << 20   # the similarity block's size: memory stays flat however many photos


def neighbor_shares(embeddings: np.ndarray, classes: np.ndarray, k: int, block: int | None = None) -> np.ndarray:
    """Per photo: the share of its ``k`` nearest other photos (cosine on unit embeddings) with its class.

    A photo whose label is wrong sits among photos of its true class; one whose label is right, among
    its own class's. Exact search in blocks of rows (``block``; by default as many as fit in
    NEIGHBOR_BLOCK_BYTES): about n² · d multiply-adds (36k photos of 512 d: seconds).
    """
    n = len(classes)
    k = min(k, n - 1)
    out = np.zeros(n, dtype=np.float32)
    if k <= 0:
        return out
    emb = np.asarray(embeddings, dtype=np.float32)
    classes = np.asarray(classes)
    block = block or max(1, min(n, NEIGHBOR_BLOCK_BYTES // (4 * n)))
    for start in range(0, n, block):
        stop = min(start + block, n)
        sims = emb[start:stop] @ emb.T
        sims[np.arange(stop - start), np.arange(start, stop)] = -np.inf      # not its own neighbour
        nearest = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        out[start:stop] = (classes[nearest] == classes[start:stop, None]).mean(axis=1)
    return out


def review_flags_by_uid(scores: pa.Table, spec: CleanSpec, model_id: str,
                        shares: dict[str, float] | None = None) -> dict[str, list[str]]:
    """{uid: model flags} from ``model_id``'s scores.

    ``shares``: each photo's neighbour share found by the score stage's search in cells
    (curation/neighbors.py, over the whole run); None: searched here, exactly, among the photos of
    ``scores`` (neighbor_shares)."""
    cols = ["uid", "model_id", "true_label", "true_rank", "top5_p", "p_subject", "p_animal"]
    mine = scores.filter(pc.equal(scores.column("model_id"), model_id))
    rows = mine.select(cols).to_pylist()
    found: list[float | None] = [None] * len(rows)
    if spec.label_noise_neighbors > 0 and shares is not None:
        found = [shares.get(r["uid"]) for r in rows]
    elif spec.label_noise_neighbors > 0 and len(rows) > 1:
        emb = arrays.embeddings(mine.column("embedding"))
        found = neighbor_shares(emb, np.asarray([r["true_label"] for r in rows]), spec.label_noise_neighbors).tolist()
    return {r["uid"]: review_flags(r, spec, share) for r, share in zip(rows, found)}


def apply_review_flags(samples: pa.Table, flags_by_uid: dict[str, list[str]]) -> pa.Table:
    """Samples with model flags replaced by ``review_flags_by_uid``'s (other flags untouched; ok rows only)."""
    rows = samples.to_pylist()
    for row in rows:
        flags = [f for f in (row["flags"] or []) if f not in MODEL_FLAGS]
        if row["status"] == "ok":
            flags += flags_by_uid.get(row["uid"], [])
        row["flags"] = flags
    return conform(pa.Table.from_pylist(rows, schema=samples.schema), "samples")


def outcome_counts(samples: pa.Table) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in samples.select(["status", "reason"]).to_pylist():
        key = row["status"] if row["status"] == "ok" else f"{row['status']}:{row['reason']}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items()))
