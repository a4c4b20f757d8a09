"""Exact and near duplicates across the whole run, within and across classes.

Exact: same content hash. Near: two images whose perceptual hashes (each image has several: the
whole picture and central crops, so a slightly cropped copy still matches) come within
``max_bits`` Hamming distance, found without comparing all pairs: split the 64 bits into
max_bits+1 bands; two hashes that differ in at most max_bits bits agree exactly on at least one
band (pigeonhole), so only hashes sharing a band are compared. Near-duplicate pairs are joined\ntransitively (union-find). In each group one image is
kept: the one with the most pixels, ties broken by uid, so the choice does not depend on input order.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    uid: str
    class_idx: int
    sha256: str
    phashes: tuple[int, ...]    # whole image first, then central crops; empty when undecodable
    pixels: int


@dataclass(frozen=True)
class Duplicate:
    reason: str          # duplicate | near_duplicate
    duplicate_of: str    # uid of the kept image


def _preference(c: Candidate) -> tuple:
    return (-c.pixels, c.uid)


class _UnionFind:
    def __init__(self):
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _bands(h: int, n: int) -> list[tuple[int, int]]:
    edges = [round(i * 64 / n) for i in range(n + 1)]
    return [(i, (h >> edges[i]) & ((1 << (edges[i + 1] - edges[i])) - 1)) for i in range(n)]


def near_links(hashes: dict[str, tuple[int, ...]], max_bits: int) -> list[tuple[str, str]]:
    """Pairs of uids whose union joins the same groups as all pairs within max_bits bits would.

    Only distinct hash values are compared; uids sharing a value are chained (u1-u2, u2-u3, ...)
    rather than paired all with all, so a thousand copies of one picture cost a thousand links,
    not half a million comparisons.
    """
    owners: dict[int, list[str]] = defaultdict(list)
    for uid, hs in hashes.items():
        for h in set(hs):
            owners[h].append(uid)
    links = set()
    for uids in owners.values():
        for a, b in zip(uids, uids[1:]):
            if a != b:
                links.add((min(a, b), max(a, b)))
    buckets: dict[tuple[int, int], list[int]] = defaultdict(list)
    for h in owners:
        for band in _bands(h, max_bits + 1):
            buckets[band].append(h)
    for members in buckets.values():
        for i, ha in enumerate(members):
            for hb in members[i + 1:]:
                if (ha ^ hb).bit_count() <= max_bits:
                    a, b = owners[ha][0], owners[hb][0]
                    if a != b:
                        links.add((min(a, b), max(a, b)))
    return sorted(links)


def find_duplicates(candidates: list[Candidate], max_bits: int) -> tuple[dict[str, Duplicate], set[str]]:
    """Return ({uid: Duplicate} for every image not kept, {kept uids whose group spans classes})."""
    by_uid = {c.uid: c for c in candidates}
    dropped: dict[str, Duplicate] = {}
    groups = _UnionFind()
    exact: dict[str, list[Candidate]] = defaultdict(list)
    for c in candidates:
        exact[c.sha256].append(c)
    for same in exact.values():
        keep = min(same, key=_preference)
        for c in same:
            groups.union(keep.uid, c.uid)
            if c is not keep:
                dropped[c.uid] = Duplicate("duplicate", keep.uid)
    survivors = {c.uid: c.phashes for c in candidates if c.uid not in dropped and c.phashes}
    members: dict[str, list[str]] = defaultdict(list)
    near = _UnionFind()
    for a, b in near_links(survivors, max_bits):
        near.union(a, b)
        groups.union(a, b)
    for uid in survivors:
        members[near.find(uid)].append(uid)
    for uids in members.values():
        if len(uids) < 2:
            continue
        keep = min((by_uid[u] for u in uids), key=_preference)
        for u in uids:
            if u != keep.uid:
                dropped[u] = Duplicate("near_duplicate", keep.uid)
    # An exact duplicate of an image that lost a near-duplicate group points at the final keeper.
    for uid, dup in list(dropped.items()):
        target = dup.duplicate_of
        while target in dropped:
            target = dropped[target].duplicate_of
        dropped[uid] = Duplicate(dup.reason, target)
    classes: dict[str, set[int]] = defaultdict(set)
    for c in candidates:
        classes[groups.find(c.uid)].add(c.class_idx)
    across = {c.uid for c in candidates if c.uid not in dropped and len(classes[groups.find(c.uid)]) > 1}
    return dropped, across
