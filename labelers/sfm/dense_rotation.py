"""A slow rotation fitted to the dense flow's background (step 5 of `labelers.sfm`).

A camera that turns slowly in place (a handheld shot, a slow pan) in front of weakly textured
walls leaves its corners, and so its tracks, on whatever moves in front: the tracks then
determine neither the focal (`intrinsics_unobservable`) nor the camera, and a solution fitted
to them turns with the mover (one slow pan in a plain yard came out at 11 deg instead of 1.2).
The dense flow counts pixels by area, so the background outvotes the mover there, as in
`labelers.sfm.background`:

1. per flow pair (the pipeline gives the key pairs, a chain from the first frame to the last),
   the rotation-only homography K Q K^-1 fitted to grid samples of the valid flow: pycolmap's
   LO-RANSAC homography gives the inliers, the rotation then aligns their viewing directions
   and is refitted to the samples within `parallax_inlier_px`;
2. the background holds the rotation when, for every pair, at least `background_min_share`
   of the samples lie within `parallax_inlier_px`, on still regions of three of the four
   borders, the bottom one included (the near ground, where a translation shows first);
3. over the whole clip as well: the pairs' flows composed from the first frame to each later
   pair end (`labelers.flow.compose_flows`) must follow the chained rotation within
   `background_chain_px` on the same share and borders. A translation that no single pair shows
   adds up along the chain (a slow dolly's near floor), and the chained rotation's error with it.

Without given intrinsics the rotation uses the prior focal, which scales its angles by the
focal's error: the fit is only kept while the camera turns by at most `max_prior_rotation_deg`
per frame, as for the prior focal of a moving camera (`labelers.sfm.focal_prior`).

`SfmCamera` takes this rotation where the tracks fail with `intrinsics_unobservable`, and where
the tracks' cameras turn away from the background's at some key frame by more than
`max_track_rotation_gap_deg` (the tracks' pure rotation) or `max_translating_rotation_gap_deg`
(the tracks' translating camera: its translation may cancel part of its rotation's flow, an
orbit about a point ahead, but over a background that follows one rotation within
`background_chain_px` for the whole clip not by degrees); frames between the pairs' ends get
the rotation interpolated (slerp). Measured:
docs/benchmarks.md, "Session 23".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pycolmap
from scipy.spatial.transform import Rotation, Slerp

from labelers.camera import CameraResult
from labelers.flow import compose_flows
from labelers.geometry import nearest_rotation
from labelers.sfm.background import grid_samples
from labelers.sfm.common import (
    apply_homography,
    bearings,
    error_stats,
    image_regions,
    ransac_options,
    rotation_angle_deg,
)
from labelers.sfm.config import SfmConfig

if TYPE_CHECKING:
    from labelers.flow import PairFlows


@dataclass(frozen=True)
class PairRotation:
    """Rotation-only fit of one flow pair (i < j).

    Attributes:
        i, j: the pair's frames.
        Q: (3, 3) R_j^T R_i (camera-to-world rotations), the rotation that maps frame i's
            viewing directions to frame j's.
        residual_px: (M,) transfer residuals of the pair's flow samples under K Q K^-1.
        region: (M,) image region (`static_grid`) of each sample in frame i.
    """

    i: int
    j: int
    Q: np.ndarray
    residual_px: np.ndarray
    region: np.ndarray


@dataclass(frozen=True)
class BackgroundRotation:
    """What the dense background says of a slowly rotating camera (module docstring).

    Attributes:
        holds: whether the background follows a pure rotation over every pair and the whole clip.
        why_not: the first test that failed ("" when it holds).
        key_frames: (S,) frames at the pairs' ends, the first frame included.
        R_key: (S, 3, 3) camera-to-world rotations of those frames, R_key[0] = I.
        pair_inliers, pair_residual_px, pair_inlier_count: (P,) per pair, the share of samples
            within `parallax_inlier_px`, their median residual and their number (0 / NaN for
            the pairs after the first failed test).
        chain_inliers: (P,) per composed span from the first frame, the share within
            `background_chain_px`.
    """

    holds: bool
    why_not: str
    key_frames: np.ndarray
    R_key: np.ndarray
    pair_inliers: np.ndarray
    pair_residual_px: np.ndarray
    pair_inlier_count: np.ndarray
    chain_inliers: np.ndarray

    def max_rotation_per_frame_deg(self) -> float:
        """Largest rotation between two consecutive key frames, per frame between them."""
        steps = [rotation_angle_deg(self.R_key[n + 1].T @ self.R_key[n]) / (j - i)
                 for n, (i, j) in enumerate(zip(self.key_frames[:-1], self.key_frames[1:]))]
        return max(steps, default=0.0)

    def rotations(self, num_frames: int) -> np.ndarray:
        """(T, 3, 3) camera-to-world rotations of every frame, slerped between key frames."""
        slerp = Slerp(self.key_frames, Rotation.from_matrix(self.R_key))
        return slerp(np.arange(num_frames)).as_matrix()

    def diagnostics(self) -> dict[str, Any]:
        return {
            "background_rotation_holds": self.holds,
            "background_rotation_why_not": self.why_not,
            "background_pair_inliers_min": float(self.pair_inliers.min(initial=1.0)),
            "background_chain_inliers_min": float(self.chain_inliers.min(initial=1.0)),
            "background_rotation_per_frame_deg": self.max_rotation_per_frame_deg(),
        }


def _rotation_residuals(Q: np.ndarray, K: np.ndarray, xy_i: np.ndarray, xy_j: np.ndarray) -> np.ndarray:
    return np.linalg.norm(apply_homography(K @ Q @ np.linalg.inv(K), xy_i) - xy_j, axis=1)


def fit_pair_rotation(
    flow_px: np.ndarray, valid: np.ndarray, K: np.ndarray, i: int, j: int, cfg: SfmConfig
) -> PairRotation | None:
    """Rotation-only fit of one pair's flow (step 1 of the module docstring).

    Args:
        flow_px: (H, W, 2) flow from frame i to frame j; valid: (H, W) bool.
        K: (3, 3) intrinsics of both frames.

    Returns:
        The fit, or None with fewer than 16 samples or when RANSAC finds no homography.
    """
    xy_i, xy_j = grid_samples(flow_px, valid, cfg.mover_flow_samples)
    if len(xy_i) < 16:
        return None
    fit = pycolmap.estimate_homography_matrix(xy_i, xy_j, ransac_options(cfg, cfg.parallax_inlier_px))
    if fit is None:
        return None
    inliers = np.asarray(fit["inlier_mask"], bool).ravel()
    for _ in range(3):  # the rotation's own inliers, from the homography's
        Q = nearest_rotation(bearings(xy_j[inliers], K).T @ bearings(xy_i[inliers], K))
        residual = _rotation_residuals(Q, K, xy_i, xy_j)
        inliers = residual < cfg.parallax_inlier_px
        if inliers.sum() < 8:
            break
    height, width = valid.shape
    return PairRotation(i, j, Q, residual, image_regions(xy_i, width, height, cfg.static_grid))


def _still_regions(residual_px: np.ndarray, region: np.ndarray, limit_px: float, cfg: SfmConfig) -> np.ndarray:
    """(grid, grid) bool: regions with min_region_probes samples, min_still_fraction of them
    within limit_px."""
    grid = cfg.static_grid
    count = np.bincount(region, minlength=grid * grid).reshape(grid, grid)
    within = np.bincount(region, weights=(residual_px < limit_px).astype(np.float64), minlength=grid * grid)
    enough = within.reshape(grid, grid) >= cfg.min_still_fraction * np.maximum(count, 1)
    return (count >= cfg.min_region_probes) & enough


def _on_borders(still: np.ndarray) -> bool:
    """Still regions on three of the four borders, the bottom one included."""
    sides = np.array([still[0].any(), still[-1].any(), still[:, 0].any(), still[:, -1].any()])
    return bool(sides.sum() >= 3 and sides[1])


def background_rotation(flows: PairFlows, K: np.ndarray, cfg: SfmConfig) -> BackgroundRotation | None:
    """The background's rotation (module docstring), or None when the flow pairs do not chain
    the clip's frames from the first (key pairs (0, s), (s, 2s), ...).

    Args:
        flows: dense flows of the chained pairs.
        K: (3, 3) intrinsics (given, or the prior focal's).
    """
    pairs = [tuple(p) for p in np.asarray(flows.pairs).tolist()]
    if not pairs or pairs[0][0] != 0 or any(a[1] != b[0] for a, b in zip(pairs[:-1], pairs[1:])):
        return None
    flows = flows.without_across_only()
    key_frames = np.array([0] + [j for _, j in pairs])
    R_key = np.tile(np.eye(3), (len(key_frames), 1, 1))
    inliers, residuals, chain = np.zeros(len(pairs)), np.full(len(pairs), np.nan), np.zeros(len(pairs))
    counts = np.zeros(len(pairs), np.int64)
    why_not = ""
    flow, valid = None, None
    background_regions = np.ones((cfg.static_grid, cfg.static_grid), bool)
    for n, (i, j) in enumerate(pairs):
        fit = fit_pair_rotation(flows.flow_fwd_px[n], flows.valid_fwd[n], K, i, j, cfg)
        if fit is None:
            why_not = f"no rotation fits the flow of frames {i} and {j}"
            break
        R_key[n + 1] = R_key[n] @ fit.Q.T
        within = fit.residual_px < cfg.parallax_inlier_px
        inliers[n], counts[n] = within.mean(), within.sum()
        residuals[n] = float(np.median(fit.residual_px[within])) if counts[n] else np.nan
        still = _still_regions(fit.residual_px, fit.region, cfg.parallax_inlier_px, cfg)
        background_regions &= still
        if not (inliers[n] >= cfg.background_min_share and _on_borders(still)):
            why_not = (f"frames {i}-{j}: {inliers[n]:.0%} of the flow within {cfg.parallax_inlier_px} px of a "
                       "rotation" + ("" if _on_borders(still) else ", not on three borders and the bottom"))
            break
        flow, valid = ((flows.flow_fwd_px[n], flows.valid_fwd[n]) if flow is None
                       else compose_flows(flow, valid, flows.flow_fwd_px[n], flows.valid_fwd[n]))
        xy_0, xy_j = grid_samples(flow, valid, cfg.mover_flow_samples)
        if len(xy_0) < 16:
            why_not = f"the flows composed from frame 0 to frame {j} are valid on too few pixels"
            break
        residual = _rotation_residuals(R_key[n + 1].T, K, xy_0, xy_j)
        chain[n] = float((residual < cfg.background_chain_px).mean())
        chain_still = _still_regions(residual, image_regions(xy_0, valid.shape[1], valid.shape[0], cfg.static_grid),
                                     cfg.background_chain_px, cfg)
        lost = background_regions & ~chain_still
        if lost.any():  # still in every pair, yet not over the span: parallax adding up (a translation)
            r, c = np.argwhere(lost)[0]
            why_not = (f"frames 0-{j}: image region (row {r}, column {c}) follows the rotation in every pair "
                       f"but not within {cfg.background_chain_px} px over the span")
            break
    return BackgroundRotation(not why_not, why_not, key_frames, R_key, inliers, residuals, counts, chain)


def max_rotation_gap_deg(c2w: np.ndarray, background: BackgroundRotation) -> float:
    """Largest angle between a camera's rotations (T, 4, 4) and the background's at its key frames."""
    return max(rotation_angle_deg(c2w[t, :3, :3].T @ R) for t, R in zip(background.key_frames, background.R_key))


def background_rotation_result(
    background: BackgroundRotation, K: np.ndarray, K_given: bool, num_frames: int, diagnostics: dict, cfg: SfmConfig
) -> CameraResult:
    """Rotation-only cameras of every frame from the background (translations zero); static
    (c2w = I) when the rotation moves the background by less than `static_motion_px`."""
    max_rotation = max(rotation_angle_deg(R) for R in background.R_key)
    static = np.radians(max_rotation) * K[0, 0] < cfg.static_motion_px
    c2w = np.tile(np.eye(4), (num_frames, 1, 1))
    if not static:
        c2w[:, :3, :3] = background.rotations(num_frames)
    # each frame gets the numbers of the pair that ends at or spans it
    pair_of_frame = np.clip(np.searchsorted(background.key_frames, np.arange(num_frames)) - 1, 0, None)
    return CameraResult(
        c2w=c2w,
        K=np.tile(np.asarray(K, np.float64), (num_frames, 1, 1)),
        motion="static" if static else "rotation",
        registered=np.isin(np.arange(num_frames), background.key_frames),
        frame_inliers=background.pair_inlier_count[pair_of_frame],
        frame_reproj_px=background.pair_residual_px[pair_of_frame],
        reproj_px=error_stats(background.pair_residual_px[np.isfinite(background.pair_residual_px)]),
        intrinsics_source="given" if K_given else "prior",
        scale_note=("static camera: the dense flow's background moves by less than static_motion_px, c2w = I"
                    if static else
                    "pure rotation fitted to the dense flow's background: camera centres fixed at the origin"),
        diagnostics={**diagnostics, **background.diagnostics(), "max_rotation_deg": max_rotation,
                     "pure_rotation": not static, "nearly_static": static},
    )
