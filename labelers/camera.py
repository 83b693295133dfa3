"""Camera labeler protocol, its result type, its failure type and trajectory evaluation.

Conventions (LABELS.md): `c2w` is camera-to-world with OpenCV axes (x right, y down, z
forward) in first-frame coordinates, so `c2w[0]` is the identity; `K` is in pixels of the
label resolution with pixel centres at integer coordinates. Without metric information a
camera backend returns one unknown scale per clip (`metric_scale = False`) and says in
`scale_note` how that scale is fixed, so depth can be brought to the same scale.

A backend implements `CameraEstimator`. A clip it cannot label raises `CameraFailure`
with a machine-readable `reason` (one of `FAILURE_REASONS`); the pipeline turns it into a
rejected clip. A camera that hardly moves is not a failure but a result whose `motion` says
so (`"static"`, or `"rotation"` for a camera that turns without measurable translation).

The evaluation functions compare an estimate with ground truth (synthetic clips, QA):
`relative_rotation_errors_deg` (consecutive frames) and `ate_sim3` (camera centres after
a Sim(3) Umeyama alignment, RMSE in the ground-truth unit and in percent of its path).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from labelers.geometry import check_frames, nearest_rotation

__all__ = [
    "MOTIONS",
    "FAILURE_REASONS",
    "CameraFailure",
    "CameraResult",
    "CameraEstimator",
    "check_camera_inputs",
    "rotation_angle_deg",
    "relative_rotation_errors_deg",
    "relative_translation_angles_deg",
    "umeyama_sim3",
    "ate_sim3",
    "trajectory_errors",
]

# "general": translation and rotation measured; "rotation": the camera turns about its centre
# (translations are zero, rotations valid); "static": no measurable motion (c2w = I).
MOTIONS = ("general", "rotation", "static")

FAILURE_REASONS = {
    "too_little_texture": "too few trackable image features",
    "too_few_tracks": "feature tracks are lost between frames",
    "intrinsics_unobservable": "no intrinsics given and the motion does not determine the focal length",
    "initialisation_failed": "no frame pair gives a reliable two-view reconstruction",
    "too_few_registered": "too many frames could not be registered",
    "high_reprojection_error": "the reconstruction does not explain the tracks",
}


class CameraFailure(Exception):
    """A clip the camera labeler rejects: `reason` is a key of `FAILURE_REASONS`.

    Pickles with its fields, so it crosses process boundaries (Ray workers) intact.
    """

    def __init__(self, reason: str, message: str) -> None:
        if reason not in FAILURE_REASONS:
            raise ValueError(f"reason must be one of {sorted(FAILURE_REASONS)}, got {reason!r}")
        self.reason = reason
        self.message = message
        super().__init__(f"{reason}: {message}")

    def __reduce__(self):
        return (type(self), (self.reason, self.message))


@dataclass(frozen=True)
class CameraResult:
    """Cameras of T frames of one clip.

    Attributes:
        c2w: (T, 4, 4) float64 camera-to-world in first-frame coordinates, c2w[0] = I.
        K: (T, 3, 3) float64 intrinsics in pixels.
        motion: one of `MOTIONS`.
        registered: (T,) bool, frames whose pose was estimated (others are interpolated).
        frame_inliers: (T,) int, tracks with a 3D point that support each frame's pose.
        frame_reproj_px: (T,) float64 mean reprojection error per frame (NaN if unregistered).
        reproj_px: summary of all inlier reprojection errors: mean, median, p90, max.
        intrinsics_source: "given", "estimated" (refined in bundle adjustment) or "prior"
            (not observable and not given: a default field of view; a fixed camera, or a
            moving one whose tracks do not determine the focal but do not contradict the prior;
            the diagnostics then hold the estimate and the prior, see `labelers.sfm`).
        scale_note: how the clip's single unknown scale is fixed.
        metric_scale: whether translations are in metres (never for structure from motion).
        diagnostics: JSON-able numbers and flags (tracks, parallax, timings, ...).
        focal_alternatives: with a prior focal on a moving camera, (c2w (T, 4, 4), K (T, 3, 3))
            of the same tracks re-adjusted with the focal at each end of the prior's plausible
            span, so that the dense depth's dependence on the focal can be tested
            (`labelers.sfm.focal_prior.dense_depth_agreement`); empty otherwise.
    """

    c2w: np.ndarray
    K: np.ndarray
    motion: str
    registered: np.ndarray
    frame_inliers: np.ndarray
    frame_reproj_px: np.ndarray
    reproj_px: dict[str, float]
    intrinsics_source: str
    scale_note: str
    metric_scale: bool = False
    diagnostics: dict[str, Any] = field(default_factory=dict)
    focal_alternatives: tuple[tuple[np.ndarray, np.ndarray], ...] = ()

    def __post_init__(self) -> None:
        T = self.c2w.shape[0] if self.c2w.ndim == 3 else -1
        if self.c2w.shape != (T, 4, 4) or self.c2w.dtype != np.float64:
            raise ValueError(f"c2w must be (T, 4, 4) float64, got {self.c2w.shape} {self.c2w.dtype}")
        if self.K.shape != (T, 3, 3) or self.K.dtype != np.float64:
            raise ValueError(f"K must be (T, 3, 3) = ({T}, 3, 3) float64, got {self.K.shape} {self.K.dtype}")
        if self.motion not in MOTIONS:
            raise ValueError(f"motion must be one of {MOTIONS}, got {self.motion!r}")
        for name in ("registered", "frame_inliers", "frame_reproj_px"):
            if getattr(self, name).shape != (T,):
                raise ValueError(f"{name} must be ({T},), got {getattr(self, name).shape}")
        if self.intrinsics_source not in ("given", "estimated", "prior"):
            raise ValueError(f"intrinsics_source must be given, estimated or prior, got {self.intrinsics_source!r}")
        for c2w, K in self.focal_alternatives:
            if c2w.shape != self.c2w.shape or K.shape != self.K.shape:
                raise ValueError(f"focal_alternatives must be (c2w {self.c2w.shape}, K {self.K.shape}) pairs, "
                                 f"got ({c2w.shape}, {K.shape})")


@runtime_checkable
class CameraEstimator(Protocol):
    """A camera backend; `name`, `version`, `params` go into the clip's `labelers` attribute."""

    name: str
    version: str

    @property
    def params(self) -> dict[str, Any]: ...

    def estimate(
        self, frames: np.ndarray, K: np.ndarray | None = None, flows: Any = None, exclude: np.ndarray | None = None
    ) -> CameraResult:
        """Cameras of every frame.

        Args:
            frames: (T, H, W, 3) uint8 RGB.
            K: intrinsics in pixels, (3, 3) shared or (T, 3, 3) per frame; None to estimate them.
            flows: optional `labelers.flow.PairFlows` of frame pairs of the same frames, which
                a backend may use to tell the background from movers.
            exclude: optional (H, W) bool pixels that show no scene (static overlays,
                `labelers.overlay`), which the backend must not read.

        Raises:
            CameraFailure: the clip cannot be labelled (reason code and cause).
        """
        ...


def check_camera_inputs(frames: np.ndarray, K: np.ndarray | None) -> np.ndarray | None:
    """Validate `CameraEstimator.estimate` arguments; returns K as (T, 3, 3) float64 or None."""
    num_frames, _, _ = check_frames(frames, min_frames=2)
    if K is None:
        return None
    K = np.asarray(K, np.float64)
    if K.shape == (3, 3):
        K = np.broadcast_to(K, (num_frames, 3, 3))
    if K.shape != (num_frames, 3, 3):
        raise ValueError(f"K must be (3, 3) or (T, 3, 3) = ({num_frames}, 3, 3), got {K.shape}")
    if not np.all(np.isfinite(K)):
        raise ValueError("K must be finite")
    if np.any(K[:, 0, 0] <= 0) or np.any(K[:, 1, 1] <= 0) or not np.allclose(K[:, 2], [0.0, 0.0, 1.0]):
        raise ValueError("K must have positive focal lengths and last row (0, 0, 1)")
    return np.array(K)


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Angle of (..., 3, 3) rotation matrices in degrees (atan2 form: exact for small angles too)."""
    cos = (np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0
    axis = np.stack([R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], -1)
    sin = np.linalg.norm(axis, axis=-1) / 2.0
    return np.degrees(np.arctan2(sin, cos))


def relative_rotation_errors_deg(c2w_est: np.ndarray, c2w_gt: np.ndarray) -> np.ndarray:
    """Rotation error of the relative pose between consecutive frames.

    Args:
        c2w_est, c2w_gt: (T, 4, 4) camera-to-world (any world frame and scale).

    Returns:
        (T-1,) degrees: angle of (R_i^T R_{i+1})_est^T (R_i^T R_{i+1})_gt.
    """
    R_est, R_gt = _check_trajectories(c2w_est, c2w_gt)[:2]
    rel_est = np.swapaxes(R_est[:-1], -1, -2) @ R_est[1:]
    rel_gt = np.swapaxes(R_gt[:-1], -1, -2) @ R_gt[1:]
    return rotation_angle_deg(np.swapaxes(rel_est, -1, -2) @ rel_gt)


def relative_translation_angles_deg(
    c2w_est: np.ndarray, c2w_gt: np.ndarray, min_baseline_fraction: float = 0.25
) -> np.ndarray:
    """Angle between the estimated and true direction of travel, seen from the first camera of each pair.

    For every frame pair (i, j), i < j, whose true baseline is at least `min_baseline_fraction` of
    the longest one (shorter ones have ill-defined directions), the direction of camera j's centre
    in camera i's frame. RRE and Sim(3) ATE both miss a camera whose orientation is off against
    its own path: RRE compares rotations between frames only, and the alignment of ATE rotates
    the estimated centres freely. That is what a rotation traded for a shifted focus of expansion
    (a forward dolly in front of a planar background) looks like.

    Args:
        c2w_est, c2w_gt: (T, 4, 4) camera-to-world (any world frame and scale).

    Returns:
        (P,) degrees over the kept pairs; empty when the true centres do not move.
    """
    R_est, R_gt, c_est, c_gt = _check_trajectories(c2w_est, c2w_gt)
    i, j = np.triu_indices(len(c_gt), k=1)
    baseline = np.linalg.norm(c_gt[j] - c_gt[i], axis=-1)
    if not baseline.max() > 1e-9 * (float(np.abs(c_gt).max()) + 1.0):
        return np.zeros(0)
    keep = baseline >= min_baseline_fraction * baseline.max()
    i, j = i[keep], j[keep]

    def directions(R: np.ndarray, c: np.ndarray) -> np.ndarray:
        local = np.einsum("pji,pj->pi", R[i], c[j] - c[i])  # R_i^T (c_j - c_i)
        norm = np.linalg.norm(local, axis=-1, keepdims=True)
        return np.divide(local, norm, out=np.zeros_like(local), where=norm > 0)

    cos = np.einsum("pk,pk->p", directions(R_est, c_est), directions(R_gt, c_gt))
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def umeyama_sim3(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity dst ~ s R src + t (Umeyama 1991).

    Args:
        src, dst: (N, 3) corresponding points, N >= 3 and not all coincident.

    Returns:
        scale s, rotation R (3, 3) with det +1, translation t (3,).
    """
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3 or src.shape[0] < 3:
        raise ValueError(f"src and dst must be matching (N >= 3, 3) arrays, got {src.shape} and {dst.shape}")
    mu_src, mu_dst = src.mean(0), dst.mean(0)
    a, b = src - mu_src, dst - mu_dst
    var_src = (a**2).sum() / len(a)
    if var_src <= 1e-18:
        raise ValueError("src points coincide: a similarity is undefined")
    cross = b.T @ a / len(a)
    R = nearest_rotation(cross)
    s = float(np.trace(R.T @ cross) / var_src)  # = trace(D S) of cross = U S V^T
    return s, R, mu_dst - s * R @ mu_src


def ate_sim3(c2w_est: np.ndarray, c2w_gt: np.ndarray) -> dict[str, float]:
    """Absolute trajectory error of camera centres after Sim(3) alignment to ground truth.

    Args:
        c2w_est, c2w_gt: (T, 4, 4) camera-to-world, T >= 3.

    Returns:
        rmse: RMSE of the aligned centres, in the ground-truth unit;
        path_length: ground-truth path length (sum of consecutive centre distances);
        percent_of_path: 100 * rmse / path_length;
        scale: the similarity's scale (ground-truth unit per estimate unit).

    Raises:
        ValueError: the ground-truth path is too short for a relative error (static or
            rotating camera), or the estimated centres coincide.
    """
    _, _, c_est, c_gt = _check_trajectories(c2w_est, c2w_gt)
    path_length = float(np.linalg.norm(np.diff(c_gt, axis=0), axis=1).sum())
    extent = float(np.abs(c_gt).max()) + 1.0
    if path_length <= 1e-9 * extent:
        raise ValueError("ground-truth camera centres do not move: ATE in percent of the path is undefined")
    s, R, t = umeyama_sim3(c_est, c_gt)
    aligned = s * c_est @ R.T + t
    rmse = float(np.sqrt(((aligned - c_gt) ** 2).sum(1).mean()))
    return {"rmse": rmse, "path_length": path_length, "percent_of_path": 100.0 * rmse / path_length, "scale": s}


def trajectory_errors(c2w_est: np.ndarray, c2w_gt: np.ndarray) -> dict[str, float]:
    """Relative rotation errors (mean, max, degrees) and, where the path moves, the Sim(3) ATE and
    the relative translation angles (`relative_translation_angles_deg`, mean and max)."""
    rre = relative_rotation_errors_deg(c2w_est, c2w_gt)
    out = {"rre_mean_deg": float(rre.mean()), "rre_max_deg": float(rre.max())}
    rta = relative_translation_angles_deg(c2w_est, c2w_gt)
    if rta.size:
        out.update({"rta_mean_deg": float(rta.mean()), "rta_max_deg": float(rta.max())})
    try:
        ate = ate_sim3(c2w_est, c2w_gt)
    except ValueError:
        return out
    out.update(
        {"ate_rmse": ate["rmse"], "ate_percent_of_path": ate["percent_of_path"], "path_length": ate["path_length"]}
    )
    return out


def _check_trajectories(c2w_est: np.ndarray, c2w_gt: np.ndarray) -> tuple[np.ndarray, ...]:
    c2w_est = np.asarray(c2w_est, np.float64)
    c2w_gt = np.asarray(c2w_gt, np.float64)
    if c2w_est.ndim != 3 or c2w_est.shape[1:] != (4, 4) or c2w_est.shape != c2w_gt.shape:
        raise ValueError(f"trajectories must both be (T, 4, 4), got {c2w_est.shape} and {c2w_gt.shape}")
    if c2w_est.shape[0] < 2:
        raise ValueError("trajectories need at least 2 frames")
    return c2w_est[:, :3, :3], c2w_gt[:, :3, :3], c2w_est[:, :3, 3], c2w_gt[:, :3, 3]
