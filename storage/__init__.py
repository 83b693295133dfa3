"""Zarr v3 label store with a Parquet index: the contract of LABELS.md on disk."""

from storage.schema import FIELDS, SCHEMA_VERSION, STORED_FIELDS, LabelValidationError
from storage.store import ClipLabels, ClipNotFoundError, CommitResult, LabelStore, RejectedClipError, SchemaVersionError
from storage import object_store  # noqa: F401  (registers the s3://, gs://, az:// backend of LabelStore)

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
    "object_store",
]
