"""General motion (step 3 of `labelers.sfm`): reconstruction, focal checks, first-frame cameras.

The incremental reconstruction (`labelers.sfm.reconstruction`), the checks of an estimated
focal (`labelers.sfm.focal`) or the prior focal (`labelers.sfm.focal_prior`), the
reprojection gate, and the cameras in first-frame coordinates at the clip scale.

Scale (one per clip, `metric_scale = False`): after expressing everything in first-frame
coordinates, the median z-depth of the reconstructed points seen in frame 0 is 1 (of all
reconstructed points, in frame 0's camera, when frame 0 sees fewer than 10).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from labelers.camera import CameraFailure, CameraResult
from labelers.sfm.common import COLMAP_OFFSET, centred_K, error_stats, exp_so3, image_regions, log_so3, prior_focal_px
from labelers.sfm.config import SfmConfig
from labelers.sfm.focal import (
    FOCAL_STEP,
    FocalUncertainty,
    focal_problem,
    focal_uncertainty_from_costs,
    jackknife_log_std,
)
from labelers.sfm.focal_prior import prior_focal_model, turns_faster_than_prior, uncertain_focal_alternatives
from labelers.sfm.motion import MotionAnalysis
from labelers.sfm.reconstruction import (
    LEAST_SQUARES_SCALE_PX,
    SfmModel,
    bundle_adjust,
    copy_model,
    image_K,
    reconstruct,
    reprojection_errors,
    triangulation_angles,
)
from labelers.sfm.tracks import Tracks

if TYPE_CHECKING:
    from labelers.flow import PairFlows


def general_result(
    tracks: Tracks,
    analysis: MotionAnalysis,
    K_given: np.ndarray | None,
    height: int,
    width: int,
    cfg: SfmConfig,
    diagnostics: dict,
    flows: PairFlows | None = None,
) -> CameraResult:
    """Incremental SfM (`labelers.sfm.reconstruction`), the focal checks, first-frame coordinates;
    `flows` (dense flows of frame pairs) let an uncertain estimated focal be kept
    (`labelers.sfm.focal_prior.uncertain_focal_alternatives`)."""
    num_frames = tracks.xy.shape[0]
    obs = tracks.xy + COLMAP_OFFSET
    estimate_focal = K_given is None
    if estimate_focal:
        K = np.tile(centred_K(prior_focal_px(width, cfg), height, width), (num_frames, 1, 1))
    else:
        K = np.array(K_given, np.float64)
    K[:, :2, 2] += COLMAP_OFFSET
    model = reconstruct(obs, K, (height, width), analysis, estimate_focal, cfg)
    source = "estimated" if estimate_focal else "given"
    focal_diagnostics: dict[str, Any] = {"focal_rel_std": 0.0}
    alternatives: list[SfmModel] = []
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
            problem = None if focal.rel_std <= cfg.max_focal_rel_std else focal_problem(
                float(model.K[0, 0, 0]), fov_x, focal, cfg
            )
        focal_diagnostics = focal.diagnostics() if focal is not None else {"focal_rel_std": None}  # drifted
        if (problem is not None and focal is not None and flows is not None and cfg.uncertain_focal_max_rel_std
                and turns_faster_than_prior(model, cfg)):  # a slower camera is the prior's case
            if np.isnan(focal.jackknife_rel_std) and focal.rel_std <= cfg.uncertain_focal_max_rel_std:
                # the cost profile's std alone was 2.5 % on an orbit whose mover pulled the focal 24 % off
                focal = replace(focal, jackknife_rel_std=_bundle_focal_jackknife(model, cfg))
                focal_diagnostics = focal.diagnostics()
                problem = focal_problem(float(model.K[0, 0, 0]), fov_x, focal, cfg)
            uncertain = uncertain_focal_alternatives(model, focal.rel_std, flows, cfg)
            focal_diagnostics.update(uncertain.diagnostics)
            if uncertain.alternatives:
                problem, alternatives = None, uncertain.alternatives
            else:
                problem = f"{problem}; not kept as an uncertain estimate: {uncertain.why_not}"
        if problem is not None:
            if cfg.unknown_focal == "reject":
                raise CameraFailure("intrinsics_unobservable", problem)
            model, prior_diagnostics, alternatives = prior_focal_model(model, prior_focal_px(width, cfg), problem, cfg)
            focal_diagnostics.update(prior_diagnostics)
            source = "prior"
    errors = reprojection_errors(model)
    stats = error_stats(errors[model.inlier])
    if not stats["median"] <= cfg.max_median_reproj_px:
        raise CameraFailure(
            "high_reprojection_error",
            f"median reprojection error {stats['median']:.2f} px > {cfg.max_median_reproj_px} px",
        )
    c2w, scene_scale = _first_frame_c2w(model)
    focal_alternatives = tuple((_first_frame_c2w(alt)[0], image_K(alt)) for alt in alternatives)
    inlier_errors = np.where(model.inlier, errors, np.nan)
    with np.errstate(invalid="ignore"):
        frame_reproj = np.nansum(inlier_errors, 1) / model.inlier.sum(1)  # NaN where no inliers
    K_out = image_K(model)
    diagnostics.update(
        {
            "num_points3d": int(model.triangulated.sum()),
            "median_tri_angle_deg": float(np.median(triangulation_angles(model, np.nonzero(model.triangulated)[0]))),
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
        focal_alternatives=focal_alternatives,
    )


def _bundle_focal_uncertainty(model: SfmModel, cfg: SfmConfig) -> FocalUncertainty:
    """Uncertainty of the estimated focal (`labelers.sfm.focal`): BA cost with the focal
    fixed at f (1 +- 5 %), poses and points re-optimised, on the same observations; then, unless
    that already rejects the focal, the jackknife over image regions."""
    # The cost model is least squares (labelers.sfm.focal): costs around the least-squares optimum
    # of the same inliers, not the robust one. The robust fit downweights what fits badly, which
    # shrinks the residual that measures the noise (a room dolly turned 21 deg by its focal passed).
    base = copy_model(model)
    cost0 = bundle_adjust(base, True, cfg, scale_px=LEAST_SQUARES_SCALE_PX)
    focal = float(base.K[0, 0, 0])
    costs = []
    for factor in (1 + FOCAL_STEP, 1 / (1 + FOCAL_STEP)):
        trial = copy_model(base)
        costs.append(bundle_adjust(trial, True, cfg, fixed_focal=focal * factor, scale_px=LEAST_SQUARES_SCALE_PX))
    num_obs = int(model.inlier.sum())
    dof = max(2 * num_obs - 6 * int(model.registered.sum()) - 3 * int(model.triangulated.sum()), 1)
    uncertainty = focal_uncertainty_from_costs(cost0, costs[0], costs[1], num_obs, dof, cfg.focal_bias_px)
    if not uncertainty.rel_std <= cfg.max_focal_rel_std:
        return uncertainty
    return replace(uncertainty, jackknife_rel_std=_bundle_focal_jackknife(model, cfg))


def _bundle_focal_jackknife(model: SfmModel, cfg: SfmConfig) -> float:
    """Jackknife relative standard deviation of the focal: BA (focal free) without the points
    of one of grid x grid image regions (by their mean inlier position) at a time."""
    used = np.nonzero(model.triangulated & model.inlier.any(0))[0]
    with np.errstate(invalid="ignore"):
        mean_xy = np.nanmean(np.where(model.inlier[:, used, None], model.obs[:, used], np.nan), axis=0)
    regions = image_regions(mean_xy - COLMAP_OFFSET, model.width, model.height, cfg.focal_jackknife_grid)
    log_focals = []
    for region in np.unique(regions):
        trial = copy_model(model)
        left_out = used[regions == region]
        trial.inlier[:, left_out] = False
        trial.points[left_out] = np.nan
        bundle_adjust(trial, True, cfg, scale_px=LEAST_SQUARES_SCALE_PX)
        log_focals.append(np.log(trial.K[0, 0, 0]))
    return jackknife_log_std(np.array(log_focals))


def _first_frame_c2w(model: SfmModel) -> tuple[np.ndarray, float]:
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
        c2w[:3, :3] = c2w_a[:3, :3] @ exp_so3(alpha * log_so3(c2w_a[:3, :3].T @ c2w_b[:3, :3]))
        c2w[:3, 3] = (1 - alpha) * c2w_a[:3, 3] + alpha * c2w_b[:3, 3]
        w2c[t] = np.linalg.inv(c2w)
