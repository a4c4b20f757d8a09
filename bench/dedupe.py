"""Near duplicates, old rule against new, side by side on planted-world pools (issue 11 item 3, issue 14).

    .venv/bin/python bench/dedupe.py [--seeds 1 2 3] [--per-class 300] [--scale 4] [--out .cache/bench-dedupe]

Per seed of the default world (16 classes, 33 background photos):
  * false matches: the pool with NO planted noise at all (pool_noise {}), at N = 16 x per-class photos and at
    scale x N. Every photo is a distinct composite, so every near_duplicate rejection is a false match.
    "look-alike" = the two photos share the cut-out AND the background photo (same animal picture, nearly
    the same placement: a burst-shot-like pair); "other" = a different animal or background.
  * recall: the pool at N with only near_dup noise (4%, as the default world plants them: a 4-10% central
    crop, resized back, colour jitter 4%, JPEG 70-85). A planted near duplicate is caught when it is rejected
    pointing into its own copy group (its source or a sibling copy).
  * the distances that set near_duplicate_max_cell_difference: dedupe.thumb_distance for every planted pair
    and for every non-copy pair within near_duplicate_bits pHash bits (the candidates the thumbnails judge).
"old" is the rule before this change (commit a005cdb): pHash within 4 bits, joined transitively; "new" is
curation/dedupe.py with the CleanSpec defaults. Images are rendered once into --out and reused.
"""
from __future__ import annotations

import argparse
import platform
import subprocess
import sys
import time
from collections import defaultdict
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from tqdm import tqdm  # noqa: E402

from curation import atomic, dedupe, image_checks  # noqa: E402
from curation.config import CleanSpec  # noqa: E402
from curation.world.generate import World  # noqa: E402
from curation.world.spec import preset  # noqa: E402


# -- the pools ---------------------------------------------------------------------------------
POOL_SCHEMA = pa.schema([("uid", pa.string()), ("class_idx", pa.int32()), ("noise", pa.string()),
                         ("duplicate_of", pa.string()), ("stamp", pa.string()), ("photo", pa.string()),
                         ("sha256", pa.string()), ("phashes", pa.list_(pa.uint64())), ("pixels", pa.int64()),
                         ("thumbnails", pa.binary())])


def pool(out: Path, seed: int, per_class: int, noise: dict[str, float]) -> list[dict]:
    """Render (or reuse) one pool; its rows: uid, class, noise, duplicate_of, stamp, photo, and the image checks."""
    name = f"seed{seed}-{per_class}-" + ("-".join(f"{k}{v:g}" for k, v in sorted(noise.items())) or "clean")
    folder = out / name
    table = folder / "checks.parquet"
    if not table.exists():
        world = World(preset("default", seed=seed, pool_per_class=per_class, pool_noise=noise))
        items = world.pool_items()
        print(f"  rendering {name}: {len(items)} photos", flush=True)
        world.write_split(folder, "pool", items)
        truth = world.truth_table("pool", items).to_pylist()
        spec, rows = CleanSpec(), []
        for r in tqdm(truth, desc=f"  checking {name}", mininterval=10):
            c = image_checks.check_image((folder / r["file"]).read_bytes(), spec)
            rows.append({"uid": r["uid"], "class_idx": r["class_idx"], "noise": r["noise"],
                         "duplicate_of": r["duplicate_of"], "stamp": r["stamp"], "photo": r["photo"],
                         "sha256": c["sha256"], "phashes": [c["phash"], *c["phash_crops"]],
                         "pixels": c["width"] * c["height"], "thumbnails": c["thumbnails"]})
        atomic.write_parquet(table, pa.Table.from_pylist(rows, schema=POOL_SCHEMA))
    return pq.read_table(table).to_pylist()


def candidates(rows: list[dict]) -> list[dedupe.Candidate]:
    return [dedupe.Candidate(r["uid"], r["class_idx"], r["sha256"], tuple(r["phashes"]), r["pixels"], r["thumbnails"])
            for r in rows]


# -- the rule before this change (commit a005cdb), for the side-by-side ------------------------
def old_find_duplicates(cands: list[dedupe.Candidate], max_bits: int) -> dict[str, str]:
    """{uid: kept uid}: pHash pairs within max_bits joined transitively (union-find), one kept per group."""
    parent: dict[str, str] = {}

    def find(x):
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a, b):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    pref = {c.uid: (-c.pixels, c.uid) for c in cands}
    dropped: dict[str, str] = {}
    by_sha = defaultdict(list)
    for c in cands:
        by_sha[c.sha256].append(c.uid)
    for same in by_sha.values():
        keep = min(same, key=pref.get)
        for u in same:
            union(keep, u)
            if u != keep:
                dropped[u] = keep
    survivors = {c.uid: c.phashes for c in cands if c.uid not in dropped}
    for a, b in phash_pairs(survivors, max_bits):
        union(a, b)
    groups = defaultdict(list)
    for u in survivors:
        groups[find(u)].append(u)
    for members in groups.values():
        keep = min(members, key=pref.get)
        for u in members:
            if u != keep:
                dropped[u] = keep
    return {u: k for u, k in dropped.items()}


def phash_pairs(hashes: dict[str, tuple[int, ...]], max_bits: int) -> set[tuple[str, str]]:
    """Every pair of uids with some pair of hashes within max_bits (band buckets, pigeonhole)."""
    uids = sorted(hashes)
    width = max(len(h) for h in hashes.values())
    arr = np.array([[*hashes[u], *[hashes[u][0]] * (width - len(hashes[u]))] for u in uids], np.uint64)
    n_bands = max_bits + 1
    edges = [round(i * 64 / n_bands) for i in range(n_bands + 1)]
    pairs: set[tuple[int, int]] = set()
    for b in range(n_bands):
        mask = np.uint64((1 << (edges[b + 1] - edges[b])) - 1)
        keys = (arr >> np.uint64(edges[b])) & mask
        buckets = defaultdict(set)
        for i, row in enumerate(keys.tolist()):
            for v in row:
                buckets[v].add(i)
        for members in buckets.values():
            if len(members) < 2:
                continue
            m = np.array(sorted(members))
            for start in range(0, len(m), 256):         # in blocks of rows: a bucket can hold thousands
                block = m[start:start + 256]
                d = np.bitwise_count(arr[block][:, None, :, None] ^ arr[m][None, :, None, :]).min(axis=(2, 3))
                for i, j in zip(*np.nonzero(d <= max_bits)):
                    if block[i] < m[j]:
                        pairs.add((int(block[i]), int(m[j])))
    return {(uids[i], uids[j]) for i, j in pairs}


# -- scoring -----------------------------------------------------------------------------------
def copy_root(rows_by_uid: dict[str, dict], uid: str) -> str:
    while rows_by_uid[uid]["noise"] in ("near_dup", "exact_dup"):
        uid = rows_by_uid[uid]["duplicate_of"]
    return uid


def judge(rows: list[dict], dropped: dict[str, str]) -> dict:
    """Counts for one rule's near-duplicate rejections ({uid: kept uid}) against the pool's truth."""
    by = {r["uid"]: r for r in rows}
    out = {"rejected": 0, "false": 0, "look_alike": 0, "other": 0, "across": 0, "caught": 0,
           "planted": sum(r["noise"] == "near_dup" for r in rows)}
    for u, k in dropped.items():
        if by[u]["sha256"] == by[k]["sha256"]:
            continue                                   # exact duplicates are not what is measured here
        out["rejected"] += 1
        out["across"] += by[u]["class_idx"] != by[k]["class_idx"]
        if copy_root(by, u) == copy_root(by, k):
            out["caught"] += by[u]["noise"] == "near_dup"
            continue
        out["false"] += 1
        same = by[u]["stamp"] == by[k]["stamp"] and by[u]["photo"] == by[k]["photo"]
        out["look_alike" if same else "other"] += 1
    groups = defaultdict(int)
    for k in dropped.values():
        groups[k] += 1
    out["largest_group"] = 1 + max(groups.values(), default=0)
    return out


def new_dropped(cands: list[dedupe.Candidate], spec: CleanSpec) -> dict[str, str]:
    dropped, _ = dedupe.find_duplicates(cands, spec.near_duplicate_bits, spec.near_duplicate_max_cell_difference)
    return {u: d.duplicate_of for u, d in dropped.items()}


def distances(rows: list[dict], spec: CleanSpec) -> dict[str, list[float]]:
    """thumb_distance of planted copy pairs, and of non-copy pHash candidates (look-alike / other)."""
    by = {r["uid"]: r for r in rows}
    std = {}

    def dist(a, b):
        for u in (a, b):
            if u not in std:
                std[u] = dedupe.prepared(by[u]["thumbnails"])
        return dedupe.thumb_distance(std[a], std[b])

    out = {"copy": [], "look_alike": [], "other": []}
    for r in rows:
        if r["noise"] == "near_dup":
            out["copy"].append(dist(r["uid"], r["duplicate_of"]))
    for a, b in phash_pairs({r["uid"]: tuple(r["phashes"]) for r in rows}, spec.near_duplicate_bits):
        if copy_root(by, a) == copy_root(by, b):
            continue
        same = by[a]["stamp"] == by[b]["stamp"] and by[a]["photo"] == by[b]["photo"]
        out["look_alike" if same else "other"].append(dist(a, b))
    return out


def fmt(values: list[float], how: str) -> str:
    if not values:
        return "–"
    v = np.array(values)
    return f"{v.max():.3f} (p99 {np.percentile(v, 99):.3f})" if how == "max" else f"{v.min():.3f} (n {len(v)})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--per-class", type=int, default=300)
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / ".cache" / "bench-dedupe")
    args = ap.parse_args(argv)
    spec = CleanSpec()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    print(f"commit {commit}, {date.today()}, {platform.machine()} {platform.python_version()}; "
          f"near_duplicate_bits {spec.near_duplicate_bits}, near_duplicate_max_cell_difference "
          f"{spec.near_duplicate_max_cell_difference}")
    table, dist_rows = [], []
    for seed in args.seeds:
        for label, per_class, noise in (("N, no planted noise", args.per_class, {}),
                                        (f"{args.scale}N, no planted noise", args.scale * args.per_class, {}),
                                        ("N, 4% planted near dups", args.per_class, {"near_dup": 0.04})):
            rows = pool(args.out, seed, per_class, noise)
            cands = candidates(rows)
            started = time.monotonic()
            new = new_dropped(cands, spec)
            seconds = time.monotonic() - started
            old = judge(rows, old_find_duplicates(cands, spec.near_duplicate_bits))
            got = judge(rows, new)
            table.append((seed, label, len(rows), old, got, seconds))
            dist_rows.append((seed, label, distances(rows, spec)))
    print("\n| seed | pool | photos | near-dup rejections old → new | false matches old → new "
          "| of them look-alikes (new) | across classes old → new | largest group old → new "
          "| planted caught old → new | new dedupe s |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for seed, label, n, old, new, seconds in table:
        caught = (f"{old['caught']}/{old['planted']} → {new['caught']}/{new['planted']} "
                  f"({100 * new['caught'] / new['planted']:.1f}%)") if new["planted"] else "–"
        print(f"| {seed} | {label} | {n} | {old['rejected']} → {new['rejected']} | {old['false']} → {new['false']} "
              f"| {new['look_alike']} | {old['across']} → {new['across']} | {old['largest_group']} → "
              f"{new['largest_group']} | {caught} | {seconds:.1f} |")
    print(f"\nthumb_distance (near_duplicate_max_cell_difference {spec.near_duplicate_max_cell_difference}):")
    print("| seed | pool | planted copy pairs: max | non-copy pHash candidates, look-alike: min | other: min |")
    print("|---|---|---|---|---|")
    for seed, label, d in dist_rows:
        print(f"| {seed} | {label} | {fmt(d['copy'], 'max')} | {fmt(d['look_alike'], 'min')} "
              f"| {fmt(d['other'], 'min')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
