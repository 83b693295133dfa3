"""Write synthetic scenes in the OmniWorld-Game and BEDLAM layouts (test fixtures with exact ground truth).

OmniWorld-Game follows yangzhou24/OmniWorld@5942b87 (the authors' writer is not public; the
layout and encodings are those its `scripts/utils.py` reads): `color/%06d.png`, 16-bit
`depth/%06d.png` holding d = png / 65535 with depth = d / (1000 - 999 d) / 0.004 and the sky at
the far plane (png 65535), `camera/split_<k>.json` (`focals`, `cx`, `cy` with pixel centres at
+0.5, `quats` w, x, y, z and `trans` of the OpenCV world-to-camera, stored as float32 values),
`split_info.json`, `fps.txt`, and a `flow/` folder whose encoding is unknown (the reader must not
decode it).

BEDLAM follows PerceivingSystems/bedlam_render@82d6c67: `tools/post_render_pipeline/
exr_save_depth_masks.py` (depth EXR with one float32 channel `Depth` in centimetres, ZIP
compression; masks as 0/255 greyscale PNGs `_env` and `_<ii>_body`, a person's mask absent when
out of view) and `unreal/render/unreal_coordinate_system.md` (camera CSV: Unreal position in cm,
yaw/pitch/roll in degrees, focal length on a 36 x 20.25 mm sensor, 6 decimals). The camera angles
are taken from Unreal's rotator matrix (rows: forward, right, up), not from the reader's formula.

The scenes come from `pipelines.synthetic` (exact labels); each data set's world frame is the
synthetic first camera moved by a fixed rigid transform, so it is not at the first camera.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import OpenEXR
from scipy.spatial.transform import Rotation

from labelers.importers.common import matrix_to_quaternion
from pipelines.synthetic import SKY_ID, SceneConfig, SyntheticClip, render_clip

_NUM_FACES = 6  # synthetic object ids 0-5: room faces (or ground and sky); objects follow
_UNREAL_TO_CV = np.array([[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
BEDLAM_SENSOR_MM = (36.0, 20.25)
BEDLAM_SKY_CM = 1e8


@dataclass
class Fixture:
    """A written scene folder and its exact ground truth (indexed by position in the clip)."""

    folder: Path
    clip: SyntheticClip
    frame_numbers: np.ndarray  # (T,) the set's frame number of each clip frame
    K: np.ndarray  # (3, 3) intrinsics in our convention (pixel centres at integers)
    world_c2w: np.ndarray  # (T, 4, 4) OpenCV camera-to-world in the set's world frame, metres
    movers: np.ndarray  # (T, H, W) pixels of moving objects
    sky: np.ndarray  # (T, H, W) sky pixels


def world_transform(seed: int) -> np.ndarray:
    """A rigid transform (rotation of tens of degrees, translation of metres): set world <- first camera."""
    rng = np.random.default_rng(seed)
    G = np.eye(4)
    G[:3, :3] = Rotation.from_rotvec(rng.normal(size=3) * 0.8).as_matrix()
    G[:3, 3] = rng.uniform(-5.0, 5.0, size=3)
    return G


def _ground_truth(
    folder: Path, cfg: SceneConfig, clip: SyntheticClip, frame_numbers: np.ndarray, world_c2w: np.ndarray
) -> Fixture:
    mover_ids = [_NUM_FACES + cfg.num_static + j for j in range(cfg.num_moving)]
    K = clip.labels["K"][0].astype(np.float64)
    sky = (clip.object_ids == SKY_ID) if cfg.scene == "open" else np.zeros(clip.object_ids.shape, bool)
    return Fixture(folder, clip, frame_numbers, K, world_c2w, np.isin(clip.object_ids, mover_ids), sky)


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if image.ndim == 3:
        image = image[..., ::-1]  # RGB -> BGR for OpenCV
    if not cv2.imwrite(str(path), np.ascontiguousarray(image)):
        raise OSError(f"cannot write {path}")


# ====================================================================== OmniWorld-Game
def omniworld_depth_png(depth_z: np.ndarray, sky: np.ndarray) -> np.ndarray:
    """(H, W) uint16 PNG values of z-depth: the inverse of upstream `load_depth`, sky at 65535."""
    a = 0.004 * np.asarray(depth_z, np.float64)
    d = 1000.0 * a / (1.0 + 999.0 * a)
    png = np.clip(np.round(d * 65535.0), 0, 65535).astype(np.uint16)
    png[sky] = 65535
    return png


def write_omniworld_scene(
    scene_dir: Path, cfg: SceneConfig, splits: list[list[int]], fps: float = 24.0, seed: int = 0
) -> Fixture:
    """Write one OmniWorld-Game scene of clip frames 0..T-1; split k gets its own world frame.

    Args:
        splits: frame numbers of each split (the clip's frame t is frame number t).
    """
    scene_dir = Path(scene_dir)
    T = cfg.num_frames
    frame_numbers = np.arange(T)
    fixture = _ground_truth(scene_dir, cfg, render_clip(cfg), frame_numbers, np.zeros((T, 4, 4)))
    clip, K = fixture.clip, fixture.K
    for t in range(T):
        _write_png(scene_dir / "color" / f"{t:06d}.png", clip.frames[t])
        _write_png(scene_dir / "depth" / f"{t:06d}.png", omniworld_depth_png(clip.labels["depth"][t], fixture.sky[t]))
        # the flow folder of the release; its PNG encoding is unknown, so any content will do
        _write_png(scene_dir / "flow" / f"{t:06d}" / "flow_u_16.png", np.zeros(clip.frames.shape[1:3], np.uint16))
    for k, frames in enumerate(splits):
        G = world_transform(seed + 101 * k)
        c2w = np.stack([G @ clip.labels["c2w"][f].astype(np.float64) for f in frames])
        fixture.world_c2w[frames] = c2w
        w2c = np.linalg.inv(c2w)
        q_xyzw = matrix_to_quaternion(w2c[:, :3, :3])
        camera = {
            "focals": [K[0, 0]] * len(frames),
            "cx": [K[0, 2] + 0.5] * len(frames),  # upstream pixel centres sit at +0.5
            "cy": [K[1, 2] + 0.5] * len(frames),
            "quats": np.concatenate([q_xyzw[:, 3:], q_xyzw[:, :3]], axis=1).tolist(),
            "trans": w2c[:, :3, 3].tolist(),
        }
        camera = {key: np.asarray(v, np.float32).tolist() for key, v in camera.items()}  # float32 storage
        (scene_dir / "camera").mkdir(parents=True, exist_ok=True)
        (scene_dir / "camera" / f"split_{k}.json").write_text(json.dumps(camera))
    (scene_dir / "split_info.json").write_text(json.dumps({"split": [list(map(int, s)) for s in splits]}))
    (scene_dir / "fps.txt").write_text(f"{fps:g}\n")
    return fixture


# ====================================================================== BEDLAM
def unreal_rotator(R_unreal_c2w: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) degrees of an Unreal camera whose axes (forward, right, up) are the columns.

    Unreal's rotator matrix has rows forward = (cP cY, cP sY, sP), right = (sR sP cY - cR sY,
    sR sP sY + cR cY, -sR cP), up = (-(cR sP cY + sR sY), cY sR - cR sP sY, cR cP).
    """
    forward, right, up = R_unreal_c2w.T
    pitch = np.degrees(np.arcsin(np.clip(forward[2], -1.0, 1.0)))
    yaw = np.degrees(np.arctan2(forward[1], forward[0]))
    roll = np.degrees(np.arctan2(-right[2], up[2]))
    return float(yaw), float(pitch), float(roll)


def write_bedlam_scene(
    scene_dir: Path,
    cfg: SceneConfig,
    seq: str = "seq_000000",
    depth_kind: str = "z",
    frame_step: int = 1,
    seed: int = 0,
) -> Fixture:
    """Write one BEDLAM sequence; every mover is a person (body masks), images 16:9.

    Args:
        depth_kind: "z" (z-depth) or "ray" (distance along each pixel's ray) in the EXRs.
        frame_step: step of the image numbers (5 writes 0000, 0005, ... as every-5th-frame subsets do).
    """
    scene_dir = Path(scene_dir)
    T, H, W = cfg.num_frames, cfg.height, cfg.width
    if abs(W / H - BEDLAM_SENSOR_MM[0] / BEDLAM_SENSOR_MM[1]) > 1e-9:
        raise ValueError(f"BEDLAM images are 16:9 like the 36 x 20.25 mm sensor, got {W}x{H}")
    frame_numbers = np.arange(T) * frame_step
    G = world_transform(seed)
    clip = render_clip(cfg)
    world_c2w = np.einsum("ij,tjk->tik", G, clip.labels["c2w"].astype(np.float64))
    fixture = _ground_truth(scene_dir, cfg, clip, frame_numbers, world_c2w)
    K = fixture.K
    focal_mm = K[0, 0] * BEDLAM_SENSOR_MM[0] / W
    hfov = np.degrees(2 * np.arctan(BEDLAM_SENSOR_MM[0] / (2 * focal_mm)))
    rows = ["name,x,y,z,yaw,pitch,roll,focal_length,sensor_width,sensor_height,hfov"]
    v, u = np.mgrid[0:H, 0:W].astype(np.float64)
    ray_per_z = np.sqrt(((u - K[0, 2]) / K[0, 0]) ** 2 + ((v - K[1, 2]) / K[1, 1]) ** 2 + 1.0)
    mover_ids = [_NUM_FACES + cfg.num_static + j for j in range(cfg.num_moving)]
    for t, n in enumerate(frame_numbers):
        stem = f"{seq}_{n:04d}"
        _write_png(scene_dir / "png" / seq / f"{stem}.png", clip.frames[t])
        c2w = fixture.world_c2w[t]
        R_unreal = _UNREAL_TO_CV.T @ c2w[:3, :3] @ _UNREAL_TO_CV  # camera axes (forward, right, up) in Unreal
        position_cm = _UNREAL_TO_CV.T @ c2w[:3, 3] * 100.0
        yaw, pitch, roll = unreal_rotator(R_unreal)
        values = [*position_cm, yaw, pitch, roll, focal_mm]
        rows.append(f"{stem}.png," + ",".join(f"{x:.6f}" for x in values) + f",36,20.25,{hfov:.6f}")
        depth_m = clip.labels["depth"][t].astype(np.float64) * (ray_per_z if depth_kind == "ray" else 1.0)
        depth_cm = np.where(fixture.sky[t], BEDLAM_SKY_CM, depth_m * 100.0).astype(np.float32)
        write_exr_depth(scene_dir / "depth" / seq / f"{stem}_depth.exr", depth_cm)
        people = np.zeros((H, W), bool)
        for i, obj in enumerate(mover_ids):
            body = clip.object_ids[t] == obj
            if body.any():  # upstream writes no mask for a person out of view
                _write_png(scene_dir / "masks" / seq / f"{stem}_{i:02d}_body.png", body.astype(np.uint8) * 255)
            people |= body
        _write_png(scene_dir / "masks" / seq / f"{stem}_env.png", (~people).astype(np.uint8) * 255)
    camera_csv = scene_dir / "ground_truth" / "camera" / f"{seq}_camera.csv"
    camera_csv.parent.mkdir(parents=True, exist_ok=True)
    camera_csv.write_text("\n".join(rows) + "\n")
    return fixture


def write_exr_depth(path: Path, depth_cm: np.ndarray, channel: str = "Depth") -> None:
    """A single-channel float32 EXR with ZIP compression, as upstream writes depth."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    OpenEXR.File(header, {channel: np.ascontiguousarray(depth_cm, np.float32)}).write(str(path))
