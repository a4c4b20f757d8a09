"""Fetch bookkeeping as plain data: chunk plans, shard names, and one outcome per candidate.

img2dataset reports each sample as ``success`` / ``failed_to_download`` / ``failed_to_resize``
with a free-text error; ``reason_for`` turns that text into a short, stable reason that the
samples table records (``http_404``, ``timeout``, ``blocked_address``, …).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

import pyarrow as pa

from schemas import SAMPLES

# Checked in order; the first pattern found in the error text names the reason.
_PATTERNS: list[tuple[str, str]] = [
    (r"counteranimal:(\w+)", r"\1"),                       # our guards: blocked_address, too_many_pixels, …
    (r"infinite loop|redirect error", "too_many_redirects"),
    (r"HTTP Error (\d{3})", r"http_\1"),
    (r"timed out", "timeout"),
    (r"X-Robots-Tag", "robots_disallowed"),
    (r"IncompleteRead|Premature end|truncated", "truncated"),
    (r"unknown url type", "unsupported_scheme"),
    (r"Connection refused", "connection_refused"),
    (r"Name or service not known|getaddrinfo|nodename nor servname|No address associated|"
     r"Temporary failure in name resolution", "dns_error"),
    (r"CERTIFICATE_VERIFY_FAILED|SSL", "tls_error"),
    (r"Remote end closed|Connection reset|Connection aborted|Broken pipe", "connection_error"),
    (r"Image decoding error", "decode_error"),
]
_FALLBACK = {"failed_to_download": "download_error", "failed_to_resize": "decode_error"}

# Reason for a candidate that img2dataset dropped without a row (it logs and skips a sample
# whose post-processing raised); recorded so that no candidate goes unaccounted for.
MISSING_REASON = "internal_error"


def reason_for(status: str | None, error: str | None) -> str | None:
    """The short reason for one img2dataset sample; None when it succeeded."""
    if status == "success":
        return None
    text = error or ""
    for pattern, reason in _PATTERNS:
        m = re.search(pattern, text)
        if m:
            return m.expand(reason)
    return _FALLBACK.get(status or "", "download_error")


@dataclass(frozen=True)
class Chunk:
    """Candidates [start, stop) of the uid-sorted candidate table; one chunk = one shard."""
    index: int
    start: int
    stop: int

    @property
    def name(self) -> str:
        return shard_name(self.index)


def plan_chunks(n_candidates: int, chunk_size: int) -> list[Chunk]:
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    return [Chunk(i, start, min(start + chunk_size, n_candidates))
            for i, start in enumerate(range(0, n_candidates, chunk_size))]


def shard_name(index: int) -> str:
    return f"{index:05d}"


def key_digits(chunk_size: int) -> int:
    """Digits img2dataset gives the in-shard part of a key (its oom_sample_per_shard)."""
    return math.ceil(math.log10(chunk_size)) if chunk_size > 1 else 0


def samples_for_chunk(chunk: Chunk, candidates: pa.Table, fetched: pa.Table) -> pa.Table:
    """One SAMPLES row per candidate of ``chunk``, in candidate order.

    ``candidates`` is the chunk's slice of the candidate table; ``fetched`` is img2dataset's
    per-shard parquet (uid, key, status, error_message, sizes, sha256, bytes).
    """
    by_uid = {row["uid"]: row for row in fetched.to_pylist()}
    rows = []
    for cand in candidates.select(["uid", "class_idx", "class_name"]).to_pylist():
        got = by_uid.get(cand["uid"])
        row = {**cand, "chunk": chunk.index, "shard": None, "key": None, "status": "failed",
               "reason": MISSING_REASON, "width": None, "height": None, "original_width": None,
               "original_height": None, "bytes": None, "sha256": None, "duplicate_of": None, "flags": None}
        if got is not None:
            ok = got["status"] == "success"
            row.update(key=got["key"], status="ok" if ok else "failed",
                       reason=reason_for(got["status"], got.get("error_message")),
                       shard=f"{chunk.name}.tar" if ok else None)
            if ok:
                row.update({k: got.get(k) for k in ("width", "height", "original_width", "original_height",
                                                     "bytes", "sha256")})
        rows.append(row)
    return pa.Table.from_pylist(rows, schema=SAMPLES)


def tally(samples: pa.Table) -> dict:
    """Counts per outcome: {'ok': n, 'failed': n, 'reasons': {reason: n}}."""
    statuses = Counter(samples.column("status").to_pylist())
    reasons = Counter(r for r in samples.column("reason").to_pylist() if r)
    return {"candidates": samples.num_rows, "ok": statuses.get("ok", 0), "failed": statuses.get("failed", 0),
            "reasons": dict(sorted(reasons.items()))}
