"""What every source shares: stable uids, URL and license normalization, and the collector
that turns rows into candidates, collapsing duplicate URLs and applying the license allow-list.

Every row a source reads ends in exactly one place: a candidate, or a reject with its reason.
"""
from __future__ import annotations

import functools
import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field

import pyarrow as pa

from schemas import CANDIDATES, SOURCE_REJECTS

UID_HEX = 16   # 64 bits of sha256: collisions are negligible below billions of URLs

_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^#]*)")
_DEFAULT_PORT = {"http": ":80", "https": ":443"}


def normalize_url(url: str) -> str:
    """The form two URLs share when they fetch the same thing: trimmed, scheme and host in
    lower case, default port and #fragment dropped (a fragment is never sent to the server)."""
    url = url.strip()
    m = _URL.match(url)
    if not m:
        return url
    scheme, host, rest = m.group(1).lower(), m.group(2).lower(), m.group(3)
    port = _DEFAULT_PORT.get(scheme)
    if port and host.endswith(port):
        host = host[: -len(port)]
    return f"{scheme}://{host}{rest}"


def uid_for(url: str) -> str:
    """Stable id of a candidate: a short hash of its normalized URL, so re-runs agree."""
    return hashlib.sha256(normalize_url(url).encode("utf-8")).hexdigest()[:UID_HEX]


_CC_URL = re.compile(r"creativecommons\.org/(licenses|publicdomain)/([a-z-]+)")
_CC = re.compile(r"cc-?(0|zero|by(?:-(?:nc|sa|nd))*)(?:-v?\d+(?:\.\d+)*)?(?:-[a-z]{2})?")
_PD = {"pd", "public-domain", "publicdomain", "pdm", "public-domain-mark", "no-known-copyright-restrictions"}


@functools.lru_cache(maxsize=4096)   # a source repeats a handful of spellings millions of times
def normalize_license(raw: str | None) -> str | None:
    """One spelling per license: "CC-BY-NC", "cc_by_nc", "CC BY-NC 4.0" -> "cc-by-nc";
    "CC0 1.0" / "CC-Zero" -> "cc0"; "Public Domain" -> "pd"; creativecommons.org URLs too.
    Anything else is lower-cased with spaces and underscores as dashes ("GPL-2.0-or-later")."""
    if raw is None:
        return None
    s = raw.strip().lower()
    if not s:
        return None
    m = _CC_URL.search(s)
    if m:
        kind, code = m.groups()
        if kind == "publicdomain":
            return "cc0" if code == "zero" else "pd"
        return f"cc-{code}"
    s = re.sub(r"[\s_]+", "-", s)
    s = re.sub(r"-{2,}", "-", s).strip("-")
    m = _CC.fullmatch(s)
    if m:
        code = m.group(1)
        return "cc0" if code in ("0", "zero") else f"cc-{code}"
    if s in _PD:
        return "pd"
    return s


@dataclass
class Collector:
    """Accumulates one source's outcomes in input order; the first row with a URL wins."""

    source: str
    license_allow: list[str]
    _kept: dict[str, list] = field(default_factory=dict)   # uid -> candidate row
    _rejected: list[dict] = field(default_factory=list)
    read: int = 0

    def __post_init__(self) -> None:
        self._allow = {normalize_license(x) for x in self.license_allow}

    def add(self, url: str, class_idx: int, class_name: str, source_id: str, license: str | None,
            attribution: str | None, *, license_checked: bool) -> None:
        """One input row. ``license_checked``: the source carries licenses, so a row whose
        license is missing or outside the allow-list is rejected rather than kept."""
        self.read += 1
        if license_checked and license not in self._allow:
            self.reject(source_id, "license", url=url, class_name=class_name, license=license, counted=True)
            return
        uid = uid_for(url)
        if uid in self._kept:
            self.reject(source_id, "duplicate_url", url=url, class_name=class_name, license=license,
                        duplicate_of=uid, counted=True)
            return
        self._kept[uid] = [uid, url.strip(), class_idx, class_name, self.source, source_id, license, attribution]

    def reject(self, source_id: str, reason: str, *, url: str | None = None, class_name: str | None = None,
               license: str | None = None, duplicate_of: str | None = None, counted: bool = False) -> None:
        if not counted:
            self.read += 1
        self._rejected.append({"source": self.source, "source_id": source_id, "url": url, "class_name": class_name,
                               "license": license, "reason": reason, "duplicate_of": duplicate_of})

    def result(self, extra_counts: dict[str, int] | None = None):
        from curation.sources import CandidateResult

        rows = [self._kept[uid] for uid in sorted(self._kept)]
        columns = list(zip(*rows)) if rows else [[] for _ in CANDIDATES]
        table = pa.Table.from_arrays([pa.array(col, type=f.type) for col, f in zip(columns, CANDIDATES)],
                                     schema=CANDIDATES)
        rejected = pa.Table.from_pylist(self._rejected, schema=SOURCE_REJECTS)
        counts = {"read": self.read, "candidates": table.num_rows}
        counts.update(sorted(Counter(r["reason"] for r in self._rejected).items()))
        counts.update(extra_counts or {})
        return CandidateResult(table=table, rejected=rejected, counts=counts)
