"""Reader of OmniWorld-Game scenes (yangzhou24/OmniWorld) for `worldreel import --format omniworld-game`.

Layout of one scene folder (as `scripts/extract_one_game_scene.sh` unpacks it)::

    <uid>/color/%06d.png            RGB frames (1280x720, 24 fps)
    <uid>/depth/%06d.png            16-bit depth (decoded as upstream `scripts/utils.py:load_depth`)
    <uid>/camera/split_<k>.json     focals, cx, cy, quats (wxyz), trans of split k
    <uid>/split_info.json           {"split": [[frame, ...], ...]}: the frames of each split
    <uid>/fps.txt                   frame rate of the frames
    <uid>/flow/, subject_masks/, gdino_mask/, text/, droidclib/   (not read, see below)

A sequence is one split of one scene, named `<uid>_split<k>`: each split has its own camera
file and world frame. `root` is a folder of scene folders (or one scene folder); `split`, when
given, names a sub-folder of `root` holding scenes (OmniWorld-Game itself has no train/test
split). `names` selects sequences by full name or by scene uid (all its splits). The metadata
CSV is not read: scenes are found by their `split_info.json`.

Conventions converted (upstream `scripts/utils.py`):
- cameras are OpenCV world-to-camera (R from the wxyz quaternion, t = `trans`); we return
  c2w. Upstream unprojects pixel (i, j) at (i + 0.5, j + 0.5), so our integer-centre
  principal point is (cx - 0.5, cy - 0.5); fx = fy = `focals`.
- depth: d = png / 65535, depth = d / (1000 - 999 d) / 0.004 (z-depth: upstream multiplies
  K^-1 (u, v, 1) by it); invalid where d < 0.0015 (too near) or d > 65500 / 65535 (sky),
  i.e. valid exactly for 99 <= png <= 65500.
- quaternions: upstream's SciPy `Rotation.from_quat` normalises silently; we normalise only
  within 1e-3 of unit norm and refuse the frame otherwise (`bad_values`).

Provenance: depth is the game's depth buffer ("exact" to the PNG's 16-bit precision). Cameras
are the authors' annotation (the README marks OmniWorld-Game cameras as newly annotated, and
the scenes ship coarse `droidclib/` poses beside them): "estimated". The metric scale of depth
and translations is not settled upstream (OmniWorld issue #10): `metric_scale` is False.
Flow is refused as a field, not as a clip: the decoding of `flow_u_16.png` / `flow_v_16.png` is
not in the public code, so `read_flow` gives None and `refusals["flow"]` says why. Dynamic masks
are absent: `subject_masks/` and `gdino_mask/` are the authors' detector output (foreground, not
motion) in a format the public code does not read. `refusals` maps each refused part to its
reason.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from labelers.importers.common import quaternion_to_matrix
from pipelines.datasets.base import DatasetError, SequenceReader

__all__ = ["OmniWorldGameSequence", "decode_depth", "list_sequences"]

DATASET = "omniworld-game"
LICENCE = "CC BY-NC-SA 4.0 (non-commercial, share-alike; game assets remain their publishers')"
PROVENANCE = {
    "camera": "estimated",
    "depth": "exact",
    "flow": "absent",
    "key_flow": "absent",
    "dynamic_mask": "absent",
    "scene_flow": "absent",
}
REFUSALS = {
    "flow": "OmniWorld-Game flow PNG decoding (flow_u_16/flow_v_16) is not in the public code",
    "dynamic_mask": "subject_masks/gdino_mask are detector foreground masks in an unpublished format",
    "metric_scale": "the metric scale of OmniWorld-Game depth is not settled upstream (issue #10)",
}

# upstream load_depth: near = 1, far = 1000, then / 0.004; valid d in [0.0015, 65500 / 65535]
_NEAR, _FAR, _DEPTH_SCALE = 1.0, 1000.0, 0.004
_PNG_VALID_MIN, _PNG_VALID_MAX = 99, 65500  # the integer PNG values whose d passes both tests
_QUAT_NORM_TOL = 1e-3  # float32 JSON storage keeps |q| within ~1e-7 of 1; more is a broken pose
_CAMERA_KEYS = ("focals", "cx", "cy", "quats", "trans")


def decode_depth(png: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode an OmniWorld-Game 16-bit depth PNG as upstream `load_depth` does.

    Args:
        png: (H, W) uint16 PNG values.

    Returns:
        depth (H, W) float32 z-depth in the set's unit, 0 where invalid; valid (H, W) bool
        (False for sky, d > 65500 / 65535, and too-near pixels, d < 0.0015).
    """
    if png.dtype != np.uint16 or png.ndim != 2:
        raise ValueError(f"depth PNG must be (H, W) uint16, got {png.shape} {png.dtype}")
    d = png.astype(np.float64) / 65535.0
    depth = d / (_FAR - d * (_FAR - _NEAR)) / _DEPTH_SCALE
    valid = (png >= _PNG_VALID_MIN) & (png <= _PNG_VALID_MAX)
    return np.where(valid, depth, 0.0).astype(np.float32), valid


def list_sequences(root: Path, split: str | None = None, names: Sequence[str] | None = None) -> list[SequenceReader]:
    """The splits of the OmniWorld-Game scenes under `root` (see the module docstring).

    Listing reads only how many splits each `split_info.json` holds; each reader reads its
    split's frames and `fps.txt` on first use, so a broken scene fails its own clips only. A
    scene whose `split_info.json` does not even give a split count is listed as its split 0,
    which raises the file's reason when read.
    """
    base = Path(root) / split if split else Path(root)
    if not base.is_dir():
        raise DatasetError(base, "missing_file", f"split folder {split!r} not found under {root}")
    scenes = [base] if (base / "split_info.json").is_file() else sorted(
        p for p in base.iterdir() if (p / "split_info.json").is_file()
    )
    if not scenes:
        raise DatasetError(base, "missing_file", "no OmniWorld-Game scene folder (with split_info.json) found")
    wanted = set(names) if names else None
    readers: list[SequenceReader] = []
    for scene in scenes:
        selected = wanted is None or scene.name in wanted or any(n.startswith(scene.name + "_split") for n in wanted)
        if not selected:
            continue
        try:
            count = len(_split_lists(scene / "split_info.json"))
        except DatasetError:
            count = 1  # split 0 carries the reason to its clip
        for k in range(count):
            reader = OmniWorldGameSequence(scene, k)
            if wanted is None or reader.name in wanted or scene.name in wanted:
                readers.append(reader)
    if wanted is not None:
        found = {r.name for r in readers} | {r.root.name for r in readers}
        missing = sorted(wanted - found)
        if missing:
            raise DatasetError(base, "missing_file", f"sequences not found: {', '.join(missing[:5])}")
    return readers


def _read_fps(path: Path) -> float:
    if not path.is_file():
        raise DatasetError(path, "missing_file", "fps.txt not found")
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (OSError, ValueError) as exc:
        raise DatasetError(path, "bad_format", f"not readable text: {type(exc).__name__}") from None
    try:
        fps = float(text)
    except ValueError:
        raise DatasetError(path, "bad_format", f"fps.txt must hold one number, got {text[:20]!r}") from None
    if not (np.isfinite(fps) and 0 < fps <= 1000):
        raise DatasetError(path, "bad_values", "frame rate must be in (0, 1000]")
    return fps


def _split_lists(path: Path) -> list:
    """The raw `split` list of `split_info.json` (one entry per split, each checked by `_read_split`)."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(path, "bad_format", f"not readable JSON: {type(exc).__name__}") from None
    splits = info.get("split") if isinstance(info, dict) else None
    if not isinstance(splits, list) or not splits:
        raise DatasetError(path, "bad_format", "'split' must be a non-empty list of frame lists")
    return splits


def _read_split(path: Path, k: int) -> np.ndarray:
    """The frame numbers of split `k`, checked."""
    splits = _split_lists(path)
    if k >= len(splits):
        raise DatasetError(path, "missing_file", f"no split {k} (the file lists {len(splits)})")
    frames = splits[k]
    if not isinstance(frames, list) or not frames or not all(isinstance(f, int) and f >= 0 for f in frames):
        raise DatasetError(path, "bad_format", f"split {k} must be a non-empty list of frame numbers >= 0")
    frames = np.asarray(frames, np.int64)
    if np.any(np.diff(frames) <= 0):
        raise DatasetError(path, "inconsistent", f"split {k} frame numbers are not strictly increasing")
    return frames


class OmniWorldGameSequence(SequenceReader):
    """One split of one OmniWorld-Game scene; its frame list, frame rate and files are read when asked."""

    dataset = DATASET
    metric_scale = False
    provenance = PROVENANCE
    licence = LICENCE
    refusals = REFUSALS

    def __init__(self, scene_dir: Path, split_index: int) -> None:
        self.root = Path(scene_dir)
        self.split_index = split_index
        self.name = f"{self.root.name}_split{split_index}"
        self._frames: np.ndarray | None = None
        self._row: dict[int, int] | None = None
        self._fps: float | None = None
        self._camera: dict[str, np.ndarray] | None = None
        self._size: tuple[int, int] | None = None

    @property
    def frame_numbers(self) -> np.ndarray:
        if self._frames is None:
            frames = _read_split(self.root / "split_info.json", self.split_index)
            self._row = {int(f): i for i, f in enumerate(frames)}
            self._frames = frames
        return self._frames.copy()

    @property
    def fps(self) -> float:  # type: ignore[override]
        if self._fps is None:
            self._fps = _read_fps(self.root / "fps.txt")
        return self._fps

    @property
    def image_size(self) -> tuple[int, int]:
        if self._size is None:
            self._size = self._read_color(int(self.frame_numbers[0])).shape[:2]
        return self._size

    def rgb_path(self, frame: int) -> Path:
        return self.root / "color" / f"{frame:06d}.png"

    def read_rgb(self, frame: int) -> np.ndarray:
        image = self._read_color(frame)
        self._check_size(self.rgb_path(frame), image.shape[:2])
        return image

    def read_camera(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        cam = self._cameras()
        path = self._camera_path()
        i = self._row_of(frame)
        focal, cx, cy = cam["focals"][i], cam["cx"][i], cam["cy"][i]
        q_wxyz, t = cam["quats"][i], cam["trans"][i]
        if not np.all(np.isfinite([focal, cx, cy, *q_wxyz, *t])):
            raise DatasetError(path, "bad_values", f"frame {frame}: camera holds NaN or inf")
        if focal <= 0:
            raise DatasetError(path, "bad_values", f"frame {frame}: focal length is not positive")
        norm = float(np.linalg.norm(q_wxyz))
        if abs(norm - 1.0) > _QUAT_NORM_TOL:
            shown = f"{norm:.4f}" if 1e-3 < norm < 1e3 else "far from 1"
            raise DatasetError(path, "bad_values", f"frame {frame}: quaternion norm {shown} is not 1")
        w, x, y, z = q_wxyz / norm
        R_w2c = quaternion_to_matrix(np.array([x, y, z, w]))
        c2w = np.eye(4)
        c2w[:3, :3] = R_w2c.T
        c2w[:3, 3] = -R_w2c.T @ t
        # upstream's pixel (i, j) sits at (i + 0.5, j + 0.5); ours at (i, j)
        K = np.array([[focal, 0.0, cx - 0.5], [0.0, focal, cy - 0.5], [0.0, 0.0, 1.0]])
        return K, c2w

    def read_depth(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        path = self.root / "depth" / f"{frame:06d}.png"
        self._row_of(frame)
        png = _imread(path, "depth PNG")
        if png.dtype != np.uint16 or png.ndim != 2:
            raise DatasetError(path, "bad_format", f"depth must be a 16-bit one-channel PNG, got {png.dtype} {png.shape}")
        self._check_size(path, png.shape)
        depth, valid = decode_depth(png)
        if not valid.any():
            raise DatasetError(path, "bad_values", "no valid depth pixel (all sky or too near)")
        return depth, valid

    # ------------------------------------------------------------------ helpers
    def _row_of(self, frame: int) -> int:
        self.frame_numbers  # reads the split (and its row of each frame) on first use
        if frame not in self._row:
            where = self.root / "split_info.json"
            raise DatasetError(where, "missing_file", f"frame {frame} is not in split {self.split_index}")
        return self._row[frame]

    def _read_color(self, frame: int) -> np.ndarray:
        path = self.rgb_path(frame)
        self._row_of(frame)
        image = _imread(path, "colour frame")
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise DatasetError(path, "bad_format", f"colour frame must be 8-bit RGB, got {image.dtype} {image.shape}")
        return np.ascontiguousarray(image[..., 2::-1])  # BGR(A) -> RGB

    def _check_size(self, path: Path, size: tuple[int, int]) -> None:
        if tuple(size) != tuple(self.image_size):
            H, W = self.image_size
            raise DatasetError(path, "inconsistent", f"size {size[0]}x{size[1]} differs from the frames' {H}x{W}")

    def _camera_path(self) -> Path:
        return self.root / "camera" / f"split_{self.split_index}.json"

    def _cameras(self) -> dict[str, np.ndarray]:
        if self._camera is None:
            self._camera = _read_camera_file(self._camera_path(), len(self.frame_numbers))
        return self._camera


def _read_camera_file(path: Path, count: int) -> dict[str, np.ndarray]:
    """The split's camera arrays, each with one row per split frame (scalars broadcast)."""
    if not path.is_file():
        raise DatasetError(path, "missing_file", "camera file not found")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(path, "bad_format", f"not readable JSON: {type(exc).__name__}") from None
    if not isinstance(raw, dict):
        raise DatasetError(path, "bad_format", "camera file must be a JSON object")
    missing = [k for k in _CAMERA_KEYS if k not in raw]
    if missing:
        raise DatasetError(path, "bad_format", f"camera file lacks {', '.join(missing)}")
    cam = {}
    for key, width in (("focals", 0), ("cx", 0), ("cy", 0), ("quats", 4), ("trans", 3)):
        try:
            array = np.asarray(raw[key], np.float64)  # JSON null becomes NaN, caught per frame
        except (TypeError, ValueError):
            raise DatasetError(path, "bad_format", f"'{key}' is not numeric") from None
        if width == 0 and array.ndim == 0:
            array = np.full(count, float(array))
        want = (count,) if width == 0 else (count, width)
        if array.ndim != len(want) or array.shape[1:] != want[1:]:
            raise DatasetError(path, "bad_format", f"'{key}' must have shape {('S',) + want[1:]}, got {array.shape}")
        if array.shape[0] != count:
            raise DatasetError(path, "inconsistent", f"'{key}' has {array.shape[0]} rows for {count} split frames")
        cam[key] = array
    return cam


def _imread(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(path, "missing_file", f"{what} not found")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(path, "bad_format", f"{what} is not a readable image")
    return image
