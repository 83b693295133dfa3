"""Point maps and scene-flow pseudo-labels exactly as LABELS.md defines them (vectorised numpy).

P_k(u)   = c2w_k [D_k(u) K_k^-1 (u, v, 1)^T; 1]            (first-frame coordinates)
F3d_k(u) = P_{k+1}(u + F_{k->k+1}(u)) - P_k(u)  where M_k(u) = 1, else 0

`P_{k+1}` is sampled bilinearly; a target outside the image is invalid (never clamped), and
so is a target whose bilinear footprint touches invalid depth. Non-finite inputs never
reach the outputs: invalid pixels are exactly 0.
"""

from __future__ import annotations

import numpy as np

from labelers.camera import ate_sim3, relative_rotation_errors_deg, umeyama_sim3
from labelers.geometry import bilinear_sample, inside_image, pixel_grid

# Trajectory alignment lives with the camera labeler; re-exported here because `model` may
# import `pipelines` geometry but not `labelers` (DESIGN.md dependency table).
__all__ = ["point_maps", "scene_flow", "ate_sim3", "relative_rotation_errors_deg", "umeyama_sim3"]


def point_maps(depth: np.ndarray, depth_valid: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """Point maps of several frames in first-frame coordinates.

    Args:
        depth: (N, H, W) z-depth.
        depth_valid: (N, H, W) bool.
        K: (N, 3, 3) intrinsics.
        c2w: (N, 4, 4) camera-to-world (first-frame coordinates).

    Returns:
        (N, H, W, 3) float64 points, 0 where depth is invalid or non-finite.
    """
    depth = np.asarray(depth, np.float64)
    n, height, width = depth.shape
    if depth_valid.shape != depth.shape or K.shape != (n, 3, 3) or c2w.shape != (n, 4, 4):
        raise ValueError(
            f"shapes disagree: depth {depth.shape}, depth_valid {depth_valid.shape}, K {K.shape}, c2w {c2w.shape}"
        )
    valid = depth_valid & np.isfinite(depth) & (depth > 0)
    uv1 = np.concatenate([pixel_grid(height, width), np.ones((height, width, 1))], axis=-1)
    rays = np.einsum("nij,hwj->nhwi", np.linalg.inv(np.asarray(K, np.float64)), uv1)
    cam = rays * np.where(valid, depth, 0.0)[..., None]
    c2w = np.asarray(c2w, np.float64)
    world = np.einsum("nij,nhwj->nhwi", c2w[:, :3, :3], cam) + c2w[:, None, None, :3, 3]
    world[~valid] = 0.0
    return world


def scene_flow(
    points: np.ndarray,
    depth: np.ndarray,
    depth_valid: np.ndarray,
    key_flow: np.ndarray,
    key_flow_valid: np.ndarray,
    dynamic_mask: np.ndarray,
    max_footprint_depth_ratio: float = 1.05,
) -> tuple[np.ndarray, np.ndarray]:
    """Scene flow between consecutive key frames and its validity mask.

    Args:
        points: (S, H, W, 3) point maps P_k (first-frame coordinates).
        depth: (S, H, W) z-depth of the key frames.
        depth_valid: (S, H, W) where depth (hence P_k) is valid.
        key_flow: (S-1, H, W, 2) flow F_{k->k+1} in pixels.
        key_flow_valid: (S-1, H, W) forward-backward consistent flow.
        dynamic_mask: (S, H, W) M_k.

    Returns:
        scene_flow: (S-1, H, W, 3), F3d_k on valid dynamic pixels, 0 elsewhere;
        scene_flow_valid: (S-1, H, W) = dynamic & depth valid at both ends & key flow valid
            & target inside the image (all bilinear neighbours of the target valid), and the
            target's footprint not straddling a depth edge (max/min neighbour depth at most
            `max_footprint_depth_ratio`): there bilinear sampling would blend two surfaces.
    """
    points_valid = np.asarray(depth_valid, bool)
    S, height, width = points.shape[:3]
    expected = {"depth": (S, height, width), "points_valid": (S, height, width), "key_flow": (S - 1, height, width, 2),
                "key_flow_valid": (S - 1, height, width), "dynamic_mask": (S, height, width)}
    given = {"depth": depth.shape, "points_valid": points_valid.shape, "key_flow": key_flow.shape,
             "key_flow_valid": key_flow_valid.shape, "dynamic_mask": dynamic_mask.shape}
    for name, shape in expected.items():
        if given[name] != shape:
            raise ValueError(f"{name}: expected shape {shape} for points {points.shape}, got {given[name]}")
    flow_out = np.zeros((S - 1, height, width, 3))
    valid_out = np.zeros((S - 1, height, width), bool)
    grid = pixel_grid(height, width)
    for k in range(S - 1):
        flow_k = np.asarray(key_flow[k], np.float64)
        target = grid + np.where(np.isfinite(flow_k), flow_k, np.nan)
        # The target's bilinear footprint must be valid depth: sampling the mask as 0/1 gives 1 only then.
        target_valid = bilinear_sample(points_valid[k + 1].astype(np.float64), target) > 1 - 1e-9
        valid = (
            dynamic_mask[k]
            & points_valid[k]
            & key_flow_valid[k]
            & inside_image(target, height, width)
            & np.nan_to_num(target_valid, nan=0.0).astype(bool)
        )
        moved = bilinear_sample(points[k + 1], target) - points[k]
        valid &= np.isfinite(moved).all(axis=-1)
        lo, hi = _footprint_min_max(np.asarray(depth[k + 1], np.float64), target)
        with np.errstate(invalid="ignore", divide="ignore"):
            valid &= hi <= max_footprint_depth_ratio * lo
        flow_out[k][valid] = moved[valid]
        valid_out[k] = valid
    return flow_out, valid_out


def _footprint_min_max(image: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of the 4 pixels around each (u, v) (NaN outside the image)."""
    height, width = image.shape
    inside = inside_image(uv, height, width)
    u0 = np.clip(np.floor(np.where(inside, uv[..., 0], 0)).astype(np.int64), 0, width - 2)
    v0 = np.clip(np.floor(np.where(inside, uv[..., 1], 0)).astype(np.int64), 0, height - 2)
    corners = np.stack([image[v0, u0], image[v0, u0 + 1], image[v0 + 1, u0], image[v0 + 1, u0 + 1]])
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    lo[~inside], hi[~inside] = np.nan, np.nan
    return lo, hi
