"""One pyarrow schema per run-directory artifact, versioned.

Each schema carries its name and version in its metadata, so a file says what it is.
A field marked ``nullable=False`` is required on every row.
"""
from __future__ import annotations

import pyarrow as pa

SCHEMA_KEY = b"counteranimal.schema"
VERSION_KEY = b"counteranimal.version"


def _schema(name: str, version: int, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(fields, metadata={SCHEMA_KEY: name.encode(), VERSION_KEY: str(version).encode()})


# RUN/candidates/*.parquet — one row per photo to fetch; uid is stable across re-runs.
CANDIDATES = _schema("candidates", 1, [
    pa.field("uid", pa.string(), nullable=False),
    pa.field("url", pa.string(), nullable=False),
    pa.field("class_idx", pa.int32(), nullable=False),
    pa.field("class_name", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),       # url_list | inaturalist | folder
    pa.field("source_id", pa.string(), nullable=False),    # row / photo id / relative path
    pa.field("license", pa.string()),
    pa.field("attribution", pa.string()),
])

# RUN/candidates_rejected.parquet — input rows that did not become candidates, and why
# (duplicate_url, license, …): nothing read from a source goes unrecorded.
SOURCE_REJECTS = _schema("source_rejects", 1, [
    pa.field("source", pa.string(), nullable=False),
    pa.field("source_id", pa.string(), nullable=False),
    pa.field("url", pa.string()),
    pa.field("class_name", pa.string()),
    pa.field("license", pa.string()),
    pa.field("reason", pa.string(), nullable=False),
    pa.field("duplicate_of", pa.string()),   # uid of the candidate kept instead
])

# RUN/samples/NNNNN.parquet — one row per candidate: where it landed and its one outcome.
# status is "ok", "failed" (fetch) or "rejected" (clean); reason says why when not ok.
SAMPLES = _schema("samples", 1, [
    pa.field("uid", pa.string(), nullable=False),
    pa.field("class_idx", pa.int32(), nullable=False),
    pa.field("class_name", pa.string(), nullable=False),
    pa.field("chunk", pa.int32(), nullable=False),
    pa.field("shard", pa.string()),          # e.g. "00003.tar" when the image is stored
    pa.field("key", pa.string()),            # WebDataset __key__ inside the shard
    pa.field("status", pa.string(), nullable=False),
    pa.field("reason", pa.string()),
    pa.field("width", pa.int32()),
    pa.field("height", pa.int32()),
    pa.field("original_width", pa.int32()),
    pa.field("original_height", pa.int32()),
    pa.field("bytes", pa.int64()),
    pa.field("sha256", pa.string()),
    pa.field("duplicate_of", pa.string()),
    pa.field("flags", pa.list_(pa.string())),
])

# RUN/groups/*.parquet — each clean photo's background, with how it was assigned.
GROUPS = _schema("groups", 1, [
    pa.field("uid", pa.string(), nullable=False),
    pa.field("class_idx", pa.int32(), nullable=False),
    pa.field("class_name", pa.string(), nullable=False),
    pa.field("background", pa.string(), nullable=False),
    pa.field("confidence", pa.float32()),
    pa.field("method", pa.string(), nullable=False),     # zero-shot | cluster | human
    pa.field("cluster", pa.int32()),                     # per-class cluster id, when clustered
    pa.field("model_id", pa.string()),
])

# RUN/proposals.parquet — per class, the proposed (common, counter) pair and the evidence.
# source says whether the row comes from model labels or human-verified labels.
PROPOSALS = _schema("proposals", 1, [
    pa.field("class_idx", pa.int32(), nullable=False),
    pa.field("class_name", pa.string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),     # model | human
    pa.field("model_id", pa.string()),
    pa.field("common", pa.string()),
    pa.field("counter", pa.string()),
    pa.field("n_common", pa.int32()),
    pa.field("n_counter", pa.int32()),
    pa.field("acc_common", pa.float64()),
    pa.field("acc_common_lo", pa.float64()),
    pa.field("acc_common_hi", pa.float64()),
    pa.field("acc_counter", pa.float64()),
    pa.field("acc_counter_lo", pa.float64()),
    pa.field("acc_counter_hi", pa.float64()),
    pa.field("drop", pa.float64()),
    pa.field("drop_lo", pa.float64()),
    pa.field("drop_hi", pa.float64()),
    pa.field("p_value", pa.float64()),
    pa.field("p_adjusted", pa.float64()),
    pa.field("decision", pa.string(), nullable=False),   # kept | dropped
    pa.field("reason", pa.string(), nullable=False),     # why kept or dropped, in words
])

SCHEMAS: dict[str, pa.Schema] = {
    "candidates": CANDIDATES,
    "samples": SAMPLES,
    "source_rejects": SOURCE_REJECTS,
    "groups": GROUPS,
    "proposals": PROPOSALS,
}

SAMPLE_STATUSES = ("ok", "failed", "rejected")


def version_of(schema: pa.Schema) -> int:
    return int(schema.metadata[VERSION_KEY])
