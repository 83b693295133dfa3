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
4. the dense depth depends on the focal (`dense_depth_agreement`, run by the labeling
   pipeline once the multi-view depth exists): fewer than `min_prior_dense_agreement` of
   the pixels with valid depth keep it, within 1.25, when the same flows are triangulated
   with the cameras of (1 +- `prior_focal_span`) times the prior (`CameraResult.
   focal_alternatives`). The sparse points of test 3 feel the focal less than dense depth
   does: an open yard passed test 3 with its dense depth at delta1.25 0.88 against 0.98
   with the true focal; the far ground's depth was valid only under the assumed focal.

An uncertain estimate: before the prior, an estimated focal whose std (`labelers.sfm.focal`)
exceeds `max_focal_rel_std` is kept, with `intrinsics_source` "estimated", when the camera
turns too much for the prior (test 1), the dense flows show that the model is right, and the
focal's error cannot move the other labels past their targets:
- the std, with the region jackknife's spread (`labelers.sfm.focal`; computed here when the
  cost profile alone already exceeded `max_focal_rel_std`), is at most
  `uncertain_focal_max_rel_std`: a 55 deg orbit whose mover pulled the focal 24 % off had a
  cost-profile std of 0.025 and a jackknife spread of 0.125;
- a focal `uncertain_focal_sigmas` stds off leaves at most
  `uncertain_focal_max_rotation_error_deg` of rotation error (span times the mean rotation per
  frame: rotation angles scale with the focal's error, test 1);
- the cameras explain the background of the key pairs' dense flow at most
  `uncertain_focal_max_epipolar_ratio` times worse than the best pose for it
  (`background_epipolar_ratio`, the QA camera gate's measure). The std gate also turns away
  wrong models, whose std is not honest: a slow pan whose tracks sit on a large mover was
  solved as a general motion with 1.1 deg per frame of invented rotation at std 0.026, and its
  cameras explain the background 47-103 times worse than its best pose (its jackknife spread,
  0.090, rejects it too); right orbits score 0.3-0.7;
- tests 3 and 4 hold with the focal at the estimate times (1 +- span) instead of the prior's span.

A turning camera gets no prior (test 1) and was rejected with a focal 1-3 % off (textureless
orbits, std 0.022-0.037: docs/benchmarks.md, "Session 27"); the price is K within a few stds
rather than within 2 %, and the QA metric `camera_focal_uncertain_rel_std` records the std.

Limits: lateral 3D coordinates (x = z (u - cx) / f) scale with the focal's error, so point
maps and scene flow are off by it, and the field of view in the camera vector is the prior's;
`camera_intrinsics_prior` in the clip's QA says so. Measured: docs/benchmarks.md, "Labeler
design measurements", SfM camera: prior focal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import numpy as np

from labelers.camera import CameraFailure
from labelers.sfm.background import refit_to_background
from labelers.sfm.common import rotation_angle_deg
from labelers.sfm.config import SfmConfig
from labelers.sfm.reconstruction import (
    SfmModel,
    bundle_adjust,
    copy_model,
    filter_outliers,
    image_K,
    reprojection_errors,
    triangulate_new,
    triangulation_angles,
)

if TYPE_CHECKING:
    from labelers.depth import MultiViewDepth
    from labelers.flow import PairFlows


def prior_focal_model(
    model: SfmModel, prior_px: float, problem: str, cfg: SfmConfig
) -> tuple[SfmModel, dict, list[SfmModel]]:
    """The reconstruction with the focal fixed at the prior (module docstring), started
    from the estimated-focal model `model`; raises CameraFailure when the tracks contradict the
    prior (median inlier reprojection error above `max_prior_reproj_ratio` times the estimate's).

    `problem` says why the estimate is not trusted (it opens the rejection message).

    Returns:
        the prior's model, its diagnostics, and the models re-adjusted with the focal at
        (1 +- `prior_focal_span`) times the prior (for the dense test, `dense_depth_agreement`).
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
    agreement = [_depth_agreement(model, prior, cfg.prior_depth_min_tri_angle_deg)]
    alternatives = []
    for factor in (1 + cfg.prior_focal_span, 1 / (1 + cfg.prior_focal_span)):
        trial = copy_model(prior)
        bundle_adjust(trial, True, cfg, fixed_focal=prior_px * factor)
        agreement.append(_depth_agreement(prior, trial, cfg.prior_depth_min_tri_angle_deg))
        alternatives.append(trial)
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
    return prior, diagnostics, alternatives


@dataclass(frozen=True)
class UncertainFocal:
    """An estimated focal over `max_focal_rel_std`, tested for keeping (`uncertain_focal_alternatives`).

    Attributes:
        alternatives: the models re-adjusted with the focal at the estimate times (1 +- span),
            for the dense test; empty when the focal is not kept.
        diagnostics: span, rotation error bound, epipolar ratio, sparse depth agreement.
        why_not: the test it failed, with its value and limit ("" when kept).
    """

    alternatives: list[SfmModel]
    diagnostics: dict
    why_not: str = ""


def turns_faster_than_prior(model: SfmModel, cfg: SfmConfig) -> bool:
    """Whether the camera turns by more than `max_prior_rotation_deg` per frame on average: too
    fast for the prior focal (test 1), the case of an uncertain estimate."""
    return _mean_step_rotation_deg(model) > cfg.max_prior_rotation_deg


def uncertain_focal_alternatives(model: SfmModel, rel_std: float, flows: PairFlows, cfg: SfmConfig) -> UncertainFocal:
    """Whether an estimated focal less certain than `max_focal_rel_std`, on a camera that
    `turns_faster_than_prior`, can be kept (module docstring, "An uncertain estimate"):
    `rel_std` (the region jackknife's spread included) is at most `uncertain_focal_max_rel_std`,
    the rotation error of a focal `uncertain_focal_sigmas` stds off (span times the mean rotation
    per frame) at most `uncertain_focal_max_rotation_error_deg`, the cameras explain the
    background of the dense `flows` (`background_epipolar_ratio` at most
    `uncertain_focal_max_epipolar_ratio`), and test 3 holds at the estimate times (1 +- span)."""
    span = cfg.uncertain_focal_sigmas * rel_std
    rotation = _mean_step_rotation_deg(model)
    diagnostics = {"focal_uncertain_span": span, "focal_uncertain_rotation_error_deg": span * rotation}
    if not rel_std <= cfg.uncertain_focal_max_rel_std:
        return UncertainFocal([], diagnostics, f"std {rel_std:.3f} > {cfg.uncertain_focal_max_rel_std}")
    if not span * rotation <= cfg.uncertain_focal_max_rotation_error_deg:
        return UncertainFocal([], diagnostics, f"{cfg.uncertain_focal_sigmas:g} stds of focal error would turn the "
                              f"cameras by {span * rotation:.3f} deg per frame, more than "
                              f"{cfg.uncertain_focal_max_rotation_error_deg} deg")
    # the std gate was also what kept wrong models out, and their std is not honest (module docstring)
    ratio = background_epipolar_ratio(model, flows, cfg)
    diagnostics["focal_uncertain_epipolar_ratio"] = ratio
    if np.isnan(ratio):
        return UncertainFocal([], diagnostics, "no key pair's dense flow has a background to check the cameras on")
    if not ratio <= cfg.uncertain_focal_max_epipolar_ratio:
        return UncertainFocal([], diagnostics, f"the cameras explain the dense flow's background {ratio:.1f} times "
                              f"worse than its best pose (limit {cfg.uncertain_focal_max_epipolar_ratio})")
    estimate_px = float(model.K[0, 0, 0])
    alternatives, agreement = [], []
    for factor in (1 + span, 1 / (1 + span)):
        trial = copy_model(model)
        bundle_adjust(trial, True, cfg, fixed_focal=estimate_px * factor)
        agreement.append(_depth_agreement(model, trial, cfg.prior_depth_min_tri_angle_deg))
        alternatives.append(trial)
    diagnostics["focal_uncertain_depth_agreement"] = min(agreement)
    if not min(agreement) >= cfg.min_prior_depth_agreement:
        return UncertainFocal([], diagnostics, f"with the focal {100 * span:.1f} % either side, {min(agreement):.3f} "
                              f"of the sparse points keep their depth (limit {cfg.min_prior_depth_agreement})")
    return UncertainFocal(alternatives, diagnostics)


def background_epipolar_ratio(model: SfmModel, flows: PairFlows, cfg: SfmConfig) -> float:
    """Median over the pairs of `flows` between registered frames of how many times worse the
    model's cameras explain the background's flow than the best pose for it
    (`labelers.sfm.background.refit_to_background`, as the QA's camera gate measures it);
    NaN where no pair can be fitted. The ratio does not depend on the model's scale."""
    flows = flows.without_across_only()
    K = image_K(model)
    ratios = []
    for n, (i, j) in enumerate(flows.pairs):
        if not (model.registered[i] and model.registered[j]):
            continue
        src_to_dst = np.eye(4)
        src_to_dst[:3, :3] = model.R[j] @ model.R[i].T
        src_to_dst[:3, 3] = model.t[j] - src_to_dst[:3, :3] @ model.t[i]
        refit = refit_to_background(flows.flow_fwd_px[n], flows.valid_fwd[n], K[i], K[j], src_to_dst, cfg)
        if refit is not None:
            ratios.append(refit.epipolar_ratio(translating=bool(np.linalg.norm(src_to_dst[:3, 3]) > 0)))
    return float(np.median(ratios)) if ratios else float("nan")


def _depth_agreement(a: SfmModel, b: SfmModel, min_tri_angle_deg: float) -> float:
    """Share of the points of both models, seen under at least `min_tri_angle_deg` of parallax
    in `a`, whose depths in the world frame's camera (the initial pair's first frame), each
    divided by its model's median, agree within a factor 1.25."""
    both = a.triangulated & b.triangulated & a.inlier.any(0) & b.inlier.any(0)
    # points seen under little parallax fix the rotation but get no depth label: not counted
    ids = np.nonzero(both)[0]
    both[ids] = triangulation_angles(a, ids, a.inlier[:, ids]) >= min_tri_angle_deg
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


def dense_depth_agreement(
    estimator: "MultiViewDepth",
    flows: "PairFlows",
    depth: np.ndarray,
    depth_valid: np.ndarray,
    alternatives: Sequence[tuple[np.ndarray, np.ndarray]],
    frames: Sequence[int],
    images: np.ndarray | None = None,
) -> float:
    """Test 4 of the prior focal, on the dense depth the clip is labelled with: how much of it
    stays when the cameras are those re-adjusted with another focal.

    The sparse points of test 3 lie where tracks are, mostly on near texture; the far ground
    towards the horizon, whose small parallax a wrong focal bends most, has few of them. Here
    the same flows are triangulated again with each alternative camera (`CameraResult.
    focal_alternatives`) on `frames`. A labelled pixel agrees when the alternative also finds
    its depth valid and within a factor 1.25, after one scale per alternative (the median
    ratio: the clip scale follows the focal). A pixel the alternative leaves invalid counts
    against: its depth was valid only because of the focal that was assumed.

    Args:
        estimator: the multi-view depth labeler that made `depth`.
        flows: the pair flows it used; depth, depth_valid: (T, H, W) its result.
        alternatives: (c2w (T, 4, 4), K (T, 3, 3)) pairs.
        frames: the frames compared (a few key frames suffice).
        images: (T, H, W, 3) uint8 RGB of the clip, for the stripe model the depth used
            (`MultiViewDepth.frame_depth`); None compares without it.

    Returns:
        the least share, over the alternatives, of the labelled valid pixels of `frames` that
        agree (NaN when none is valid).
    """
    labelled = int(sum(depth_valid[t].sum() for t in frames))
    if labelled == 0:
        return float("nan")
    agreement = []
    for c2w, K in alternatives:
        ratios = []
        for t in frames:
            alt_depth, alt_valid, _ = estimator.frame_depth(
                t, flows, c2w, K, depth_valid[t], None if images is None else images[t]
            )
            both = alt_valid & depth_valid[t]
            ratios.append(alt_depth[both] / depth[t][both])
        ratio = np.concatenate(ratios)
        if len(ratio) == 0:
            return 0.0
        ratio = ratio / np.median(ratio)
        agreement.append(float(np.sum(np.maximum(ratio, 1 / ratio) < 1.25)) / labelled)
    return min(agreement)
