"""Pinhole geometry in the conventions of LABELS.md (numpy, float64 inside).

Pixels are (u, v) = (column, row) with pixel centres at integer coordinates; cameras use
OpenCV axes (x right, y down, z forward); poses are camera-to-world (`c2w`); depth is
z-depth. These helpers are the lowest layer: labelers use them directly, `pipelines`
builds point maps and scene flow on top of them.
"""

from __future__ import annotations

import cv2
import numpy as np

__all__ = [
    "pixel_grid",
    "unproject_depth",
    "transform_points",
    "project_points",
    "rigid_flow",
    "bilinear_sample",
    "inside_image",
    "relative_pose",
    "nearest_rotation",
    "rigid_fit",
    "check_frames",
    "disk",
    "grow_mask",
    "close_mask",
]


def check_frames(frames: np.ndarray, min_frames: int = 1, name: str = "frames") -> tuple[int, int, int]:
    """The input check every labeler shares: `frames` is (T, H, W, 3) uint8 RGB with T >= `min_frames`.

    Returns:
        (T, H, W).

    Raises:
        ValueError: naming the shape and dtype received.
    """
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        got = f"{getattr(frames, 'shape', type(frames).__name__)} {getattr(frames, 'dtype', '')}".strip()
        raise ValueError(f"{name} must be (T, H, W, 3) uint8, got {got}")
    if frames.shape[0] < min_frames:
        raise ValueError(f"{name}: need at least {min_frames} frames, got {frames.shape[0]}")
    return frames.shape[0], frames.shape[1], frames.shape[2]


def pixel_grid(height: int, width: int) -> np.ndarray:
    """Pixel-centre coordinates.

    Returns:
        (H, W, 2) float64 array of (u, v).
    """
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    return np.stack([u, v], axis=-1)


def unproject_depth(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray | None = None) -> np.ndarray:
    """Lift z-depth to 3D points: P(u) = c2w [D(u) K^-1 (u, v, 1)^T; 1].

    Args:
        depth: (H, W) z-depth.
        K: (3, 3) intrinsics in pixels of (H, W).
        c2w: optional (4, 4) camera-to-world; points stay in camera coordinates if None.

    Returns:
        (H, W, 3) float64 points.
    """
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got {depth.shape}")
    _check_K(K)
    height, width = depth.shape
    uv1 = np.concatenate([pixel_grid(height, width), np.ones((height, width, 1))], axis=-1)
    rays = uv1 @ np.linalg.inv(np.asarray(K, np.float64)).T
    points = rays * np.asarray(depth, np.float64)[..., None]
    if c2w is not None:
        points = transform_points(c2w, points)
    return points


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (4, 4) rigid transform to (..., 3) points."""
    T = np.asarray(T, np.float64)
    if T.shape != (4, 4):
        raise ValueError(f"transform must be (4, 4), got {T.shape}")
    return points @ T[:3, :3].T + T[:3, 3]


def project_points(points_cam: np.ndarray, K: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project camera-frame points (..., 3) to pixels.

    Returns:
        uv: (..., 2) pixel coordinates (NaN where z <= 0);
        z: (...,) depth of each point.
    """
    _check_K(K)
    K = np.asarray(K, np.float64)
    z = points_cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x = points_cam[..., 0] / z
        y = points_cam[..., 1] / z
    uv = np.stack([K[0, 0] * x + K[0, 1] * y + K[0, 2], K[1, 1] * y + K[1, 2]], axis=-1)
    uv[z <= 0] = np.nan
    return uv, z


def relative_pose(c2w_src: np.ndarray, c2w_dst: np.ndarray) -> np.ndarray:
    """Transform taking source-camera coordinates to destination-camera coordinates."""
    return np.linalg.inv(np.asarray(c2w_dst, np.float64)) @ np.asarray(c2w_src, np.float64)


def rigid_flow(
    depth_src: np.ndarray,
    K_src: np.ndarray,
    c2w_src: np.ndarray,
    K_dst: np.ndarray,
    c2w_dst: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Flow that a static scene with depth `depth_src` would show from src to dst.

    Returns:
        flow_px: (H, W, 2) rigid flow in pixels (NaN where the point falls behind dst);
        z_dst: (H, W) depth of each source point in the destination camera.
    """
    points_src = unproject_depth(depth_src, K_src)
    points_dst = transform_points(relative_pose(c2w_src, c2w_dst), points_src)
    uv_dst, z_dst = project_points(points_dst, K_dst)
    return uv_dst - pixel_grid(*depth_src.shape), z_dst


def inside_image(uv: np.ndarray, height: int, width: int) -> np.ndarray:
    """Whether (..., 2) pixel positions can be bilinearly sampled without leaving the image."""
    u, v = uv[..., 0], uv[..., 1]
    with np.errstate(invalid="ignore"):
        return (u >= 0) & (u <= width - 1) & (v >= 0) & (v <= height - 1)


def bilinear_sample(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Sample `image` (H, W[, C]) at (..., 2) pixel positions, bilinearly.

    Positions outside the image (see `inside_image`) or NaN give NaN: nothing is clamped
    to the border, so callers must mask them.
    """
    height, width = image.shape[:2]
    img = np.asarray(image, np.float64)
    if img.ndim == 2:
        img = img[..., None]
    inside = inside_image(uv, height, width)
    u = np.where(inside, uv[..., 0], 0.0)
    v = np.where(inside, uv[..., 1], 0.0)
    u0 = np.clip(np.floor(u).astype(np.int64), 0, max(width - 2, 0))
    v0 = np.clip(np.floor(v).astype(np.int64), 0, max(height - 2, 0))
    u1 = np.minimum(u0 + 1, width - 1)
    v1 = np.minimum(v0 + 1, height - 1)
    du = (u - u0)[..., None]
    dv = (v - v0)[..., None]
    out = (
        img[v0, u0] * (1 - du) * (1 - dv)
        + img[v0, u1] * du * (1 - dv)
        + img[v1, u0] * (1 - du) * dv
        + img[v1, u1] * du * dv
    )
    out[~inside] = np.nan
    return out[..., 0] if image.ndim == 2 else out


def nearest_rotation(cross: np.ndarray) -> np.ndarray:
    """Rotations Q maximising trace(Q^T C), i.e. minimising sum |dst - Q src|^2 for C = sum dst src^T.

    The orthogonal Procrustes solution with det +1 (never a reflection): Q = U diag(1, 1, det(U V^T)) V^T
    for C = U S V^T.

    Args:
        cross: (..., 3, 3) cross-covariances, dst outer src.

    Returns:
        (..., 3, 3) float64 rotations.
    """
    U, _, Vt = np.linalg.svd(np.asarray(cross, np.float64))
    D = np.ones(cross.shape[:-1])
    D[..., 2] = np.where(np.linalg.det(U @ Vt) < 0, -1.0, 1.0)
    return (U * D[..., None, :]) @ Vt


def rigid_fit(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least-squares rigid motions dst ~ R src + t (Kabsch), batched.

    Args:
        src, dst: (..., N, 3) corresponding points.
        weights: (..., N) non-negative, not all zero; None weighs all points equally.

    Returns:
        R (..., 3, 3) rotations and t (..., 3) translations.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    w = np.ones(src.shape[:-1]) if weights is None else np.asarray(weights, np.float64)
    w = w / w.sum(axis=-1, keepdims=True)
    mean_src = (w[..., None, :] @ src)[..., 0, :]
    mean_dst = (w[..., None, :] @ dst)[..., 0, :]
    cross = np.swapaxes((dst - mean_dst[..., None, :]) * w[..., None], -1, -2) @ (src - mean_src[..., None, :])
    R = nearest_rotation(cross)
    return R, mean_dst - (R @ mean_src[..., None])[..., 0]


def _check_K(K: np.ndarray) -> None:
    if np.shape(K) != (3, 3):
        raise ValueError(f"K must be (3, 3), got {np.shape(K)}")


def disk(radius_px: int) -> np.ndarray:
    """(2 r + 1, 2 r + 1) uint8 elliptic structuring element of OpenCV's morphology."""
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius_px + 1, 2 * radius_px + 1))


def grow_mask(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """(H, W) bool `mask` dilated by a disk of `radius_px` (0: unchanged)."""
    if radius_px == 0 or not mask.any():
        return np.asarray(mask, bool)
    return cv2.dilate(mask.astype(np.uint8), disk(radius_px)).astype(bool)


def close_mask(mask: np.ndarray, radius_px: int) -> np.ndarray:
    """(H, W) bool `mask` closed (dilated, then eroded) by a disk of `radius_px` (0: unchanged)."""
    if radius_px == 0:
        return np.asarray(mask, bool)
    return cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, disk(radius_px)).astype(bool)
