"""Fixed camera, tested first (step 0 of `labelers.sfm`), and the static results.

A large mover can hold most of the tracks, so the camera is fitted to the background, not to
the largest coherent motion. Probe corners per region of a `static_grid` x `static_grid` grid
(texture floor relative to the region, so a weak background gets probes beside a strong
mover), moved directly from frame i to j by pyramidal Lucas-Kanade over every consecutive
pair, every pair from frame 0 and the long baselines of the motion analysis. A region is
still when most of its probes move less than `static_motion_px` (lost probes count as
moving), or photometrically (`photometric_still_regions`): on a weakly textured wall the
corners are too faint to probe (the mover takes the region's probes) or to track, yet its
pixels stand still. There the region's unchanged pixels (patch change at the noise level)
are still when their change energy is below what a displacement of `static_motion_px`
would give them, their faint texture summed over the region; a textureless region says
nothing, a moving camera changes its textured pixels. The camera is fixed (`static`, c2w = I, intrinsics from `prior_fov_x_deg` unless
given) when, in `min_fixed_pairs` of the pairs, still regions lie on three of the four
borders of the grid, and in `min_bottom_pairs` of them on the bottom border. Why the bottom:
points at infinity (sky, distant scenery) stand still under a camera translation too, and
near the focus of expansion so do points at any depth; in ordinary footage those lie in the
upper and central image, while the nearest surface, at the bottom, moves with any
translation. Limits: a moving camera whose bottom border shows only something that moves
with it (a car's bonnet) can pass; a fixed camera whose bottom third is covered by a mover
most of the time, or whose background has no texture, or that shakes by more than
`static_motion_px`, falls through to the motion analysis (where a median track motion below
`static_motion_px` still makes it static, `static_result`). OpenCV's cup.mp4 is of the last
kind: its wall moves by about 1 % of the image height (0.5 deg) within 0.6 s (docs/benchmarks.md, "Fixed cameras in front of textureless walls").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from labelers.camera import CameraResult
from labelers.flow import image_noise_sigma
from labelers.sfm.common import centred_K, error_stats, prior_focal_px
from labelers.sfm.config import SfmConfig
from labelers.sfm.pairs import analysis_pairs
from labelers.sfm.tracks import Tracks, lk_step


@dataclass(frozen=True)
class FixedCameraEvidence:
    """What the still background says about a fixed camera (module docstring).

    Attributes:
        pairs: (P, 2) analysed frame pairs (i, j).
        num_probes: (P,) probe corners of frame i in each pair.
        still_fraction: (P,) share of the probes that moved less than `static_motion_px`.
        still_sides: (P, 4) bool, whether the top, bottom, left and right border regions
            hold a still region.
        frame_still: (T,) probes of frame 0 still in frame t (frame 0: all of them).
        frame_motion_px: (T,) mean displacement of those still probes from frame 0.
        still_motion_px: (M,) displacements from frame 0 of all of them, over every frame.
        min_fixed_pairs: share of the pairs that must show a still background.
        min_bottom_pairs: share of the pairs that must show it on the bottom border.
    """

    pairs: np.ndarray
    num_probes: np.ndarray
    still_fraction: np.ndarray
    still_sides: np.ndarray
    frame_still: np.ndarray
    frame_motion_px: np.ndarray
    still_motion_px: np.ndarray
    min_fixed_pairs: float = 0.9
    min_bottom_pairs: float = 0.5

    @property
    def pair_fixed(self) -> np.ndarray:
        """(P,) bool: still regions on at least three of the four borders."""
        return self.still_sides.sum(1) >= 3

    @property
    def fixed(self) -> bool:
        bottom = self.still_sides[:, 1].mean()
        return bool(self.pair_fixed.mean() >= self.min_fixed_pairs and bottom >= self.min_bottom_pairs)

    def diagnostics(self) -> dict[str, Any]:
        return {
            "fixed_camera": self.fixed,
            "static_fraction_min": float(self.still_fraction.min()),
            "static_fraction_median": float(np.median(self.still_fraction)),
            "static_sides_min": int(self.still_sides.sum(1).min()),
            "static_pairs_fixed": float(self.pair_fixed.mean()),
            "static_pairs_bottom_still": float(self.still_sides[:, 1].mean()),
            "static_probes_median": float(np.median(self.num_probes)),
        }


def fixed_camera_evidence(frames: np.ndarray, cfg: SfmConfig) -> FixedCameraEvidence:
    """Test whether the background stands still (module docstring).

    Probe corners are detected per image region with a texture floor relative to the region
    (`cfg.min_corner_eig` is the absolute floor), so a weakly textured background gets probes
    next to a strongly textured mover; each is moved directly from frame i to frame j by
    pyramidal Lucas-Kanade with the forward-backward check (a lost probe counts as moving).

    Args:
        frames: (T, H, W, 3) uint8 RGB.
    """
    num_frames, height, width = frames.shape[:3]
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    gray_f = [g.astype(np.float32) for g in gray]
    # 8-bit rounding (1/sqrt(12) level) is the noise floor of any frame
    noise_sigma = max(float(np.median([image_noise_sigma(g) for g in gray[:: max(1, num_frames // 4)]])), 12**-0.5)
    lk = {
        "winSize": (cfg.klt_window_px, cfg.klt_window_px),
        "maxLevel": cfg.klt_levels,
        "criteria": (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01),
    }
    pairs = sorted(analysis_pairs(num_frames) | {(0, t) for t in range(1, num_frames)})
    probes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    num_probes, still_fraction, still_sides = [], [], []
    frame_still = np.zeros(num_frames, np.int64)
    frame_motion = np.zeros(num_frames)
    still_motion = [np.zeros(0)]
    for i, j in pairs:
        if i not in probes:
            probes[i] = _region_probes(gray[i], cfg)
        xy, region = probes[i]
        still = np.zeros(len(xy), bool)
        motion = np.full(len(xy), np.inf)
        if len(xy):
            moved, keep = lk_step(gray[i], gray[j], xy, lk, cfg.fb_max_px)
            motion[keep] = np.linalg.norm(moved - xy[keep], axis=1)
            still = motion < cfg.static_motion_px
        num_probes.append(len(xy))
        still_fraction.append(float(still.mean()) if len(xy) else 0.0)
        photometric = photometric_still_regions(gray_f[i], gray_f[j], noise_sigma, cfg)
        still_sides.append(still_region_borders(region, still, cfg, photometric))
        if i == 0:
            frame_still[j] = int(still.sum())
            frame_motion[j] = float(motion[still].mean()) if still.any() else np.nan
            still_motion.append(motion[still])
    frame_still[0] = len(probes[0][0])
    return FixedCameraEvidence(
        np.array(pairs),
        np.array(num_probes),
        np.array(still_fraction),
        np.array(still_sides),
        frame_still,
        frame_motion,
        np.concatenate(still_motion),
        cfg.min_fixed_pairs,
        cfg.min_bottom_pairs,
    )


def _change_level(noise_sigma: float, cfg: SfmConfig) -> float:
    """RMS patch change (grey levels) that noise alone stays below: `static_noise_sigmas` x the
    noise of a frame difference (sqrt(2) sigma)."""
    return cfg.static_noise_sigmas * np.sqrt(2.0) * noise_sigma


def photometric_still_regions(
    gray_i: np.ndarray, gray_j: np.ndarray, noise_sigma: float, cfg: SfmConfig
) -> np.ndarray:
    """(grid, grid) bool: regions whose unchanged pixels moved less than `cfg.static_motion_px`.

    Unchanged pixels: RMS change of their patch (`cfg.patch_radius_px`) below `_change_level`;
    the movers are not (whatever the camera does), nor, under a moving camera, any textured
    patch. If a region's unchanged pixels moved by a common d, their change energy
    E = sum((I_j - I_i)^2) is at least d^T S d >= lambda_min(S) |d|^2 to first order (S: sum
    of their gradient outer products, Sobel / 8), noise only adding to it; so
    E < lambda_min(S) x static_motion_px^2 means |d| < static_motion_px. Faint texture counts
    through its sum over the region; a textureless region has lambda_min(S) ~ 0 and says
    nothing: it must see the displacement at least as clearly as one patch of texture at the
    noise level (lambda_min(S) x static_motion_px^2 >= patch area x `_change_level`^2).

    Args:
        gray_i, gray_j: (H, W) float32 grey frames i and j.
    """
    window = (2 * cfg.patch_radius_px + 1,) * 2
    level = _change_level(noise_sigma, cfg)
    change = gray_j - gray_i
    unchanged = np.sqrt(cv2.boxFilter(change**2, -1, window)) < level
    gx = cv2.Sobel(gray_i, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
    gy = cv2.Sobel(gray_i, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    grid = cfg.static_grid
    height, width = gray_i.shape
    still = np.zeros((grid, grid), bool)
    for row in range(grid):
        for col in range(grid):
            cell = (slice(row * height // grid, (row + 1) * height // grid),
                    slice(col * width // grid, (col + 1) * width // grid))
            keep = unchanged[cell]
            x, y = gx[cell][keep].astype(np.float64), gy[cell][keep].astype(np.float64)
            structure = np.array([[x @ x, x @ y], [x @ y, y @ y]])
            seen = float(np.linalg.eigvalsh(structure)[0]) * cfg.static_motion_px**2
            energy = float(np.sum(change[cell][keep].astype(np.float64) ** 2))
            still[row, col] = seen >= window[0] * window[1] * level**2 and energy < seen
    return still


def _region_probes(gray: np.ndarray, cfg: SfmConfig) -> tuple[np.ndarray, np.ndarray]:
    """Corners of each of the grid x grid image regions: positions (n, 2) float64 and region
    indices (n,) (row-major)."""
    height, width = gray.shape
    grid = cfg.static_grid
    spacing = max(3, int(round(cfg.track_spacing * max(height, width))))
    eig = cv2.cornerMinEigenVal(gray, 7, 3)
    xy, region = [], []
    for row in range(grid):
        for col in range(grid):
            mask = np.zeros(gray.shape, np.uint8)
            rows = slice(row * height // grid, (row + 1) * height // grid)
            mask[rows, col * width // grid : (col + 1) * width // grid] = 255
            corners = cv2.goodFeaturesToTrack(
                gray, cfg.static_probes_per_region, 0.01, spacing, mask=mask, blockSize=7
            )
            if corners is None:
                continue
            corners = corners.reshape(-1, 2).astype(np.float64)
            corners = corners[eig[corners[:, 1].astype(int), corners[:, 0].astype(int)] >= cfg.min_corner_eig]
            xy.append(corners)
            region.append(np.full(len(corners), row * grid + col))
    if not xy:
        return np.zeros((0, 2)), np.zeros(0, np.int64)
    return np.concatenate(xy), np.concatenate(region)


def still_region_borders(
    region: np.ndarray, still: np.ndarray, cfg: SfmConfig, photometric: np.ndarray | None = None
) -> np.ndarray:
    """(4,) bool: top, bottom, left, right border rows/columns of the region grid holding a still
    region (enough probes, most of them still; or, where given, photometrically still: (grid,
    grid) bool from `photometric_still_regions`)."""
    grid = cfg.static_grid
    count = np.bincount(region, minlength=grid * grid).reshape(grid, grid)
    num_still = np.bincount(region, weights=still.astype(np.float64), minlength=grid * grid).reshape(grid, grid)
    region_still = (count >= cfg.min_region_probes) & (num_still >= cfg.min_still_fraction * np.maximum(count, 1))
    if photometric is not None:
        region_still |= photometric
    return np.array(
        [region_still[0].any(), region_still[-1].any(), region_still[:, 0].any(), region_still[:, -1].any()]
    )


def fixed_result(
    evidence: FixedCameraEvidence, K_given: np.ndarray | None, height: int, width: int, cfg: SfmConfig
) -> CameraResult:
    """c2w = I from the fixed-camera test; the residual is how far the still probes moved from frame 0."""
    num_frames = len(evidence.frame_still)
    if K_given is None:
        K = np.tile(centred_K(prior_focal_px(width, cfg), height, width), (num_frames, 1, 1))
    else:
        K = K_given
    diagnostics = {**evidence.diagnostics(), "nearly_static": True, "pure_rotation": False}
    return CameraResult(
        c2w=np.tile(np.eye(4), (num_frames, 1, 1)),
        K=np.array(K, np.float64),
        motion="static",
        registered=np.ones(num_frames, bool),
        frame_inliers=evidence.frame_still.astype(np.int64),
        frame_reproj_px=np.nan_to_num(evidence.frame_motion_px, nan=np.inf),
        reproj_px=error_stats(evidence.still_motion_px),
        intrinsics_source="given" if K_given is not None else "prior",
        scale_note=(
            "static camera: the background stands still (the movers in front of it excepted), c2w = I for every frame"
        ),
        diagnostics=diagnostics,
    )


def static_result(
    tracks: Tracks, K_given: np.ndarray | None, height: int, width: int, cfg: SfmConfig, diagnostics: dict
) -> CameraResult:
    """c2w = I; the residual is how far tracks move from where they were first seen."""
    num_frames = tracks.xy.shape[0]
    if K_given is None:
        K = np.tile(centred_K(prior_focal_px(width, cfg), height, width), (num_frames, 1, 1))
    else:
        K = K_given
    first = np.argmax(tracks.observed, axis=0)
    motion = np.linalg.norm(tracks.xy - tracks.xy[first, np.arange(tracks.xy.shape[1])][None], axis=-1)
    seen = ~np.isnan(motion)
    frame_motion = np.array([m[s].mean() if s.any() else np.nan for m, s in zip(motion, seen)])
    return CameraResult(
        c2w=np.tile(np.eye(4), (num_frames, 1, 1)),
        K=np.array(K, np.float64),
        motion="static",
        registered=np.ones(num_frames, bool),
        frame_inliers=tracks.observed.sum(1).astype(np.int64),
        frame_reproj_px=frame_motion,
        reproj_px=error_stats(motion[seen]),
        intrinsics_source="given" if K_given is not None else "prior",
        scale_note="static camera: no measurable motion, c2w = I for every frame",
        diagnostics=diagnostics,
    )
