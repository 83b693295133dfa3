"""Prior focal for a moving camera whose tracks do not determine the focal (`unknown_focal` "prior").

The default, `unknown_focal` "reject", rejects such clips. The reason that hides the focal
from the tracks partly hides its error in the labels. A camera moving forwards sees the
z-depth of a point from the radial expansion about the focus of expansion, which does not
depend on the focal; a wrong focal bends the small rotation and the lateral translation.
So bundle adjustment runs once more with the focal fixed at `prior_fov_x_deg` (from the
estimated-focal model, then outlier filter and BA again), and the clip is labelled with
`intrinsics_source` "prior" (the estimate, the prior and the tests below in the
diagnostics) unless one of three tests rejects it (`intrinsics_unobservable`):

1. the camera turns by more than `max_prior_rotation_deg` per frame: rotation angles scale
   with the focal's error, and the reprojection test below does not see it;
2. the tracks contradict the prior: median reprojection error above `max_prior_reproj_ratio`
   times the estimate's;
3. the depth depends on the focal: fewer than `min_prior_depth_agreement` of the points keep
   their median-normalised depth within 1.25 between the prior's model and the estimate's,
   or the prior's re-adjusted at (1 +- `prior_focal_span`) times the prior. Far points are
   what a wrong focal bends: their parallax is small against the error it leaves in the
   rotation.

Limits: test 3 uses the sparse points, which feel the focal less than dense depth does, so
the prior's depth is not guaranteed, only measured on the clips of the benchmark; and
lateral 3D coordinates (x = z (u - cx) / f) scale with the focal's error, so point maps and
scene flow are off by it. Hence "reject" by default. Measured: docs/benchmarks.md,
"Labeler design measurements", SfM camera: prior focal.
"""

from __future__ import annotations

import numpy as np

from labelers.camera import CameraFailure
from labelers.sfm.common import rotation_angle_deg
from labelers.sfm.config import SfmConfig
from labelers.sfm.reconstruction import (
    SfmModel,
    bundle_adjust,
    copy_model,
    filter_outliers,
    reprojection_errors,
    triangulate_new,
)


def prior_focal_model(model: SfmModel, prior_px: float, problem: str, cfg: SfmConfig) -> tuple[SfmModel, dict]:
    """The reconstruction with the focal fixed at the prior (module docstring), started
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
    estimate_median = float(np.median(reprojection_errors(model)[model.inlier]))
    prior = copy_model(model)
    bundle_adjust(prior, True, cfg, fixed_focal=prior_px)
    filter_outliers(prior, cfg)
    triangulate_new(prior, cfg)
    bundle_adjust(prior, True, cfg, fixed_focal=prior_px)
    prior_median = float(np.median(reprojection_errors(prior)[prior.inlier]))
    ratio = prior_median / max(estimate_median, 1e-9)
    # How much the depth depends on the focal: the estimate's model, and the prior's re-adjusted
    # with the focal (1 +- prior_focal_span) times the prior (an estimate near the prior says nothing)
    agreement = [_depth_agreement(model, prior)]
    for factor in (1 + cfg.prior_focal_span, 1 / (1 + cfg.prior_focal_span)):
        trial = copy_model(prior)
        bundle_adjust(trial, True, cfg, fixed_focal=prior_px * factor)
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


def _depth_agreement(a: SfmModel, b: SfmModel) -> float:
    """Share of the points of both models whose depths in the world frame's camera (the initial
    pair's first frame), each divided by its model's median, agree within a factor 1.25."""
    both = a.triangulated & b.triangulated & a.inlier.any(0) & b.inlier.any(0)
    depth_a, depth_b = a.points[both, 2], b.points[both, 2]
    front = (depth_a > 0) & (depth_b > 0)
    if front.sum() < 10:
        return 0.0
    ratio = (depth_a[front] / np.median(depth_a[front])) / (depth_b[front] / np.median(depth_b[front]))
    return float(np.mean(np.maximum(ratio, 1 / ratio) < 1.25))


def _mean_step_rotation_deg(model: SfmModel) -> float:
    """Mean rotation angle between consecutive registered frames of the model."""
    R = model.R[model.registered]
    if len(R) < 2:
        return 0.0
    relative = np.einsum("tij,tkj->tik", R[1:], R[:-1])
    return float(np.mean([rotation_angle_deg(r) for r in relative]))
