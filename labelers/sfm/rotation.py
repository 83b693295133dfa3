"""Pure rotation (step 4 of `labelers.sfm`) and the rotation-only model of the motion analysis.

Relative rotations of frame pairs align the viewing directions of their tracks (orthogonal
Procrustes); the focal (when not given) minimises the transfer error of the rotation-only
homographies K R K^-1 (`rotation_focal`); rotation averaging (Gauss-Newton on SO(3)) then
gives every frame's rotation, and translations are zero. An estimated focal is trusted as in
`labelers.sfm.focal`, from the transfer-error profile and a jackknife over image regions;
rotation angles scale with it. Measured: docs/benchmarks.md, "Labeler design measurements",
SfM camera: pure rotation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from labelers.camera import CameraFailure, CameraResult
from labelers.geometry import nearest_rotation
from labelers.sfm.common import (
    apply_homography,
    bearings,
    centred_K,
    error_stats,
    exp_so3,
    image_regions,
    log_so3,
    rotation_angle_deg,
)
from labelers.sfm.config import SfmConfig
from labelers.sfm.focal import (
    FOCAL_STEP,
    FocalUncertainty,
    focal_problem,
    focal_uncertainty_from_costs,
    jackknife_log_std,
)
from labelers.sfm.pairs import PairGeometry
from labelers.sfm.tracks import Tracks


def rotation_result(
    tracks: Tracks,
    pairs: list[PairGeometry],
    K: np.ndarray,
    focal: FocalUncertainty | None,
    K_given: bool,
    height: int,
    width: int,
    cfg: SfmConfig,
    diagnostics: dict,
) -> CameraResult:
    """Rotations from the pairs' tracks (module docstring); translations are zero.

    Args:
        pairs, K, focal: the pair fits of `labelers.sfm.motion.MotionAnalysis`, the (T, 3, 3)
            intrinsics of its rotation-only model and the uncertainty of its fitted focal
            (None when given).
    """
    num_frames = tracks.xy.shape[0]
    max_rotation = max(rotation_angle_deg(_pair_rotation(tracks, p, K)) for p in pairs)
    diagnostics.update({"max_rotation_deg": max_rotation, "focal_px": float(K[0, 0, 0])})
    if not K_given:
        fov_x = np.degrees(2 * np.arctan((K[0, 0, 2] + 0.5) / K[0, 0, 0]))
        fov_ok = cfg.min_fov_x_deg <= fov_x <= cfg.max_fov_x_deg
        if fov_ok and focal.rel_std <= cfg.max_focal_rel_std:  # worth the jackknife
            jackknife = _rotation_focal_jackknife(
                tracks, pairs, height, width, float(K[0, 0, 0]), cfg.focal_jackknife_grid
            )
            focal = replace(focal, jackknife_rel_std=jackknife)
        diagnostics.update(focal.diagnostics())
        if not fov_ok or not focal.rel_std <= cfg.max_focal_rel_std:
            raise CameraFailure(
                "intrinsics_unobservable",
                f"the camera only rotates (by up to {max_rotation:.1f} deg between frames) and "
                + focal_problem(float(K[0, 0, 0]), fov_x, focal, cfg),
            )
    relative = {(p.i, p.j): (_pair_rotation(tracks, p, K), int(p.H_inliers.sum())) for p in pairs}
    R = _average_rotations(relative, num_frames)
    c2w = np.tile(np.eye(4), (num_frames, 1, 1))
    c2w[:, :3, :3] = R
    frame_err = np.full(num_frames, np.nan)
    errors = []
    for p in pairs:
        if p.j == p.i + 1:
            e = rotation_transfer_errors(tracks, p, K, R[p.j].T @ R[p.i])[p.H_inliers]
            errors.append(e)
            frame_err[p.j] = e.mean()
    frame_err[0] = frame_err[1]
    return CameraResult(
        c2w=c2w,
        K=np.array(K, np.float64),
        motion="rotation",
        registered=np.ones(num_frames, bool),
        frame_inliers=tracks.observed.sum(1).astype(np.int64),
        frame_reproj_px=frame_err,
        reproj_px=error_stats(np.concatenate(errors)),
        intrinsics_source="given" if K_given else "estimated",
        scale_note="pure rotation: no measurable translation, camera centres fixed at the origin",
        diagnostics=diagnostics,
    )


def _pair_rotation(tracks: Tracks, pair: PairGeometry, K: np.ndarray) -> np.ndarray:
    """Q = R_j^T R_i (camera-to-world rotations) of a pure rotation, aligning the viewing
    directions of the pair's homography inliers."""
    sel = pair.common[pair.H_inliers]
    return nearest_rotation(
        bearings(tracks.xy[pair.j, sel], K[pair.j]).T @ bearings(tracks.xy[pair.i, sel], K[pair.i])
    )


def rotation_transfer_errors(
    tracks: Tracks, pair: PairGeometry, K: np.ndarray, Q: np.ndarray | None = None
) -> np.ndarray:
    """(M,) transfer errors of the common tracks under the rotation-only homography K_j Q K_i^-1
    (Q fitted to the pair if None)."""
    Q = _pair_rotation(tracks, pair, K) if Q is None else Q
    pred = apply_homography(K[pair.j] @ Q @ np.linalg.inv(K[pair.i]), tracks.xy[pair.i, pair.common])
    return np.linalg.norm(pred - tracks.xy[pair.j, pair.common], axis=1)


class _RotationFocalCost:
    """Squared transfer errors of the rotation-only homographies K Q K^-1 of the pairs'
    homography inliers, as a function of the shared focal (each pair's rotation Q re-fitted
    for every focal); row weights (0 or 1) leave tracks out."""

    def __init__(self, tracks: Tracks, pairs: list[PairGeometry], height: int, width: int) -> None:
        counts = np.array([int(p.H_inliers.sum()) for p in pairs])
        self.pair_of = np.repeat(np.arange(len(pairs)), counts)
        self.starts = np.concatenate([[0], np.cumsum(counts)[:-1]])  # the pairs' rows are contiguous
        self.src = np.concatenate([tracks.xy[p.i, p.common[p.H_inliers]] for p in pairs])
        self.dst = np.concatenate([tracks.xy[p.j, p.common[p.H_inliers]] for p in pairs])
        self.num_pairs, self.height, self.width = len(pairs), height, width

    def __call__(self, focal: float, weights: np.ndarray | None = None) -> float:
        w = np.ones(len(self.src)) if weights is None else weights
        K = centred_K(focal, self.height, self.width)
        b_src, b_dst = bearings(self.src, K), bearings(self.dst, K)
        cross = np.add.reduceat(w[:, None, None] * b_dst[:, :, None] * b_src[:, None, :], self.starts, axis=0)
        H = K @ nearest_rotation(cross) @ np.linalg.inv(K)
        pred = np.einsum("nij,nj->ni", H[self.pair_of], np.concatenate([self.src, np.ones((len(self.src), 1))], 1))
        return float((w * ((pred[:, :2] / pred[:, 2:] - self.dst) ** 2).sum(1)).sum())


def _golden_log_search(
    cost: Callable[[float], float], focal: float, half_width: float = 0.1, iterations: int = 20
) -> float:
    """Minimiser of cost(f) by golden-section search on log f in [log focal +- half_width]."""
    lo, hi = np.log(focal) - half_width, np.log(focal) + half_width
    for _ in range(iterations):
        a, b = hi - 0.618 * (hi - lo), lo + 0.618 * (hi - lo)
        if cost(np.exp(a)) < cost(np.exp(b)):
            hi = b
        else:
            lo = a
    return float(np.exp(0.5 * (lo + hi)))


def rotation_focal(
    tracks: Tracks, pairs: list[PairGeometry], height: int, width: int, bias_px: float
) -> tuple[float, FocalUncertainty]:
    """Shared focal minimising `_RotationFocalCost`, and its uncertainty from the cost profile
    (systematic track error `bias_px`; no jackknife, see `_rotation_focal_jackknife`)."""
    cost = _RotationFocalCost(tracks, pairs, height, width)
    grid = max(height, width) * np.exp(np.linspace(np.log(0.2), np.log(5.0), 33))
    focal = _golden_log_search(cost, grid[int(np.argmin([cost(f) for f in grid]))])
    dof = 2 * len(cost.src) - 3 * cost.num_pairs - 1
    costs = cost(focal), cost(focal * (1 + FOCAL_STEP)), cost(focal / (1 + FOCAL_STEP))
    return focal, focal_uncertainty_from_costs(*costs, len(cost.src), dof, bias_px)


def _rotation_focal_jackknife(
    tracks: Tracks, pairs: list[PairGeometry], height: int, width: int, focal: float, grid: int
) -> float:
    """Jackknife relative standard deviation of the rotation-only focal, leaving out the tracks
    of one of grid x grid image regions at a time."""
    cost = _RotationFocalCost(tracks, pairs, height, width)
    regions = image_regions(0.5 * (cost.src + cost.dst), width, height, grid)
    log_focals = []
    for region in np.unique(regions):
        weights = (regions != region).astype(np.float64)
        log_focals.append(np.log(_golden_log_search(lambda f, w=weights: cost(f, w), focal)))
    return jackknife_log_std(np.array(log_focals))


def _average_rotations(relative: dict[tuple[int, int], tuple[np.ndarray, int]], num_frames: int) -> np.ndarray:
    """Camera-to-world rotations (R_0 = I) from relative rotations Q_ij = R_j^T R_i.

    Chains consecutive pairs, then Gauss-Newton on all pairs (weights: inlier counts) with
    updates R_t <- R_t exp([w_t]); the residual log(R_j^T R_i Q_ij^T) moves by
    R_j^T R_i w_i - w_j to first order.
    """
    R = np.tile(np.eye(3), (num_frames, 1, 1))
    for t in range(num_frames - 1):
        R[t + 1] = R[t] @ relative[(t, t + 1)][0].T
    for _ in range(10):
        rows, rhs = [], []
        for (i, j), (Q, weight) in relative.items():
            J = np.zeros((3, 3 * num_frames))
            J[:, 3 * i : 3 * i + 3] = R[j].T @ R[i]
            J[:, 3 * j : 3 * j + 3] -= np.eye(3)
            rows.append(np.sqrt(weight) * J[:, 3:])
            rhs.append(-np.sqrt(weight) * log_so3(R[j].T @ R[i] @ Q.T))
        step = np.linalg.lstsq(np.concatenate(rows), np.concatenate(rhs), rcond=None)[0].reshape(-1, 3)
        for t in range(1, num_frames):
            R[t] = R[t] @ exp_so3(step[t - 1])
        if np.abs(step).max() < 1e-9:
            break
    return R
