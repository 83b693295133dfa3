"""Shot cuts between frames, scored as PySceneDetect's content detector scores them.

A clip span from a manifest can hold a hard cut (a split a few frames off, an edit inside a
stock clip); frames on both sides of it are two different scenes, and every labeler downstream
assumes one. OpenCV's Megamind.avi, decoded from 4 s, cuts to another shot after 2 label frames:
the cameras failed with `camera_too_few_tracks`, which says nothing about the cause.

The score is PySceneDetect's `ContentDetector` value between two frames, with its default
weights: the mean over pixels and over the hue, saturation and value channels of OpenCV's HSV
of the absolute change. It is computed here with OpenCV (equal to PySceneDetect 0.6.7's within
1e-13 on the regression footage): the package itself is not a dependency, because its 0.6
releases pin click < 8.3, which held transformers back to a release whose image processors
need torchvision, and its 0.7 releases require the non-headless OpenCV wheel, which clashes
with `opencv-python-headless`. `pipelines.decode` scores the label frames and
confirms a candidate on the consecutive source frames between them, where a cut is one step:
between label frames taken every few source frames, motion alone raises the score (a hand moving
a box, 8 fps from 30: up to 15), while between consecutive source frames the regression footage
stays under 21 within its shots and its 9 cuts score 36-99 (measured: docs/benchmarks.md,
"Session 30"). Gradual transitions (fades, dissolves) are not cuts to this detector.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["DEFAULT_CUT_THRESHOLD", "ShotCut", "content_changes"]

DEFAULT_CUT_THRESHOLD = 27.0  # PySceneDetect's ContentDetector default
SCORE_WIDTH_PX = 256  # frames are scored at most this wide


@dataclass(frozen=True)
class ShotCut:
    """A cut before source frame `source_frame` (the first frame of the new shot).

    Attributes:
        source_frame: source frame number of the new shot's first frame.
        time_s: its time on the clip's timeline, seconds.
        change: content change from the frame before (PySceneDetect's content value, 0-255).
    """

    source_frame: int
    time_s: float
    change: float


def content_changes(frames: np.ndarray) -> np.ndarray:
    """(N - 1,) content change between consecutive frames of (N, H, W, 3) uint8 RGB frames.

    Frames wider than `SCORE_WIDTH_PX` are first shrunk by the smallest integer factor that brings
    them to at most that width (PySceneDetect's scene manager shrinks towards 256 px too), so the
    score hardly depends on the resolution, and costs about 1 ms per frame at any size.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (N, H, W, 3) uint8 RGB, got {frames.shape} {frames.dtype}")
    height, width = frames.shape[1:3]
    factor = -(-width // SCORE_WIDTH_PX)
    size = (max(1, width // factor), max(1, height // factor))
    hsv = []
    for frame in frames:
        if factor > 1:
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        hsv.append(cv2.cvtColor(frame, cv2.COLOR_RGB2HSV).astype(np.int16))
    return np.array([np.abs(b - a).mean() for a, b in zip(hsv[:-1], hsv[1:])], np.float64)
