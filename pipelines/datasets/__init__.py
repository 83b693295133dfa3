"""Readers of outside data sets with exact 4D labels (`worldreel import --format ...`).

Each reader module exposes `list_sequences(root, split, names) -> list[SequenceReader]`
(`pipelines.datasets.base`); `FORMATS` maps a `--format` name to its module, imported only
when used.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from pipelines.datasets.base import DatasetError, SequenceReader

__all__ = ["FORMATS", "DatasetError", "list_sequences"]

FORMATS: dict[str, str] = {
    "kubric-movi": "pipelines.datasets.kubric_movi",
    "pointodyssey": "pipelines.datasets.pointodyssey",
    "dynamic-replica": "pipelines.datasets.dynamic_replica",
    "omniworld-game": "pipelines.datasets.omniworld_game",
    "bedlam": "pipelines.datasets.bedlam",
}


def list_sequences(
    format: str,
    root: str | Path,
    split: str | None = None,
    names: Sequence[str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> list[SequenceReader]:
    """The sequences of `root` in data set `format`, optionally one split and only the named sequences.

    `options` are the reader's own keywords (`--dataset-option KEY=VALUE`), e.g. BEDLAM's
    `depth_type` and `fps`, Dynamic Replica's `camera`.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown data set format {format!r}: expected one of {sorted(FORMATS)}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, "missing_file", f"{format} root is not a folder")
    lister: Callable = importlib.import_module(FORMATS[format]).list_sequences
    accepted = [p.name for p in inspect.signature(lister).parameters.values() if p.kind == p.KEYWORD_ONLY]
    unknown = sorted(set(options or {}) - set(accepted))
    if unknown:
        raise ValueError(f"{format} has no option {unknown[0]!r} (its options: {', '.join(accepted) or 'none'})")
    return lister(root, split, names, **dict(options or {}))
