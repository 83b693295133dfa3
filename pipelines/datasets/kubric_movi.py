"""Kubric MOVi scenes as kubric's own worker writes them (`worldreel import --format kubric-movi`).

One scene folder per sequence, as `challenges/movi/movi_def_worker.py` leaves it after
`kb.write_image_dict` and `kb.write_json` (google-research/kubric@0ee21e2, `kubric/file_io.py`):

- `rgba_%05d.png`: 8-bit RGBA; frame files are numbered from 0 (`multi_write_image` enumerates
  the rendered frames), frame i is `metadata.json` row i;
- `depth_%05d.tiff`: float32 (H, W, 1) **ray distance** from the camera centre, not z-depth
  (`blender_utils.process_depth` -> `PerspectiveCamera.z_to_depth`); Blender's background
  marker is 1e10;
- `forward_flow_%05d.png`, `backward_flow_%05d.png`: 16-bit PNGs of (delta_row, delta_col, 0)
  in pixels, scaled per scene to [0, 65535] with the min and max written to `data_ranges.json`
  (`write_flow_batch`: `(x - min) * 65535 / (max - min)`, truncated to uint16);
- `segmentation_%05d.png`: 8-bit palette PNG; 0 background, i >= 1 the i-th entry of
  `metadata.json` "instances" (`adjust_segmentation_idxs`);
- `metadata.json`: "metadata" (resolution (W, H), frame_rate, num_frames), "camera"
  (focal_length and sensor_width in mm, positions (T, 3), quaternions (T, 4) **w, x, y, z**,
  camera-to-world with Blender camera axes: x right, y up, looking down -z) and "instances"
  (per-object positions and w, x, y, z quaternions per frame).

The principal point is the image centre (kubric does not support a shift): with pixel centres
at integer coordinates, c = (W/2 - 0.5, H/2 - 0.5); f = focal_length / sensor_width * W for
both axes (the sensor height follows the aspect ratio). The floor and dome of MOVi scenes are
static, so every pixel's motion is exact: background points stay, object points follow their
object's pose (`read_world_motion`). Kubric's units are metres (SI gravity, object sizes).
Licence: kubric code Apache 2.0; the MOVi data sets CC BY 4.0.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from pipelines.datasets.base import LABEL_PARTS, DatasetError, FlowFrame, SequenceReader

__all__ = ["KubricSequence", "list_sequences", "BACKGROUND_DEPTH"]

BACKGROUND_DEPTH = 1e9  # Blender writes 1e10 where a ray hits nothing: such depth is not a surface
_QUATERNION_TOLERANCE = 1e-3  # |q| - 1 allowed in the JSON's float32 quaternions


def list_sequences(root: Path, split: str | None = None, names: Sequence[str] | None = None) -> list["KubricSequence"]:
    """Scene folders (holding `metadata.json`) under `root/split` (or `root`), optionally only `names`."""
    base = Path(root) / split if split else Path(root)
    if not base.is_dir():
        raise DatasetError(base, "missing_file", f"split folder {split!r} is not there")
    if (base / "metadata.json").exists():  # root is one scene
        scenes = {base.name: base}
    elif names:  # looked up directly: a worker asking for one scene of a large set stats one folder
        scenes = {n: base / n for n in names if (base / n / "metadata.json").exists()}
    else:
        scenes = {p.name: p for p in sorted(base.iterdir()) if p.is_dir() and (p / "metadata.json").exists()}
    if names:
        unknown = sorted(set(names) - set(scenes))
        if unknown:
            raise DatasetError(base, "missing_file", f"no scene folder named {', '.join(unknown[:5])}")
        scenes = {n: scenes[n] for n in names}
    return [KubricSequence(path) for path in scenes.values()]


class KubricSequence(SequenceReader):
    """One kubric worker output folder. Metadata is read on construction; images when asked."""

    dataset = "kubric-movi"
    licence = "CC BY 4.0 (MOVi data), Apache 2.0 (kubric code)"
    metric_scale = True

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.name = self.root.name
        self.provenance = {part: "absent" for part in LABEL_PARTS}
        self.provenance.update(camera="exact", depth="exact", flow="exact")
        self._meta: dict[str, Any] | None = None
        self._flow_range: dict[str, Any] | None = None

    @property
    def meta(self) -> dict[str, Any]:
        """`metadata.json`, parsed and checked on first use (a broken scene fails its own clips only)."""
        if self._meta is None:
            self._meta = self._parse_metadata()
        return self._meta

    def _parse_metadata(self) -> dict[str, Any]:
        path = self.root / "metadata.json"
        meta = _read_json(path)
        try:
            scene, camera = meta["metadata"], meta["camera"]
            width, height = (int(v) for v in scene["resolution"])
            out = {
                "fps": float(scene["frame_rate"]),
                "num_frames": int(scene["num_frames"]),
                "size": (height, width),
                "focal_mm": float(camera["focal_length"]),
                "sensor_width_mm": float(camera["sensor_width"]),
                "cam_positions": np.asarray(camera["positions"], np.float64),
                "cam_quaternions": np.asarray(camera["quaternions"], np.float64),
                "instances": [(np.asarray(obj["positions"], np.float64), np.asarray(obj["quaternions"], np.float64))
                              for obj in meta.get("instances", [])],
            }
        except (KeyError, TypeError, ValueError) as e:
            raise DatasetError(path, "bad_format", f"missing or malformed entry {e}") from None
        n = out["num_frames"]
        checks = [("camera positions", out["cam_positions"], 3), ("camera quaternions", out["cam_quaternions"], 4)]
        for i, (p, q) in enumerate(out["instances"]):
            checks += [(f"instance {i} positions", p, 3), (f"instance {i} quaternions", q, 4)]
        for what, array, width_ in checks:
            if array.shape != (n, width_):
                raise DatasetError(path, "inconsistent", f"{what} have shape {array.shape}, expected ({n}, {width_})")
        if not (out["fps"] > 0 and out["focal_mm"] > 0 and out["sensor_width_mm"] > 0):
            raise DatasetError(path, "bad_values", "frame rate, focal length and sensor width must be positive")
        return out

    @property
    def fps(self) -> float:  # type: ignore[override]
        return self.meta["fps"]

    @property
    def image_size(self) -> tuple[int, int]:  # type: ignore[override]
        return self.meta["size"]

    # ------------------------------------------------------------------ frames and cameras
    @property
    def frame_numbers(self) -> np.ndarray:
        return np.arange(self.meta["num_frames"], dtype=np.int64)

    def rgb_path(self, frame: int) -> Path:
        return self.root / f"rgba_{int(frame):05d}.png"

    def read_rgb(self, frame: int) -> np.ndarray:
        rgba = _read_image(self.rgb_path(frame), self.image_size, np.uint8)
        if rgba.ndim != 3 or rgba.shape[2] not in (3, 4):
            raise DatasetError(self.rgb_path(frame), "bad_format", f"expected RGB(A), got shape {rgba.shape}")
        return np.ascontiguousarray(rgba[..., 2::-1])  # OpenCV reads BGR(A)

    @property
    def K(self) -> np.ndarray:
        """(3, 3) pixel intrinsics (the same for every frame: kubric keeps the lens fixed in MOVi)."""
        height, width = self.image_size
        f = self.meta["focal_mm"] / self.meta["sensor_width_mm"] * width
        return np.array([[f, 0.0, width / 2 - 0.5], [0.0, f, height / 2 - 0.5], [0.0, 0.0, 1.0]])

    def read_camera(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        self._check_frame(frame)
        where = self.root / "metadata.json"
        rotation = _rotation(self.meta["cam_quaternions"][frame], where, f"camera quaternion {frame}")
        c2w = np.eye(4)
        c2w[:3, :3] = rotation @ np.diag([1.0, -1.0, -1.0])  # Blender camera (y up, -z forward) -> OpenCV
        c2w[:3, 3] = self.meta["cam_positions"][frame]
        if not np.isfinite(c2w).all():
            raise DatasetError(self.root / "metadata.json", "bad_values", f"camera pose {frame} is not finite")
        return self.K, c2w

    # ------------------------------------------------------------------ depth
    def read_depth(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        self._check_frame(frame)
        path = self.root / f"depth_{int(frame):05d}.tiff"
        distance = _read_image(path, self.image_size, np.float32).astype(np.float64)
        if distance.ndim == 3:
            distance = distance[..., 0]
        valid = np.isfinite(distance) & (distance > 0) & (distance < BACKGROUND_DEPTH)
        depth = np.where(valid, distance / self._ray_scale(), 0.0).astype(np.float32)
        return depth, valid & (depth > 0)

    def _ray_scale(self) -> np.ndarray:
        """(H, W) ray length per unit z at each pixel centre (kubric's `z_to_depth` factor)."""
        height, width = self.image_size
        K = self.K
        v, u = np.mgrid[0:height, 0:width].astype(np.float64)
        return np.sqrt(1.0 + ((u - K[0, 2]) / K[0, 0]) ** 2 + ((v - K[1, 2]) / K[1, 1]) ** 2)

    # ------------------------------------------------------------------ motion
    def read_flow(self, frame: int) -> FlowFrame | None:
        self._check_frame(frame)
        path = self.root / f"forward_flow_{int(frame):05d}.png"
        lo, hi = self._range("forward_flow")
        q = _read_image(path, self.image_size, np.uint16)
        if q.ndim != 3 or q.shape[2] < 2:
            raise DatasetError(path, "bad_format", f"expected a 3-channel 16-bit flow PNG, got shape {q.shape}")
        q = q[..., ::-1]  # OpenCV reads BGR: back to the written (delta_row, delta_col, 0)
        values = q[..., :2].astype(np.float64) / 65535.0 * (hi - lo) + lo
        flow_px = np.stack([values[..., 1], values[..., 0]], axis=-1).astype(np.float32)  # -> (dx, dy)
        return FlowFrame(int(frame) + 1, flow_px, np.ones(self.image_size, bool))

    def _range(self, name: str) -> tuple[float, float]:
        if self._flow_range is None:
            self._flow_range = _read_json(self.root / "data_ranges.json")
        try:
            lo, hi = float(self._flow_range[name]["min"]), float(self._flow_range[name]["max"])
        except (KeyError, TypeError, ValueError):
            raise DatasetError(self.root / "data_ranges.json", "bad_format", f"no {name} min/max") from None
        if not (np.isfinite(lo) and np.isfinite(hi) and hi >= lo):
            raise DatasetError(self.root / "data_ranges.json", "bad_values", f"{name} range is not a finite min <= max")
        return lo, hi

    def read_segmentation(self, frame: int) -> np.ndarray:
        """(H, W) int32: 0 background, i >= 1 instance i - 1 of `metadata.json`."""
        from PIL import Image  # palette PNG: the indices, which OpenCV would turn into colours

        path = self.root / f"segmentation_{int(frame):05d}.png"
        if not path.exists():
            raise DatasetError(path, "missing_file", "segmentation frame is not there")
        try:
            with Image.open(path) as image:
                indexed = image.mode in ("P", "L", "I;16", "I")
                ids = np.asarray(image if indexed else image.convert("L")).astype(np.int32)
        except OSError as e:
            raise DatasetError(path, "bad_format", f"unreadable PNG ({e})") from None
        if ids.shape != self.image_size:
            raise DatasetError(path, "bad_format", f"size {ids.shape} differs from the scene's {self.image_size}")
        count = len(self.meta["instances"])
        if ids.max(initial=0) > count:
            raise DatasetError(path, "inconsistent", f"segmentation id {int(ids.max())} but only {count} instances")
        return ids

    def object_pose(self, index: int, frame: int) -> np.ndarray:
        """(4, 4) object-to-world of instance `index` at `frame` (kubric's scale is inside the asset)."""
        positions, quaternions = self.meta["instances"][index]
        pose = np.eye(4)
        where = self.root / "metadata.json"
        pose[:3, :3] = _rotation(quaternions[frame], where, f"instance {index} quaternion {frame}")
        pose[:3, 3] = positions[frame]
        return pose

    def read_world_motion(self, frame: int, target_frame: int) -> tuple[np.ndarray, np.ndarray]:
        self._check_frame(frame)
        self._check_frame(target_frame)
        depth, valid = self.read_depth(frame)
        K, c2w = self.read_camera(frame)
        height, width = self.image_size
        v, u = np.mgrid[0:height, 0:width].astype(np.float64)
        cam = np.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], np.ones_like(u)], -1) * depth[..., None]
        points = cam @ c2w[:3, :3].T + c2w[:3, 3]
        ids = self.read_segmentation(frame)
        for i in np.unique(ids[ids > 0]):
            motion = self.object_pose(i - 1, target_frame) @ np.linalg.inv(self.object_pose(i - 1, frame))
            sel = ids == i
            points[sel] = points[sel] @ motion[:3, :3].T + motion[:3, 3]
        points[~valid] = 0.0
        return points, valid

    def _check_frame(self, frame: int) -> None:
        if not 0 <= int(frame) < self.meta["num_frames"]:
            raise DatasetError(self.root, "missing_file", f"frame {frame} outside 0..{self.meta['num_frames'] - 1}")


def _rotation(q_wxyz: np.ndarray, where: Path, what: str) -> np.ndarray:
    q = np.asarray(q_wxyz, np.float64)
    norm = float(np.linalg.norm(q)) if np.isfinite(q).all() else float("nan")
    if not abs(norm - 1.0) <= _QUATERNION_TOLERANCE:
        shown = f"{norm:.4g}" if np.isfinite(norm) and norm < 1e6 else "not finite or huge"
        raise DatasetError(where, "bad_values", f"{what} is not a unit quaternion (norm {shown})")
    w, x, y, z = q / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip


def _read_json(path: Path) -> Any:
    if not path.exists():
        raise DatasetError(path, "missing_file", "file is not there")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DatasetError(path, "bad_format", f"unreadable JSON ({str(e).splitlines()[0][:120]})") from None


def _read_image(path: Path, size: tuple[int, int], dtype: type) -> np.ndarray:
    if not path.exists():
        raise DatasetError(path, "missing_file", "frame file is not there")
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DatasetError(path, "bad_format", "unreadable image")
    if image.dtype != dtype:
        raise DatasetError(path, "bad_format", f"expected {np.dtype(dtype).name} pixels, got {image.dtype}")
    if image.shape[:2] != tuple(size):
        raise DatasetError(path, "bad_format", f"size {image.shape[:2]} differs from the scene's {tuple(size)}")
    return image
