"""Zarr v3 label store with a Parquet index: the contract of LABELS.md on disk."""

from storage.schema import FIELDS, SCHEMA_VERSION, STORED_FIELDS, LabelValidationError
from storage.store import ClipLabels, ClipNotFoundError, CommitResult, LabelStore, RejectedClipError, SchemaVersionError

__all__ = [
    "FIELDS",
    "SCHEMA_VERSION",
    "STORED_FIELDS",
    "LabelValidationError",
    "ClipLabels",
    "ClipNotFoundError",
    "CommitResult",
    "LabelStore",
    "RejectedClipError",
    "SchemaVersionError",
]
