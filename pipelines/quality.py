"""Per-clip label-quality metrics and gating (DESIGN.md "Quality metrics per clip").

`clip_quality` measures a labelled clip; `gate` compares the metrics with thresholds from
configuration and returns one reason per failed metric, naming the metric and its value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Mapping

import numpy as np

from labelers.depth import triangulate_flow
from labelers.geometry import bilinear_sample, pixel_grid, relative_pose, rigid_flow
from labelers.dynamic_mask import DynamicMaskConfig, residual_threshold
from labelers.sfm.background import refit_to_background, rigid_flow_support

__all__ = [
    "QualityThresholds",
    "camera_epipolar_ratios",
    "camera_flow_consistency",
    "clip_quality",
    "depth_valid_fraction_off_infinity",
    "gate",
    "trajectory_stats",
]


@dataclass(frozen=True)
class QualityThresholds:
    """Accept a clip only if every metric lies inside its bounds (None: no bound).

    Defaults are deliberately loose: they reject broken labels, not merely hard clips.

    Depth coverage is bounded off infinity (`depth_valid_fraction_off_infinity`): a sky has no
    valid depth by contract (LABELS.md), and counted against the clip it rejected open yards
    whose ground depth was as good as a room's (docs/benchmarks.md, "Session 16").

    `max_camera_epipolar_ratio` bounds `camera_epipolar_ratio` (`camera_flow_consistency`): how far
    the background's dense key-pair flow lies from the cameras' epipolar lines, over how far it
    lies from the lines of the best pose for that flow (about 1 for right cameras). It catches
    cameras that a bundle adjustment stuck in a wrong minimum turned against their path, or that
    a mover pulled; the limit's calibration is in docs/benchmarks.md, "Session 15" and "Session 16".
    `max_camera_epipolar_ratio_worst` bounds the same ratio on the clip's worst key pair: the
    median passes a clip whose last few cameras drifted (a held-out textureless dolly without
    intrinsics: median 1.77, its last four pairs 10.6-28.8, the masks of those key frames 22-45 %
    false alarms), while right cameras stayed at or below 4.3 on every pair of 23 T = 49 clips
    (docs/benchmarks.md, "Session 21").
    """

    min_fb_consistent_fraction: float | None = 0.5
    min_depth_valid_fraction: float | None = None
    min_depth_valid_fraction_off_infinity: float | None = 0.3
    min_flow_valid_fraction: float | None = 0.5
    max_rigid_flow_residual_px: float | None = 2.0
    max_depth_reprojection_abs_rel: float | None = 0.15
    max_trajectory_anomalies: float | None = 3
    max_dynamic_ratio: float | None = 0.6
    max_flow_uncertainty_p90_px: float | None = 3.0
    max_camera_epipolar_ratio: float | None = 2.5
    max_camera_epipolar_ratio_worst: float | None = 8.0
    extra: dict = field(default_factory=dict)

    def bounds(self) -> dict[str, tuple[str, float]]:
        """metric name -> ("min" | "max", value) for every set bound."""
        out = {}
        for key, value in asdict(self).items():
            if key == "extra" or value is None:
                continue
            kind, metric = key.split("_", 1)
            out[metric] = (kind, float(value))
        for metric, (kind, value) in self.extra.items():
            out[metric] = (kind, float(value))
        return out


def gate(metrics: Mapping[str, float], thresholds: QualityThresholds) -> list[str]:
    """Reasons to reject, one per violated bound, e.g. 'qa: fb_consistent_fraction=0.31 < min 0.5'."""
    reasons = []
    for metric, (kind, bound) in thresholds.bounds().items():
        value = metrics.get(metric)
        if value is None or not np.isfinite(value):
            reasons.append(f"qa: {metric} is missing or not finite ({value})")
        elif kind == "min" and value < bound:
            reasons.append(f"qa: {metric}={value:.4g} < min {bound:.4g}")
        elif kind == "max" and value > bound:
            reasons.append(f"qa: {metric}={value:.4g} > max {bound:.4g}")
    return reasons


def trajectory_stats(c2w: np.ndarray, scene_scale: float, anomaly_rel_error: float = 0.03) -> dict[str, float]:
    """Length, rotation and jerk anomalies of a camera trajectory.

    Anomalies: frames where a constant-acceleration prediction from the three previous camera
    centres misses the actual centre by more than `anomaly_rel_error` of the path length
    (the SpatialVID-style check), counted over the clip. The path length is floored at a tenth
    of `scene_scale` (e.g. the median depth, same unit as c2w) so that the jitter of a
    tripod shot does not count as jerk.
    """
    c2w = np.asarray(c2w, np.float64)
    centres = c2w[:, :3, 3]
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=1)
    length = float(steps.sum())
    R = c2w[:, :3, :3]
    relative = np.einsum("tji,tjk->tik", R[:-1], R[1:])
    cos = np.clip((np.trace(relative, axis1=1, axis2=2) - 1) / 2, -1, 1)
    angles_deg = np.degrees(np.arccos(cos))
    anomalies = 0
    if len(centres) >= 4 and max(length, scene_scale) > 0:
        predicted = 3 * centres[2:-1] - 3 * centres[1:-2] + centres[:-3]
        miss = np.linalg.norm(predicted - centres[3:], axis=1) / max(length, 0.1 * scene_scale)
        anomalies = int((miss > anomaly_rel_error).sum())
    return {
        "trajectory_length": length,
        "rotation_total_deg": float(angles_deg.sum()),
        "rotation_max_step_deg": float(angles_deg.max(initial=0.0)),
        "trajectory_anomalies": float(anomalies),
    }


def clip_quality(
    labels: Mapping[str, np.ndarray],
    stride: int,
    fb_inside: np.ndarray | None = None,
    measured_key_flow_valid: np.ndarray | None = None,
    depth_independent: bool = False,
) -> dict[str, float]:
    """Quality metrics of a labelled clip (LABELS.md arrays).

    Args:
        labels: stored fields of one clip.
        stride: key-frame stride.
        fb_inside: optional (T-1, H, W) bool, pixels whose forward target is inside the image;
            the forward-backward consistent fraction is measured over them (else over all pixels).
        measured_key_flow_valid: optional (S-1, H, W) bool, the key flow's validity before the labels
            were checked against the labelled depth and cameras (`labelers.guided_flow.
            invalid_against_depth`). The camera gate and the depth coverage off infinity read it:
            flow made invalid for contradicting the cameras must not hide their error. The share
            it lost is `key_flow_geometry_invalid_fraction`.
        depth_independent: the depth was not triangulated under the labelled cameras (an import's,
            a network's); the camera gate then discounts key pairs whose background fit is a
            mover's (`camera_epipolar_ratios`).
    """
    depth = np.asarray(labels["depth"], np.float64)
    depth_valid = np.asarray(labels["depth_valid"], bool)
    flow_valid = np.asarray(labels["flow_valid"], bool)
    dynamic = np.asarray(labels["dynamic_mask"], bool)
    uncertainty = np.asarray(labels["flow_uncertainty"], np.float64)
    inside = np.ones_like(flow_valid) if fb_inside is None else fb_inside
    scene_flow_valid = np.asarray(labels["scene_flow_valid"], bool)
    key_flow_valid = np.asarray(labels["key_flow_valid"], bool)
    measured = key_flow_valid if measured_key_flow_valid is None else np.asarray(measured_key_flow_valid, bool)
    independent = {**labels, "key_flow_valid": measured}
    metrics = {
        "fb_consistent_fraction": _fraction(flow_valid & inside, inside),
        "depth_valid_fraction": float(depth_valid.mean()),
        "depth_valid_fraction_off_infinity": depth_valid_fraction_off_infinity(independent, stride),
        "flow_valid_fraction": float(flow_valid.mean()),
        "key_flow_valid_fraction": float(key_flow_valid.mean()),
        "key_flow_geometry_invalid_fraction": _fraction(~key_flow_valid, measured),
        "scene_flow_valid_fraction_of_dynamic": _fraction(scene_flow_valid, dynamic[:-1]),
        "dynamic_ratio": float(dynamic.mean()),
        "flow_uncertainty_mean_px": _masked_mean(uncertainty, flow_valid),
        "flow_uncertainty_p90_px": _masked_percentile(uncertainty, flow_valid, 90),
    }
    residual, reprojection = _static_geometry_consistency(labels, stride)
    metrics["rigid_flow_residual_px"] = residual
    pair_ratios = camera_epipolar_ratios(independent, stride, depth_independent=depth_independent)
    fitted = pair_ratios[np.isfinite(pair_ratios)]
    metrics["camera_epipolar_ratio"] = float(np.median(fitted)) if fitted.size else float("nan")
    metrics["camera_epipolar_ratio_worst"] = float(fitted.max()) if fitted.size else float("nan")
    metrics["depth_reprojection_abs_rel"] = reprojection
    scene_scale = float(np.median(depth[depth_valid])) if depth_valid.any() else 0.0
    metrics["median_depth"] = scene_scale
    metrics.update(trajectory_stats(labels["c2w"], scene_scale))
    return metrics


def camera_flow_consistency(labels: Mapping[str, np.ndarray], stride: int, min_floor_px: float = 0.05) -> float:
    """The median over the key pairs of `camera_epipolar_ratios`; NaN without a pair whose valid flow can be fitted."""
    ratios = camera_epipolar_ratios(labels, stride, min_floor_px)
    return float(np.nanmedian(ratios)) if np.isfinite(ratios).any() else float("nan")


# Pairs the cameras explain this much worse than the refit are checked against the depth (the masks' refit_min_ratio).
REFIT_CHECK_RATIO = DynamicMaskConfig.refit_min_ratio
# A mover's fit leaves a third or less of what the cameras leave rigid (0.33-0.35 and below on imported
# dollies); a camera a fraction of a degree off leaves as much as its refit within the masks' tolerance.
REFIT_MOVER_SHARE = 0.5


def camera_epipolar_ratios(
    labels: Mapping[str, np.ndarray], stride: int, min_floor_px: float = 0.05, depth_independent: bool = False
) -> np.ndarray:
    """How much worse the cameras explain the background's key-pair flow than the best pose for that flow does.

    Per key pair (`labelers.sfm.background.refit_to_background`, which the masks and the camera's uncertain focal use too), a
    fundamental matrix is fitted to grid samples of the valid flow, so the background that
    fills the frame outvotes the movers; the samples it explains to within `ransac_max_px`
    are the background. Over them: the median distance of the flow targets from the cameras'
    epipolar lines (from the rotation-only position where the pair does not translate), over
    the same median for the best pose this flow allows: the cameras'
    relative pose refitted to the background's flow (`flow_relative_pose`, started from it,
    K kept), or the fitted fundamental matrix where that is lower. The floor is at least
    `min_floor_px`: precision beyond a twentieth of a pixel is not asked of the cameras, since
    no label resolves it (a striped yard's flow reached 0.03 px, and cameras 0.1 px off it,
    0.6 deg off their path, gave depth and masks as good as the true ones).

    The dense flow is measured independently of the camera's tracks and depth, and the
    distance across the epipolar line is what no depth can explain. Right cameras score about
    1 whatever the texture and noise, and the ratio grows with their error; the noise hides
    small errors (cameras turned by 1 deg over a small clip score 7.3 on exact flow, 5.5 and 1.4
    under 0.1 and 0.5 px of smooth flow noise: `tests/pipelines/test_quality.py`). A
    fundamental matrix alone is not the floor: with two more degrees of freedom it also fits
    part of the noise of a textureless yard's flow, below what the true cameras reach, and let
    a camera 4.8 deg off its path pass (docs/benchmarks.md, "Session 16"). The dynamic mask is
    not used: it comes from the cameras, and cameras fitted to a mover mark the background
    dynamic.

    The background fit is the flow's dominant motion, which a mover that fills most of the frame
    holds. With `depth_independent` (the labelled depth was not triangulated under these cameras:
    an import's, a network's), a pair whose ratio exceeds `REFIT_CHECK_RATIO` but whose refit
    leaves less than `REFIT_MOVER_SHARE` of what the cameras leave of the flow on the rigid flow of
    that depth (`labelers.sfm.background.rigid_flow_support`, the masks' count) has no ratio (NaN):
    its fit is a mover's. A near tie says nothing: within the masks' tolerance, cameras turned by a
    fraction of a degree explain as much as their refit, and their ratio must stand. Exact cameras scored 25 on such a pair of an imported striped dolly (docs/benchmarks.md,
    "Session 37"). Triangulated depth is fitted to the flow under the cameras and cannot testify.

    Args:
        labels: LABELS.md arrays of one clip (K, c2w, key_flow, key_flow_valid; depth and depth_valid
            with `depth_independent`).
        stride: key-frame stride.

    Returns:
        (S - 1,) float64, the ratio of every key pair; NaN for a pair whose valid flow cannot be fitted.
    """
    K, c2w = np.asarray(labels["K"], np.float64), np.asarray(labels["c2w"], np.float64)
    key_flow, key_valid = np.asarray(labels["key_flow"], np.float64), np.asarray(labels["key_flow_valid"], bool)
    ratios = np.full(len(key_flow), np.nan)
    for n in range(len(key_flow)):
        src, dst = n * stride, (n + 1) * stride
        cameras = relative_pose(c2w[src], c2w[dst])
        # the gate's background fit keeps SfmConfig's defaults, so QA does not move with the labeler's settings
        refit = refit_to_background(key_flow[n], key_valid[n], K[src], K[dst], cameras)
        if refit is None:
            continue
        ratios[n] = refit.epipolar_ratio(bool(np.linalg.norm(cameras[:3, 3]) > 0), min_floor_px)
        suspect = depth_independent and ratios[n] > REFIT_CHECK_RATIO
        if suspect and _refit_follows_a_mover(labels, n, stride, cameras, refit.src_to_dst):
            ratios[n] = np.nan
    return ratios


def _refit_follows_a_mover(
    labels: Mapping[str, np.ndarray], n: int, stride: int, cameras: np.ndarray, refit_src_to_dst: np.ndarray
) -> bool:
    """Whether key pair n's refit leaves less than `REFIT_MOVER_SHARE` as much of its valid flow on the
    rigid flow of the labelled depth as the cameras' pose does (`camera_epipolar_ratios`); False with
    too few pixels of depth."""
    cfg = DynamicMaskConfig()
    src, dst = n * stride, (n + 1) * stride
    K = np.asarray(labels["K"], np.float64)
    flow = np.asarray(labels["key_flow"][n], np.float64)
    valid = np.asarray(labels["key_flow_valid"][n], bool)
    depth = np.where(np.asarray(labels["depth_valid"][src], bool), np.asarray(labels["depth"][src], np.float64), 0.0)
    tolerance_px = residual_threshold(flow, cfg.residual_abs_px, cfg.residual_rel)
    (given, usable), (refit, _) = (
        rigid_flow_support(flow, valid, depth, K[src], K[dst], pose, tolerance_px, cfg.refit_depth_stride_px)
        for pose in (cameras, refit_src_to_dst)
    )
    return usable >= cfg.refit_depth_min_pixels and refit < REFIT_MOVER_SHARE * given


def depth_valid_fraction_off_infinity(
    labels: Mapping[str, np.ndarray], stride: int, max_parallax_px: float = 1.0
) -> float:
    """Depth coverage of the key frames that start a key pair, not counting pixels the flow puts at infinity.

    A pixel is at infinity in a key pair whose cameras translate when it is static, its key flow
    is valid, and the flow target lies within `max_parallax_px` of where a point at infinity
    would move (`TwoViewTriangulation.along_px`): a sky, or the ground at the focus of
    expansion, whose depth no parallax can give. Pixels with invalid flow still count: depth
    missing there is the labelers' failure, not the scene's.

    Args:
        labels: LABELS.md arrays of one clip (K, c2w, key_flow, key_flow_valid, dynamic_mask,
            depth_valid).
        stride: key-frame stride.
    """
    K, c2w = np.asarray(labels["K"], np.float64), np.asarray(labels["c2w"], np.float64)
    key_flow, key_valid = np.asarray(labels["key_flow"], np.float64), np.asarray(labels["key_flow_valid"], bool)
    dynamic, depth_valid = np.asarray(labels["dynamic_mask"], bool), np.asarray(labels["depth_valid"], bool)
    valid_count = counted = 0
    for n in range(len(key_flow)):
        src, dst = n * stride, (n + 1) * stride
        cameras = relative_pose(c2w[src], c2w[dst])
        at_infinity = np.zeros_like(key_valid[n])
        if np.linalg.norm(cameras[:3, 3]) > 0:
            tri = triangulate_flow(key_flow[n], K[src], K[dst], cameras)
            with np.errstate(invalid="ignore"):
                at_infinity = key_valid[n] & ~dynamic[n] & (np.abs(tri.along_px) < max_parallax_px)
        valid_count += int((depth_valid[src] & ~at_infinity).sum())
        counted += int((~at_infinity).sum())
    return valid_count / counted if counted else float("nan")


def _static_geometry_consistency(labels: Mapping[str, np.ndarray], stride: int) -> tuple[float, float]:
    """Median |flow - rigid flow| on static pixels, and mean depth reprojection abs-rel (TAE-like).

    Both test camera and depth together: for static surfaces, depth reprojected with the cameras
    must land where the measured flow points, at the depth measured there.
    """
    depth = np.asarray(labels["depth"], np.float64)
    depth_valid = np.asarray(labels["depth_valid"], bool)
    K, c2w = np.asarray(labels["K"], np.float64), np.asarray(labels["c2w"], np.float64)
    flow, flow_valid = np.asarray(labels["flow"], np.float64), np.asarray(labels["flow_valid"], bool)
    static = ~np.repeat(np.asarray(labels["dynamic_mask"], bool), stride, axis=0)[: len(depth)]
    residuals, rel_errors = [], []
    height, width = depth.shape[1:]
    for t in range(len(depth) - 1):
        use = depth_valid[t] & flow_valid[t] & static[t]
        if not use.any():
            continue
        flow_rigid, z_next = rigid_flow(depth[t], K[t], c2w[t], K[t + 1], c2w[t + 1])
        residuals.append(np.linalg.norm(flow_rigid - flow[t], axis=-1)[use])
        target = pixel_grid(height, width) + flow[t]
        depth_next = bilinear_sample(np.where(depth_valid[t + 1], depth[t + 1], np.nan), target)
        ok = use & np.isfinite(depth_next) & (depth_next > 0)
        rel_errors.append(np.abs(z_next[ok] - depth_next[ok]) / depth_next[ok])
    residual = float(np.median(np.concatenate(residuals))) if residuals else float("nan")
    reprojection = float(np.mean(np.concatenate(rel_errors))) if rel_errors else float("nan")
    return residual, reprojection


def _fraction(selected: np.ndarray, of: np.ndarray) -> float:
    total = int(np.count_nonzero(of))
    return float(np.count_nonzero(selected & of) / total) if total else float("nan")


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    return float(values[mask].mean()) if mask.any() else float("nan")


def _masked_percentile(values: np.ndarray, mask: np.ndarray, q: float) -> float:
    return float(np.percentile(values[mask], q)) if mask.any() else float("nan")
