"""Contracts between stages: one versioned pyarrow schema per artifact, and its validator."""
from schemas.tables import CANDIDATES, SAMPLE_STATUSES, SAMPLES, SCHEMAS, SOURCE_REJECTS, version_of
from schemas.validate import SchemaError, conform, read, read_folder

__all__ = ["CANDIDATES", "SAMPLES", "SAMPLE_STATUSES", "SCHEMAS", "SOURCE_REJECTS", "SchemaError", "conform", "read",
           "read_folder", "version_of"]
