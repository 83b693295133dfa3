"""Dynamic Replica reader (`worldreel import --format dynamic-replica`).

Index (facebookresearch/dynamic_stereo `datasets/dynamic_stereo_datasets.py`, demo notebook):
`<root>/<split>/frame_annotations_<split>.jgz`, a gzipped JSON list of PyTorch3D
`FrameAnnotation`s plus `camera_name` ("left"/"right"), `instance_id_map_path`,
`flow_forward{,_mask}`, `flow_backward{,_mask}` and `trajectories` ({"path": ...}); every
path is relative to `<root>/<split>`. One reader is one sequence seen by one camera (the left
one by default: trajectories exist only for it).

Conversions to LABELS.md:
- depth: 16-bit PNG whose bits are float16, times `depth.scale_adjustment` (PyTorch3D
  `load_depth`); below 1e-5 (upstream's `depth_eps`) or non-finite is invalid. Z-depth in
  metres (Replica is metric).
- cameras: PyTorch3D row vectors, X_cam = X_world @ R + T, camera axes +X left, +Y up;
  OpenCV world-to-camera is R_cv = diag(-1, -1, 1) R^T, t_cv = diag(-1, -1, 1) T (pytorch3d
  `camera_conversions.py`). NDC intrinsics: f_px = f s, c_px = (W/2, H/2) - c s with
  s = (W/2, H/2) for `ndc_norm_image_bounds` and min(W, H)/2 for `ndc_isotropic`; that puts
  pixel corners at integers (PyTorch3D screen space), so c_px moves by -0.5 to put pixel
  centres at integers.
- flow: forward flow PNG (float16 bits) of shape (H, 2W), u in the left half and v in the
  right half, to the next frame; its mask PNG (non-zero = valid).
- dynamic mask: see `read_dynamic_mask`.

Time comes from `frame_timestamp`; the timestamps must be uniform (the import places frame n
at n / fps).
"""

from __future__ import annotations

import gzip
import json
import zlib
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from pipelines.datasets.base import DatasetError, FlowFrame, SequenceReader, read_rgb_file
from pipelines.datasets.pointodyssey import (
    motion_step,
    moving_instance_mask,
    checked_rotation,
    place_tracks,
    read_label_image,
    track_motion,
)

__all__ = ["DynamicReplicaSequence", "list_sequences", "camera_from_viewpoint", "decode_float16_png"]

SPLITS = ("train", "valid", "test", "real")
DEPTH_EPS = 1e-5  # dynamic_stereo: depth below this is no depth
LICENCE = "CC BY-NC 4.0 (non-commercial; download after accepting the licence agreement)"
_ROTATION_TOL = 1e-4
_TIME_TOL = 1e-4  # relative spread of frame intervals accepted as uniform
_FLIP_XY = np.diag([-1.0, -1.0, 1.0])


def list_sequences(
    root: Path, split: str | None = None, names: Sequence[str] | None = None, *, camera: str = "left"
) -> list[DynamicReplicaSequence]:
    """The sequences of `root/<split>/frame_annotations_<split>.jgz` seen by `camera`."""
    root = Path(root)
    if split is not None:
        splits = [split]
    else:
        splits = [s for s in SPLITS if (root / s / f"frame_annotations_{s}.jgz").is_file()]
        if not splits:
            raise DatasetError(root, "missing_file", f"no frame_annotations_<split>.jgz under {', '.join(SPLITS)}")
    readers: dict[str, DynamicReplicaSequence] = {}
    for s in splits:
        for name, entries in _load_index(root / s / f"frame_annotations_{s}.jgz", camera).items():
            readers[name] = DynamicReplicaSequence(root / s, name, entries, camera)
    if names is not None:
        unknown = [n for n in names if n not in readers]
        if unknown:
            raise DatasetError(root, "missing_file", f"sequence(s) not found for the {camera} camera: {', '.join(unknown[:5])}")
        return [readers[n] for n in names]
    return [readers[n] for n in sorted(readers)]


def _load_index(path: Path, camera: str) -> dict[str, list[dict]]:
    """Entries of one camera grouped by sequence name."""
    if not path.is_file():
        raise DatasetError(path, "missing_file", "annotation index not found")
    try:
        with gzip.open(path, "rt", encoding="utf8") as f:
            entries = json.load(f)
    except (OSError, EOFError, zlib.error, json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DatasetError(path, "bad_format", f"not a gzipped JSON list ({type(err).__name__})") from None
    if not isinstance(entries, list):
        raise DatasetError(path, "bad_format", "not a JSON list of frame annotations")
    grouped: dict[str, list[dict]] = {}
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "sequence_name" not in entry:
            raise DatasetError(path, "bad_format", f"entry {i} has no sequence_name")
        if entry.get("camera_name") == camera:
            grouped.setdefault(str(entry["sequence_name"]), []).append(entry)
    return grouped


def decode_float16_png(path: Path, what: str) -> np.ndarray:
    """A 16-bit PNG whose bits are float16, as float32 (non-finite values kept)."""
    if not path.is_file():
        raise DatasetError(path, "missing_file", f"no {what} PNG")
    png = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if png is None:
        raise DatasetError(path, "bad_format", f"unreadable {what} PNG")
    if png.dtype != np.uint16 or png.ndim != 2:
        raise DatasetError(path, "bad_format", f"{what} PNG must be one 16-bit channel, got {png.shape} {png.dtype}")
    return png.astype("<u2").view("<f2").astype(np.float32)


def camera_from_viewpoint(viewpoint: dict, image_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(K (3, 3) pixels, centres at integers; c2w (4, 4) OpenCV axes) of a PyTorch3D viewpoint.

    Raises:
        ValueError: missing or non-finite fields, R not a rotation, a focal length <= 0.
        NotImplementedError: an `intrinsics_format` other than the two PyTorch3D defines.
    """
    H, W = image_size
    try:
        R = np.asarray(viewpoint["R"], np.float64)
        T = np.asarray(viewpoint["T"], np.float64)
        focal = np.asarray(viewpoint["focal_length"], np.float64)
        principal = np.asarray(viewpoint["principal_point"], np.float64)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"viewpoint lacks R, T, focal_length or principal_point ({err})") from None
    fmt = str(viewpoint.get("intrinsics_format", "ndc_norm_image_bounds")).lower()
    if R.shape != (3, 3) or T.shape != (3,) or focal.shape != (2,) or principal.shape != (2,):
        raise ValueError("viewpoint R, T, focal_length, principal_point have wrong shapes")
    if not all(np.isfinite(x).all() for x in (R, T, focal, principal)):
        raise ValueError("NaN/inf in viewpoint")
    half = np.array([W / 2.0, H / 2.0])
    if fmt == "ndc_norm_image_bounds":
        scale = half
    elif fmt == "ndc_isotropic":
        scale = np.full(2, half.min())
    else:
        raise NotImplementedError(f"intrinsics_format {fmt!r}")
    f_px = focal * scale
    c_px = half - principal * scale - 0.5  # PyTorch3D screen: corners at integers
    if not (f_px > 0).all():
        raise ValueError("focal length is not positive")
    K = np.array([[f_px[0], 0.0, c_px[0]], [0.0, f_px[1], c_px[1]], [0.0, 0.0, 1.0]])
    R_cv = _FLIP_XY @ checked_rotation(R, _ROTATION_TOL).T
    t_cv = _FLIP_XY @ T
    c2w = np.eye(4)
    c2w[:3, :3] = R_cv.T
    c2w[:3, 3] = -R_cv.T @ t_cv
    return K, c2w


class DynamicReplicaSequence(SequenceReader):
    """One Dynamic Replica sequence seen by one camera; files are read on demand."""

    dataset = "dynamic-replica"
    metric_scale = True
    licence = LICENCE
    provenance = {
        "camera": "exact",
        "depth": "exact",
        "flow": "exact",
        "key_flow": "absent",
        "dynamic_mask": "derived",
        "scene_flow": "absent",
    }

    def __init__(self, split_root: Path, name: str, entries: list[dict], camera: str = "left") -> None:
        self.root = Path(split_root)
        self.name = name
        self.camera = camera
        self._entries = list(entries)
        self._by_frame: dict[int, dict] | None = None
        self._frames: np.ndarray | None = None
        self._fps: float | None = None
        self._size: tuple[int, int] | None = None

    @property
    def _index(self) -> Path:
        return self.root / f"frame_annotations_{self.root.name}.jgz"

    # ------------------------------------------------------------------ index
    def _check_index(self) -> None:
        where = self._index
        try:
            self._entries.sort(key=lambda e: int(e["frame_number"]))
            frames = np.array([int(e["frame_number"]) for e in self._entries], np.int64)
            times = np.array([float(e["frame_timestamp"]) for e in self._entries])
            sizes = {tuple(int(x) for x in e["image"]["size"]) for e in self._entries}
            if not all(isinstance(e["image"]["path"], str) for e in self._entries):
                raise TypeError("image.path is not a string")
        except (KeyError, TypeError, ValueError) as err:
            detail = f"{self.name}: entry lacks frame_number, frame_timestamp or image ({err})"
            raise DatasetError(where, "bad_format", detail) from None
        if len(frames) == 0:
            raise DatasetError(where, "missing_file", f"{self.name}: no {self.camera} frames")
        if len(np.unique(frames)) != len(frames):
            raise DatasetError(where, "inconsistent", f"{self.name}: repeated frame numbers")
        if frames[0] < 0:
            raise DatasetError(where, "bad_format", f"{self.name}: negative frame number")
        gaps = np.flatnonzero(frames != np.arange(len(frames)))  # sorted, unique: the first gap is at its index
        if len(gaps):
            raise DatasetError(where, "missing_file", f"{self.name}: frame {gaps[0]} is missing")
        if len(sizes) != 1 or min(next(iter(sizes))) <= 0:
            raise DatasetError(where, "inconsistent", f"{self.name}: image.size differs between frames or is empty")
        if len(frames) > 1:
            steps = np.diff(times)
            if not np.isfinite(times).all() or steps.min() <= 0 or steps.max() - steps.min() > _TIME_TOL * steps.mean():
                raise DatasetError(where, "inconsistent", f"{self.name}: frame_timestamp is not uniform")
            self._fps = float(1.0 / steps.mean())
        else:
            raise DatasetError(where, "too_short", f"{self.name}: one frame, no frame rate")
        self._frames = frames
        self._size = next(iter(sizes))
        self._by_frame = {int(f): e for f, e in zip(frames, self._entries)}

    @property
    def frame_numbers(self) -> np.ndarray:
        if self._frames is None:
            self._check_index()
        return self._frames

    @property
    def fps(self) -> float:
        if self._fps is None:
            self._check_index()
        return self._fps

    @property
    def image_size(self) -> tuple[int, int]:
        if self._size is None:
            self._check_index()
        return self._size

    def _entry(self, frame: int) -> dict:
        self.frame_numbers
        if int(frame) not in self._by_frame:
            raise DatasetError(self._index, "missing_file", f"{self.name}: no frame {frame}")
        return self._by_frame[int(frame)]

    def _path(self, frame: int, *keys: str) -> Path | None:
        """The file an entry names under `keys` (e.g. "depth", "path"), or None if not given."""
        value: Any = self._entry(frame)
        for key in keys:
            if isinstance(value, str) and key == "path":  # a field given as the bare path
                break
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            return None
        if not isinstance(value, str):
            raise DatasetError(self._index, "bad_format", f"{self.name} frame {frame}: {'.'.join(keys)} is not a path")
        return self.root / value

    # ------------------------------------------------------------------ reads
    def rgb_path(self, frame: int) -> Path:
        return self._path(frame, "image", "path")

    def read_rgb(self, frame: int) -> np.ndarray:
        return read_rgb_file(self.rgb_path(frame), frame, self.image_size)

    def read_camera(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        viewpoint = self._entry(frame).get("viewpoint")
        if not isinstance(viewpoint, dict):
            raise DatasetError(self._index, "missing_file", f"{self.name} frame {frame}: no viewpoint")
        try:
            return camera_from_viewpoint(viewpoint, self.image_size)
        except NotImplementedError as err:
            raise DatasetError(self._index, "unsupported", f"{self.name} frame {frame}: {err}") from None
        except ValueError as err:
            raise DatasetError(self._index, "bad_values", f"{self.name} frame {frame}: {err}") from None

    def read_depth(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        path = self._path(frame, "depth", "path")
        if path is None:
            raise DatasetError(self._index, "missing_file", f"{self.name} frame {frame}: no depth entry")
        scale = self._entry(frame)["depth"].get("scale_adjustment", 1.0)
        scale = 1.0 if scale is None else scale
        if not (isinstance(scale, (int, float)) and np.isfinite(scale) and scale > 0):
            detail = f"{self.name} frame {frame}: depth.scale_adjustment is not a positive number"
            raise DatasetError(self._index, "bad_values", detail)
        depth = decode_float16_png(path, "depth")
        if depth.shape != self.image_size:
            raise DatasetError(path, "bad_format", f"depth is {depth.shape}, image.size says {self.image_size}")
        depth = depth * np.float32(scale)
        valid = np.isfinite(depth) & (depth >= DEPTH_EPS)
        return np.where(valid, depth, np.float32(0.0)).astype(np.float32), valid

    def read_flow(self, frame: int) -> FlowFrame | None:
        path = self._path(frame, "flow_forward", "path")
        if path is None:  # the last frame has no forward flow
            return None
        H, W = self.image_size
        packed = decode_float16_png(path, "forward flow")
        if packed.shape != (H, 2 * W):
            raise DatasetError(path, "bad_format", f"flow PNG is {packed.shape}, expected ({H}, {2 * W}) (u | v)")
        flow = np.stack([packed[:, :W], packed[:, W:]], axis=-1)
        valid = np.isfinite(flow).all(axis=-1)
        mask_path = self._path(frame, "flow_forward_mask", "path")
        if mask_path is not None:
            mask = _read_mask(mask_path, (H, W), "flow mask")
            valid &= mask
        target = int(frame) + 1
        if target not in self._by_frame:
            raise DatasetError(path, "inconsistent", f"forward flow from the last frame {frame}")
        return FlowFrame(target, np.where(valid[..., None], flow, np.float32(0.0)).astype(np.float32), valid)

    def read_dynamic_mask(self, frame: int, target_frame: int | None = None) -> np.ndarray | None:
        """Foreground instances whose trajectory vertices move between `frame` and
        `target_frame` (default: the next frame; for the last frame, the previous one).

        The background (foreground mask 0: the static Replica scan) is still. Each foreground
        instance of the instance map is decided by the trajectory vertices visible on it at
        either end of the step (`moving_instance_mask`). None when the frame has no
        foreground mask, instance map or trajectories, or a foreground instance has no
        placed vertex.
        """
        frame = int(frame)
        self._entry(frame)
        if target_frame is not None:
            self._entry(target_frame)
        step = motion_step(frame, target_frame, len(self.frame_numbers))
        if step is None:
            return None
        a, b = step
        fg_path = self._path(frame, "mask", "path")
        inst_path = self._path(frame, "instance_id_map_path")
        if fg_path is None or inst_path is None:
            return None
        other = b if frame == a else a
        tracks = {}
        for n in (a, b):
            path = self._path(n, "trajectories", "path")
            if path is None:
                return None
            tracks[n] = _load_trajectories(path)
        if len(tracks[a][2]) != len(tracks[b][2]):
            raise DatasetError(self._path(b, "trajectories", "path"), "inconsistent", f"vertex count differs from frame {a}")
        foreground = _read_mask(fg_path, self.image_size, "foreground mask")
        labels = read_label_image(inst_path, self.image_size)
        # one label for the whole background, apart from every instance id
        labels = np.where(foreground, labels, -1)
        moved, usable = track_motion(tracks[a][2], tracks[b][2], b - a)
        track_ids = [place_tracks(labels, tracks[frame][0], tracks[frame][1])]
        other_inst = self._path(other, "instance_id_map_path")
        other_fg = self._path(other, "mask", "path")
        if other_inst is not None and other_fg is not None:
            other_labels = np.where(
                _read_mask(other_fg, self.image_size, "foreground mask"), read_label_image(other_inst, self.image_size), -1
            )
            track_ids.append(place_tracks(other_labels, tracks[other][0], tracks[other][1]))
        # background vertices (label -1) count as unplaced: the background is still anyway
        count_sets = len(track_ids)
        track_ids = np.concatenate(track_ids)
        try:
            moved, usable = np.tile(moved, count_sets), np.tile(usable, count_sets)
            return moving_instance_mask(labels, track_ids, moved, usable, static_labels=(-1,))
        except ValueError as err:
            raise DatasetError(self._path(frame, "trajectories", "path"), "bad_values", f"frame {frame}: {err}") from None


def _read_mask(path: Path, size: tuple[int, int], what: str) -> np.ndarray:
    """A mask PNG as (H, W) bool (non-zero = set)."""
    if not path.is_file():
        raise DatasetError(path, "missing_file", f"no {what}")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(path, "bad_format", f"unreadable {what}")
    if image.shape[:2] != tuple(size):
        raise DatasetError(path, "bad_format", f"{what} is {image.shape[:2]}, image is {tuple(size)}")
    return (image > 0) if image.ndim == 2 else (image > 0).any(axis=-1)


def _load_trajectories(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(traj_2d (V, 2) pixels, centres at integers; visible (V,) bool; traj_3d_world (V, 3)) of one frame.

    The file is a torch dict; it is loaded with `weights_only=True` (tensors and plain
    containers only, no arbitrary pickles).
    """
    import torch

    if not path.is_file():
        raise DatasetError(path, "missing_file", "no trajectories file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for a corrupt or pickled file
        raise DatasetError(path, "bad_format", f"unreadable trajectories ({type(err).__name__})") from None
    try:
        traj_2d = np.asarray(data["traj_2d"], np.float64)[:, :2] - 0.5  # PyTorch3D screen: corners at integers
        visible = np.asarray(data["verts_inds_vis"]).astype(bool).reshape(-1)
        traj_3d = np.asarray(data["traj_3d_world"], np.float64)
    except (KeyError, TypeError, IndexError, ValueError) as err:
        raise DatasetError(path, "bad_format", f"trajectories lack traj_2d, verts_inds_vis or traj_3d_world ({err})") from None
    if traj_3d.ndim != 2 or traj_3d.shape[1] != 3 or len(traj_2d) != len(traj_3d) or len(visible) != len(traj_3d):
        raise DatasetError(path, "bad_format", f"trajectory arrays disagree: {traj_2d.shape}, {visible.shape}, {traj_3d.shape}")
    return traj_2d, visible, traj_3d
