"""Write synthetic scenes as kubric's MOVi worker writes a scene folder (test fixtures with exact ground truth).

Follows google-research/kubric@0ee21e2 `kubric/file_io.py` and `challenges/movi/movi_def_worker.py`:
`rgba_%05d.png` (8-bit RGBA), `depth_%05d.tiff` (float32 ray distance, `z_to_depth`),
`forward_flow_%05d.png` (16-bit (delta_row, delta_col, 0), `(x - min) * 65535 / (max - min)`
truncated to uint16, min/max in `data_ranges.json`), `segmentation_%05d.png` (8-bit palette,
0 background, i the i-th instance), `metadata.json` (camera and instance positions and w, x, y, z
quaternions, Blender camera axes). Backward flow is not written: the reader does not use it.

The scene comes from `pipelines.synthetic` (exact labels); kubric's world frame is the synthetic
world moved by a fixed rigid transform, so it is not at the first camera.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from labelers.importers.common import matrix_to_quaternion
from pipelines.datasets.base import SequenceReader
from pipelines.synthetic import SceneConfig, SyntheticClip, _build_scene, render_clip

_NUM_FACES = 6  # synthetic object ids 0-5 are the room faces (or ground and sky): kubric's background
FOCAL_MM = 35.0


@dataclass
class KubricFixture:
    """A written scene folder and its exact ground truth."""

    folder: Path
    clip: SyntheticClip  # labels in the first camera's coordinates, at the set's frames
    world_c2w: np.ndarray  # (T, 4, 4) OpenCV camera-to-world in the kubric world frame
    movers: list[int]  # instance indices (0-based) that move


def world_transform(seed: int = 0) -> np.ndarray:
    """A rigid transform kubric's world applies to the synthetic one (rotation about a tilted axis and a shift)."""
    from scipy.spatial.transform import Rotation

    G = np.eye(4)
    G[:3, :3] = Rotation.from_rotvec(np.array([0.4, -1.1, 0.7]) * (1 + 0.1 * seed)).as_matrix()
    G[:3, 3] = [3.0, -2.0, 1.5]
    return G


def _wxyz(R: np.ndarray) -> list[float]:
    x, y, z, w = matrix_to_quaternion(R)
    return [float(w), float(x), float(y), float(z)]


def write_kubric_scene(folder: str | Path, cfg: SceneConfig, clip: SyntheticClip | None = None) -> KubricFixture:
    """Render `cfg` (unless `clip` is given) and write it as a kubric scene folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    clip = clip or render_clip(cfg)
    scene = _build_scene(cfg)
    G = world_transform(cfg.seed)
    T, H, W = cfg.num_frames, cfg.height, cfg.width
    world_c2w = np.einsum("ij,tjk->tik", G, scene.c2w_world)
    fx = float(scene.K[0, 0])

    for t in range(T):
        rgba = np.concatenate([clip.frames[t], np.full((H, W, 1), 255, np.uint8)], axis=-1)
        cv2.imwrite(str(folder / f"rgba_{t:05d}.png"), rgba[..., [2, 1, 0, 3]])
        K = clip.labels["K"][t].astype(np.float64)
        v, u = np.mgrid[0:H, 0:W].astype(np.float64)
        ray_scale = np.sqrt(1 + ((u - K[0, 2]) / K[0, 0]) ** 2 + ((v - K[1, 2]) / K[1, 1]) ** 2)
        distance = np.where(clip.labels["depth_valid"][t], clip.labels["depth"][t] * ray_scale, 1e10)
        cv2.imwrite(str(folder / f"depth_{t:05d}.tiff"), distance.astype(np.float32))
        ids = clip.object_ids[t]
        segmentation = np.where(ids >= _NUM_FACES, ids - _NUM_FACES + 1, 0).astype(np.uint8)
        image = Image.fromarray(segmentation, mode="P")
        image.putpalette([c for i in range(256) for c in ((37 * i) % 256, (91 * i) % 256, (151 * i) % 256)])
        image.save(folder / f"segmentation_{t:05d}.png")

    # forward flow of every frame; the last frame's points to a frame the clip does not have (zeros)
    flow = np.concatenate([clip.labels["flow"], np.zeros((1, H, W, 2), np.float32)]).astype(np.float64)
    row_col = np.stack([flow[..., 1], flow[..., 0]], axis=-1)
    lo, hi = float(row_col.min()), float(row_col.max())
    quantised = ((row_col - lo) * 65535 / (hi - lo)).astype(np.uint16)
    for t in range(T):
        padded = np.concatenate([quantised[t], np.zeros((H, W, 1), np.uint16)], axis=-1)
        cv2.imwrite(str(folder / f"forward_flow_{t:05d}.png"), padded[..., ::-1])
    (folder / "data_ranges.json").write_text(json.dumps({"forward_flow": {"min": lo, "max": hi}}, indent=4))

    blender = np.diag([1.0, -1.0, -1.0])
    instances, movers = [], []
    for i, ob in enumerate(scene.objects):
        poses = np.stack([G @ ob.pose(float(t)) for t in range(T)])
        instances.append({
            "positions": poses[:, :3, 3].tolist(),
            "quaternions": [_wxyz(R) for R in poses[:, :3, :3]],
            "is_dynamic": bool(ob.moving),
        })
        if ob.moving:
            movers.append(i)
    metadata = {
        "flags": {"resolution": [W, H], "frame_rate": cfg.fps},
        "metadata": {"resolution": [W, H], "frame_rate": cfg.fps, "step_rate": 240, "num_frames": T,
                     "num_instances": len(instances)},
        "camera": {
            "focal_length": FOCAL_MM,
            "sensor_width": FOCAL_MM * W / fx,
            "field_of_view": float(2 * np.arctan2(W / 2, fx)),
            "positions": world_c2w[:, :3, 3].tolist(),
            "quaternions": [_wxyz(R @ blender) for R in world_c2w[:, :3, :3]],
        },
        "instances": instances,
    }
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=4))
    return KubricFixture(folder, clip, world_c2w, movers)


class NoDenseMotion(SequenceReader):
    """A Kubric scene read as a set without dense motion (like PointOdyssey or BEDLAM): no flow, no
    world motion, only per-frame masks of the moving objects. For measuring `unknown_motion`.
    With `keep_flow`, the scene's consecutive flows stay (a set like Dynamic Replica)."""

    def __init__(self, reader: SequenceReader, movers: list[int], keep_flow: bool = False) -> None:
        self.inner, self.movers, self.keep_flow = reader, movers, keep_flow
        self.dataset, self.name, self.root = reader.dataset, reader.name, reader.root
        self.fps, self.image_size, self.metric_scale = reader.fps, reader.image_size, reader.metric_scale
        self.licence = reader.licence
        self.provenance = {**reader.provenance, "flow": "exact" if keep_flow else "absent", "dynamic_mask": "exact"}

    def read_flow(self, frame: int):
        return self.inner.read_flow(frame) if self.keep_flow else None

    @property
    def frame_numbers(self) -> np.ndarray:
        return self.inner.frame_numbers

    def rgb_path(self, frame: int) -> Path:
        return self.inner.rgb_path(frame)

    def read_rgb(self, frame: int) -> np.ndarray:
        return self.inner.read_rgb(frame)

    def read_camera(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        return self.inner.read_camera(frame)

    def read_depth(self, frame: int) -> tuple[np.ndarray, np.ndarray]:
        return self.inner.read_depth(frame)

    def read_dynamic_mask(self, frame: int, target_frame: int | None = None) -> np.ndarray:
        return np.isin(self.inner.read_segmentation(frame), [m + 1 for m in self.movers])
