"""Test fixtures in the PointOdyssey v1.2 and Dynamic Replica layouts, written from synthetic scenes.

The writers follow what the upstream writers do to the values (PointOdyssey:
y-zheng18/point_odyssey `utils/gen_tracking.py`; Dynamic Replica: the PyTorch3D
`FrameAnnotation` index, float16-in-uint16 PNGs and per-frame trajectory dicts of
facebookresearch/dynamic_stereo), so a reader round trip loses exactly what the files lose:
- PointOdyssey: depth truncated to 16-bit steps of 1000/65535 m; K, extrinsics and trajectories
  in float16; K and trajs_2d in Blender pixels (corners at integers, +0.5 from ours).
- Dynamic Replica: depth and flow in float16; cameras in PyTorch3D row-vector form with NDC
  intrinsics (screen corners at integers).

Every fixture's world frame is `world_from_first @ (first camera)`, never the first camera.
Ground truth comes from `pipelines.synthetic.render_clip` with stride 1 (every frame is a key
frame, so `points`, `scene_flow` and `dynamic_mask` exist for every frame); rigid object motions
are recovered from them (Kabsch, exact to float32) to move tracked points between frames.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import cv2
import numpy as np
import torch
from scipy.spatial.transform import Rotation

from labelers.geometry import project_points, rigid_fit, transform_points
from pipelines.synthetic import SceneConfig, SyntheticClip, render_clip

FIRST_OBJECT_ID = 6  # synthetic ids 0-5 are the room's walls
FLIP_XY = np.diag([-1.0, -1.0, 1.0])


def render_ground_truth(seed: int = 1, height: int = 48, width: int = 64, num_frames: int = 5) -> SyntheticClip:
    """A small room clip with 2 still and 2 moving objects, labels on every frame."""
    cfg = SceneConfig(
        seed=seed, height=height, width=width, num_frames=num_frames, stride=1, num_static=2, num_moving=2, camera="dolly"
    )
    return render_clip(cfg)


def world_from_first(seed: int = 0) -> np.ndarray:
    """A data-set world frame away from the first camera: rotated by tens of degrees, shifted by metres."""
    rng = np.random.default_rng(seed)
    A = np.eye(4)
    A[:3, :3] = Rotation.from_rotvec(rng.normal(size=3) * 0.6).as_matrix()
    A[:3, 3] = rng.uniform(-3.0, 3.0, 3)
    return A


def object_motions(clip: SyntheticClip) -> dict[int, np.ndarray]:
    """Rigid motion (T-1, 4, 4) of each moving object between consecutive frames, first-frame coordinates."""
    labels = clip.labels
    T = len(labels["c2w"])
    ids = clip.object_ids
    movers = np.unique(ids[:-1][labels["dynamic_mask"][:-1]])
    motions = {}
    for obj in movers.tolist():
        steps = np.tile(np.eye(4), (T - 1, 1, 1))
        for k in range(T - 1):
            on = ids[k] == obj
            if on.sum() < 3:
                raise ValueError(f"mover {obj} is not visible in frame {k}: pick another seed")
            src = labels["points"][k][on].astype(np.float64)
            dst = src + labels["scene_flow"][k][on].astype(np.float64)
            steps[k] = _kabsch(src, dst)
        motions[int(obj)] = steps
    return motions


def _kabsch(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The rigid motion (4, 4) taking src to dst (N, 3), least squares."""
    M = np.eye(4)
    M[:3, :3], M[:3, 3] = rigid_fit(src, dst)
    return M


def tracks(clip: SyntheticClip, objects_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Tracked surface points: every pixel of the first and of the last frame, moved rigidly.

    Returns:
        points (T, N, 3) first-frame coordinates; ids (N,) synthetic object id of each track.
    """
    labels = clip.labels
    T = len(labels["c2w"])
    motions = object_motions(clip)
    out, out_ids = [], []
    for start in (0, T - 1):
        ids = clip.object_ids[start].reshape(-1)
        keep = ids >= FIRST_OBJECT_ID if objects_only else np.ones_like(ids, bool)
        X = np.empty((T, int(keep.sum()), 3))
        X[start] = labels["points"][start].reshape(-1, 3)[keep]
        ids = ids[keep]
        steps = range(start, T - 1) if start == 0 else range(start - 1, -1, -1)
        for k in steps:
            src, dst = (k, k + 1) if start == 0 else (k + 1, k)
            X[dst] = X[src]
            for obj, M in motions.items():
                on = ids == obj
                step = M[k] if start == 0 else np.linalg.inv(M[k])
                X[dst][on] = transform_points(step, X[src][on])
        out.append(X)
        out_ids.append(ids)
    return np.concatenate(out, axis=1), np.concatenate(out_ids)


def track_visibility(clip: SyntheticClip, points: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(uv (T, N, 2) pixels, centres at integers; visible (T, N)): in the image, on its surface, in front."""
    labels = clip.labels
    T, N, _ = points.shape
    H, W = labels["depth"].shape[1:]
    uv_all = np.empty((T, N, 2))
    visible = np.zeros((T, N), bool)
    for k in range(T):
        cam = transform_points(np.linalg.inv(labels["c2w"][k].astype(np.float64)), points[k])
        uv, z = project_points(cam, labels["K"][k])
        uv_all[k] = uv
        px = np.rint(uv)
        inside = (z > 0) & (px[:, 0] >= 0) & (px[:, 0] < W) & (px[:, 1] >= 0) & (px[:, 1] < H)
        u, v = px[inside, 0].astype(int), px[inside, 1].astype(int)
        same = (clip.object_ids[k][v, u] == ids[inside]) & (np.abs(labels["depth"][k][v, u] - z[inside]) < 0.05 * z[inside])
        visible[k, np.flatnonzero(inside)[same]] = True
    return uv_all, visible


def dataset_cameras(clip: SyntheticClip, A: np.ndarray) -> np.ndarray:
    """(T, 4, 4) camera-to-world in the data set's world frame."""
    return np.einsum("ij,tjk->tik", A, clip.labels["c2w"].astype(np.float64))


# ---------------------------------------------------------------------- PointOdyssey
def write_pointodyssey(
    seq_dir: Path, clip: SyntheticClip, A: np.ndarray, fog: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """One sequence folder as PointOdyssey v1.2 lays it out.

    Args:
        fog: optional (T, H, W) bool, pixels written as fog/smoke (PNG 65535).

    Returns:
        ground truth in the data set's world: `c2w` (T, 4, 4), `K` (T, 3, 3) in our pixels,
        `depth` (T, H, W) float64, `depth_png` (T, H, W) uint16 as written.
    """
    labels = clip.labels
    T, H, W = labels["depth"].shape
    for sub in ("rgbs", "depths", "masks", "normals"):
        (seq_dir / sub).mkdir(parents=True, exist_ok=True)
    c2w = dataset_cameras(clip, A)
    depth = labels["depth"].astype(np.float64)
    depth_png = []
    palette = _palette(int(clip.object_ids.max()) + 1)
    for n in range(T):
        cv2.imwrite(str(seq_dir / "rgbs" / f"rgb_{n:05d}.jpg"), cv2.cvtColor(clip.frames[n], cv2.COLOR_RGB2BGR))
        # gen_tracking.py: clip to [0, 1000] m, scale to 16 bits, truncate (astype)
        png = (np.clip(depth[n], 0.0, 1000.0) * 65535 / 1000).astype(np.uint16)
        if fog is not None:
            png[fog[n]] = 65535
        cv2.imwrite(str(seq_dir / "depths" / f"depth_{n:05d}.png"), png)
        depth_png.append(png)
        # segmentation: one colour per asset, the environment (our walls) black
        cv2.imwrite(str(seq_dir / "masks" / f"mask_{n:05d}.png"), palette[clip.object_ids[n]])
    points, ids = tracks(clip)
    uv, visible = track_visibility(clip, points, ids)
    blender_K = labels["K"].astype(np.float64).copy()
    blender_K[:, :2, 2] += 0.5
    trajs_3d = np.stack([transform_points(A, points[k]) for k in range(T)])
    np.savez(
        seq_dir / "anno.npz",
        trajs_2d=(uv + 0.5).astype(np.float16),
        trajs_3d=trajs_3d.astype(np.float16),
        visibs=visible,
        valids=np.ones_like(visible),
        intrinsics=blender_K.astype(np.float16),
        extrinsics=np.linalg.inv(c2w).astype(np.float16),
    )
    np.savez(seq_dir / "info.npz", trajs_3d=np.array(trajs_3d.shape, np.int64))
    return {"c2w": c2w, "K": labels["K"].astype(np.float64), "depth": depth, "depth_png": np.stack(depth_png)}


def _palette(count: int) -> np.ndarray:
    """(count, 3) uint8 distinct BGR colours, walls (ids 0-5) black."""
    rng = np.random.default_rng(7)
    colours = rng.integers(30, 256, (count, 3)).astype(np.uint8)
    colours[:FIRST_OBJECT_ID] = 0
    return colours


# ---------------------------------------------------------------------- Dynamic Replica
def viewpoint(K: np.ndarray, c2w: np.ndarray, size: tuple[int, int], intrinsics_format: str) -> dict:
    """A PyTorch3D `ViewpointAnnotation` dict of an OpenCV camera (pixel centres at integers)."""
    H, W = size
    w2c = np.linalg.inv(c2w)
    R_p3d = w2c[:3, :3].T @ FLIP_XY  # R_cv = FLIP R_p3d^T
    T_p3d = FLIP_XY @ w2c[:3, 3]
    half = np.array([W / 2.0, H / 2.0])
    scale = half if intrinsics_format == "ndc_norm_image_bounds" else np.full(2, half.min())
    focal = np.array([K[0, 0], K[1, 1]]) / scale
    principal = (half - (K[:2, 2] + 0.5)) / scale
    return {
        "R": R_p3d.tolist(),
        "T": T_p3d.tolist(),
        "focal_length": focal.tolist(),
        "principal_point": principal.tolist(),
        "intrinsics_format": intrinsics_format,
    }


def encode_float16_png(values: np.ndarray) -> np.ndarray:
    """float -> the uint16 image whose bits are float16 (what Dynamic Replica stores)."""
    return np.ascontiguousarray(values.astype("<f2")).view("<u2")


def write_dynamic_replica(
    split_dir: Path,
    name: str,
    clip: SyntheticClip,
    A: np.ndarray,
    intrinsics_format: str = "ndc_isotropic",
    fps: float = 30.0,
    bare_paths: bool = False,
) -> tuple[list[dict], dict[str, np.ndarray]]:
    """One sequence (left camera, plus right-camera entries) in the Dynamic Replica layout.

    `bare_paths` writes `flow_forward{,_mask}` and `trajectories` as path strings (their type
    in the upstream dataclass) instead of {"path": ...} (what the demo notebook indexes).

    Returns:
        (frame annotation entries to put in the split's index, ground truth: `c2w`, `K`,
        `depth`, `flow`, `flow_valid`, `dynamic_mask`).
    """
    labels = clip.labels
    T, H, W = labels["depth"].shape
    folder = f"{name}_left"
    for sub in ("images", "depths", "flow_forward", "flow_forward_mask", "masks", "instance_id_maps", "trajectories"):
        (split_dir / folder / sub).mkdir(parents=True, exist_ok=True)
    c2w = dataset_cameras(clip, A)
    points, ids = tracks(clip, objects_only=True)
    uv, visible = track_visibility(clip, points, ids)
    entries = []
    for n in range(T):
        rel = lambda sub, ext: f"{folder}/{sub}/{name}_left-{n:04d}.{ext}"  # noqa: E731
        cv2.imwrite(str(split_dir / rel("images", "png")), cv2.cvtColor(clip.frames[n], cv2.COLOR_RGB2BGR))
        cv2.imwrite(str(split_dir / rel("depths", "png")), encode_float16_png(labels["depth"][n]))
        objects = clip.object_ids[n] >= FIRST_OBJECT_ID
        cv2.imwrite(str(split_dir / rel("masks", "png")), (objects * 255).astype(np.uint8))
        instance_ids = np.where(objects, clip.object_ids[n] - FIRST_OBJECT_ID + 1, 0).astype(np.uint16)
        cv2.imwrite(str(split_dir / rel("instance_id_maps", "png")), instance_ids)
        traj_path = f"{folder}/trajectories/{n:06d}.pth"
        torch.save(
            {
                # PyTorch3D screen pixels (corners at integers) and depth, as (V, 3)
                "traj_2d": torch.from_numpy(np.concatenate([uv[n] + 0.5, np.ones((len(ids), 1))], axis=1).astype(np.float32)),
                "verts_inds_vis": torch.from_numpy(visible[n]),
                "traj_3d_world": torch.from_numpy(transform_points(A, points[n]).astype(np.float32)),
                "instances": torch.from_numpy((ids - FIRST_OBJECT_ID + 1).astype(np.int64)),
            },
            split_dir / traj_path,
        )
        flow = flow_mask = None
        if n + 1 < T:
            packed = np.concatenate([labels["flow"][n][..., 0], labels["flow"][n][..., 1]], axis=1)
            cv2.imwrite(str(split_dir / rel("flow_forward", "png")), encode_float16_png(packed))
            cv2.imwrite(str(split_dir / rel("flow_forward_mask", "png")), labels["flow_valid"][n].astype(np.uint8))
            flow = _path_field(rel("flow_forward", "png"), bare_paths)
            flow_mask = _path_field(rel("flow_forward_mask", "png"), bare_paths)
        entry = {
            "sequence_name": name,
            "frame_number": n,
            "frame_timestamp": n / fps,
            "image": {"path": rel("images", "png"), "size": [H, W]},
            "depth": {"path": rel("depths", "png"), "scale_adjustment": 1.0, "mask_path": None},
            "mask": {"path": rel("masks", "png"), "mass": float(objects.sum())},
            "viewpoint": viewpoint(labels["K"][n].astype(np.float64), c2w[n], (H, W), intrinsics_format),
            "meta": {},
            "camera_name": "left",
            "instance_id_map_path": rel("instance_id_maps", "png"),
            "flow_forward": flow,
            "flow_forward_mask": flow_mask,
            "flow_backward": None,
            "flow_backward_mask": None,
            "trajectories": _path_field(traj_path, bare_paths),
        }
        entries.append(entry)
        right = json.loads(json.dumps(entry))
        right["camera_name"] = "right"
        baseline = np.eye(4)
        baseline[0, 3] = 0.1
        right["viewpoint"] = viewpoint(labels["K"][n].astype(np.float64), c2w[n] @ baseline, (H, W), intrinsics_format)
        right["trajectories"] = None
        entries.append(right)
    truth = {
        "c2w": c2w,
        "K": labels["K"].astype(np.float64),
        "depth": labels["depth"].astype(np.float64),
        "flow": labels["flow"],
        "flow_valid": labels["flow_valid"],
        "dynamic_mask": labels["dynamic_mask"],
    }
    return entries, truth


def _path_field(path: str, bare: bool) -> str | dict:
    return path if bare else {"path": path}


def write_index(split_dir: Path, split: str, entries: list[dict]) -> Path:
    """`frame_annotations_<split>.jgz`: the gzipped JSON list of frame annotations."""
    path = split_dir / f"frame_annotations_{split}.jgz"
    split_dir.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wt", encoding="utf8") as f:
        json.dump(entries, f)
    return path


def read_index(path: Path) -> list[dict]:
    with gzip.open(path, "rt", encoding="utf8") as f:
        return json.load(f)
