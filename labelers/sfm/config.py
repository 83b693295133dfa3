"""Settings of the SfM camera labeler (`SfmConfig`)."""

from __future__ import annotations

from dataclasses import dataclass


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
            fixed-camera test (`labelers.sfm.fixed`): probe corners in each of
            static_grid x static_grid image regions, at most static_probes_per_region each; a
            region with at least min_region_probes probes is still when at least
            min_still_fraction of them do not move; the camera is fixed when at least
            min_fixed_pairs of the analysed frame pairs show still regions on three of the four
            borders, and min_bottom_pairs of them on the bottom border.
        static_noise_sigmas: a region is also still when its unchanged pixels (RMS change of
            their patch, patch_radius_px, below this many times the noise of a frame difference:
            sqrt(2) x `labelers.flow.image_noise_sigma`, at least 8-bit rounding) moved less than
            static_motion_px by their summed texture (`labelers.sfm.fixed.photometric_still_regions`).
        mover_epipolar_px, mover_flow_samples, mover_min_pair_inliers, max_mover_track_share:
            the screen of tracks on movers by the dense flow (`labelers.sfm.background`): a
            track farther than mover_epipolar_px (Sampson distance) from the epipolar geometry
            fitted to about mover_flow_samples grid samples of a pair's valid flow is a mover's;
            a pair whose fit explains fewer than mover_min_pair_inliers of its samples is not
            used; no track is removed when more than max_mover_track_share of them would be.
        parallax_inlier_px, max_homography_ratio, min_translation_px, translation_ratio: when
            a frame pair shows translation (`labelers.sfm.motion`).
        background_rotation, background_min_share, background_chain_px, max_track_rotation_gap_deg,
        max_translating_rotation_gap_deg: the rotation fitted
            to the dense flow's background (`labelers.sfm.dense_rotation`; needs the flows): taken
            where the tracks fail with `intrinsics_unobservable`, or turn the camera away from it
            by more than max_track_rotation_gap_deg (a pure rotation) or
            max_translating_rotation_gap_deg (a translating camera, whose translation may cancel
            part of its rotation's flow: an orbit about a point ahead), when every flow pair
            (within parallax_inlier_px) and the flows composed from the first frame (within
            background_chain_px) follow it on background_min_share of their samples (a large
            mover holds much of the valid flow where the background is faint) and on three
            borders including the bottom; without intrinsics only while it turns by at most
            max_prior_rotation_deg per frame.
        ransac_max_px: inlier threshold of the two-view and PnP estimators.
        max_reproj_px, min_reproj_px, outlier_factor: observations reprojecting farther than
            outlier_factor x the median reprojection error, clipped to [min_reproj_px,
            max_reproj_px], are outliers (not in bundle adjustment).
        loss_scale_factor, min_loss_scale_px: scale of bundle adjustment's Cauchy loss, this many
            times the median reprojection error of the inlier observations, at least
            min_loss_scale_px (`labelers.sfm.reconstruction.bundle_adjust`).
        robust_function_tolerance: Ceres' relative cost decrease that ends an adjustment under
            that loss. A scale of a few hundredths of a pixel puts fresh registrations in the
            loss's flat tail, where steps shrink slowly; least-squares adjustments (the focal
            checks) converge in a few steps and keep a tolerance of 1e-9.
        min_tri_angle_deg: points seen under a smaller angle are not kept. Lower keeps far
            points (sky, distant scenery), which fix the rotation whatever their depth (an open
            orbit's RRE 0.028 -> 0.004 deg at 0.1), but also the points near the focus of
            expansion of a dolly, whose mismatches on repeated texture no parallax exposes: at
            0.1 a decoded repeated-texture room dolly with its intrinsics went 32 deg off its
            path (docs/benchmarks.md, session 11).
        min_registered_fraction: fewer registered frames reject the clip.
        num_init_pairs: initial pairs the reconstruction is grown from (the best result is kept).
        max_median_reproj_px: a larger median final reprojection error rejects the clip.
        prior_fov_x_deg: horizontal field of view that starts the focal estimation (and that
            a static camera without given intrinsics reports, flagged `prior`).
        min_fov_x_deg, max_fov_x_deg: an estimated focal outside this field-of-view range
            rejects the clip (a BA that drifts along the focal-depth ambiguity ends far out).
        focal_bias_px: systematic track error (RMS, pixels) that does not average out over
            tracks, in the uncertainty of an estimated focal (`labelers.sfm.focal`; the value is
            measured: docs/benchmarks.md, "Labeler design measurements", SfM camera).
        focal_jackknife_grid: the jackknife of an estimated focal leaves out the tracks of
            one of grid x grid image regions at a time.
        max_focal_rel_std: an estimated focal less certain than this rejects the clip, or,
            with `unknown_focal` "prior", makes it fall back to the prior focal.
        uncertain_focal_max_rel_std, uncertain_focal_sigmas, uncertain_focal_max_rotation_error_deg,
        uncertain_focal_max_epipolar_ratio: with dense flows given, an estimated focal less certain
            than `max_focal_rel_std` is kept, on a camera turning by more than
            `max_prior_rotation_deg` per frame, when its std (the region jackknife's spread
            included) is at most `uncertain_focal_max_rel_std`,
            the rotation error that `uncertain_focal_sigmas` stds of focal error may leave (that many
            times the std times the mean rotation per frame) is at most
            `uncertain_focal_max_rotation_error_deg`, the cameras explain the flows' background at
            most `uncertain_focal_max_epipolar_ratio` times worse than the best pose for it, and the
            depth does not depend on the focal within that span
            (`labelers.sfm.focal_prior.uncertain_focal_alternatives`); a
            `uncertain_focal_max_rel_std` of 0 disables.
        unknown_focal: what a moving camera gets when the tracks do not determine the focal
            (`labelers.sfm.focal_prior`): "reject" (`intrinsics_unobservable`) or "prior" (bundle
            adjustment with the focal fixed at `prior_fov_x_deg`, `intrinsics_source` "prior",
            when the tracks do not contradict it).
        max_prior_reproj_ratio: with the prior focal, a median reprojection error above this
            times the estimated focal's rejects the clip (the tracks contradict the prior).
        max_prior_rotation_deg: with the prior focal, a mean rotation between consecutive
            frames above this rejects the clip: rotation angles scale with the focal's error, so
            only a camera that turns little keeps its rotations accurate with a wrong focal
            (measured: docs/benchmarks.md, "Labeler design measurements", SfM camera: prior focal).
        prior_focal_span, min_prior_depth_agreement: with the prior focal, fewer than
            min_prior_depth_agreement of the reconstructed points keeping their (median-
            normalised) depth within a factor 1.25 when the focal is (1 +- prior_focal_span)
            times the prior, or at the estimate, rejects the clip: its depth depends on the focal.
        prior_depth_min_tri_angle_deg: that test counts only points seen under at least this
            parallax: the others fix the rotation but get no depth label (`labelers.depth`
            invalidates far points).
        min_prior_dense_agreement: the same on the clip's dense multi-view depth (test 4 of
            `labelers.sfm.focal_prior`, `dense_depth_agreement`; run by the labeling pipeline,
            which has the dense flows): fewer of its valid pixels within a factor 1.25 rejects it.
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
    static_noise_sigmas: float = 3.0
    mover_epipolar_px: float = 1.5
    mover_flow_samples: int = 4000
    mover_min_pair_inliers: float = 0.5
    max_mover_track_share: float = 0.5
    parallax_inlier_px: float = 0.5
    max_homography_ratio: float = 0.75
    min_translation_px: float = 1.0
    translation_ratio: float = 2.0
    background_rotation: bool = True
    background_min_share: float = 0.4
    background_chain_px: float = 1.0
    max_track_rotation_gap_deg: float = 1.0
    max_translating_rotation_gap_deg: float = 5.0
    ransac_max_px: float = 1.0
    max_reproj_px: float = 2.0
    min_reproj_px: float = 0.3
    outlier_factor: float = 5.0
    loss_scale_factor: float = 3.0
    min_loss_scale_px: float = 0.03
    robust_function_tolerance: float = 1e-6
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
    uncertain_focal_max_rel_std: float = 0.04
    uncertain_focal_sigmas: float = 3.0
    uncertain_focal_max_rotation_error_deg: float = 0.1
    uncertain_focal_max_epipolar_ratio: float = 2.0
    unknown_focal: str = "reject"
    max_prior_reproj_ratio: float = 1.5
    max_prior_rotation_deg: float = 0.2
    prior_focal_span: float = 0.2
    min_prior_depth_agreement: float = 0.995
    prior_depth_min_tri_angle_deg: float = 0.5
    min_prior_dense_agreement: float = 0.99
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
        if self.uncertain_focal_max_rel_std < 0 or not (
            self.uncertain_focal_sigmas > 0 and self.uncertain_focal_max_rotation_error_deg > 0
            and self.uncertain_focal_max_epipolar_ratio >= 1
        ):
            raise ValueError(
                "need uncertain_focal_max_rel_std >= 0, uncertain_focal_sigmas > 0, "
                "uncertain_focal_max_rotation_error_deg > 0 and uncertain_focal_max_epipolar_ratio >= 1, got "
                f"{self.uncertain_focal_max_rel_std}, {self.uncertain_focal_sigmas}, "
                f"{self.uncertain_focal_max_rotation_error_deg}, {self.uncertain_focal_max_epipolar_ratio}"
            )
        if self.unknown_focal not in ("reject", "prior") or not (
            self.max_prior_reproj_ratio >= 1 and self.max_prior_rotation_deg > 0 and self.prior_focal_span > 0
            and 0 <= self.min_prior_depth_agreement <= 1 and 0 <= self.min_prior_dense_agreement <= 1
        ):
            raise ValueError(
                "need unknown_focal 'reject' or 'prior', max_prior_reproj_ratio >= 1, max_prior_rotation_deg > 0, "
                "prior_focal_span > 0 and min_prior_depth_agreement, min_prior_dense_agreement in [0, 1], got "
                f"{self.unknown_focal!r}, {self.max_prior_reproj_ratio}, {self.max_prior_rotation_deg}, "
                f"{self.prior_focal_span}, {self.min_prior_depth_agreement}, {self.min_prior_dense_agreement}"
            )
        if self.static_grid < 3 or self.static_probes_per_region < 1 or self.min_region_probes < 1:
            raise ValueError("need static_grid >= 3, static_probes_per_region >= 1 and min_region_probes >= 1")
        if not self.static_noise_sigmas > 1:
            raise ValueError(f"static_noise_sigmas must be > 1 (noise alone reaches 1), got {self.static_noise_sigmas}")
        if not all(0 < v <= 1 for v in (self.min_still_fraction, self.min_fixed_pairs, self.min_bottom_pairs)):
            raise ValueError("min_still_fraction, min_fixed_pairs and min_bottom_pairs must be in (0, 1]")
        if not (self.loss_scale_factor > 0 and self.min_loss_scale_px > 0 and 0 < self.robust_function_tolerance < 1):
            raise ValueError(f"need loss_scale_factor > 0, min_loss_scale_px > 0 and robust_function_tolerance in (0, 1), "
                             f"got {self.loss_scale_factor}, {self.min_loss_scale_px}, {self.robust_function_tolerance}")
        if not (self.min_tri_angle_deg >= 0 and self.prior_depth_min_tri_angle_deg >= 0):
            raise ValueError(f"need min_tri_angle_deg >= 0 and prior_depth_min_tri_angle_deg >= 0, got "
                             f"{self.min_tri_angle_deg}, {self.prior_depth_min_tri_angle_deg}")
        if not (self.mover_epipolar_px > 0 and self.mover_flow_samples >= 16
                and 0 < self.mover_min_pair_inliers <= 1 and 0 < self.max_mover_track_share <= 1):
            raise ValueError("need mover_epipolar_px > 0, mover_flow_samples >= 16, mover_min_pair_inliers and "
                             f"max_mover_track_share in (0, 1], got {self.mover_epipolar_px}, {self.mover_flow_samples}, "
                             f"{self.mover_min_pair_inliers}, {self.max_mover_track_share}")
        if not (self.background_chain_px >= self.parallax_inlier_px > 0 and 0 < self.background_min_share <= 1
                and 0 < self.max_track_rotation_gap_deg <= self.max_translating_rotation_gap_deg):
            raise ValueError(
                "need background_chain_px >= parallax_inlier_px > 0, background_min_share in (0, 1] and "
                "0 < max_track_rotation_gap_deg <= max_translating_rotation_gap_deg, got "
                f"{self.background_chain_px}, {self.parallax_inlier_px}, {self.background_min_share}, "
                f"{self.max_track_rotation_gap_deg}, {self.max_translating_rotation_gap_deg}")
        if not 0 < self.min_registered_fraction <= 1:
            raise ValueError(f"min_registered_fraction must be in (0, 1], got {self.min_registered_fraction}")
