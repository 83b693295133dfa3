"""Helpers shared by the SfM modules: pixel conventions, intrinsics, RANSAC options, image
regions, rotations and error statistics.

Pixel convention: LABELS.md puts pixel centres at integer coordinates, COLMAP at +0.5; the
conversion happens at the pycolmap boundary only (`COLMAP_OFFSET`).
"""

from __future__ import annotations

import cv2
import numpy as np
import pycolmap

from labelers.sfm.config import SfmConfig


COLMAP_OFFSET = 0.5  # COLMAP pixel (0.5, 0.5) is the centre of the top-left pixel


def centred_K(focal: float, height: int, width: int) -> np.ndarray:
    """(3, 3) intrinsics with one focal (pixels) and the principal point at the image centre."""
    return np.array([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]])


def prior_focal_px(width: int, cfg: SfmConfig) -> float:
    """Focal length (pixels) of the horizontal field of view `cfg.prior_fov_x_deg`."""
    return (width / 2) / np.tan(np.radians(cfg.prior_fov_x_deg) / 2)


def ransac_options(cfg: SfmConfig, max_error: float | None = None) -> pycolmap.RANSACOptions:
    # Tracks have few outliers, so the adaptive stopping rule ends RANSAC early; COLMAP's
    # default floor of 1000 trials only costs time here.
    return pycolmap.RANSACOptions(
        max_error=max_error or cfg.ransac_max_px, random_seed=cfg.seed, min_num_trials=50, max_num_trials=5000
    )


def apply_homography(H: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Positions (M, 2) mapped by the homography H (3, 3)."""
    q = np.concatenate([xy, np.ones((len(xy), 1))], axis=1) @ H.T
    return q[:, :2] / q[:, 2:]


def bearings(xy: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(M, 3) unit viewing directions of pixels (M, 2) of a camera with intrinsics K (3, 3)."""
    rays = np.concatenate([xy, np.ones((len(xy), 1))], 1) @ np.linalg.inv(K).T
    return rays / np.linalg.norm(rays, axis=1, keepdims=True)


def image_regions(xy: np.ndarray, width: int, height: int, grid: int) -> np.ndarray:
    """(M,) index of the grid x grid image region holding each position (M, 2)."""
    col = np.clip((xy[:, 0] / width * grid).astype(int), 0, grid - 1)
    row = np.clip((xy[:, 1] / height * grid).astype(int), 0, grid - 1)
    return row * grid + col


def error_stats(errors: np.ndarray) -> dict[str, float]:
    """Mean, median, 90th percentile and maximum of pixel errors (NaN when there are none)."""
    if errors.size == 0:
        return {"mean": float("nan"), "median": float("nan"), "p90": float("nan"), "max": float("nan")}
    return {
        "mean": float(errors.mean()),
        "median": float(np.median(errors)),
        "p90": float(np.percentile(errors, 90)),
        "max": float(errors.max()),
    }


def rotation_angle_deg(R: np.ndarray) -> float:
    """Angle (degrees) of the rotation matrix R (3, 3)."""
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))


def exp_so3(w: np.ndarray) -> np.ndarray:
    """Rotation matrix of the rotation vector w (3,) (radians)."""
    return cv2.Rodrigues(np.asarray(w, np.float64).reshape(3, 1))[0]


def log_so3(R: np.ndarray) -> np.ndarray:
    """Rotation vector (3,) (radians) of the rotation matrix R."""
    return cv2.Rodrigues(np.asarray(R, np.float64))[0].ravel()
