"""PointOdyssey v1.2 reader (`worldreel import --format pointodyssey`).

Layout (y-zheng18/point_odyssey `utils/gen_tracking.py`, loaders in aharley/pips2):
`<root>/<split>/<seq>/rgbs/rgb_%05d.jpg`, `depths/depth_%05d.png`, `masks/mask_%05d.png`,
`anno.npz` (and `info.npz`, `normals/`, not needed here); frames are 0-based, 30 fps.

Conversions to LABELS.md:
- depth: 16-bit PNG, metres = png / 65535 * 1000 (the writer truncates, so one step is 15.3 mm
  and the decoded depth is at most one step short); 65535 is fog/smoke (or >= 1000 m) and 0
  is no depth: both invalid.
- cameras: `anno.npz` `extrinsics` (S, 4, 4) world-to-camera with OpenCV axes and
  `intrinsics` (S, 3, 3), both stored as float16. The rotation is projected back onto SO(3)
  (float16 entries leave it about 1e-4 off orthonormal) before inverting. Blender's K puts
  the principal point at (W/2, H/2) with pixel corners at integers; LABELS.md puts pixel
  centres at integers, so cx and cy move by -0.5 px.
- dynamic mask: see `moving_instance_mask`; PointOdyssey ships no dense flow, so
  `read_flow` is None.

`anno.npz` is read without pickles: an early-release `trajs_3d = None` (an object array) is
refused with a reason instead of being unpickled.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from labelers.geometry import nearest_rotation
from pipelines.datasets.base import DatasetError, SequenceReader, read_rgb_file

__all__ = [
    "PointOdysseySequence",
    "list_sequences",
    "moving_instance_mask",
    "read_label_image",
    "checked_rotation",
    "motion_step",
    "place_tracks",
    "track_motion",
    "DEPTH_SCALE_M",
    "MOTION_TOL_M",
    "MAX_STEP_M",
]

SPLITS = ("train", "val", "test")
FPS = 30.0  # render_human.py: bpy scene fps
DEPTH_SCALE_M = 1000.0 / 65535.0  # metres per PNG step
DEPTH_FOG = 65535  # fog/smoke, or depth clipped at 1000 m
MOTION_TOL_M = 1e-4  # a tracked point "moves" when it shifts more than this between frames
MAX_BROKEN_FRACTION = 0.05  # of an instance's tracks; more and its stillness is not established
MAX_STEP_M = 5.0  # per frame (150 m/s at 30 fps): a longer jump is a broken track, not motion
LICENCE = "CC BY-NC-SA 4.0 (non-commercial, share-alike)"
_ROTATION_TOL = 5e-3  # float16 rotation entries are off by <= 2.5e-4 each


def list_sequences(root: Path, split: str | None = None, names: Sequence[str] | None = None) -> list[PointOdysseySequence]:
    """The sequences under `root/<split>/` (all splits present when `split` is None)."""
    root = Path(root)
    if split is not None:
        if not (root / split).is_dir():
            raise DatasetError(root / split, "missing_file", f"split {split!r} not found")
        splits = [split]
    else:
        splits = [s for s in SPLITS if (root / s).is_dir()]
        if not splits:
            raise DatasetError(root, "missing_file", f"no split folder ({', '.join(SPLITS)})")
    folders = [p for s in splits for p in sorted((root / s).iterdir()) if p.is_dir()]
    if names is not None:
        by_name = {p.name: p for p in folders}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise DatasetError(root, "missing_file", f"sequence(s) not found: {', '.join(unknown[:5])}")
        folders = [by_name[n] for n in names]
    return [PointOdysseySequence(p) for p in folders]


class PointOdysseySequence(SequenceReader):
    """One PointOdyssey sequence folder; reads lazily and caches `anno.npz` arrays once read."""

    dataset = "pointodyssey"
    fps = FPS
    metric_scale = True
    licence = LICENCE
    provenance = {
        "camera": "exact",
        "depth": "exact",
        "flow": "absent",
        "key_flow": "absent",
        "dynamic_mask": "derived",
        "scene_flow": "absent",
    }

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.name = self.root.name
        self._arrays: dict[str, np.ndarray] = {}
        self._frames: np.ndarray | None = None
        self._size: tuple[int, int] | None = None
        self._files: list[str] | None = None

    # ------------------------------------------------------------------ files
    def rgb_path(self, frame: int) -> Path:
        return self.root / "rgbs" / f"rgb_{frame:05d}.jpg"

    def depth_path(self, frame: int) -> Path:
        return self.root / "depths" / f"depth_{frame:05d}.png"

    def mask_path(self, frame: int) -> Path:
        return self.root / "masks" / f"mask_{frame:05d}.png"

    def _anno(self, key: str) -> np.ndarray:
        """One array of `anno.npz`, loaded once (no pickles)."""
        if key not in self._arrays:
            path = self.root / "anno.npz"
            if key not in self._anno_files():
                raise DatasetError(path, "bad_format", f"no {key!r} array (has {', '.join(self._anno_files())})")
            try:
                with _open_npz(path) as npz:
                    self._arrays[key] = npz[key]
            except DatasetError:
                raise
            except zlib.error:
                raise DatasetError(path, "bad_format", f"{key} holds corrupt compressed data") from None
            except ValueError:  # object arrays, e.g. trajs_3d = None in early releases
                raise DatasetError(path, "bad_format", f"{key} is not a numeric array (None or pickled objects)") from None
            except _NPZ_ERRORS as err:
                raise DatasetError(path, "bad_format", f"unreadable {key} ({type(err).__name__})") from None
        return self._arrays[key]

    def _anno_files(self) -> list[str]:
        """The array names in `anno.npz`."""
        if self._files is None:
            path = self.root / "anno.npz"
            if not path.is_file():
                raise DatasetError(path, "missing_file", "no anno.npz")
            try:
                with _open_npz(path) as npz:
                    self._files = sorted(npz.files)
            except DatasetError:
                raise
            except (ValueError, *_NPZ_ERRORS) as err:
                raise DatasetError(path, "bad_format", f"unreadable npz ({type(err).__name__})") from None
        return self._files

    # ------------------------------------------------------------------ frames
    @property
    def frame_numbers(self) -> np.ndarray:
        if self._frames is None:
            extrinsics = self._cameras_w2c()
            count = len(extrinsics)
            folder = self.root / "rgbs"
            present = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
            missing = [n for n in range(count) if f"rgb_{n:05d}.jpg" not in present]
            if missing:
                raise DatasetError(
                    self.rgb_path(missing[0]), "missing_file", f"{len(missing)} of {count} frames have no image"
                )
            extra = len([p for p in present if p.startswith("rgb_") and p.endswith(".jpg")]) - count
            if extra > 0:
                raise DatasetError(folder, "inconsistent", f"{extra} more images than the {count} cameras of anno.npz")
            self._frames = np.arange(count, dtype=np.int64)
        return self._frames

    @property
    def image_size(self) -> tuple[int, int]:
        if self._size is None:
            self._size = tuple(self.read_rgb(0).shape[:2])
        return self._size

    def __getstate__(self) -> dict:
        # readers travel to workers (Ray): send paths, not the cached anno.npz arrays
        return {**self.__dict__, "_arrays": {}}

    def _check_frame(self, frame: int) -> int:
        frames = self.frame_numbers
        if not 0 <= frame < len(frames):
            raise DatasetError(self.root, "missing_file", f"frame {frame} outside 0..{len(frames) - 1}")
        return int(frame)

    # ------------------------------------------------------------------ images
    def read_rgb(self, frame: int) -> np.ndarray:
        return read_rgb_file(self.rgb_path(frame), frame, self._size)

    def read_depth(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        self._check_frame(frame)
        path = self.depth_path(frame)
        png = _read_png(path, f"frame {frame} has no depth")
        if png.dtype != np.uint16 or png.shape != self.image_size:
            raise DatasetError(path, "bad_format", f"depth must be {self.image_size} uint16, got {png.shape} {png.dtype}")
        valid = (png > 0) & (png < DEPTH_FOG)
        depth = np.where(valid, png.astype(np.float32) * np.float32(DEPTH_SCALE_M), np.float32(0.0))
        return depth, valid

    # ------------------------------------------------------------------ cameras
    def _cameras_w2c(self) -> np.ndarray:
        extrinsics = self._anno("extrinsics")
        if extrinsics.ndim != 3 or extrinsics.shape[1:] != (4, 4):
            raise DatasetError(self.root / "anno.npz", "bad_format", f"extrinsics must be (S, 4, 4), got {extrinsics.shape}")
        return extrinsics

    def read_camera(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        frame = self._check_frame(frame)
        where = self.root / "anno.npz"
        intrinsics = self._anno("intrinsics")
        if intrinsics.shape != (len(self.frame_numbers), 3, 3):
            raise DatasetError(where, "inconsistent", f"intrinsics {intrinsics.shape} for {len(self.frame_numbers)} cameras")
        K = intrinsics[frame].astype(np.float64)
        w2c = self._cameras_w2c()[frame].astype(np.float64)
        if not (np.isfinite(K).all() and np.isfinite(w2c).all()):
            raise DatasetError(where, "bad_values", f"NaN/inf camera at frame {frame}")
        if not (K[0, 0] > 0 and K[1, 1] > 0 and np.allclose(K[2], [0, 0, 1]) and K[0, 1] == 0 and K[1, 0] == 0):
            raise DatasetError(where, "bad_values", f"intrinsics at frame {frame} are not a pinhole K")
        if not np.allclose(w2c[3], [0, 0, 0, 1]):
            raise DatasetError(where, "bad_values", f"extrinsics at frame {frame} are not rigid (bottom row)")
        try:
            R = checked_rotation(w2c[:3, :3], _ROTATION_TOL)
        except ValueError as err:
            raise DatasetError(where, "bad_values", f"extrinsics at frame {frame}: {err}") from None
        K = K.copy()
        K[0, 2] -= 0.5  # Blender: pixel corners at integers; LABELS.md: pixel centres
        K[1, 2] -= 0.5
        c2w = np.eye(4)
        c2w[:3, :3] = R.T
        c2w[:3, 3] = -R.T @ w2c[:3, 3]
        return K, c2w

    # ------------------------------------------------------------------ motion
    def _tracks(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(trajs_2d (S, N, 2), visible (S, N) bool, trajs_3d (S, N, 3)), checked for shape."""
        where = self.root / "anno.npz"
        count = len(self.frame_numbers)
        trajs_3d = self._anno("trajs_3d")
        trajs_2d = self._anno("trajs_2d")
        if "visibs" in self._anno_files():
            visibs = self._anno("visibs")
        else:  # older releases: 0 hidden, 1 visible, 2 behind or too far
            visibs = self._anno("visibilities") == 1
        if trajs_3d.ndim != 3 or trajs_3d.shape[0] != count or trajs_3d.shape[2] != 3:
            raise DatasetError(where, "bad_format", f"trajs_3d must be ({count}, N, 3), got {trajs_3d.shape}")
        if trajs_2d.shape != trajs_3d.shape[:2] + (2,) or visibs.shape != trajs_3d.shape[:2]:
            raise DatasetError(
                where, "inconsistent", f"trajs_2d {trajs_2d.shape} / visibs {visibs.shape} vs trajs_3d {trajs_3d.shape}"
            )
        visible = visibs > 0
        if "valids" in self._anno_files():
            valids = self._anno("valids")
            if valids.shape != visible.shape:
                raise DatasetError(where, "inconsistent", f"valids {valids.shape} vs trajs_3d {trajs_3d.shape}")
            visible = visible & (valids > 0)
        return trajs_2d, visible, trajs_3d

    def read_dynamic_mask(self, frame: int, target_frame: int | None = None) -> np.ndarray | None:
        """Instances whose tracked points move between `frame` and `target_frame` (default: the
        next frame; for the last frame, the previous one); None when an instance on screen has
        no placeable track. See `moving_instance_mask`."""
        frame = self._check_frame(frame)
        step = motion_step(frame, target_frame, len(self.frame_numbers))
        if step is None:
            return None
        a, b = step
        if target_frame is not None:
            self._check_frame(target_frame)
        trajs_2d, visible, trajs_3d = self._tracks()
        instances = read_label_image(self.mask_path(frame), self.image_size)
        moved, usable = track_motion(trajs_3d[a], trajs_3d[b], b - a)
        # Tracks are placed where they are seen, at `frame` and at the other end of the step
        # (an instance keeps its label in every mask of a sequence). trajs_2d are Blender
        # pixels (corners at integers): -0.5 puts pixel centres at integers.
        other = b if frame == a else a
        other_instances = read_label_image(self.mask_path(other), self.image_size)
        track_ids = np.concatenate(
            [
                place_tracks(instances, trajs_2d[frame].astype(np.float64) - 0.5, visible[frame]),
                place_tracks(other_instances, trajs_2d[other].astype(np.float64) - 0.5, visible[other]),
            ]
        )
        moved, usable = np.tile(moved, 2), np.tile(usable, 2)
        try:
            return moving_instance_mask(instances, track_ids, moved, usable)
        except ValueError as err:
            raise DatasetError(self.root / "anno.npz", "bad_values", f"frame {frame}: {err}") from None


# ---------------------------------------------------------------------- shared helpers
def motion_step(frame: int, target_frame: int | None, count: int) -> tuple[int, int] | None:
    """(a, b): the frames whose motion a dynamic mask of `frame` describes, `frame` being one of them."""
    if target_frame is not None:
        if target_frame == frame:
            raise ValueError(f"target_frame must differ from frame {frame}")
        return int(frame), int(target_frame)
    if count < 2:
        return None
    return (frame, frame + 1) if frame + 1 < count else (frame - 1, frame)


def checked_rotation(R: np.ndarray, tol: float) -> np.ndarray:
    """The rotation closest to `R`, after checking that `R` is one to within `tol` (entry-wise)."""
    R = np.asarray(R, np.float64)
    error = np.abs(R.T @ R - np.eye(3)).max()
    if not error <= tol or np.linalg.det(R) <= 0:
        raise ValueError(f"not a rotation (orthonormality error {min(error, 99.0):.2g})")
    return nearest_rotation(R)


# what a damaged archive raises while it is opened or an array read (zlib.error: handled apart)
_NPZ_ERRORS = (OSError, EOFError, zipfile.BadZipFile)


def _open_npz(path: Path) -> np.lib.npyio.NpzFile:
    """`anno.npz` opened without pickles; a file that is not an npz archive (e.g. one .npy array) is refused."""
    loaded = np.load(path, allow_pickle=False)
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise DatasetError(path, "bad_format", "not an npz archive (a single array)")
    return loaded


def _read_png(path: Path, missing: str) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(path, "missing_file", missing)
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(path, "bad_format", "unreadable PNG")
    return image


def read_label_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """An instance map as (H, W) int64 labels: a one-channel PNG as is, a colour PNG with
    each colour as one label (black = 0); an alpha channel is ignored."""
    image = _read_png(path, "no instance mask")
    if image.shape[:2] != tuple(size):
        raise DatasetError(path, "bad_format", f"mask is {image.shape[:2]}, image is {tuple(size)}")
    if image.ndim == 2:
        return image.astype(np.int64)
    channels = image[..., :3].astype(np.int64)
    return (channels[..., 0] << 32) | (channels[..., 1] << 16) | channels[..., 2]


def place_tracks(labels: np.ndarray, uv: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """The instance each visible track sits on, or -1.

    A track counts only where its pixel and the 8 around it carry one label, so half-pixel
    conventions, float16 rounding of the track and mask edges cannot put it on a neighbour.

    Args:
        labels: (H, W) int64 instance labels.
        uv: (N, 2) track pixels, centres at integers (may hold NaN/inf).
        visible: (N,) bool.
    """
    H, W = labels.shape
    ok = visible & np.isfinite(uv).all(axis=1)
    ok &= (uv[:, 0] >= 1) & (uv[:, 0] <= W - 2) & (uv[:, 1] >= 1) & (uv[:, 1] <= H - 2)
    out = np.full(len(uv), -1, np.int64)
    if not ok.any():
        return out
    u = np.rint(uv[ok, 0]).astype(np.int64)
    v = np.rint(uv[ok, 1]).astype(np.int64)
    centre = labels[v, u]
    uniform = np.ones(len(u), bool)
    for dv in (-1, 0, 1):
        for du in (-1, 0, 1):
            uniform &= labels[v + dv, u + du] == centre
    out[np.flatnonzero(ok)[uniform]] = centre[uniform]
    return out


def track_motion(points_a: np.ndarray, points_b: np.ndarray, frames_apart: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(moved, usable) per track between two frames of world positions (N, 3).

    A track is usable when finite at both ends and displaced by at most `MAX_STEP_M` per frame
    (PointOdyssey has a few absurd trajectory values); it moved when displaced by more than
    `MOTION_TOL_M` (any change of a float16 value is at least that far from the origin).
    """
    a = points_a.astype(np.float64)
    b = points_b.astype(np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        step = np.abs(b - a).max(axis=1)
    usable = np.isfinite(step) & (step <= MAX_STEP_M * abs(frames_apart))
    return usable & (step > MOTION_TOL_M), usable


def moving_instance_mask(
    labels: np.ndarray,
    track_ids: np.ndarray,
    track_moved: np.ndarray,
    track_usable: np.ndarray,
    static_labels: Sequence[int] = (),
) -> np.ndarray | None:
    """Pixels of the instances that move, decided from tracked surface points.

    An instance moves when at least one of its placed tracks moved (more than `MOTION_TOL_M`
    in world coordinates over the step); it is still when it has placed tracks, none moved
    and at most `MAX_BROKEN_FRACTION` of them are broken. Articulated bodies are marked whole
    (a superset of the moving pixels).

    Args:
        labels: (H, W) instance labels of the frame.
        track_ids: (N,) label each track sits on, -1 if not placed.
        track_moved, track_usable: (N,) bool; `track_usable` False marks a track whose motion
            is unknown (NaN/inf or an absurd jump).
        static_labels: labels known to be still without tracks (e.g. a static background).

    Returns:
        (H, W) bool, or None when an instance on screen has no placed track.

    Raises:
        ValueError: an instance with more broken tracks than that (they could hide its motion).
    """
    placed = track_ids >= 0
    moving = set(np.unique(track_ids[placed & track_moved]).tolist())
    ids, counts = np.unique(track_ids[placed], return_counts=True)
    usable_ids, usable_counts = np.unique(track_ids[placed & track_usable], return_counts=True)
    usable = dict(zip(usable_ids.tolist(), usable_counts.tolist()))
    placed_count = dict(zip(ids.tolist(), counts.tolist()))
    static = set(int(s) for s in static_labels)
    for label in np.unique(labels).tolist():
        if label in moving or label in static:
            continue
        if label not in placed_count:
            return None
        if usable.get(label, 0) < (1.0 - MAX_BROKEN_FRACTION) * placed_count[label]:
            raise ValueError(f"NaN/inf or absurd trajectories on instance {label}")
    return np.isin(labels, sorted(moving - static))
