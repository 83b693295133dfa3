"""What a reader of a synthetic data set with exact 4D labels provides (`worldreel import`).

A reader turns one sequence of an outside data set (PointOdyssey, Dynamic Replica,
OmniWorld-Game, BEDLAM, Kubric MOVi) into per-frame arrays that already speak LABELS.md
conventions, at the data set's own resolution and frame numbers:

- pixels: (u, v) = (column, row), pixel centres at integer coordinates;
- cameras: pinhole `K` in pixels of the source image, `c2w` camera-to-world with OpenCV axes
  (x right, y down, z forward) in the **data set's** world frame (the import re-expresses it so
  that `c2w[0] = I` for each clip window);
- depth: z-depth along the optical axis (never ray length), in the data set's unit converted to
  metres where the set is metric; invalid pixels (sky, fog, holes) are False in `depth_valid`;
- flow: F(u) = q - u from frame n to frame `next_frame(n)`, channels (dx, dy), in pixels.

Each reader module exposes `list_sequences(root: Path, split: str | None, names: Sequence[str] |
None) -> list[SequenceReader]` (a missing split or an unknown sequence name is a `DatasetError`),
and is registered by name in `pipelines.datasets.FORMATS`.

Everything a reader cannot read exactly is refused with a `DatasetError` naming the file and
the cause; nothing is guessed. The import (`pipelines.dataset_import`) resamples to the label
timeline and resolution, derives what follows exactly from the read arrays and records each
field's provenance.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Mapping

import numpy as np

from storage.schema import PROVENANCE_PARTS, PROVENANCES

__all__ = [
    "PROVENANCES",
    "LABEL_PARTS",
    "DatasetError",
    "FlowFrame",
    "SequenceReader",
    "read_rgb_file",
]

# exact: read from the set's files to their precision; derived: follows exactly from exact
# fields (e.g. rigid flow from depth and cameras); estimated: from a labeler; absent: not provided.
# The values and parts are the store's (`storage.schema`), which checks them on commit.
LABEL_PARTS = PROVENANCE_PARTS


class DatasetError(ValueError):
    """A sequence (or one field of it) that cannot be imported, with a machine-readable reason.

    Attributes:
        where: the file or folder at fault.
        reason: one of `REASONS`.
        detail: what is wrong, in words (one line; never an absurd number).
    """

    REASONS = (
        "missing_file",  # a frame or annotation file is not there
        "bad_format",  # unreadable file, wrong shape or dtype
        "bad_values",  # NaN/inf trajectories, non-normalised quaternions, fog pixels where depth is needed
        "too_short",  # fewer frames than one window needs
        "unsupported",  # a field whose encoding is not settled upstream (refused, not guessed)
        "inconsistent",  # counts or frame numbers disagree between files
    )

    def __init__(self, where: str | Path, reason: str, detail: str) -> None:
        if reason not in self.REASONS:
            raise ValueError(f"reason must be one of {self.REASONS}, got {reason!r}")
        self.where = str(where)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{where}: {reason}: {detail}")

    def __reduce__(self):  # pickles with its fields, so it crosses process boundaries (Ray)
        return (type(self), (self.where, self.reason, self.detail))


def read_rgb_file(path: Path, frame: int, size: tuple[int, int] | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file of `frame`; DatasetError when it is missing, unreadable or
    not `size` (H, W)."""
    import cv2

    if not path.is_file():
        raise DatasetError(path, "missing_file", f"frame {frame} has no image")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise DatasetError(path, "bad_format", "unreadable image")
    if size is not None and bgr.shape[:2] != tuple(size):
        raise DatasetError(path, "inconsistent", f"image is {bgr.shape[:2]}, the sequence is {tuple(size)}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


@dataclass(frozen=True)
class FlowFrame:
    """Forward optical flow shipped by a data set, from frame n to `target_frame`.

    Attributes:
        target_frame: the frame number the flow points to.
        flow_px: (H, W, 2) float32 flow (dx, dy) in source pixels.
        flow_valid: (H, W) bool, where the set says the flow holds (its mask, or all True).
    """

    target_frame: int
    flow_px: np.ndarray
    flow_valid: np.ndarray


class SequenceReader(ABC):
    """One sequence of an outside data set. Subclasses read lazily: nothing is decoded until asked.

    Attributes (set by subclasses):
        dataset: the format name, e.g. "pointodyssey" (`worldreel import --format`).
        name: the sequence name as the set spells it (becomes part of the clip id).
        root: the sequence folder.
        fps: native frame rate of the sequence.
        image_size: (H, W) of the source images.
        metric_scale: True when depth and translations are metres.
        provenance: LABEL_PARTS -> what the set itself gives for that part, one of PROVENANCES
            ("exact" where shipped, "absent" where not; the import turns absent parts into
            "derived" or "estimated" where it can).
        licence: one line, e.g. "CC BY-NC-SA 4.0 (non-commercial)".
        refusals: part -> one-line reason for each part the reader refuses to read although the
            set ships it (an encoding not settled upstream); the import records them per clip.
    """

    dataset: str
    name: str
    root: Path
    fps: float
    image_size: tuple[int, int]
    metric_scale: bool
    provenance: Mapping[str, str]
    licence: str
    refusals: Mapping[str, str] = MappingProxyType({})

    @property
    @abstractmethod
    def frame_numbers(self) -> np.ndarray:
        """(N,) int64 increasing frame numbers that have an image (0-based as the set numbers them)."""

    @abstractmethod
    def rgb_path(self, frame: int) -> Path:
        """The image file of `frame` (training reads RGB from it)."""

    @abstractmethod
    def read_rgb(self, frame: int) -> np.ndarray:
        """(H, W, 3) uint8 RGB of `frame`."""

    @abstractmethod
    def read_camera(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """(K (3, 3) float64 pixels, c2w (4, 4) float64 OpenCV axes in the set's world frame)."""

    @abstractmethod
    def read_depth(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        """(depth (H, W) float32 z-depth, 0 where invalid; depth_valid (H, W) bool)."""

    def read_flow(self, frame: int) -> FlowFrame | None:
        """Shipped forward flow from `frame`, or None when the set ships none."""
        return None

    def read_dynamic_mask(self, frame: int, target_frame: int | None = None) -> np.ndarray | None:
        """(H, W) bool: pixels of `frame` whose surface moves in world coordinates between `frame` and
        `target_frame` (default: the next frame; for the last frame, the previous one), or None if unknown."""
        return None

    def read_world_motion(self, frame: int, target_frame: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Exact motion of the surface seen at each pixel of `frame`, or None when the set has none.

        Returns (points_at_target (H, W, 3) float64: world position at `target_frame` of the
        surface point seen at pixel u of `frame`, in the set's world frame; valid (H, W) bool).
        Sets with per-object poses (Kubric) give this exactly; it yields flow and scene flow.
        """
        return None
