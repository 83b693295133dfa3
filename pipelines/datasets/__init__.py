"""Readers of outside data sets with exact 4D labels (`worldreel import --format ...`).

Each reader module exposes `list_sequences(root, split, names) -> list[SequenceReader]`
(`pipelines.datasets.base`); `FORMATS` maps a `--format` name to its module, imported only
when used.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable, Sequence

from pipelines.datasets.base import DatasetError, SequenceReader

__all__ = ["FORMATS", "list_sequences"]

FORMATS: dict[str, str] = {
    "kubric-movi": "pipelines.datasets.kubric_movi",
    "pointodyssey": "pipelines.datasets.pointodyssey",
    "dynamic-replica": "pipelines.datasets.dynamic_replica",
    "omniworld-game": "pipelines.datasets.omniworld_game",
    "bedlam": "pipelines.datasets.bedlam",
}


def list_sequences(
    format: str, root: str | Path, split: str | None = None, names: Sequence[str] | None = None
) -> list[SequenceReader]:
    """The sequences of `root` in data set `format`, optionally one split and only the named sequences."""
    if format not in FORMATS:
        raise ValueError(f"unknown data set format {format!r}: expected one of {sorted(FORMATS)}")
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, "missing_file", f"{format} root is not a folder")
    lister: Callable = importlib.import_module(FORMATS[format]).list_sequences
    return lister(root, split, names)
