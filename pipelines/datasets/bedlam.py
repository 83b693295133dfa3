"""Reader of BEDLAM renders for `worldreel import --format bedlam`.

Facts from pixelite1201/BEDLAM (data_processing), PerceivingSystems/bedlam_render (render and
post-render code, `unreal/render/unreal_coordinate_system.md`) and CUT3R's `preprocess_bedlam.py`.

Layout of one scene folder (bedlam_render `tools/post_render_pipeline`)::

    <scene>/png/seq_XXXXXX/seq_XXXXXX_NNNN.png                 RGB frames (1280x720)
    <scene>/depth/seq_XXXXXX/seq_XXXXXX_NNNN_depth.exr         float32 channel "Depth", Unreal cm
    <scene>/masks/seq_XXXXXX/seq_XXXXXX_NNNN_env.png           everything that is not a person
    <scene>/masks/seq_XXXXXX/seq_XXXXXX_NNNN_<ii>_<item>.png   person ii's body/clothing/hair (absent
                                                               when out of view), 0/255
    <scene>/ground_truth/camera/seq_XXXXXX_camera.csv          name,x,y,z,yaw,pitch,roll,focal_length,
                                                               sensor_width,sensor_height,hfov

A sequence is `<scene>_<seq_XXXXXX>`; `root` is a folder of scene folders (or one scene folder);
`split`, when given, names a sub-folder of `root`; `names` selects by full name or scene name.
Frame numbers are the NNNN of the image names; each camera row is found by its `name`.

Conventions converted:
- Unreal world: X forward, Y right, Z up, centimetres. The camera rotation is yaw about world
  Z, then pitch about the new Y, then roll about the new X (`unreal_coordinate_system.md`);
  positive yaw turns right, positive pitch looks up, positive roll turns the camera clockwise.
  Its camera-to-world rotation in Unreal coordinates is Rz(yaw) Ry(-pitch) Rx(-roll) (columns:
  forward, right, up), the matrix CUT3R's `preprocess_bedlam.py` inverts. With
  C = [[0, 1, 0], [0, 0, -1], [1, 0, 0]] (Unreal -> OpenCV-style world, x = Y, y = -Z, z = X),
  c2w has rotation C R_unreal C^T and centre C (x, y, z) / 100 metres.
- K: fx = focal / sensor_width * W, fy = focal / sensor_height * H; the Cine camera frustum is
  symmetric, so the principal point is the image centre, ((W - 1) / 2, (H - 1) / 2) in our
  integer-centre pixels (upstream writes W / 2, H / 2). A sensor whose aspect differs from the
  image's (a rotated image) is refused.
- `closeup` scenes: upstream rotates their images 90 degrees clockwise and adds 90 degrees of
  roll, which together are the identity on geometry, so the stored (landscape) images are read
  as they are with the CSV camera.
- depth: the render code takes Unreal's `WorldDepth` pass without saying whether it is z or
  distance along the ray, so depth is refused (`unsupported`) unless the option
  `depth_type="z"` or `"ray"` says which. Sky (about 1e8 cm) and anything beyond 1e6 cm (10 km)
  is invalid. The four HDRI-backdrop scenes (`bedlam_scene_names.csv`: static-hdri*) are refused:
  their background depth is a backdrop, not scene geometry (CUT3R also drops them).
- frame rate: BEDLAM renders at 30 fps; `fps` (default 30) is the rate of the frame numbers, for a
  "6fps" release whose images are renumbered consecutively pass fps=6.

Provenance: cameras exact (CSV, 6 decimals); depth exact when `depth_type` is given; dynamic
masks exact (union of the people's masks: every person is animated); no flow, key flow or
scene flow is shipped (people are SMPL-X bodies; the import derives what follows from depth
and cameras).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import OpenEXR

from pipelines.datasets.base import DatasetError, SequenceReader

__all__ = ["BedlamSequence", "list_sequences", "unreal_camera_to_c2w", "DEPTH_TYPES"]

DATASET = "bedlam"
LICENCE = "BEDLAM licence (MPI): non-commercial scientific research only, no redistribution"
DEPTH_TYPES = ("z", "ray")
CAMERA_COLUMNS = ("name", "x", "y", "z", "yaw", "pitch", "roll", "focal_length", "sensor_width", "sensor_height")
# bedlam_scene_names.csv: the "static-hdri*" scenes render people in front of an HDRI backdrop
HDRI_SCENES = frozenset(
    {
        "20221010_3_1000_batch01hand",
        "20221017_3_1000_batch01hand",
        "20221018_3-8_250_batch01hand",
        "20221019_3_250_highbmihand",
    }
)
DEPTH_MAX_CM = 1e6  # sky renders at about 1e8 cm; no BEDLAM scene geometry is 10 km away
_ASPECT_TOL = 1e-3
_UNREAL_TO_CV = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
_FRAME_RE = re.compile(r"^(seq_\d+)_(\d+)\.png$")
_PERSON_MASK_RE = re.compile(r"_\d+_(body|clothing|hair)\.png$")


def unreal_camera_to_c2w(x: float, y: float, z: float, yaw: float, pitch: float, roll: float) -> np.ndarray:
    """(4, 4) OpenCV-axes camera-to-world in metres from an Unreal camera (cm, degrees)."""
    a, b, c = np.radians([yaw, -pitch, -roll])
    Rz = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]])
    Ry = np.array([[np.cos(b), 0.0, np.sin(b)], [0.0, 1.0, 0.0], [-np.sin(b), 0.0, np.cos(b)]])
    Rx = np.array([[1.0, 0.0, 0.0], [0.0, np.cos(c), -np.sin(c)], [0.0, np.sin(c), np.cos(c)]])
    # columns of Rz Ry Rx: the camera's forward, right and up axes in Unreal world coordinates;
    # OpenCV camera axes are (right, -up, forward) = (columns 1, -2, 0) = R_unreal C^T
    c2w = np.eye(4)
    c2w[:3, :3] = _UNREAL_TO_CV @ (Rz @ Ry @ Rx) @ _UNREAL_TO_CV.T
    c2w[:3, 3] = _UNREAL_TO_CV @ np.array([x, y, z]) / 100.0
    return c2w


def list_sequences(
    root: Path,
    split: str | None = None,
    names: Sequence[str] | None = None,
    *,
    depth_type: str | None = None,
    fps: float | str = 30.0,
) -> list[SequenceReader]:
    """The sequences of the BEDLAM scenes under `root` (see the module docstring).

    Args:
        depth_type: "z" or "ray": what the depth EXRs hold; None refuses depth.
        fps: frame rate of the frame numbers (30 for BEDLAM renders; 6 for a consecutively
            renumbered 6 fps release).
    """
    if depth_type is not None and depth_type not in DEPTH_TYPES:
        raise ValueError(f"depth_type must be one of {DEPTH_TYPES} or None, got {depth_type!r}")
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        raise ValueError(f"fps must be a number, got {fps!r}") from None
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps}")
    base = Path(root) / split if split else Path(root)
    if not base.is_dir():
        raise DatasetError(base, "missing_file", f"split folder {split!r} not found under {root}")
    scenes = [base] if (base / "png").is_dir() else sorted(p for p in base.iterdir() if (p / "png").is_dir())
    if not scenes:
        raise DatasetError(base, "missing_file", "no BEDLAM scene folder (with png/) found")
    wanted = set(names) if names else None
    readers: list[SequenceReader] = []
    for scene in scenes:
        for seq_dir in sorted(p for p in (scene / "png").iterdir() if p.is_dir() and p.name.startswith("seq_")):
            reader = BedlamSequence(scene, seq_dir.name, fps, depth_type)
            if wanted is None or reader.name in wanted or scene.name in wanted:
                readers.append(reader)
    if wanted is not None:
        missing = sorted(wanted - ({r.name for r in readers} | {r.root.name for r in readers}))
        if missing:
            raise DatasetError(base, "missing_file", f"sequences not found: {', '.join(missing[:5])}")
    return readers


class BedlamSequence(SequenceReader):
    """One rendered sequence of one BEDLAM scene; files are read when asked."""

    dataset = DATASET
    metric_scale = True
    licence = LICENCE

    def __init__(self, scene_dir: Path, seq: str, fps: float, depth_type: str | None) -> None:
        self.root = Path(scene_dir)
        self.seq = seq
        self.name = f"{self.root.name}_{seq}"
        self.fps = fps
        self.depth_type = depth_type
        self.refusals = self._refusals()
        has_masks = (self.root / "masks" / seq).is_dir()
        self.provenance = {
            "camera": "exact",
            "depth": "absent" if "depth" in self.refusals else "exact",
            "flow": "absent",
            "key_flow": "absent",
            "dynamic_mask": "exact" if has_masks else "absent",
            "scene_flow": "absent",
        }
        self._files: dict[int, str] | None = None
        self._camera_rows: dict[str, dict[str, str]] | None = None
        self._size: tuple[int, int] | None = None

    def _refusals(self) -> dict[str, str]:
        if self.depth_type is None:
            return {"depth": "BEDLAM depth type (z or ray distance) is not settled upstream: pass depth_type z or ray"}
        if self.root.name in HDRI_SCENES:
            return {"depth": "HDRI-backdrop scene: background depth is a backdrop, not scene geometry"}
        if not (self.root / "depth" / self.seq).is_dir():
            return {"depth": "no depth folder for this sequence"}
        return {}

    # ------------------------------------------------------------------ frames
    @property
    def frame_numbers(self) -> np.ndarray:
        return np.array(sorted(self._frame_files()), np.int64)

    @property
    def image_size(self) -> tuple[int, int]:
        if self._size is None:
            self._size = self._read_png_rgb(int(self.frame_numbers[0])).shape[:2]
        return self._size

    def rgb_path(self, frame: int) -> Path:
        files = self._frame_files()
        if frame not in files:
            raise DatasetError(self.root / "png" / self.seq, "missing_file", f"frame {frame} has no image")
        return self.root / "png" / self.seq / files[frame]

    def read_rgb(self, frame: int) -> np.ndarray:
        image = self._read_png_rgb(frame)
        self._check_size(self.rgb_path(frame), image.shape[:2])
        return image

    # ------------------------------------------------------------------ cameras
    def read_camera(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        path = self.root / "ground_truth" / "camera" / f"{self.seq}_camera.csv"
        image_name = self.rgb_path(frame).name
        row = self._camera_table(path).get(image_name)
        if row is None:
            raise DatasetError(path, "missing_file", f"no camera row for {image_name}")
        try:
            x, y, z, yaw, pitch, roll, focal, sensor_w, sensor_h = (
                float(row[k]) for k in CAMERA_COLUMNS[1:]
            )
        except ValueError:
            raise DatasetError(path, "bad_format", f"{image_name}: camera values are not numbers") from None
        values = np.array([x, y, z, yaw, pitch, roll, focal, sensor_w, sensor_h])
        if not np.all(np.isfinite(values)):
            raise DatasetError(path, "bad_values", f"{image_name}: camera holds NaN or inf")
        if min(focal, sensor_w, sensor_h) <= 0:
            raise DatasetError(path, "bad_values", f"{image_name}: focal length and sensor size must be positive")
        H, W = self.image_size
        if abs((sensor_w / sensor_h) / (W / H) - 1) > _ASPECT_TOL:
            raise DatasetError(
                path, "inconsistent",
                f"sensor {sensor_w:g}x{sensor_h:g} mm does not match the {W}x{H} image (rotated image?)",
            )  # fmt: skip
        fx, fy = focal / sensor_w * W, focal / sensor_h * H
        K = np.array([[fx, 0.0, W / 2 - 0.5], [0.0, fy, H / 2 - 0.5], [0.0, 0.0, 1.0]])
        return K, unreal_camera_to_c2w(x, y, z, yaw, pitch, roll)

    # ------------------------------------------------------------------ depth
    def read_depth(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        stem = self.rgb_path(frame).stem
        path = self.root / "depth" / self.seq / f"{stem}_depth.exr"
        if self.depth_type is None or self.root.name in HDRI_SCENES:
            raise DatasetError(path, "unsupported", self.refusals["depth"])
        depth_cm = _read_exr_depth(path)
        self._check_size(path, depth_cm.shape)
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(depth_cm) & (depth_cm > 0) & (depth_cm < DEPTH_MAX_CM)
        if not valid.any():
            raise DatasetError(path, "bad_values", "no valid depth pixel (all sky or beyond 10 km)")
        depth_m = np.where(valid, depth_cm, 0.0).astype(np.float64) / 100.0
        if self.depth_type == "ray":
            K, _ = self.read_camera(frame)
            depth_m = depth_m * _ray_to_z(K, depth_m.shape)
        return depth_m.astype(np.float32), valid

    # ------------------------------------------------------------------ masks
    def read_dynamic_mask(self, frame: int, target_frame: int | None = None) -> np.ndarray | None:
        """The bodies of `frame` (SMPL-X people are animated throughout a sequence, whatever the target frame)."""
        mask_dir = self.root / "masks" / self.seq
        if not mask_dir.is_dir():
            return None
        stem = self.rgb_path(frame).stem
        env = mask_dir / f"{stem}_env.png"
        if not env.is_file():
            raise DatasetError(env, "missing_file", "environment mask not found (masks of this frame missing)")
        self._check_size(env, _read_mask(env).shape)
        dynamic = np.zeros(self.image_size, bool)
        for path in sorted(mask_dir.glob(f"{stem}_*.png")):
            if _PERSON_MASK_RE.search(path.name[len(stem):]):
                mask = _read_mask(path)
                self._check_size(path, mask.shape)
                dynamic |= mask
        return dynamic

    # ------------------------------------------------------------------ helpers
    def _frame_files(self) -> dict[int, str]:
        if self._files is None:
            folder = self.root / "png" / self.seq
            files = {}
            for path in folder.iterdir() if folder.is_dir() else ():
                match = _FRAME_RE.match(path.name)
                if match and match.group(1) == self.seq:
                    files[int(match.group(2))] = path.name
            if not files:
                raise DatasetError(folder, "missing_file", "no frames (seq_XXXXXX_NNNN.png) found")
            self._files = files
        return self._files

    def _read_png_rgb(self, frame: int) -> np.ndarray:
        path = self.rgb_path(frame)
        image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if image is None:
            raise DatasetError(path, "bad_format", "not a readable image")
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
            raise DatasetError(path, "bad_format", f"frame must be 8-bit RGB, got {image.dtype} {image.shape}")
        return np.ascontiguousarray(image[..., 2::-1])  # BGR(A) -> RGB

    def _check_size(self, path: Path, size: tuple[int, ...]) -> None:
        if tuple(size) != tuple(self.image_size):
            H, W = self.image_size
            raise DatasetError(path, "inconsistent", f"size {size[0]}x{size[1]} differs from the frames' {H}x{W}")

    def _camera_table(self, path: Path) -> dict[str, dict[str, str]]:
        if self._camera_rows is None:
            if not path.is_file():
                raise DatasetError(path, "missing_file", "camera CSV not found")
            try:
                with path.open(newline="", encoding="utf-8") as f:
                    reader = csv.DictReader(f)
                    header = [h.strip() for h in reader.fieldnames or ()]
                    reader.fieldnames = header
                    rows = list(reader)
            except (OSError, ValueError, csv.Error) as exc:  # undecodable bytes, NUL characters
                raise DatasetError(path, "bad_format", f"unreadable camera CSV ({type(exc).__name__})") from None
            missing = [c for c in CAMERA_COLUMNS if c not in header]
            if missing:
                raise DatasetError(path, "bad_format", f"camera CSV lacks column(s) {', '.join(missing)}")
            if any(not isinstance(row["name"], str) or None in row.values() for row in rows):
                raise DatasetError(path, "bad_format", "camera CSV has a row with fewer values than columns")
            self._camera_rows = {row["name"].strip(): row for row in rows}
        return self._camera_rows


def _read_exr_depth(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DatasetError(path, "missing_file", "depth EXR not found")
    try:
        channels = OpenEXR.File(str(path)).parts[0].channels
    except Exception as exc:  # OpenEXR raises bare RuntimeError/Exception on corrupt input
        raise DatasetError(path, "bad_format", f"not a readable EXR image ({type(exc).__name__})") from None
    if "Depth" not in channels:
        raise DatasetError(path, "bad_format", f"EXR has channels {sorted(channels)[:4]}, expected 'Depth'")
    pixels = channels["Depth"].pixels
    if pixels.ndim != 2:
        raise DatasetError(path, "bad_format", f"'Depth' must be one 2-D channel, got shape {pixels.shape}")
    return pixels.astype(np.float32)


def _ray_to_z(K: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) factor z / ray length of each pixel's ray: 1 / |K^-1 (u, v, 1)|."""
    v, u = np.mgrid[0 : size[0], 0 : size[1]].astype(np.float64)
    x = (u - K[0, 2]) / K[0, 0]
    y = (v - K[1, 2]) / K[1, 1]
    return 1.0 / np.sqrt(x * x + y * y + 1.0)


def _read_mask(path: Path) -> np.ndarray:
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mask is None or mask.ndim != 2 or mask.dtype != np.uint8:
        raise DatasetError(path, "bad_format", "mask must be an 8-bit greyscale PNG")
    return mask > 127
