"""Weight-free structure from motion over one clip: KLT tracks, incremental SfM, pycolmap BA.

`SfmCamera` implements `labelers.camera.CameraEstimator` on CPU without weights:

0. Fixed camera, tested first (`fixed_camera_evidence`): a large mover can hold most of the
   tracks, so the camera is fitted to the background, not to the largest coherent motion.
   Probe corners per region of a `static_grid` x `static_grid` grid (texture floor relative to
   the region, so a weak background gets probes beside a strong mover), moved directly from
   frame i to j by pyramidal Lucas-Kanade over every consecutive pair, every pair from frame
   0 and the long baselines of step 2. A region is still when most of its probes move less
   than `static_motion_px` (lost probes count as moving). The camera is fixed (`static`,
   c2w = I, intrinsics from `prior_fov_x_deg` unless given) when, in `min_fixed_pairs` of
   the pairs, still regions lie on three of the four borders of the grid, and in
   `min_bottom_pairs` of them on the bottom border. Why the bottom: points at infinity
   (sky, distant scenery) stand still under a camera
   translation too, and near the focus of expansion so do points at any depth; in ordinary
   footage those lie in the upper and central image, while the nearest surface, at the
   bottom, moves with any translation. Limits: a moving camera whose bottom border shows
   only something that moves with it (a car's bonnet) can pass; a fixed camera whose
   bottom third is covered by a mover most of the time, or whose background has no texture,
   or that shakes by more than `static_motion_px`, falls through to step 2 (where a median
   track motion below `static_motion_px` still makes it static).
1. Tracks. Shi-Tomasi corners, moved frame to frame by pyramidal Lucas-Kanade (OpenCV) with
   a forward-backward check, then refined by an affine Lucas-Kanade fit of each track's
   first-frame patch (`_AffinePatches`); corners are re-detected where the image is not
   covered. A clip is a video: tracking consecutive frames is cheaper than matching
   descriptors between all pairs, and ties many frames together. The affine refinement
   matters: translation-only tracking drifts and is biased by the scaling of the patches
   (0.6 px after 16 frames of a synthetic dolly, radially, which BA reads as a focal
   change); against the first appearance with an affine warp the error stays under 0.1 px.
2. Motion class, from robust homographies and fundamental matrices (pycolmap LO-RANSAC, both
   with `parallax_inlier_px`) of many frame pairs: `static` when the median track moves less
   than `static_motion_px`; `general` when some pair shows translation, i.e. parallax (the
   homography explains fewer than `max_homography_ratio` of the tracks that the epipolar
   geometry explains, COLMAP's test for an initial pair, unless a rotation explains most
   tracks and a background spread over the image: a large mover that translates fits one
   fundamental matrix together with a rotating background) or motion that a homography explains
   but no rotation does (the median residual of the rotation-only homography K R K^-1 is at
   least `min_translation_px` and `translation_ratio` x the homography's: a translation towards
   a distant or flat scene); `rotation` otherwise. Without given intrinsics the rotation-only
   model uses the focal that fits it best.
3. General motion: incremental SfM. A two-view initialisation (pycolmap relative pose) on a
   pair with many tracks and parallax, then frames registered one by one by PnP with
   LO-RANSAC (pycolmap), tracks triangulated by linear multi-view triangulation, and global
   bundle adjustment with a Cauchy loss (pycolmap / Ceres) whenever the model grew by 50 %
   and at the end, each followed by the removal of outlier observations (moving objects,
   occlusion boundaries) with a threshold adapted to the track accuracy (`_filter`). BA of
   a forward-moving camera has local minima that depend on the initial pair, so the model is
   grown from the `num_init_pairs` best pairs and the more accurate one is kept (`_better`).
   Unknown intrinsics: one focal length for all frames, principal point at the image
   centre, refined in every global BA from a `prior_fov_x_deg` start. Whether it is trusted
   (`FocalUncertainty`): BA with the focal fixed at f (1 +- 5 %), poses and points
   re-optimised, gives the focal's signal s, the RMS displacement of the n observations that
   a 5 % focal error leaves. It is small, since a translating camera determines the focal only
   through its rotation: 0.0015 px for 17 frames of the synthetic 120x180 dolly (2 deg of
   rotation), 0.004 px for a 13 deg orbit, 0.012 px for 49 frames of a 240x360 dolly. Random
   track errors (sigma from the residual) give a relative standard deviation of
   log(1.05) sigma / (sqrt(n) s), but track errors are correlated, along a track (what the
   tracker leaves of drift and scale bias) and across a region (tracks of a moving object or
   of occlusion junctions that pass the outlier test and pull the focal): on the synthetic
   sweep (bench/bench_camera_sweep.py) the actual focal errors were up to 6 times that figure
   for the dollies (21 % off) and 28 times for an orbit whose moving object kept its tracks
   (8 % off). So the spread comes from a jackknife over image regions (BA without the tracks
   of one of `focal_jackknife_grid`^2 regions at a time; at least the random-error spread),
   and a systematic error of `focal_bias_px` (b) along the signal, which no resampling sees,
   adds log(1.05) b / s in quadrature (b = 0.001 px: the jackknife alone left errors up to
   2.7 times its figure). Above `max_focal_rel_std` the clip is rejected
   (`intrinsics_unobservable`). The jackknife (9 BAs: 0.5 to 2 s at 120x180, 1 to 4 s at
   240x360) runs only where the cheaper random-plus-systematic figure passes. Measured on the
   sweep (dolly and orbit, 120x180 and 240x360, T = 17, 25, 49, 8 scenes each, 96 clips): 59
   accepted, with focal errors of at most 2.8 % and at most 1.6 times the reported standard
   deviation (random errors only and a gate at 0.05 accepted all 96, 10 of them more than
   5 % off). Rejected: every 120x180 dolly with T <= 25 and 5 of 8 with T = 49, 7 of 8
   240x360 dollies with T = 17, 6 of 16 orbits with T = 17 and 3 of 16 with T = 25. The RRE
   and ATE targets hold on all 96, with the wrong focals too.
   A focal the tracks do not determine, with `unknown_focal` "prior" (the default is "reject"):
   the reason that hides the focal from the tracks partly hides its error in the labels. A
   camera moving forwards sees the z-depth of a point from the radial expansion about the
   focus of expansion, which does not depend on the focal; a wrong focal bends the small
   rotation and the lateral translation. So bundle adjustment runs once more with the focal
   fixed at `prior_fov_x_deg` (from the estimated-focal model, then outlier filter and BA
   again), and the clip is labelled with `intrinsics_source` "prior" (the estimate, the prior
   and the tests below in the diagnostics) unless one of three tests rejects it
   (`intrinsics_unobservable`): (1) the camera turns by more than `max_prior_rotation_deg`
   per frame: rotation angles scale with the focal's error (an orbit of 0.8 deg per frame
   with the 60 deg prior 21 % off: RRE 0.15 deg at a fit ratio of 1.07, which test 2 does not
   see); (2) the tracks contradict the prior: median reprojection error above
   `max_prior_reproj_ratio` times the estimate's (a dolly given a focal 15 % long: 0.10 px
   against 0.023 px, RRE 0.19 deg); (3) the depth depends on the focal: fewer than
   `min_prior_depth_agreement` of the points keep their median-normalised depth within 1.25
   between the prior's model and the estimate's, or the prior's re-adjusted at (1 +-
   `prior_focal_span`) times the prior. Far points are what a wrong focal bends: their
   parallax is small against the error it leaves in the rotation. Measured on 8 dollies at
   240x360, T = 17, true field of view 55-85 deg, rooms and open yards (prior 60 deg, so the
   prior is -10 % to +59 % off; dense depth from the default pipeline, compare_labels): one
   accepted with an estimated focal (4 % off); 4 labelled with the prior, RRE <= 0.029 deg,
   ATE <= 0.47 %, depth delta1.25 equal to the true focal's (room 70 deg, 21 % off: 0.9986
   both; room 55 deg: 0.983 both); 3 open yards rejected by test 3 (point agreement 0.957 -
   0.989), whose dense depth with the prior was 0.92, 0.85 and 0.73 (0.99, 0.99, 0.97 with
   the true focal), although their cameras met the targets (RRE <= 0.049 deg, ATE <= 0.11 %).
   A room at 85 deg with the focal 59 % off: depth delta1.25 0.9976 (true focal 0.9977). The
   sweep (bench/bench_camera_sweep.py, command in its docstring, 10 other dollies): 1
   estimated (2 % off), 6 with the prior (4-59 % off, RRE <= 0.047 deg, ATE <= 0.085 %), the
   3 open yards of 70-85 deg rejected by test 3; the 2 open yards of 55 and 62 deg passed it
   with depth delta1.25 0.986 and 0.987 (0.990 and 0.989 with the true focal).
   Limits: test 3 uses the sparse points, which feel the focal less than dense depth does
   (an open yard with the prior exact passed it at +-20 %, while another's dense depth fell
   to 0.92 with its focal 15 % short): the prior's depth is not guaranteed, only measured on
   these clips; and lateral 3D coordinates (x = z (u - cx) / f) scale with the focal's
   error, so point maps and scene flow are off by it. Hence "reject" by default.
4. Pure rotation: relative rotations of frame pairs aligning the viewing directions of their
   tracks (orthogonal Procrustes), the focal (when not given) minimising the transfer error
   of the rotation-only homographies K R K^-1, then rotation averaging (Gauss-Newton on
   SO(3)); translations are zero. An estimated focal is trusted as in step 3, from the
   transfer-error profile and a jackknife over image regions (a pure pan of 17 frames at
   120x180 leaves a signal of 0.05 px: errors under 0.5 %); rotation angles scale with it.

Why not pycolmap's own incremental mapper: it starts from descriptor matches in a database
and tunes its thresholds for unordered photo collections (large initial triangulation
angles, focal priors from EXIF); here the frames are ordered and close, the tracks are
known, and the pure-rotation and static cases need their own answers. pycolmap provides the
robust estimators and the bundle adjuster, the parts that must be well kept; everything
runs in one process on one core by default (`num_threads`), as a Ray worker wants.

Scale (one per clip, `metric_scale = False`): after expressing everything in first-frame
coordinates, the median z-depth of the reconstructed points seen in frame 0 is 1 (of all
reconstructed points, in frame 0's camera, when frame 0 sees fewer than 10).
Pixel convention: LABELS.md puts pixel centres at integer coordinates, COLMAP at +0.5; the
conversion happens at the pycolmap boundary only (`_COLMAP_OFFSET`).
Limits: pinhole cameras only (lens distortion is not modelled; a distorted pure rotation
may be classed as general motion), one focal per clip when estimated (no zoom).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import cv2
import numpy as np
import pycolmap

from labelers.camera import CameraFailure, CameraResult, check_camera_inputs
from labelers.geometry import nearest_rotation

__all__ = [
    "SfmConfig",
    "SfmCamera",
    "Tracks",
    "FocalUncertainty",
    "PairGeometry",
    "MotionAnalysis",
    "track_klt",
    "analyse_motion",
]

_COLMAP_OFFSET = 0.5  # COLMAP pixel (0.5, 0.5) is the centre of the top-left pixel


@dataclass(frozen=True)
class SfmConfig:
    """Parameters of `SfmCamera` (serialisable; they go into the clip's `labelers` attribute).

    Attributes:
        max_tracks: most corners tracked at once.
        track_spacing: minimum distance between corners, as a fraction of max(H, W).
        min_corner_eig: minimum eigenvalue of a corner's structure tensor (cv2.cornerMinEigenVal,
            7x7 block): an absolute texture floor, so that noise on flat images is not tracked.
        klt_window_px, klt_levels: Lucas-Kanade window and pyramid levels.
        patch_radius_px: half size of the patches of the affine refinement.
        max_patch_residual: RMS difference of the normalised (zero-mean, unit-variance) patch
            and its first appearance above which a track ends (occlusion, appearance change).
        fb_max_px: forward-backward tracking error above which a track ends.
        min_features: fewer corners than this in a typical frame rejects the clip (texture).
        min_common_tracks: consecutive frames sharing fewer tracks reject the clip.
        static_motion_px: a point moving less than this between two frames is still; median
            track motion below it makes the camera static.
        static_grid, static_probes_per_region, min_region_probes, min_still_fraction: the
            fixed-camera test (module docstring, step 0): probe corners in each of
            static_grid x static_grid image regions, at most static_probes_per_region each; a
            region with at least min_region_probes probes is still when at least
            min_still_fraction of them do not move; the camera is fixed when at least
            min_fixed_pairs of the analysed frame pairs show still regions on three of the four
            borders, and min_bottom_pairs of them on the bottom border.
        parallax_inlier_px, max_homography_ratio, min_translation_px, translation_ratio: when
            a frame pair shows translation (module docstring, step 2).
        ransac_max_px: inlier threshold of the two-view and PnP estimators.
        max_reproj_px, min_reproj_px, outlier_factor: observations reprojecting farther than
            outlier_factor x the median reprojection error, clipped to [min_reproj_px,
            max_reproj_px], are outliers (not in bundle adjustment).
        min_tri_angle_deg: points seen under a smaller angle are not kept.
        min_registered_fraction: fewer registered frames reject the clip.
        num_init_pairs: initial pairs the reconstruction is grown from (the best result is kept).
        max_median_reproj_px: a larger median final reprojection error rejects the clip.
        prior_fov_x_deg: horizontal field of view that starts the focal estimation (and that
            a static camera without given intrinsics reports, flagged `prior`).
        min_fov_x_deg, max_fov_x_deg: an estimated focal outside this field-of-view range
            rejects the clip (a BA that drifts along the focal-depth ambiguity ends far out).
        focal_bias_px: systematic track error (RMS, pixels) that does not average out over
            tracks, in the uncertainty of an estimated focal (module docstring, step 3).
        focal_jackknife_grid: the jackknife of an estimated focal leaves out the tracks of
            one of grid x grid image regions at a time.
        max_focal_rel_std: an estimated focal less certain than this rejects the clip, or,
            with `unknown_focal` "prior", makes it fall back to the prior focal.
        unknown_focal: what a moving camera gets when the tracks do not determine the focal
            (module docstring, step 3): "reject" (`intrinsics_unobservable`) or "prior" (bundle
            adjustment with the focal fixed at `prior_fov_x_deg`, `intrinsics_source` "prior",
            when the tracks do not contradict it).
        max_prior_reproj_ratio: with the prior focal, a median reprojection error above this
            times the estimated focal's rejects the clip (the tracks contradict the prior).
        max_prior_rotation_deg: with the prior focal, a mean rotation between consecutive
            frames above this rejects the clip: rotation angles scale with the focal's error
            (0.8 deg per frame and a focal 21 % off gave RRE 0.15 deg), so only a camera that
            turns little keeps RRE <= 0.1 deg with a focal up to 50 % off.
        prior_focal_span, min_prior_depth_agreement: with the prior focal, fewer than
            min_prior_depth_agreement of the reconstructed points keeping their (median-
            normalised) depth within a factor 1.25 when the focal is (1 +- prior_focal_span)
            times the prior, or at the estimate, rejects the clip: its depth depends on the focal.
        num_threads: Ceres threads in bundle adjustment.
        seed: RANSAC seed (results are deterministic).
    """

    max_tracks: int = 1500
    track_spacing: float = 0.02
    min_corner_eig: float = 3e-4
    klt_window_px: int = 15
    klt_levels: int = 3
    patch_radius_px: int = 6
    max_patch_residual: float = 0.5
    fb_max_px: float = 0.5
    min_features: int = 40
    min_common_tracks: int = 20
    static_motion_px: float = 0.5
    static_grid: int = 3
    static_probes_per_region: int = 16
    min_region_probes: int = 3
    min_still_fraction: float = 0.5
    min_fixed_pairs: float = 0.9
    min_bottom_pairs: float = 0.5
    parallax_inlier_px: float = 0.5
    max_homography_ratio: float = 0.75
    min_translation_px: float = 1.0
    translation_ratio: float = 2.0
    ransac_max_px: float = 1.0
    max_reproj_px: float = 2.0
    min_reproj_px: float = 0.3
    outlier_factor: float = 5.0
    min_tri_angle_deg: float = 0.5
    min_registered_fraction: float = 0.8
    num_init_pairs: int = 2
    max_median_reproj_px: float = 1.0
    prior_fov_x_deg: float = 60.0
    min_fov_x_deg: float = 20.0
    max_fov_x_deg: float = 120.0
    focal_bias_px: float = 0.001
    focal_jackknife_grid: int = 3
    max_focal_rel_std: float = 0.02
    unknown_focal: str = "reject"
    max_prior_reproj_ratio: float = 1.5
    max_prior_rotation_deg: float = 0.2
    prior_focal_span: float = 0.2
    min_prior_depth_agreement: float = 0.995
    num_threads: int = 1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_tracks < 8 or not 0 < self.track_spacing < 0.5:
            raise ValueError("max_tracks must be >= 8 and track_spacing in (0, 0.5)")
        if self.patch_radius_px < 2 or self.num_init_pairs < 1:
            raise ValueError("patch_radius_px must be >= 2 and num_init_pairs >= 1")
        if not 0 < self.min_fov_x_deg <= self.prior_fov_x_deg <= self.max_fov_x_deg < 180:
            raise ValueError(
                "need 0 < min_fov_x_deg <= prior_fov_x_deg <= max_fov_x_deg < 180, got "
                f"{self.min_fov_x_deg}, {self.prior_fov_x_deg}, {self.max_fov_x_deg}"
            )
        if self.focal_bias_px < 0 or self.max_focal_rel_std <= 0 or self.focal_jackknife_grid < 2:
            raise ValueError("need focal_bias_px >= 0, max_focal_rel_std > 0 and focal_jackknife_grid >= 2")
        if self.unknown_focal not in ("reject", "prior") or not (
            self.max_prior_reproj_ratio >= 1 and self.max_prior_rotation_deg > 0 and self.prior_focal_span > 0
            and 0 <= self.min_prior_depth_agreement <= 1
        ):
            raise ValueError(
                "need unknown_focal 'reject' or 'prior', max_prior_reproj_ratio >= 1, max_prior_rotation_deg > 0, "
                "prior_focal_span > 0 and min_prior_depth_agreement in [0, 1], got "
                f"{self.unknown_focal!r}, {self.max_prior_reproj_ratio}, {self.max_prior_rotation_deg}, "
                f"{self.prior_focal_span}, {self.min_prior_depth_agreement}"
            )
        if self.static_grid < 3 or self.static_probes_per_region < 1 or self.min_region_probes < 1:
            raise ValueError("need static_grid >= 3, static_probes_per_region >= 1 and min_region_probes >= 1")
        if not all(0 < v <= 1 for v in (self.min_still_fraction, self.min_fixed_pairs, self.min_bottom_pairs)):
            raise ValueError("min_still_fraction, min_fixed_pairs and min_bottom_pairs must be in (0, 1]")
        if not 0 < self.min_registered_fraction <= 1:
            raise ValueError(f"min_registered_fraction must be in (0, 1], got {self.min_registered_fraction}")


# --------------------------------------------------------------------------- tracks
@dataclass(frozen=True)
class Tracks:
    """Feature tracks of a clip.

    Attributes:
        xy: (T, N, 2) float64 pixel positions (LABELS.md convention), NaN where a track is absent.
        detected: (T,) int, corners found (tracked + new) in each frame.
    """

    xy: np.ndarray
    detected: np.ndarray

    @property
    def observed(self) -> np.ndarray:
        """(T, N) bool."""
        return ~np.isnan(self.xy[..., 0])


def track_klt(frames: np.ndarray, cfg: SfmConfig) -> Tracks:
    """Track corners through the clip (see the module docstring, step 1).

    Args:
        frames: (T, H, W, 3) uint8 RGB.

    Raises:
        CameraFailure: too_little_texture (few corners), too_few_tracks (tracking lost).
    """
    num_frames, height, width = frames.shape[:3]
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    spacing = max(3, int(round(cfg.track_spacing * max(height, width))))
    lk = {
        "winSize": (cfg.klt_window_px, cfg.klt_window_px),
        "maxLevel": cfg.klt_levels,
        "criteria": (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01),  # the affine fit refines
    }
    patches = _AffinePatches(cfg.patch_radius_px)
    margin = cfg.patch_radius_px + 1  # patches stay inside the image: clamped pixels would bias them
    positions: list[np.ndarray] = []  # per frame: (n, 2) float64
    ids: list[np.ndarray] = []
    detected = np.zeros(num_frames, np.int64)
    active = _ActiveTracks.empty(patches.num_pixels)
    next_id = 0
    for t in range(num_frames):
        image = gray[t].astype(np.float32)
        if t > 0 and len(active.ids):
            moved, keep = _lk_step(gray[t - 1], gray[t], active.xy, lk, cfg.fb_max_px)
            active = active.select(keep)
            active.warp[:, :, 2] = moved
            active.warp, residual = patches.refine(
                image, active.warp, active.template, active.steepest, active.hessian_inv
            )
            keep = _plausible(active.warp, residual, moved, cfg.max_patch_residual, margin, width, height)
            active = active.select(keep)
        new = _detect_corners(gray[t], active.xy, cfg.max_tracks - len(active.ids), spacing, margin, cfg.min_corner_eig)
        active = active.extend(patches, image, new, np.arange(next_id, next_id + len(new)))
        next_id += len(new)
        detected[t] = len(active.ids)
        positions.append(active.xy.copy())
        ids.append(active.ids.copy())
    if np.median(detected) < cfg.min_features:
        raise CameraFailure(
            "too_little_texture",
            f"a typical frame has {int(np.median(detected))} trackable corners, fewer than {cfg.min_features}",
        )
    xy = np.full((num_frames, next_id, 2), np.nan)
    for t in range(num_frames):
        xy[t, ids[t]] = positions[t]
    tracks = Tracks(xy, detected)
    common = (tracks.observed[:-1] & tracks.observed[1:]).sum(1)
    if common.size and common.min() < cfg.min_common_tracks:
        t = int(np.argmin(common))
        raise CameraFailure(
            "too_few_tracks",
            f"frames {t} and {t + 1} share {int(common[t])} tracks, fewer than {cfg.min_common_tracks}",
        )
    return tracks


@dataclass
class _ActiveTracks:
    """Tracks alive in the current frame: ids, affine warps (n, 2, 3) from template to image
    coordinates (column 2 is the track position) and the templates' precomputed terms."""

    ids: np.ndarray
    warp: np.ndarray
    template: np.ndarray
    steepest: np.ndarray
    hessian_inv: np.ndarray

    @classmethod
    def empty(cls, num_pixels: int) -> "_ActiveTracks":
        return cls(
            np.zeros(0, np.int64),
            np.zeros((0, 2, 3)),
            np.zeros((0, num_pixels)),
            np.zeros((0, num_pixels, 6)),
            np.zeros((0, 6, 6)),
        )

    @property
    def xy(self) -> np.ndarray:
        return self.warp[:, :, 2]

    def select(self, keep: np.ndarray) -> "_ActiveTracks":
        return _ActiveTracks(
            self.ids[keep], self.warp[keep], self.template[keep], self.steepest[keep], self.hessian_inv[keep]
        )

    def extend(self, patches: "_AffinePatches", image: np.ndarray, xy: np.ndarray, ids: np.ndarray) -> "_ActiveTracks":
        if len(xy) == 0:
            return self
        warp = np.zeros((len(xy), 2, 3))
        warp[:, 0, 0] = warp[:, 1, 1] = 1.0
        warp[:, :, 2] = xy
        template, steepest, hessian_inv = patches.template(image, xy)
        return _ActiveTracks(
            np.concatenate([self.ids, ids]),
            np.concatenate([self.warp, warp]),
            np.concatenate([self.template, template]),
            np.concatenate([self.steepest, steepest]),
            np.concatenate([self.hessian_inv, hessian_inv]),
        )


class _AffinePatches:
    """Inverse-compositional affine Lucas-Kanade (Baker and Matthews) of square patches
    against each track's first appearance, with normalised (zero-mean, unit-variance)
    intensities. Tracking against the first appearance does not drift, and the affine warp
    absorbs the patch's scaling and shearing, which bias translation-only tracking
    systematically (radially for a camera moving forwards)."""

    def __init__(self, radius: int, iterations: int = 8) -> None:
        r = np.arange(-radius, radius + 1, dtype=np.float64)
        v, u = np.meshgrid(r, r, indexing="ij")
        self.uv = np.stack([u.ravel(), v.ravel()], -1)  # (P, 2) template coordinates
        self.radius = radius
        self.iterations = iterations

    @property
    def num_pixels(self) -> int:
        return len(self.uv)

    def template(self, image: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normalised patches (n, P), steepest-descent images (n, P, 6), inverse Hessians (n, 6, 6)."""
        n, side = len(xy), 2 * self.radius + 3
        r = np.arange(-self.radius - 1, self.radius + 2, dtype=np.float64)
        v, u = np.meshgrid(r, r, indexing="ij")
        grid = np.stack([u.ravel(), v.ravel()], -1)
        patch = _sample(image, xy[:, None, :] + grid[None]).reshape(n, side, side).astype(np.float64)
        gx = 0.5 * (patch[:, 1:-1, 2:] - patch[:, 1:-1, :-2]).reshape(n, -1)
        gy = 0.5 * (patch[:, 2:, 1:-1] - patch[:, :-2, 1:-1]).reshape(n, -1)
        template = patch[:, 1:-1, 1:-1].reshape(n, -1)
        std = template.std(1, keepdims=True) + 1e-6
        template = (template - template.mean(1, keepdims=True)) / std
        gx, gy = gx / std, gy / std
        u, v = self.uv[:, 0], self.uv[:, 1]
        steepest = np.stack([gx * u, gx * v, gx, gy * u, gy * v, gy], -1)
        hessian = steepest.transpose(0, 2, 1) @ steepest + 1e-6 * np.eye(6)
        return template, steepest, np.linalg.inv(hessian)

    def refine(
        self, image: np.ndarray, warp: np.ndarray, template: np.ndarray, steepest: np.ndarray, hessian_inv: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Refined warps (n, 2, 3) and the RMS normalised residual (n,) of each patch.

        Each patch iterates until its translation update is below 1e-3 px.
        """
        warp = warp.copy()
        uv1 = np.concatenate([self.uv, np.ones((len(self.uv), 1))], 1)
        todo = np.arange(len(warp))
        for _ in range(self.iterations):
            if len(todo) == 0:
                break
            error = self._normalised(image, warp[todo], uv1) - template[todo]
            dp = (hessian_inv[todo] @ (steepest[todo].transpose(0, 2, 1) @ error[..., None]))[..., 0]
            dp[~np.isfinite(dp).all(1) | (np.abs(dp[:, [2, 5]]).max(1) > 2.0)] = 0.0
            step = np.zeros((len(todo), 3, 3))
            step[:, :2] = dp.reshape(-1, 2, 3) + np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
            step[:, 2, 2] = 1.0
            # inverse compositional update: W <- W o dW^-1, with [a b tx; c d ty] rows
            inv_step = np.linalg.inv(step)
            warp[todo] = warp[todo, :, :2] @ inv_step[:, :2, :] + np.concatenate(
                [np.zeros((len(todo), 2, 2)), warp[todo, :, 2:]], axis=2
            )
            todo = todo[np.abs(dp[:, [2, 5]]).max(1) >= 1e-3]
        residual = np.sqrt(((self._normalised(image, warp, uv1) - template) ** 2).mean(1))
        return warp, residual

    @staticmethod
    def _normalised(image: np.ndarray, warp: np.ndarray, uv1: np.ndarray) -> np.ndarray:
        values = _sample(image, uv1[None] @ warp.transpose(0, 2, 1))
        return (values - values.mean(1, keepdims=True)) / (values.std(1, keepdims=True) + 1e-6)


def _sample(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear samples (float32) of a float32 image at (..., 2) positions, clamped to the image
    (the patches of tracks near the border: their positions are checked separately)."""
    height, width = image.shape
    x = np.clip(xy[..., 0], 0, width - 1.000001)
    y = np.clip(xy[..., 1], 0, height - 1.000001)
    x0, y0 = x.astype(np.int32), y.astype(np.int32)  # floor: x, y >= 0
    fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
    flat = image.ravel()
    i = y0 * width + x0
    a, b, c, d = flat.take(i), flat.take(i + 1), flat.take(i + width), flat.take(i + width + 1)
    top = a + fx * (b - a)
    bottom = c + fx * (d - c)
    return top + fy * (bottom - top)


def _plausible(
    warp: np.ndarray, residual: np.ndarray, lk_xy: np.ndarray, max_residual: float, margin: int, width: int, height: int
) -> np.ndarray:
    """Tracks whose patch still matches, whose warp stays a mild deformation that moved the
    position by less than a pixel from the Lucas-Kanade estimate, `margin` pixels inside the image."""
    singular = np.linalg.svd(warp[:, :, :2], compute_uv=False)
    xy = warp[:, :, 2]
    u, v = xy[:, 0], xy[:, 1]
    inside = (u >= margin) & (u <= width - 1 - margin) & (v >= margin) & (v <= height - 1 - margin)
    mild = (singular[:, 1] > 0.5) & (singular[:, 0] < 2.0)
    near = np.linalg.norm(xy - lk_xy, axis=1) <= 1.0
    return np.isfinite(xy).all(1) & inside & mild & near & (residual <= max_residual)


def _lk_step(
    gray0: np.ndarray, gray1: np.ndarray, xy: np.ndarray, lk: dict, fb_max_px: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pyramidal LK from gray0 to gray1 with the forward-backward check: new positions of the
    kept tracks and the keep mask (the affine refinement then sharpens the positions)."""
    pos = xy.astype(np.float32).reshape(-1, 1, 2)
    fwd, st_f, _ = cv2.calcOpticalFlowPyrLK(gray0, gray1, pos, None, **lk)
    bwd, st_b, _ = cv2.calcOpticalFlowPyrLK(gray1, gray0, fwd, None, **lk)
    fb_err = np.linalg.norm((bwd - pos).reshape(-1, 2), axis=1)
    keep = (st_f.ravel() == 1) & (st_b.ravel() == 1) & (fb_err < fb_max_px)
    return fwd.reshape(-1, 2)[keep].astype(np.float64), keep


def _detect_corners(
    gray: np.ndarray, pos: np.ndarray, budget: int, spacing: int, margin: int, min_eig: float
) -> np.ndarray:
    """New corners (float64) at least `spacing` pixels away from the tracked ones and `margin`
    pixels inside the image."""
    if budget <= 0:
        return np.zeros((0, 2))
    mask = np.zeros(gray.shape, np.uint8)
    mask[margin:-margin, margin:-margin] = 255
    for u, v in np.round(pos).astype(int):
        cv2.circle(mask, (int(u), int(v)), spacing, 0, -1)
    corners = cv2.goodFeaturesToTrack(gray, budget, 0.01, spacing, mask=mask, blockSize=7)
    if corners is None:
        return np.zeros((0, 2))
    corners = corners.reshape(-1, 2)
    eig = cv2.cornerMinEigenVal(gray, 7, 3)
    strong = eig[corners[:, 1].astype(int), corners[:, 0].astype(int)] >= min_eig
    return corners[strong].astype(np.float64)


# --------------------------------------------------------------------------- focal uncertainty
_FOCAL_STEP = 0.05  # relative focal change of the cost profile


@dataclass(frozen=True)
class FocalUncertainty:
    """How well the tracks determine an estimated focal length (module docstring, step 3).

    Attributes:
        signal_px: RMS displacement of the observations that a 5 % focal change causes when
            every other unknown is re-optimised (what the focal leaves in the data).
        random_px: RMS track error along that displacement from independent errors,
            sigma / sqrt(n) over n observations.
        bias_px: systematic track error along it (`SfmConfig.focal_bias_px`).
        jackknife_rel_std: relative standard deviation of the focal from the spatial
            jackknife, NaN when not computed.
    """

    signal_px: float
    random_px: float
    bias_px: float
    jackknife_rel_std: float = float("nan")

    @property
    def rel_std(self) -> float:
        """Relative standard deviation of the focal: the spread (the jackknife's, at least that
        of independent errors) and the systematic error, added in quadrature."""
        if not self.signal_px > 0:
            return float("inf")
        scale = np.log1p(_FOCAL_STEP) / self.signal_px  # relative focal change per pixel of signal
        spread = max(scale * self.random_px, np.nan_to_num(self.jackknife_rel_std, nan=0.0))
        return float(np.hypot(spread, scale * self.bias_px))

    def diagnostics(self) -> dict[str, float | None]:
        return {
            "focal_rel_std": self.rel_std,
            "focal_signal_px": self.signal_px,
            "focal_jackknife_rel_std": None if np.isnan(self.jackknife_rel_std) else self.jackknife_rel_std,
        }


def _focal_uncertainty(
    cost0: float, cost_up: float, cost_down: float, num_obs: int, dof: int, bias_px: float
) -> FocalUncertainty:
    """Focal uncertainty from a least-squares cost (sum of squared 2D errors of `num_obs`
    observations) at f and at f (1 + _FOCAL_STEP)^(+-1), other unknowns re-optimised.

    Quadratic model in log f: an offset of log(1 + _FOCAL_STEP) raises the cost by num_obs s^2,
    s the signal. Independent track errors of variance sigma^2 per coordinate (from the
    residual and `dof`) move the estimate like an error of sigma / sqrt(num_obs) along the
    signal would.
    """
    sigma = np.sqrt(max(cost0 / max(dof, 1), 1e-24))
    signal = float(np.sqrt(max(0.5 * (cost_up + cost_down) - cost0, 0.0) / max(num_obs, 1)))
    return FocalUncertainty(signal, float(sigma / np.sqrt(max(num_obs, 1))), bias_px)


def _image_regions(xy: np.ndarray, width: int, height: int, grid: int) -> np.ndarray:
    """(M,) index of the grid x grid image region holding each position (M, 2)."""
    col = np.clip((xy[:, 0] / width * grid).astype(int), 0, grid - 1)
    row = np.clip((xy[:, 1] / height * grid).astype(int), 0, grid - 1)
    return row * grid + col


def _jackknife_rel_std(log_focals: np.ndarray) -> float:
    """Delete-one-group jackknife standard deviation of log f from the G leave-one-out fits."""
    num = len(log_focals)
    if num < 2:
        return float("inf")
    return float(np.sqrt((num - 1) / num * np.sum((log_focals - log_focals.mean()) ** 2)))


# --------------------------------------------------------------------------- motion analysis
@dataclass(frozen=True)
class PairGeometry:
    """Robust homography fit of one frame pair (i < j).

    Attributes:
        common: (M,) indices of the tracks seen in both frames.
        H: (3, 3) homography i -> j (pixels, LABELS.md convention); H_inliers (M,) bool.
        F_inliers: how many common tracks a fundamental matrix explains.
        motion_px: median track displacement.
        parallax_px: median transfer residual of H over all common tracks (what a plane or a
            pure rotation cannot explain).
    """

    i: int
    j: int
    common: np.ndarray
    H: np.ndarray
    H_inliers: np.ndarray
    F_inliers: int
    motion_px: float
    parallax_px: float

    @property
    def homography_ratio(self) -> float:
        """Tracks explained by the homography per track explained by the epipolar geometry."""
        return float(self.H_inliers.sum()) / max(self.F_inliers, 1)


@dataclass(frozen=True)
class MotionAnalysis:
    """Motion class of a clip and the fits behind it.

    Attributes:
        motion: one of `labelers.camera.MOTIONS`.
        pairs: the pair fits.
        K: (T, 3, 3) intrinsics of the rotation-only model (given, or its fitted focal).
        focal_uncertainty: how well the rotation-only model determines that fitted focal
            (None when given).
        rotation_px: (P,) per pair, median transfer residual of the rotation-only homography
            K R K^-1: what no camera rotation explains, i.e. the evidence of translation.
        rotation_background: (P,) bool, pairs whose rotation-only homography explains most
            tracks (median residual below `parallax_inlier_px`) and most tracks of image
            regions on three of the four borders (the `static_grid` test of step 0): a
            background turning with the camera, so the tracks a fundamental matrix explains
            beyond it belong to a mover, not to parallax.
    """

    motion: str
    pairs: list[PairGeometry]
    K: np.ndarray
    focal_uncertainty: FocalUncertainty | None
    rotation_px: np.ndarray
    rotation_background: np.ndarray

    def translating(self, cfg: SfmConfig) -> np.ndarray:
        """(P,) bool, pairs whose tracks show camera translation: parallax that no homography
        explains, or motion that a homography explains but no rotation does (a translation
        towards a distant or flat scene)."""
        parallax = np.array([p.parallax_px for p in self.pairs])
        ratio = np.array([p.homography_ratio for p in self.pairs])
        rotation = self.rotation_px
        unrotational = (rotation >= cfg.min_translation_px) & (rotation >= cfg.translation_ratio * parallax)
        return ((ratio < cfg.max_homography_ratio) & ~self.rotation_background) | unrotational

    def diagnostics(self) -> dict[str, Any]:
        return {
            "max_motion_px": max((p.motion_px for p in self.pairs), default=0.0),
            "median_parallax_px": float(np.median([p.parallax_px for p in self.pairs])),
            "max_parallax_px": max((p.parallax_px for p in self.pairs), default=0.0),
            "min_homography_ratio": min((p.homography_ratio for p in self.pairs), default=1.0),
            "max_rotation_residual_px": float(self.rotation_px.max(initial=0.0)),
            "rotation_background_pairs": float(self.rotation_background.mean()),
            "num_pairs_analysed": len(self.pairs),
            "nearly_static": self.motion == "static",
            "pure_rotation": self.motion == "rotation",
        }


def analyse_motion(tracks: Tracks, cfg: SfmConfig, K: np.ndarray | None, height: int, width: int) -> MotionAnalysis:
    """Classify the camera motion (module docstring, step 2).

    Pairs: every consecutive pair, and from every 4th frame the pairs 2, 4, 8, ... frames ahead.

    Args:
        K: (T, 3, 3) given intrinsics, or None to fit the rotation-only model's focal.

    Raises:
        CameraFailure: too_few_tracks when a consecutive pair cannot be fitted.
    """
    num_frames = tracks.xy.shape[0]
    pairs = []
    for i, j in sorted(_analysis_pairs(num_frames)):
        pair = _pair_geometry(tracks, i, j, cfg)
        if pair is not None:
            pairs.append(pair)
        elif j == i + 1:
            raise CameraFailure("too_few_tracks", f"no homography fits the tracks of frames {i} and {j}")
    uncertainty = None
    if K is None:
        focal, uncertainty = _rotation_focal(tracks, pairs, height, width, cfg.focal_bias_px)
        K = np.tile(_centred_K(focal, height, width), (num_frames, 1, 1))
    rotation_errors = [_rotation_transfer_errors(tracks, p, K) for p in pairs]
    rotation_px = np.array([np.median(e) for e in rotation_errors])
    rotation_background = np.array(
        [_rotation_background(tracks, p, e, height, width, cfg) for p, e in zip(pairs, rotation_errors)]
    )
    analysis = MotionAnalysis("general", pairs, K, uncertainty, rotation_px, rotation_background)
    if max(p.motion_px for p in pairs) < cfg.static_motion_px:
        return replace(analysis, motion="static")
    if not analysis.translating(cfg).any():
        return replace(analysis, motion="rotation")
    return analysis


def _rotation_background(
    tracks: Tracks, pair: PairGeometry, errors: np.ndarray, height: int, width: int, cfg: SfmConfig
) -> bool:
    """Whether the rotation-only homography explains a background spread over the image
    (`MotionAnalysis.rotation_background`); errors (M,) are its residuals on the common tracks."""
    if not np.median(errors) < cfg.parallax_inlier_px:
        return False
    region = _image_regions(tracks.xy[pair.i, pair.common], width, height, cfg.static_grid)
    sides = _still_sides(region, errors < cfg.parallax_inlier_px, cfg)
    # The bottom border (near ground) must be explained too: under an open sky, far points fit
    # a pure rotation on the top and side borders whatever the camera's translation.
    return bool(sides.sum() >= 3 and sides[1])


def _pair_geometry(tracks: Tracks, i: int, j: int, cfg: SfmConfig) -> PairGeometry | None:
    common = np.nonzero(tracks.observed[i] & tracks.observed[j])[0]
    if len(common) < max(cfg.min_common_tracks, 8):
        return None
    xy_i, xy_j = tracks.xy[i, common], tracks.xy[j, common]
    hom = pycolmap.estimate_homography_matrix(xy_i, xy_j, _ransac(cfg, cfg.parallax_inlier_px))
    fund = pycolmap.estimate_fundamental_matrix(xy_i, xy_j, _ransac(cfg, cfg.parallax_inlier_px))
    if hom is None or fund is None:
        return None
    H = np.asarray(hom["H"])
    return PairGeometry(
        i=i,
        j=j,
        common=common,
        H=H,
        H_inliers=np.asarray(hom["inlier_mask"], bool).ravel(),
        F_inliers=int(fund["num_inliers"]),
        motion_px=float(np.median(np.linalg.norm(xy_j - xy_i, axis=1))),
        parallax_px=float(np.median(np.linalg.norm(_apply_homography(H, xy_i) - xy_j, axis=1))),
    )


def _ransac(cfg: SfmConfig, max_error: float | None = None) -> pycolmap.RANSACOptions:
    # Tracks have few outliers, so the adaptive stopping rule ends RANSAC early; COLMAP's
    # default floor of 1000 trials only costs time here.
    return pycolmap.RANSACOptions(
        max_error=max_error or cfg.ransac_max_px, random_seed=cfg.seed, min_num_trials=50, max_num_trials=5000
    )


def _apply_homography(H: np.ndarray, xy: np.ndarray) -> np.ndarray:
    q = np.concatenate([xy, np.ones((len(xy), 1))], axis=1) @ H.T
    return q[:, :2] / q[:, 2:]


# --------------------------------------------------------------------------- fixed camera
@dataclass(frozen=True)
class FixedCameraEvidence:
    """What the still background says about a fixed camera (module docstring, step 0).

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
    """Test whether the background stands still (module docstring, step 0).

    Probe corners are detected per image region with a texture floor relative to the region
    (`cfg.min_corner_eig` is the absolute floor), so a weakly textured background gets probes
    next to a strongly textured mover; each is moved directly from frame i to frame j by
    pyramidal Lucas-Kanade with the forward-backward check (a lost probe counts as moving).

    Args:
        frames: (T, H, W, 3) uint8 RGB.
    """
    num_frames, height, width = frames.shape[:3]
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    lk = {
        "winSize": (cfg.klt_window_px, cfg.klt_window_px),
        "maxLevel": cfg.klt_levels,
        "criteria": (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01),
    }
    pairs = sorted(_analysis_pairs(num_frames) | {(0, t) for t in range(1, num_frames)})
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
            moved, keep = _lk_step(gray[i], gray[j], xy, lk, cfg.fb_max_px)
            motion[keep] = np.linalg.norm(moved - xy[keep], axis=1)
            still = motion < cfg.static_motion_px
        num_probes.append(len(xy))
        still_fraction.append(float(still.mean()) if len(xy) else 0.0)
        still_sides.append(_still_sides(region, still, cfg))
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


def _still_sides(region: np.ndarray, still: np.ndarray, cfg: SfmConfig) -> np.ndarray:
    """(4,) bool: top, bottom, left, right border rows/columns of the region grid holding a still
    region (enough probes, most of them still)."""
    grid = cfg.static_grid
    count = np.bincount(region, minlength=grid * grid).reshape(grid, grid)
    num_still = np.bincount(region, weights=still.astype(np.float64), minlength=grid * grid).reshape(grid, grid)
    region_still = (count >= cfg.min_region_probes) & (num_still >= cfg.min_still_fraction * np.maximum(count, 1))
    return np.array(
        [region_still[0].any(), region_still[-1].any(), region_still[:, 0].any(), region_still[:, -1].any()]
    )


def _analysis_pairs(num_frames: int) -> set[tuple[int, int]]:
    """Every consecutive pair, from every 4th frame the pairs 2, 4, 8, ... frames ahead, and
    the first and last frames."""
    pairs = {(i, i + 1) for i in range(num_frames - 1)}
    for i in range(0, num_frames - 1, 4):
        gap = 2
        while i + gap < num_frames:
            pairs.add((i, i + gap))
            gap *= 2
    pairs.add((0, num_frames - 1))
    return pairs


# --------------------------------------------------------------------------- the estimator
class SfmCamera:
    """Weight-free `CameraEstimator`: KLT tracks + incremental SfM + pycolmap bundle adjustment."""

    name = "sfm-klt-colmap"
    version = "2"

    def __init__(self, config: SfmConfig | None = None) -> None:
        self.config = config or SfmConfig()

    @property
    def params(self) -> dict[str, Any]:
        return asdict(self.config)

    def estimate(self, frames: np.ndarray, K: np.ndarray | None = None) -> CameraResult:
        """Cameras of every frame (see `labelers.camera.CameraEstimator.estimate`)."""
        K_given = check_camera_inputs(frames, K)
        cfg = self.config
        height, width = frames.shape[1:3]
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        evidence = fixed_camera_evidence(frames, cfg)
        seconds["fixed_camera_test"] = time.perf_counter() - start
        if evidence.fixed:
            result = _fixed_result(evidence, K_given, height, width, cfg)
            result.diagnostics["seconds"] = seconds
            return result
        start = time.perf_counter()
        tracks = track_klt(frames, cfg)
        seconds["tracking"] = time.perf_counter() - start
        start = time.perf_counter()
        analysis = analyse_motion(tracks, cfg, K_given, height, width)
        seconds["analysis"] = time.perf_counter() - start
        diagnostics = {**evidence.diagnostics(), **_track_diagnostics(tracks), **analysis.diagnostics()}
        start = time.perf_counter()
        if analysis.motion == "static":
            result = _static_result(tracks, K_given, height, width, cfg, diagnostics)
        elif analysis.motion == "rotation":
            result = _rotation_result(tracks, analysis, K_given is not None, height, width, cfg, diagnostics)
        else:
            result = _general_result(tracks, analysis, K_given, height, width, cfg, diagnostics)
        seconds["solve"] = time.perf_counter() - start
        result.diagnostics["seconds"] = seconds
        return result


def _track_diagnostics(tracks: Tracks) -> dict[str, Any]:
    lengths = tracks.observed.sum(0)
    return {
        "num_tracks": int(tracks.xy.shape[1]),
        "mean_track_length": float(lengths.mean()) if lengths.size else 0.0,
        "min_corners_per_frame": int(tracks.detected.min()),
    }


def _centred_K(focal: float, height: int, width: int) -> np.ndarray:
    return np.array([[focal, 0.0, (width - 1) / 2], [0.0, focal, (height - 1) / 2], [0.0, 0.0, 1.0]])


def _prior_focal(width: int, cfg: SfmConfig) -> float:
    return (width / 2) / np.tan(np.radians(cfg.prior_fov_x_deg) / 2)


def _error_stats(errors: np.ndarray) -> dict[str, float]:
    if errors.size == 0:
        return {"mean": float("nan"), "median": float("nan"), "p90": float("nan"), "max": float("nan")}
    return {
        "mean": float(errors.mean()),
        "median": float(np.median(errors)),
        "p90": float(np.percentile(errors, 90)),
        "max": float(errors.max()),
    }


def _focal_problem(focal_px: float, fov_x: float, focal: FocalUncertainty, cfg: SfmConfig) -> str:
    """Why an estimated focal is not trusted (the message of an intrinsics_unobservable failure)."""
    computed = not np.isnan(focal.jackknife_rel_std)
    jackknife = f"{focal.jackknife_rel_std:.3f}" if computed else "not computed"
    at_least = "" if computed else "at least "  # the jackknife only adds to the spread
    return (
        f"the tracks do not determine the focal length: {focal_px:.1f} px (horizontal field of view {fov_x:.0f} deg) "
        f"with a relative standard deviation of {at_least}{focal.rel_std:.3f} (a 5 % change moves the tracks by "
        f"{focal.signal_px:.4f} px RMS; region jackknife {jackknife}); limits: std <= {cfg.max_focal_rel_std}, field "
        f"of view in [{cfg.min_fov_x_deg}, {cfg.max_fov_x_deg}] deg; give intrinsics for this clip"
    )


# --------------------------------------------------------------------------- static
def _fixed_result(
    evidence: FixedCameraEvidence, K_given: np.ndarray | None, height: int, width: int, cfg: SfmConfig
) -> CameraResult:
    """c2w = I from the fixed-camera test; the residual is how far the still probes moved from frame 0."""
    num_frames = len(evidence.frame_still)
    if K_given is None:
        K = np.tile(_centred_K(_prior_focal(width, cfg), height, width), (num_frames, 1, 1))
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
        reproj_px=_error_stats(evidence.still_motion_px),
        intrinsics_source="given" if K_given is not None else "prior",
        scale_note=(
            "static camera: the background stands still (the movers in front of it excepted), c2w = I for every frame"
        ),
        diagnostics=diagnostics,
    )


def _static_result(
    tracks: Tracks, K_given: np.ndarray | None, height: int, width: int, cfg: SfmConfig, diagnostics: dict
) -> CameraResult:
    """c2w = I; the residual is how far tracks move from where they were first seen."""
    num_frames = tracks.xy.shape[0]
    if K_given is None:
        K = np.tile(_centred_K(_prior_focal(width, cfg), height, width), (num_frames, 1, 1))
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
        reproj_px=_error_stats(motion[seen]),
        intrinsics_source="given" if K_given is not None else "prior",
        scale_note="static camera: no measurable motion, c2w = I for every frame",
        diagnostics=diagnostics,
    )


# --------------------------------------------------------------------------- pure rotation
def _rotation_result(
    tracks: Tracks, analysis: MotionAnalysis, K_given: bool, height: int, width: int, cfg: SfmConfig, diagnostics: dict
) -> CameraResult:
    """Rotations from the pairs' tracks (module docstring, step 4); translations are zero."""
    num_frames = tracks.xy.shape[0]
    K = analysis.K
    max_rotation = max(_rotation_angle_deg(_pair_rotation(tracks, p, K)) for p in analysis.pairs)
    diagnostics.update({"max_rotation_deg": max_rotation, "focal_px": float(K[0, 0, 0])})
    if not K_given:
        focal = analysis.focal_uncertainty
        fov_x = np.degrees(2 * np.arctan((K[0, 0, 2] + 0.5) / K[0, 0, 0]))
        fov_ok = cfg.min_fov_x_deg <= fov_x <= cfg.max_fov_x_deg
        if fov_ok and focal.rel_std <= cfg.max_focal_rel_std:  # worth the jackknife
            jackknife = _rotation_focal_jackknife(
                tracks, analysis.pairs, height, width, float(K[0, 0, 0]), cfg.focal_jackknife_grid
            )
            focal = replace(focal, jackknife_rel_std=jackknife)
        diagnostics.update(focal.diagnostics())
        if not fov_ok or not focal.rel_std <= cfg.max_focal_rel_std:
            raise CameraFailure(
                "intrinsics_unobservable",
                f"the camera only rotates (by up to {max_rotation:.1f} deg between frames) and "
                + _focal_problem(float(K[0, 0, 0]), fov_x, focal, cfg),
            )
    relative = {(p.i, p.j): (_pair_rotation(tracks, p, K), int(p.H_inliers.sum())) for p in analysis.pairs}
    R = _average_rotations(relative, num_frames)
    c2w = np.tile(np.eye(4), (num_frames, 1, 1))
    c2w[:, :3, :3] = R
    frame_err = np.full(num_frames, np.nan)
    errors = []
    for p in analysis.pairs:
        if p.j == p.i + 1:
            e = _rotation_transfer_errors(tracks, p, K, R[p.j].T @ R[p.i])[p.H_inliers]
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
        reproj_px=_error_stats(np.concatenate(errors)),
        intrinsics_source="given" if K_given else "estimated",
        scale_note="pure rotation: no measurable translation, camera centres fixed at the origin",
        diagnostics=diagnostics,
    )


def _rotation_angle_deg(R: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(R) - 1) / 2, -1.0, 1.0))))


def _bearings(xy: np.ndarray, K: np.ndarray) -> np.ndarray:
    """(M, 3) unit viewing directions of pixels (M, 2) in a camera with intrinsics K (3, 3)."""
    rays = np.concatenate([xy, np.ones((len(xy), 1))], 1) @ np.linalg.inv(K).T
    return rays / np.linalg.norm(rays, axis=1, keepdims=True)


def _pair_rotation(tracks: Tracks, pair: PairGeometry, K: np.ndarray) -> np.ndarray:
    """Q = R_j^T R_i (camera-to-world rotations) of a pure rotation, aligning the viewing
    directions of the pair's homography inliers."""
    sel = pair.common[pair.H_inliers]
    return nearest_rotation(_bearings(tracks.xy[pair.j, sel], K[pair.j]).T @ _bearings(tracks.xy[pair.i, sel], K[pair.i]))


def _rotation_transfer_errors(
    tracks: Tracks, pair: PairGeometry, K: np.ndarray, Q: np.ndarray | None = None
) -> np.ndarray:
    """(M,) transfer errors of the common tracks under the rotation-only homography K_j Q K_i^-1
    (Q fitted to the pair if None)."""
    Q = _pair_rotation(tracks, pair, K) if Q is None else Q
    pred = _apply_homography(K[pair.j] @ Q @ np.linalg.inv(K[pair.i]), tracks.xy[pair.i, pair.common])
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
        K = _centred_K(focal, self.height, self.width)
        b_src, b_dst = _bearings(self.src, K), _bearings(self.dst, K)
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


def _rotation_focal(
    tracks: Tracks, pairs: list[PairGeometry], height: int, width: int, bias_px: float
) -> tuple[float, FocalUncertainty]:
    """Shared focal minimising `_RotationFocalCost`, and its uncertainty from the cost profile
    (systematic track error `bias_px`; no jackknife, see `_rotation_focal_jackknife`)."""
    cost = _RotationFocalCost(tracks, pairs, height, width)
    grid = max(height, width) * np.exp(np.linspace(np.log(0.2), np.log(5.0), 33))
    focal = _golden_log_search(cost, grid[int(np.argmin([cost(f) for f in grid]))])
    dof = 2 * len(cost.src) - 3 * cost.num_pairs - 1
    costs = cost(focal), cost(focal * (1 + _FOCAL_STEP)), cost(focal / (1 + _FOCAL_STEP))
    return focal, _focal_uncertainty(*costs, len(cost.src), dof, bias_px)


def _rotation_focal_jackknife(
    tracks: Tracks, pairs: list[PairGeometry], height: int, width: int, focal: float, grid: int
) -> float:
    """Jackknife relative standard deviation of the rotation-only focal, leaving out the tracks
    of one of grid x grid image regions at a time."""
    cost = _RotationFocalCost(tracks, pairs, height, width)
    regions = _image_regions(0.5 * (cost.src + cost.dst), width, height, grid)
    log_focals = []
    for region in np.unique(regions):
        weights = (regions != region).astype(np.float64)
        log_focals.append(np.log(_golden_log_search(lambda f, w=weights: cost(f, w), focal)))
    return _jackknife_rel_std(np.array(log_focals))


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
            rhs.append(-np.sqrt(weight) * _log_so3(R[j].T @ R[i] @ Q.T))
        step = np.linalg.lstsq(np.concatenate(rows), np.concatenate(rhs), rcond=None)[0].reshape(-1, 3)
        for t in range(1, num_frames):
            R[t] = R[t] @ _exp_so3(step[t - 1])
        if np.abs(step).max() < 1e-9:
            break
    return R


def _exp_so3(w: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(w, np.float64).reshape(3, 1))[0]


def _log_so3(R: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(R, np.float64))[0].ravel()


# --------------------------------------------------------------------------- general motion
@dataclass
class _Model:
    """Incremental reconstruction state, in COLMAP pixel coordinates (centres at +0.5).

    Attributes:
        obs: (T, N, 2) track positions (NaN where absent).
        K: (T, 3, 3) intrinsics.
        R, t: (T, 3, 3), (T, 3) cam_from_world (valid where registered).
        registered: (T,) bool.
        points: (N, 3) world points (NaN where not triangulated).
        inlier: (T, N) bool observations used in bundle adjustment.
        width, height: image size in pixels.
        shared_focal: one focal for all frames, refined in bundle adjustment.
        inlier_px: the current inlier threshold (see `_filter`).
        tried: (N,) registered observations of each track at its last triangulation attempt.
    """

    obs: np.ndarray
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    registered: np.ndarray
    points: np.ndarray
    inlier: np.ndarray
    width: int
    height: int
    shared_focal: bool
    inlier_px: float
    tried: np.ndarray
    num_ba: int = 0
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def observed(self) -> np.ndarray:
        return ~np.isnan(self.obs[..., 0])

    @property
    def triangulated(self) -> np.ndarray:
        return ~np.isnan(self.points[:, 0])

    def centres(self) -> np.ndarray:
        return -np.einsum("tji,tj->ti", self.R, self.t)


def _general_result(
    tracks: Tracks,
    analysis: MotionAnalysis,
    K_given: np.ndarray | None,
    height: int,
    width: int,
    cfg: SfmConfig,
    diagnostics: dict,
) -> CameraResult:
    """Incremental SfM (module docstring, step 3), the focal checks, first-frame coordinates."""
    num_frames = tracks.xy.shape[0]
    obs = tracks.xy + _COLMAP_OFFSET
    estimate_focal = K_given is None
    if estimate_focal:
        K = np.tile(_centred_K(_prior_focal(width, cfg), height, width), (num_frames, 1, 1))
    else:
        K = np.array(K_given, np.float64)
    K[:, :2, 2] += _COLMAP_OFFSET
    model = _reconstruct(obs, K, (height, width), analysis, estimate_focal, cfg)
    source = "estimated" if estimate_focal else "given"
    focal_diagnostics: dict[str, Any] = {"focal_rel_std": 0.0}
    if estimate_focal:
        fov_x = np.degrees(2 * np.arctan(width / (2 * model.K[0, 0, 0])))
        focal = None
        if not cfg.min_fov_x_deg <= fov_x <= cfg.max_fov_x_deg:
            problem = (
                f"the focal length estimate drifted to {model.K[0, 0, 0]:.1f} px (horizontal field of view "
                f"{fov_x:.0f} deg, outside [{cfg.min_fov_x_deg}, {cfg.max_fov_x_deg}]): the motion does not "
                "determine it; give intrinsics"
            )
        else:
            focal = _bundle_focal_uncertainty(model, cfg)
            problem = None if focal.rel_std <= cfg.max_focal_rel_std else _focal_problem(
                float(model.K[0, 0, 0]), fov_x, focal, cfg
            )
        focal_diagnostics = focal.diagnostics() if focal is not None else {"focal_rel_std": None}  # drifted
        if problem is not None:
            if cfg.unknown_focal == "reject":
                raise CameraFailure("intrinsics_unobservable", problem)
            model, prior_diagnostics = _prior_focal_model(model, _prior_focal(width, cfg), problem, cfg)
            focal_diagnostics.update(prior_diagnostics)
            source = "prior"
    errors = _reprojection_errors(model)
    stats = _error_stats(errors[model.inlier])
    if not stats["median"] <= cfg.max_median_reproj_px:
        raise CameraFailure(
            "high_reprojection_error",
            f"median reprojection error {stats['median']:.2f} px > {cfg.max_median_reproj_px} px",
        )
    c2w, scene_scale = _first_frame_c2w(model)
    inlier_errors = np.where(model.inlier, errors, np.nan)
    with np.errstate(invalid="ignore"):
        frame_reproj = np.nansum(inlier_errors, 1) / model.inlier.sum(1)  # NaN where no inliers
    K_out = model.K.copy()
    K_out[:, :2, 2] -= _COLMAP_OFFSET
    diagnostics.update(
        {
            "num_points3d": int(model.triangulated.sum()),
            "median_tri_angle_deg": float(np.median(_triangulation_angles(model, np.nonzero(model.triangulated)[0]))),
            "inlier_threshold_px": model.inlier_px,
            "focal_px": float(K_out[0, 0, 0]),
            **focal_diagnostics,
            "num_bundle_adjustments": model.num_ba,
            "scene_scale": scene_scale,
            **model.notes,
        }
    )
    return CameraResult(
        c2w=c2w,
        K=K_out,
        motion="general",
        registered=model.registered.copy(),
        frame_inliers=model.inlier.sum(1).astype(np.int64),
        frame_reproj_px=frame_reproj,
        reproj_px=stats,
        intrinsics_source=source,
        scale_note="unknown scale: the median z-depth of the reconstructed points seen in frame 0 is 1",
        diagnostics=diagnostics,
    )


def _prior_focal_model(model: _Model, prior_px: float, problem: str, cfg: SfmConfig) -> tuple[_Model, dict]:
    """The reconstruction with the focal fixed at the prior (module docstring, step 3), started
    from the estimated-focal model `model`; raises CameraFailure when the tracks contradict the
    prior (median inlier reprojection error above `max_prior_reproj_ratio` times the estimate's).

    `problem` says why the estimate is not trusted (it opens the rejection message).
    """
    estimate_px = float(model.K[0, 0, 0])
    rotation = _mean_step_rotation_deg(model)
    if not rotation <= cfg.max_prior_rotation_deg:
        raise CameraFailure(
            "intrinsics_unobservable",
            f"{problem}; no prior focal either: the camera turns by {rotation:.2f} deg per frame on average "
            f"(limit {cfg.max_prior_rotation_deg} deg with a prior focal, whose error would scale the rotations)",
        )
    estimate_median = float(np.median(_reprojection_errors(model)[model.inlier]))
    prior = _copy_model(model)
    _bundle_adjust(prior, True, cfg, fixed_focal=prior_px)
    _filter(prior, cfg)
    _triangulate_new(prior, cfg)
    _bundle_adjust(prior, True, cfg, fixed_focal=prior_px)
    prior_median = float(np.median(_reprojection_errors(prior)[prior.inlier]))
    ratio = prior_median / max(estimate_median, 1e-9)
    # How much the depth depends on the focal: the estimate's model, and the prior's re-adjusted
    # with the focal (1 +- prior_focal_span) times the prior (an estimate near the prior says nothing)
    agreement = [_depth_agreement(model, prior)]
    for factor in (1 + cfg.prior_focal_span, 1 / (1 + cfg.prior_focal_span)):
        trial = _copy_model(prior)
        _bundle_adjust(trial, True, cfg, fixed_focal=prior_px * factor)
        agreement.append(_depth_agreement(prior, trial))
    diagnostics = {
        "focal_estimate_px": estimate_px,
        "focal_prior_px": prior_px,
        "focal_prior_log_offset": float(np.log(prior_px / estimate_px)),
        "focal_prior_reproj_ratio": ratio,
        "focal_prior_step_rotation_deg": rotation,
        "focal_prior_depth_agreement": min(agreement),
        "focal_prior_reason": problem,
    }
    if not min(agreement) >= cfg.min_prior_depth_agreement:
        raise CameraFailure(
            "intrinsics_unobservable",
            f"{problem}; no prior focal either: the depth depends on it (with the focal {cfg.prior_focal_span:.0%} "
            f"off the prior, or at the estimate, only {min(agreement):.3f} of the points keep their depth within a "
            f"factor 1.25, limit {cfg.min_prior_depth_agreement}: far points, whose small parallax a wrong focal "
            "bends)",
        )
    if not ratio <= cfg.max_prior_reproj_ratio:
        raise CameraFailure(
            "intrinsics_unobservable",
            f"{problem}; the prior focal {prior_px:.1f} px (horizontal field of view {cfg.prior_fov_x_deg:g} deg) "
            f"contradicts the tracks: median reprojection error {prior_median:.3f} px, {ratio:.2f} times the "
            f"estimate's {estimate_median:.3f} px (limit {cfg.max_prior_reproj_ratio}); give intrinsics or set "
            "prior_fov_x_deg",
        )
    return prior, diagnostics


def _depth_agreement(a: _Model, b: _Model) -> float:
    """Share of the points of both models whose depths in the world frame's camera (the initial
    pair's first frame), each divided by its model's median, agree within a factor 1.25."""
    both = a.triangulated & b.triangulated & a.inlier.any(0) & b.inlier.any(0)
    depth_a, depth_b = a.points[both, 2], b.points[both, 2]
    front = (depth_a > 0) & (depth_b > 0)
    if front.sum() < 10:
        return 0.0
    ratio = (depth_a[front] / np.median(depth_a[front])) / (depth_b[front] / np.median(depth_b[front]))
    return float(np.mean(np.maximum(ratio, 1 / ratio) < 1.25))


def _mean_step_rotation_deg(model: _Model) -> float:
    """Mean rotation angle between consecutive registered frames of the model."""
    R = model.R[model.registered]
    if len(R) < 2:
        return 0.0
    relative = np.einsum("tij,tkj->tik", R[1:], R[:-1])
    return float(np.mean([_rotation_angle_deg(r) for r in relative]))


def _reconstruct(
    obs: np.ndarray,
    K: np.ndarray,
    size: tuple[int, int],
    analysis: MotionAnalysis,
    estimate_focal: bool,
    cfg: SfmConfig,
) -> _Model:
    """Incremental SfM (module docstring, step 3) on tracks `obs` (T, N, 2) and intrinsics K (T, 3, 3),
    both in COLMAP pixel coordinates, for images of `size` (height, width); raises CameraFailure.

    Bundle adjustment of a forward-moving camera has local minima, and which one the
    incremental path ends in depends on the initial pair: the reconstruction is grown from
    the `num_init_pairs` best initial pairs and the one that explains the tracks best
    (`_better`) is kept.
    """
    num_frames = obs.shape[0]
    best, grown = None, 0
    for pair in _init_candidates(analysis, cfg):
        model = _initialise(obs, K, size, pair, estimate_focal, cfg)
        if model is None:
            continue
        _grow(model, estimate_focal, cfg)
        best = model if best is None else _better(best, model)
        grown += 1
        if grown == cfg.num_init_pairs:
            break
    if best is None:
        raise CameraFailure(
            "initialisation_failed", "no frame pair with enough parallax gave a two-view reconstruction"
        )
    if best.registered.mean() < cfg.min_registered_fraction:
        raise CameraFailure(
            "too_few_registered",
            f"{int(best.registered.sum())} of {num_frames} frames registered "
            f"(< {cfg.min_registered_fraction:.0%}); first unregistered: {int(np.argmin(best.registered))}",
        )
    return best


def _grow(model: _Model, estimate_focal: bool, cfg: SfmConfig) -> None:
    """Register the other frames one by one, triangulate, bundle adjust (in place)."""
    failed: set[int] = set()
    last_ba = int(model.registered.sum())
    while True:
        frame = _next_frame(model, failed)
        if frame is None:
            break
        if not _register(model, frame, cfg):
            failed.add(frame)
            continue
        failed.clear()  # a grown model may now register frames that failed before
        _triangulate_new(model, cfg)
        if model.registered.sum() >= 1.5 * last_ba:
            _bundle_adjust(model, estimate_focal, cfg)
            _filter(model, cfg)
            last_ba = int(model.registered.sum())
    _bundle_adjust(model, estimate_focal, cfg)
    _filter(model, cfg)
    _triangulate_new(model, cfg)
    _bundle_adjust(model, estimate_focal, cfg)  # last: the model is at the optimum of its inlier set


def _better(a: _Model, b: _Model) -> _Model:
    """The model that registers more frames, or else has the smaller squared reprojection
    error over the observations that both count as inliers (their local minima differ in
    accuracy, not in what they explain)."""
    if a.registered.sum() != b.registered.sum():
        return a if a.registered.sum() > b.registered.sum() else b
    common = a.inlier & b.inlier
    cost_a = np.sum(_reprojection_errors(a)[common] ** 2)
    cost_b = np.sum(_reprojection_errors(b)[common] ** 2)
    return a if cost_a <= cost_b else b


def _init_candidates(analysis: MotionAnalysis, cfg: SfmConfig) -> list[PairGeometry]:
    """Pairs with measurable translation, best first: many common tracks and parallax, which
    counts fully from 2 px on (more only shortens the tracks)."""
    usable = [p for p, moving in zip(analysis.pairs, analysis.translating(cfg)) if moving]
    return sorted(usable, key=lambda p: -len(p.common) * min(1.0, p.parallax_px / 2.0))


def _initialise(
    obs: np.ndarray, K: np.ndarray, size: tuple[int, int], pair: PairGeometry, estimate_focal: bool, cfg: SfmConfig
) -> _Model | None:
    """Two-view reconstruction of `pair` (relative pose, triangulation, BA); None if too few points."""
    num_frames, num_tracks = obs.shape[:2]
    height, width = size
    i, j = pair.i, pair.j
    xy_i, xy_j = obs[i, pair.common], obs[j, pair.common]
    rel = pycolmap.estimate_relative_pose(
        _camera(K[i], width, height), xy_i, _camera(K[j], width, height), xy_j, _ransac(cfg)
    )
    if rel is None:
        return None
    pose = np.asarray(rel["cam2_from_cam1"].matrix())
    model = _Model(
        obs=obs,
        K=K.copy(),
        R=np.tile(np.eye(3), (num_frames, 1, 1)),
        t=np.zeros((num_frames, 3)),
        registered=np.zeros(num_frames, bool),
        points=np.full((num_tracks, 3), np.nan),
        inlier=np.zeros((num_frames, num_tracks), bool),
        width=width,
        height=height,
        shared_focal=estimate_focal,
        inlier_px=cfg.max_reproj_px,
        tried=np.zeros(num_tracks, np.int64),
    )
    model.registered[[i, j]] = True
    model.R[j], model.t[j] = pose[:, :3], pose[:, 3]
    model.notes["init_pair"] = [i, j]
    inliers = pair.common[np.asarray(rel["inlier_mask"], bool).ravel()]
    _triangulate(model, inliers, cfg)
    if model.triangulated.sum() < cfg.min_common_tracks:
        return None
    _bundle_adjust(model, False, cfg)
    _filter(model, cfg)
    return model if model.triangulated.sum() >= cfg.min_common_tracks else None


def _camera(K: np.ndarray, width: int, height: int, camera_id: int = 1) -> pycolmap.Camera:
    """A pycolmap pinhole camera from K in COLMAP pixel coordinates."""
    return pycolmap.Camera(
        model="PINHOLE",
        width=width,
        height=height,
        params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]],
        camera_id=camera_id,
    )


def _next_frame(model: _Model, failed: set[int]) -> int | None:
    """The unregistered frame that sees the most triangulated points (None when none can be tried)."""
    support = (model.observed & model.triangulated[None]).sum(1)
    support[model.registered] = -1
    for t in failed:
        support[t] = -1
    if support.max() < 6:
        return None
    return int(np.argmax(support))


def _register(model: _Model, frame: int, cfg: SfmConfig) -> bool:
    """Pose of one frame by PnP (LO-RANSAC and refinement) on the triangulated tracks it sees."""
    sel = np.nonzero(model.observed[frame] & model.triangulated)[0]
    if len(sel) < 6:
        return False
    est = pycolmap.AbsolutePoseEstimationOptions(ransac=_ransac(cfg, 2 * cfg.ransac_max_px))
    ref = pycolmap.AbsolutePoseRefinementOptions(refine_focal_length=False, refine_extra_params=False)
    camera = _camera(model.K[frame], model.width, model.height)
    ans = pycolmap.estimate_and_refine_absolute_pose(model.obs[frame, sel], model.points[sel], camera, est, ref)
    if ans is None or ans["num_inliers"] < max(6, 0.25 * len(sel)):
        return False
    pose = np.asarray(ans["cam_from_world"].matrix())
    model.R[frame], model.t[frame] = pose[:, :3], pose[:, 3]
    model.registered[frame] = True
    errors = _reprojection_errors(model, frames=[frame])[frame]
    model.inlier[frame] = model.observed[frame] & model.triangulated & (errors < model.inlier_px)
    return True


def _project(model: _Model, frames: np.ndarray, track_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions and depths of points `track_ids` in cameras `frames` (broadcast)."""
    X = model.points[track_ids]
    cam = np.einsum("...ij,...j->...i", model.R[frames], X) + model.t[frames]
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.einsum("...ij,...j->...i", model.K[frames], cam / z[..., None])[..., :2]
    return uv, z


def _reprojection_errors(
    model: _Model, track_ids: np.ndarray | None = None, frames: list[int] | None = None
) -> np.ndarray:
    """(T, M) reprojection errors in pixels of tracks `track_ids` (default: all N) in the
    registered frames (or `frames`): NaN where unobserved, untriangulated or unregistered, inf
    behind the camera."""
    num_frames = model.obs.shape[0]
    track_ids = np.arange(model.obs.shape[1]) if track_ids is None else track_ids
    errors = np.full((num_frames, len(track_ids)), np.nan)
    cols = np.nonzero(model.triangulated[track_ids])[0]
    ids = track_ids[cols]
    for t in frames if frames is not None else np.nonzero(model.registered)[0]:
        seen = ~np.isnan(model.obs[t, ids, 0])
        uv, z = _project(model, np.full(int(seen.sum()), t), ids[seen])
        e = np.linalg.norm(uv - model.obs[t, ids[seen]], axis=-1)
        errors[t, cols[seen]] = np.where(z > 0, e, np.inf)
    return errors


def _triangulate(model: _Model, track_ids: np.ndarray, cfg: SfmConfig) -> None:
    """Linear multi-view triangulation (DLT on normalised coordinates, via the 4x4 normal
    equations) of tracks from all their registered observations; keeps points with a wide
    enough angle and at least two observations within the inlier threshold."""
    if len(track_ids) == 0:
        return
    frames = np.nonzero(model.registered)[0]
    seen = model.observed[np.ix_(frames, track_ids)]  # (F, M)
    model.tried[track_ids] = seen.sum(0)
    xy = np.nan_to_num(model.obs[np.ix_(frames, track_ids)])  # (F, M, 2)
    rays = np.concatenate([xy, np.ones_like(xy[..., :1])], -1) @ np.linalg.inv(model.K[frames]).transpose(0, 2, 1)
    P = np.concatenate([model.R[frames], model.t[frames, :, None]], axis=2)  # (F, 3, 4)
    normal = np.zeros((len(track_ids), 4, 4))
    for axis in (0, 1):
        rows = rays[..., axis : axis + 1] * P[:, None, 2] - P[:, None, axis]  # (F, M, 4)
        rows = rows.transpose(1, 0, 2)  # (M, F, 4)
        normal += (rows * seen.T[..., None]).transpose(0, 2, 1) @ rows
    Xh = np.linalg.eigh(normal)[1][:, :, 0]
    with np.errstate(divide="ignore", invalid="ignore"):
        X = Xh[:, :3] / Xh[:, 3:]
    model.points[track_ids] = np.where(np.isfinite(X).all(1, keepdims=True), X, np.nan)
    errors = _reprojection_errors(model, track_ids)
    good = np.nan_to_num(errors, nan=np.inf) < model.inlier_px
    ok = good.sum(0) >= 2
    ok[ok] = _triangulation_angles(model, track_ids[ok], good[:, ok]) >= cfg.min_tri_angle_deg
    model.points[track_ids[~ok]] = np.nan
    model.inlier[:, track_ids] = good & ok[None]


def _triangulation_angles(model: _Model, track_ids: np.ndarray, use: np.ndarray | None = None) -> np.ndarray:
    """Largest angle (degrees) between the viewing rays of each point (registered observations,
    or those in `use` (T, M))."""
    if len(track_ids) == 0:
        return np.zeros(0)
    centres = model.centres()
    use = (model.observed[:, track_ids] & model.registered[:, None]) if use is None else use
    rays = model.points[track_ids][None] - centres[:, None]  # (T, M, 3)
    rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
    rays = np.where(use[..., None], rays, np.nan)
    frames = np.nonzero(use.any(1))[0]
    rays = rays[frames]
    cos = np.einsum("amk,bmk->mab", np.nan_to_num(rays), np.nan_to_num(rays))
    valid = np.einsum("am,bm->mab", use[frames].astype(float), use[frames].astype(float)) > 0
    cos = np.where(valid, cos, 1.0)
    return np.degrees(np.arccos(np.clip(cos.min(axis=(1, 2)), -1.0, 1.0)))


def _triangulate_new(model: _Model, cfg: SfmConfig) -> None:
    """Triangulate the untriangulated tracks seen by two or more registered frames that gained
    observations since their last attempt."""
    registered_obs = (model.observed & model.registered[:, None]).sum(0)
    candidates = (~model.triangulated) & (registered_obs >= 2) & (registered_obs > model.tried)
    _triangulate(model, np.nonzero(candidates)[0], cfg)


def _filter(model: _Model, cfg: SfmConfig) -> None:
    """Observations within the inlier threshold in front of the camera are inliers; points with
    fewer than two inliers or too small an angle are removed.

    The threshold adapts to the tracks: `outlier_factor` times the median error of the
    observations within `max_reproj_px`, clipped to [min_reproj_px, max_reproj_px]. Precise
    tracks thus get a tight threshold, which is what removes the tracks of occlusion
    boundaries and slowly moving objects that a fixed pixel threshold lets through.
    """
    errors = np.nan_to_num(_reprojection_errors(model), nan=np.inf)
    candidates = errors[errors < cfg.max_reproj_px]
    if candidates.size:
        threshold = cfg.outlier_factor * np.median(candidates)
        model.inlier_px = float(np.clip(threshold, cfg.min_reproj_px, cfg.max_reproj_px))
    model.inlier = errors < model.inlier_px
    ids = np.nonzero(model.triangulated)[0]
    keep = model.inlier[:, ids].sum(0) >= 2
    keep[keep] &= _triangulation_angles(model, ids[keep], model.inlier[:, ids[keep]]) >= cfg.min_tri_angle_deg
    model.points[ids[~keep]] = np.nan
    model.inlier[:, ids[~keep]] = False


def _bundle_adjust(model: _Model, refine_focal: bool, cfg: SfmConfig, fixed_focal: float | None = None) -> float:
    """Global BA over registered frames and inlier observations (pycolmap / Ceres, Cauchy loss).

    Frame poses, points and (with `refine_focal`) the shared focal are updated in place.
    The gauge is fixed on the initial pair (COLMAP's TWO_CAMS_FROM_WORLD takes the two lowest
    image ids: the first pose and one translation coordinate of the second), whose wide
    baseline pins the scale; two neighbouring frames of a video would leave it near-singular.
    Returns the final sum of squared reprojection errors of the inlier observations.
    """
    frames = np.nonzero(model.registered)[0]
    anchors = list(model.notes["init_pair"])
    order = anchors + [int(t) for t in frames if t not in anchors]
    image_id = {t: n + 1 for n, t in enumerate(order)}
    rec = pycolmap.Reconstruction()
    if model.shared_focal:
        K = model.K[0].copy()
        if fixed_focal is not None:
            K[0, 0] = K[1, 1] = fixed_focal
        cam = pycolmap.Camera(
            model="SIMPLE_PINHOLE",
            width=model.width,
            height=model.height,
            params=[K[0, 0], K[0, 2], K[1, 2]],
            camera_id=1,
        )
        rec.add_camera_with_trivial_rig(cam)
        camera_of = {int(t): 1 for t in frames}
    else:
        camera_of = {}
        for t in frames:
            rec.add_camera_with_trivial_rig(_camera(model.K[t], model.width, model.height, image_id[int(t)]))
            camera_of[int(t)] = image_id[int(t)]
    point_ids = np.nonzero(model.triangulated & model.inlier[frames].any(0))[0]
    index_in_image: dict[int, np.ndarray] = {}
    for t in frames:
        ids = point_ids[model.inlier[t, point_ids]]
        index_in_image[int(t)] = np.full(model.obs.shape[1], -1)
        index_in_image[int(t)][ids] = np.arange(len(ids))
        image = pycolmap.Image(
            name=str(t), keypoints=model.obs[t, ids], camera_id=camera_of[int(t)], image_id=image_id[int(t)]
        )
        rec.add_image_with_trivial_frame(image, pycolmap.Rigid3d(np.concatenate([model.R[t], model.t[t, :, None]], 1)))
    point3d_of = {}
    for n in point_ids:
        track = pycolmap.Track()
        for t in frames[model.inlier[frames, n]]:
            track.add_element(image_id[int(t)], int(index_in_image[int(t)][n]))
        point3d_of[int(n)] = rec.add_point3D(model.points[n], track)
    options = pycolmap.BundleAdjustmentOptions(
        refine_focal_length=refine_focal and fixed_focal is None,
        refine_principal_point=False,
        refine_extra_params=False,
        print_summary=False,
    )
    options.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
    options.ceres.loss_function_scale = 1.0
    options.ceres.solver_options.num_threads = cfg.num_threads
    options.ceres.solver_options.max_num_iterations = 100
    options.ceres.solver_options.function_tolerance = 1e-9
    config = pycolmap.BundleAdjustmentConfig()
    for t in frames:
        config.add_image(image_id[int(t)])
    if not model.shared_focal or not refine_focal or fixed_focal is not None:
        for cam_id in set(camera_of.values()):
            config.set_constant_cam_intrinsics(cam_id)
    config.fix_gauge(pycolmap.BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD)
    summary = pycolmap.create_default_bundle_adjuster(options, config, rec).solve()
    model.notes["ba_summary"] = summary.brief_report()
    model.num_ba += 1
    for t in frames:
        pose = np.asarray(rec.image(image_id[int(t)]).cam_from_world().matrix())
        model.R[t], model.t[t] = pose[:, :3], pose[:, 3]
    for n, pid in point3d_of.items():
        model.points[n] = rec.point3D(pid).xyz
    if model.shared_focal:
        model.K[:, 0, 0] = model.K[:, 1, 1] = float(rec.camera(1).params[0])
    errors = _reprojection_errors(model)
    return float(np.sum(np.where(model.inlier, errors, 0.0) ** 2))


def _bundle_focal_uncertainty(model: _Model, cfg: SfmConfig) -> FocalUncertainty:
    """Uncertainty of the estimated focal (module docstring, step 3): BA cost with the focal
    fixed at f (1 +- 5 %), poses and points re-optimised, on the same observations; then, unless
    that already rejects the focal, the jackknife over image regions."""
    # The model is at the optimum of the Cauchy-robustified cost; with every inlier residual far
    # below the loss scale (1 px) that is the least-squares optimum too.
    errors = _reprojection_errors(model)
    cost0 = float(np.sum(np.where(model.inlier, errors, 0.0) ** 2))
    focal = float(model.K[0, 0, 0])
    costs = []
    for factor in (1 + _FOCAL_STEP, 1 / (1 + _FOCAL_STEP)):
        trial = _copy_model(model)
        costs.append(_bundle_adjust(trial, True, cfg, fixed_focal=focal * factor))
    num_obs = int(model.inlier.sum())
    dof = max(2 * num_obs - 6 * int(model.registered.sum()) - 3 * int(model.triangulated.sum()), 1)
    uncertainty = _focal_uncertainty(cost0, costs[0], costs[1], num_obs, dof, cfg.focal_bias_px)
    if not uncertainty.rel_std <= cfg.max_focal_rel_std:
        return uncertainty
    return replace(uncertainty, jackknife_rel_std=_bundle_focal_jackknife(model, cfg))


def _bundle_focal_jackknife(model: _Model, cfg: SfmConfig) -> float:
    """Jackknife relative standard deviation of the focal: BA (focal free) without the points
    of one of grid x grid image regions (by their mean inlier position) at a time."""
    used = np.nonzero(model.triangulated & model.inlier.any(0))[0]
    with np.errstate(invalid="ignore"):
        mean_xy = np.nanmean(np.where(model.inlier[:, used, None], model.obs[:, used], np.nan), axis=0)
    regions = _image_regions(mean_xy - _COLMAP_OFFSET, model.width, model.height, cfg.focal_jackknife_grid)
    log_focals = []
    for region in np.unique(regions):
        trial = _copy_model(model)
        left_out = used[regions == region]
        trial.inlier[:, left_out] = False
        trial.points[left_out] = np.nan
        _bundle_adjust(trial, True, cfg)
        log_focals.append(np.log(trial.K[0, 0, 0]))
    return _jackknife_rel_std(np.array(log_focals))


def _copy_model(model: _Model) -> _Model:
    return _Model(
        obs=model.obs,
        K=model.K.copy(),
        R=model.R.copy(),
        t=model.t.copy(),
        registered=model.registered.copy(),
        points=model.points.copy(),
        inlier=model.inlier.copy(),
        width=model.width,
        height=model.height,
        shared_focal=model.shared_focal,
        inlier_px=model.inlier_px,
        tried=model.tried.copy(),
        notes={"init_pair": model.notes["init_pair"]},
    )


def _first_frame_c2w(model: _Model) -> tuple[np.ndarray, float]:
    """(T, 4, 4) c2w in first-frame coordinates at the clip scale, unregistered frames
    interpolated; and the factor applied to the reconstruction's unit."""
    num_frames = model.R.shape[0]
    w2c = np.tile(np.eye(4), (num_frames, 1, 1))
    w2c[:, :3, :3], w2c[:, :3, 3] = model.R, model.t
    _interpolate_unregistered(w2c, model.registered)
    c2w = np.linalg.inv(w2c)
    c2w = np.einsum("ij,tjk->tik", w2c[0], c2w)
    ids = np.nonzero(model.triangulated & model.inlier[0])[0]
    if len(ids) < 10:
        ids = np.nonzero(model.triangulated)[0]
    depth = (model.points[ids] @ w2c[0, :3, :3].T + w2c[0, :3, 3])[:, 2]
    scale = 1.0 / float(np.median(depth[depth > 0]))
    c2w[:, :3, 3] *= scale
    c2w[0] = np.eye(4)
    # re-orthonormalise against round-off from the inversions
    U, _, Vt = np.linalg.svd(c2w[:, :3, :3])
    c2w[:, :3, :3] = U @ Vt
    return c2w, scale


def _interpolate_unregistered(w2c: np.ndarray, registered: np.ndarray) -> None:
    """Poses of unregistered frames: linear in position, geodesic in rotation, between the
    nearest registered neighbours (the nearest one at the ends)."""
    reg = np.nonzero(registered)[0]
    for t in np.nonzero(~registered)[0]:
        before, after = reg[reg < t], reg[reg > t]
        if len(before) == 0 or len(after) == 0:
            w2c[t] = w2c[after[0] if len(before) == 0 else before[-1]]
            continue
        a, b = before[-1], after[0]
        alpha = (t - a) / (b - a)
        c2w_a, c2w_b = np.linalg.inv(w2c[a]), np.linalg.inv(w2c[b])
        c2w = np.eye(4)
        c2w[:3, :3] = c2w_a[:3, :3] @ _exp_so3(alpha * _log_so3(c2w_a[:3, :3].T @ c2w_b[:3, :3]))
        c2w[:3, 3] = (1 - alpha) * c2w_a[:3, 3] + alpha * c2w_b[:3, 3]
        w2c[t] = np.linalg.inv(c2w)
