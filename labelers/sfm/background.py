"""Tracks on movers, told apart by the dense flow's background geometry (step 1b of `labelers.sfm`).

Corners follow texture, not area: a textured mover in front of weakly textured walls and
ground can hold a third or more of the tracks while covering a tenth of the image, and
bundle adjustment then bends the cameras towards it. The dense flow of the same frame pairs
counts pixels by area instead. Per given pair, a fundamental matrix is fitted with pycolmap's
LO-RANSAC to valid flow samples on a regular grid (`mover_flow_samples` of them, pixels
valid only across stripes left out): the background that fills the frame outvotes the mover.
A track whose positions in the two frames lie farther than `mover_epipolar_px` (Sampson
distance) from that epipolar geometry belongs to something that moves, and the camera is
fitted without it.

Only the tracks that contradict the geometry leave: a mover that moves along its epipolar
lines stays, as it does without the dense flow. Where the camera hardly moves, every fit is
near-degenerate and explains almost everything, so little is removed. Guards, each leaving
the tracks as they were: a pair whose fit explains fewer than `mover_min_pair_inliers` of its
samples (no dominant motion) is not used; the screen is not applied when it would remove more
than `max_mover_track_share` of the tracks (the dominant motion may then be a mover's) or leave
two consecutive frames fewer than `min_common_tracks` shared tracks.
`flow_relative_pose` refits a camera pair's pose to such flow, robustly; the QA's camera gate
takes it as the best any camera could do (`pipelines.quality.camera_flow_consistency`).
Measured: docs/benchmarks.md, "Session 15" (textured movers on plain ground) and "Session 16".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pycolmap
from scipy.optimize import least_squares
from scipy.spatial.transform import Rotation

from labelers.geometry import rigid_flow
from labelers.sfm.common import ransac_options
from labelers.sfm.config import SfmConfig
from labelers.sfm.tracks import Tracks

if TYPE_CHECKING:
    from labelers.flow import PairFlows


@dataclass(frozen=True)
class MoverScreen:
    """Which tracks contradict the background's epipolar geometry.

    Attributes:
        movers: (N,) bool tracks farther than `mover_epipolar_px` from some pair's geometry.
        pairs_used: frame pairs whose dense fit was used.
        applied: whether the tracks were removed (False when a guard held them back).
        skipped: why not, when not applied ("" otherwise).
    """

    movers: np.ndarray
    pairs_used: list[tuple[int, int]]
    applied: bool
    skipped: str = ""

    def screened(self, tracks: Tracks) -> Tracks:
        """The tracks without the movers' (their columns stay, unobserved) when applied."""
        if not self.applied or not self.movers.any():
            return tracks
        xy = tracks.xy.copy()
        xy[:, self.movers] = np.nan
        return replace(tracks, xy=xy)

    def diagnostics(self) -> dict[str, Any]:
        return {
            "mover_tracks": int(self.movers.sum()),
            "mover_track_share": float(self.movers.mean()) if self.movers.size else 0.0,
            "mover_pairs_used": len(self.pairs_used),
            "mover_screen_applied": self.applied,
            "mover_screen_skipped": self.skipped,
        }


def grid_samples(flow_px: np.ndarray, valid: np.ndarray, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """About `num_samples` valid pixels of a regular grid (M, 2) and their flow targets (M, 2), float64."""
    height, width = valid.shape
    step = max(1, int(round(np.sqrt(height * width / num_samples))))
    ys, xs = np.mgrid[step // 2 : height : step, step // 2 : width : step]
    keep = valid[ys, xs]
    xy = np.stack([xs[keep], ys[keep]], 1).astype(np.float64)
    return xy, xy + flow_px[ys[keep], xs[keep]].astype(np.float64)


def background_fundamental(
    flow_px: np.ndarray, valid: np.ndarray, cfg: SfmConfig
) -> tuple[np.ndarray, float] | None:
    """Fundamental matrix of the dominant motion of one dense flow, and the share of samples it explains.

    Args:
        flow_px: (H, W, 2) flow from frame i to frame j (LABELS.md pixel convention).
        valid: (H, W) bool pixels whose flow is trusted.

    Returns:
        (F (3, 3) with x_j^T F x_i = 0, inlier share), or None with fewer than 16 samples or
        when the fit fails.
    """
    xy_i, xy_j = grid_samples(flow_px, valid, cfg.mover_flow_samples)
    if len(xy_i) < 16:
        return None
    fit = pycolmap.estimate_fundamental_matrix(xy_i, xy_j, ransac_options(cfg, cfg.ransac_max_px))
    if fit is None:
        return None
    return np.asarray(fit["F"]), float(np.mean(fit["inlier_mask"]))


def sampson_distance_px(F: np.ndarray, xy_i: np.ndarray, xy_j: np.ndarray) -> np.ndarray:
    """(M,) first-order distance (pixels) of correspondences (M, 2) -> (M, 2) from x_j^T F x_i = 0."""
    h_i = np.concatenate([xy_i, np.ones((len(xy_i), 1))], 1)
    h_j = np.concatenate([xy_j, np.ones((len(xy_j), 1))], 1)
    line_j, line_i = h_i @ F.T, h_j @ F
    algebraic = np.sum(h_j * line_j, 1)
    norm = np.sqrt(line_j[:, 0] ** 2 + line_j[:, 1] ** 2 + line_i[:, 0] ** 2 + line_i[:, 1] ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norm > 0, np.abs(algebraic) / norm, np.inf)


def epipolar_distance_px(F: np.ndarray, xy_i: np.ndarray, xy_j: np.ndarray) -> np.ndarray:
    """(M,) distance (pixels) of the targets xy_j (M, 2) from the epipolar lines F x_i of their sources (M, 2)."""
    line_j = np.concatenate([xy_i, np.ones((len(xy_i), 1))], 1) @ F.T
    algebraic = np.sum(np.concatenate([xy_j, np.ones((len(xy_j), 1))], 1) * line_j, 1)
    norm = np.hypot(line_j[:, 0], line_j[:, 1])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(norm > 0, np.abs(algebraic) / norm, np.inf)


def pose_distance_px(
    xy_src: np.ndarray, xy_dst: np.ndarray, K_src: np.ndarray, K_dst: np.ndarray, src_to_dst: np.ndarray
) -> np.ndarray:
    """(M,) distance (pixels) of the targets xy_dst (M, 2) from the epipolar lines of their sources
    xy_src (M, 2) under a source-to-destination pose (4, 4); without translation, from where the
    rotation alone moves them."""
    rotation, translation = np.asarray(src_to_dst, np.float64)[:3, :3], np.asarray(src_to_dst, np.float64)[:3, 3]
    if np.linalg.norm(translation) > 0:
        return epipolar_distance_px(_fundamental_of_pose(K_src, K_dst, rotation, translation), xy_src, xy_dst)
    homography = K_dst @ rotation @ np.linalg.inv(K_src)
    moved = np.concatenate([xy_src, np.ones((len(xy_src), 1))], 1) @ homography.T
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.linalg.norm(moved[:, :2] / moved[:, 2:] - xy_dst, axis=1)


def _fundamental_of_pose(K_src: np.ndarray, K_dst: np.ndarray, rotation: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """F (3, 3), up to scale, of a source-to-destination pose (x_dst^T F x_src = 0)."""
    essential = pycolmap.essential_matrix_from_pose(pycolmap.Rigid3d(pycolmap.Rotation3d(rotation), translation))
    return np.linalg.inv(K_dst).T @ essential @ np.linalg.inv(K_src)


def flow_relative_pose(
    src_to_dst: np.ndarray,
    K_src: np.ndarray,
    K_dst: np.ndarray,
    xy_src: np.ndarray,
    xy_dst: np.ndarray,
    scales_px: tuple[float, ...] = (1.0, 0.1),
) -> np.ndarray:
    """The relative pose next to `src_to_dst` that best explains correspondences, robustly.

    Started from the given pose, rotation and direction of travel (the length of the
    translation is kept) are fitted to the targets' distances from their epipolar lines, or,
    for a pose without translation, the rotation alone to the targets' offsets from where the
    rotation moves each source pixel; a Cauchy loss, its scale lowered through `scales_px`, so
    that the fit ends near the median's minimum rather than the mean's. Five degrees of freedom
    (three without translation) against the fundamental matrix's seven: on the flow of a plane
    and a far sky a fitted fundamental matrix also fits part of the flow's noise.

    Args:
        src_to_dst: (4, 4) source-camera to destination-camera transform, the starting point.
        K_src, K_dst: (3, 3) intrinsics, kept.
        xy_src, xy_dst: (M, 2) pixel positions in the two images.

    Returns:
        (4, 4) the fitted transform.
    """
    rotation0 = np.asarray(src_to_dst, np.float64)[:3, :3]
    translation0 = np.asarray(src_to_dst, np.float64)[:3, 3]
    length = float(np.linalg.norm(translation0))
    direction0 = translation0 / length if length > 0 else translation0
    tangent = np.linalg.svd(direction0[None])[2][1:] if length > 0 else np.zeros((0, 3))
    src_h = np.concatenate([xy_src, np.ones((len(xy_src), 1))], 1)
    dst_h = np.concatenate([xy_dst, np.ones((len(xy_dst), 1))], 1)

    def pose(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rotation = Rotation.from_rotvec(x[:3]).as_matrix() @ rotation0
        if length == 0:
            return rotation, translation0
        direction = direction0 + tangent.T @ x[3:]
        return rotation, direction / np.linalg.norm(direction)

    def residuals_px(x: np.ndarray) -> np.ndarray:
        rotation, direction = pose(x)
        if length == 0:
            moved = src_h @ (K_dst @ rotation @ np.linalg.inv(K_src)).T
            return (moved[:, :2] / moved[:, 2:] - xy_dst).ravel()
        lines = src_h @ _fundamental_of_pose(K_src, K_dst, rotation, direction).T
        return np.sum(dst_h * lines, 1) / np.hypot(lines[:, 0], lines[:, 1])

    x = np.zeros(3 + len(tangent))
    for scale in scales_px:
        x = least_squares(residuals_px, x, loss="cauchy", f_scale=scale, x_scale=1e-3).x
    rotation, direction = pose(x)
    fitted = np.eye(4)
    fitted[:3, :3] = rotation
    fitted[:3, 3] = direction * length if length > 0 else translation0
    return fitted


# No pose is asked to explain a flow better than this: no label resolves it (`pipelines.quality`, `labelers.dynamic_mask`).
REFIT_FLOOR_PX = 0.05


@dataclass(frozen=True)
class BackgroundPoseRefit:
    """A relative pose refitted to the background of one flow field (`refit_to_background`).

    Attributes:
        src_to_dst: (4, 4) the refitted source-camera to destination-camera transform.
        given_px, refit_px, fundamental_px: median distance (pixels) of the background's flow
            targets from the epipolar lines of the given pose, of the refitted one and of the
            background's fundamental matrix (from the rotation-only positions for a pose
            without translation).
    """

    src_to_dst: np.ndarray
    given_px: float
    refit_px: float
    fundamental_px: float

    def epipolar_ratio(self, translating: bool, min_floor_px: float = REFIT_FLOOR_PX) -> float:
        """How many times worse the given pose explains the background than the best pose for it:
        `given_px` over the refit's distance, or the fundamental matrix's where that is lower on a
        translating pair (a refit stuck far away must not raise the floor), at least `min_floor_px`."""
        floor = min(self.refit_px, self.fundamental_px) if translating else self.refit_px
        return self.given_px / max(floor, min_floor_px)


def refit_to_background(
    flow_px: np.ndarray,
    flow_valid: np.ndarray,
    K_src: np.ndarray,
    K_dst: np.ndarray,
    src_to_dst: np.ndarray,
    sfm_config: SfmConfig | None = None,
) -> BackgroundPoseRefit | None:
    """The relative pose next to `src_to_dst` that best explains the background's flow.

    A fundamental matrix fitted to grid samples of the valid flow
    (`labelers.sfm.background.background_fundamental`: the background that fills the frame
    outvotes the movers) picks the background, the samples within `ransac_max_px` of its
    epipolar lines; the pose is then refitted to them (`flow_relative_pose`: rotation and
    direction of travel, the translation's length kept). Distances are measured on the same
    grid samples (about `mover_flow_samples`).

    Args:
        flow_px: (H, W, 2) F_{src->dst}; flow_valid: (H, W) bool.
        K_src, K_dst: (3, 3); src_to_dst: (4, 4) the given relative pose.
        sfm_config: the background fit's settings (`SfmConfig` defaults if None).

    Returns:
        the refit, or None without a background fit (too few valid samples).
    """
    cfg = sfm_config or SfmConfig()
    fit = background_fundamental(flow_px, flow_valid, cfg)
    if fit is None:
        return None
    xy, target = grid_samples(flow_px, flow_valid, cfg.mover_flow_samples)
    fundamental_px = epipolar_distance_px(fit[0], xy, target)
    given_px = pose_distance_px(xy, target, K_src, K_dst, src_to_dst)
    background = (fundamental_px <= cfg.ransac_max_px) & np.isfinite(given_px)
    if not background.any():
        return None
    refit = flow_relative_pose(src_to_dst, K_src, K_dst, xy[background], target[background])
    refit_px = pose_distance_px(xy[background], target[background], K_src, K_dst, refit)
    return BackgroundPoseRefit(
        refit, float(np.median(given_px[background])), float(np.median(refit_px)),
        float(np.median(fundamental_px[background])),
    )


def rigid_flow_support(
    flow_px: np.ndarray,
    flow_valid: np.ndarray,
    depth_src: np.ndarray,
    K_src: np.ndarray,
    K_dst: np.ndarray,
    src_to_dst: np.ndarray,
    tolerance_px: np.ndarray,
    stride_px: int = 2,
) -> tuple[int, int]:
    """How much of a flow field a relative pose explains as the rigid motion of a depth.

    On every `stride_px`-th pixel of both axes with valid flow and depth: how many lie within
    `tolerance_px` of the rigid flow of `depth_src` under `src_to_dst`. A background fit that a
    mover filling the frame holds (`refit_to_background`) leaves less of the flow rigid than the
    true pose does: a mover's flow is rigid under no pose with the camera's length of travel.

    Args:
        flow_px: (H, W, 2) F_{src->dst}; flow_valid: (H, W) bool.
        depth_src: (H, W) z-depth of the source frame in the unit of the pose's translation, 0 where invalid.
        K_src, K_dst: (3, 3); src_to_dst: (4, 4) source-camera to destination-camera transform.
        tolerance_px: (H, W) allowed distance from the rigid flow.

    Returns:
        (explained, usable): pixel counts on the strided grid.
    """
    usable = (flow_valid & (depth_src > 0))[::stride_px, ::stride_px]
    rigid_px, _ = rigid_flow(depth_src, K_src, np.eye(4), K_dst, np.linalg.inv(src_to_dst))
    with np.errstate(invalid="ignore"):
        near = np.linalg.norm(flow_px - rigid_px, axis=-1) <= tolerance_px
    return int((near[::stride_px, ::stride_px] & usable).sum()), int(usable.sum())


def screen_movers(tracks: Tracks, flows: PairFlows, cfg: SfmConfig) -> MoverScreen:
    """Flag the tracks that contradict the dense flows' background geometry (module docstring).

    Args:
        tracks: the clip's tracks (T frames).
        flows: dense flows of frame pairs of the same T frames (the pipeline gives the key-frame pairs).
    """
    num_frames, num_tracks = tracks.xy.shape[:2]
    pairs = np.asarray(flows.pairs)
    if pairs.size and (pairs.min() < 0 or pairs.max() >= num_frames):
        raise ValueError(f"flow pairs must index the {num_frames} frames, got pairs up to {int(pairs.max())}")
    flows = flows.without_across_only()
    movers = np.zeros(num_tracks, bool)
    used = []
    for n, (i, j) in enumerate(pairs.tolist()):
        fit = background_fundamental(flows.flow_fwd_px[n], flows.valid_fwd[n], cfg)
        if fit is None or fit[1] < cfg.mover_min_pair_inliers:
            continue
        both = np.nonzero(tracks.observed[i] & tracks.observed[j])[0]
        distance = sampson_distance_px(fit[0], tracks.xy[i, both], tracks.xy[j, both])
        movers[both[distance > cfg.mover_epipolar_px]] = True
        used.append((i, j))
    if not movers.any():
        return MoverScreen(movers, used, applied=False, skipped="no track contradicts the background")
    if movers.mean() > cfg.max_mover_track_share:
        return MoverScreen(movers, used, False, f"{movers.mean():.0%} of the tracks contradict the dominant "
                           f"motion, more than {cfg.max_mover_track_share:.0%}: it may be a mover's")
    kept = tracks.observed & ~movers[None]
    common = (kept[:-1] & kept[1:]).sum(1)
    if common.size and common.min() < cfg.min_common_tracks:
        t = int(np.argmin(common))
        return MoverScreen(movers, used, False, f"frames {t} and {t + 1} would share {int(common[t])} tracks, "
                           f"fewer than {cfg.min_common_tracks}")
    return MoverScreen(movers, used, applied=True)
