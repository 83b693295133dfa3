"""Incremental SfM (step 3 of `labelers.sfm`) on tracks, with pycolmap's estimators and bundle adjuster.

A two-view initialisation (pycolmap relative pose) on a pair with many tracks and parallax,
then frames registered one by one by PnP with LO-RANSAC (pycolmap), tracks triangulated by
linear multi-view triangulation, and global bundle adjustment with a Cauchy loss (pycolmap /
Ceres) whenever the model grew by 50 % and at the end, each followed by the removal of
outlier observations (moving objects, occlusion boundaries) with a threshold adapted to the
track accuracy (`filter_outliers`). BA of a forward-moving camera has local minima that
depend on the initial pair, so the model is grown from the `num_init_pairs` best pairs and
the more accurate one is kept (`_better`). Unknown intrinsics: one focal length for all
frames, principal point at the image centre, refined in every global BA from a
`prior_fov_x_deg` start.

Everything here is in COLMAP pixel coordinates (`labelers.sfm.common.COLMAP_OFFSET`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pycolmap

from labelers.camera import CameraFailure
from labelers.sfm.common import COLMAP_OFFSET, ransac_options
from labelers.sfm.config import SfmConfig
from labelers.sfm.motion import MotionAnalysis
from labelers.sfm.pairs import PairGeometry


@dataclass
class SfmModel:
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
        inlier_px: the current inlier threshold (see `filter_outliers`).
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


def reconstruct(
    obs: np.ndarray,
    K: np.ndarray,
    size: tuple[int, int],
    analysis: MotionAnalysis,
    estimate_focal: bool,
    cfg: SfmConfig,
) -> SfmModel:
    """Incremental SfM (module docstring) on tracks `obs` (T, N, 2) and intrinsics K (T, 3, 3),
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


def _grow(model: SfmModel, estimate_focal: bool, cfg: SfmConfig) -> None:
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
        triangulate_new(model, cfg)
        if model.registered.sum() >= 1.5 * last_ba:
            bundle_adjust(model, estimate_focal, cfg)
            filter_outliers(model, cfg)
            last_ba = int(model.registered.sum())
    bundle_adjust(model, estimate_focal, cfg)
    filter_outliers(model, cfg)
    triangulate_new(model, cfg)
    bundle_adjust(model, estimate_focal, cfg)  # last: the model is at the optimum of its inlier set


def _better(a: SfmModel, b: SfmModel) -> SfmModel:
    """The model that registers more frames, or else has the smaller squared reprojection
    error over the observations that both count as inliers (their local minima differ in
    accuracy, not in what they explain)."""
    if a.registered.sum() != b.registered.sum():
        return a if a.registered.sum() > b.registered.sum() else b
    common = a.inlier & b.inlier
    cost_a = np.sum(reprojection_errors(a)[common] ** 2)
    cost_b = np.sum(reprojection_errors(b)[common] ** 2)
    return a if cost_a <= cost_b else b


def _init_candidates(analysis: MotionAnalysis, cfg: SfmConfig) -> list[PairGeometry]:
    """Pairs with measurable translation, best first: many common tracks and parallax, which
    counts fully from 2 px on (more only shortens the tracks)."""
    usable = [p for p, moving in zip(analysis.pairs, analysis.translating(cfg)) if moving]
    return sorted(usable, key=lambda p: -len(p.common) * min(1.0, p.parallax_px / 2.0))


def _initialise(
    obs: np.ndarray, K: np.ndarray, size: tuple[int, int], pair: PairGeometry, estimate_focal: bool, cfg: SfmConfig
) -> SfmModel | None:
    """Two-view reconstruction of `pair` (relative pose, triangulation, BA); None if too few points."""
    num_frames, num_tracks = obs.shape[:2]
    height, width = size
    i, j = pair.i, pair.j
    xy_i, xy_j = obs[i, pair.common], obs[j, pair.common]
    rel = pycolmap.estimate_relative_pose(
        _pinhole_camera(K[i], width, height), xy_i, _pinhole_camera(K[j], width, height), xy_j, ransac_options(cfg)
    )
    if rel is None:
        return None
    pose = np.asarray(rel["cam2_from_cam1"].matrix())
    model = SfmModel(
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
    bundle_adjust(model, False, cfg)
    filter_outliers(model, cfg)
    return model if model.triangulated.sum() >= cfg.min_common_tracks else None


def _pinhole_camera(K: np.ndarray, width: int, height: int, camera_id: int = 1) -> pycolmap.Camera:
    """A pycolmap pinhole camera from K in COLMAP pixel coordinates."""
    return pycolmap.Camera(
        model="PINHOLE",
        width=width,
        height=height,
        params=[K[0, 0], K[1, 1], K[0, 2], K[1, 2]],
        camera_id=camera_id,
    )


def _next_frame(model: SfmModel, failed: set[int]) -> int | None:
    """The unregistered frame that sees the most triangulated points (None when none can be tried)."""
    support = (model.observed & model.triangulated[None]).sum(1)
    support[model.registered] = -1
    for t in failed:
        support[t] = -1
    if support.max() < 6:
        return None
    return int(np.argmax(support))


def _register(model: SfmModel, frame: int, cfg: SfmConfig) -> bool:
    """Pose of one frame by PnP (LO-RANSAC and refinement) on the triangulated tracks it sees."""
    sel = np.nonzero(model.observed[frame] & model.triangulated)[0]
    if len(sel) < 6:
        return False
    est = pycolmap.AbsolutePoseEstimationOptions(ransac=ransac_options(cfg, 2 * cfg.ransac_max_px))
    ref = pycolmap.AbsolutePoseRefinementOptions(refine_focal_length=False, refine_extra_params=False)
    camera = _pinhole_camera(model.K[frame], model.width, model.height)
    ans = pycolmap.estimate_and_refine_absolute_pose(model.obs[frame, sel], model.points[sel], camera, est, ref)
    if ans is None or ans["num_inliers"] < max(6, 0.25 * len(sel)):
        return False
    pose = np.asarray(ans["cam_from_world"].matrix())
    model.R[frame], model.t[frame] = pose[:, :3], pose[:, 3]
    model.registered[frame] = True
    errors = reprojection_errors(model, frames=[frame])[frame]
    model.inlier[frame] = model.observed[frame] & model.triangulated & (errors < model.inlier_px)
    return True


def _project(model: SfmModel, frames: np.ndarray, track_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pixel positions and depths of points `track_ids` in cameras `frames` (broadcast)."""
    X = model.points[track_ids]
    cam = np.einsum("...ij,...j->...i", model.R[frames], X) + model.t[frames]
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = np.einsum("...ij,...j->...i", model.K[frames], cam / z[..., None])[..., :2]
    return uv, z


def reprojection_errors(
    model: SfmModel, track_ids: np.ndarray | None = None, frames: list[int] | None = None
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


def _triangulate(model: SfmModel, track_ids: np.ndarray, cfg: SfmConfig) -> None:
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
    errors = reprojection_errors(model, track_ids)
    good = np.nan_to_num(errors, nan=np.inf) < model.inlier_px
    ok = good.sum(0) >= 2
    ok[ok] = triangulation_angles(model, track_ids[ok], good[:, ok]) >= cfg.min_tri_angle_deg
    model.points[track_ids[~ok]] = np.nan
    model.inlier[:, track_ids] = good & ok[None]


def triangulation_angles(model: SfmModel, track_ids: np.ndarray, use: np.ndarray | None = None) -> np.ndarray:
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


def triangulate_new(model: SfmModel, cfg: SfmConfig) -> None:
    """Triangulate the untriangulated tracks seen by two or more registered frames that gained
    observations since their last attempt."""
    registered_obs = (model.observed & model.registered[:, None]).sum(0)
    candidates = (~model.triangulated) & (registered_obs >= 2) & (registered_obs > model.tried)
    _triangulate(model, np.nonzero(candidates)[0], cfg)


def filter_outliers(model: SfmModel, cfg: SfmConfig) -> None:
    """Observations within the inlier threshold in front of the camera are inliers; points with
    fewer than two inliers or too small an angle are removed.

    The threshold adapts to the tracks: `outlier_factor` times the median error of the
    observations within `max_reproj_px`, clipped to [min_reproj_px, max_reproj_px]. Precise
    tracks thus get a tight threshold, which is what removes the tracks of occlusion
    boundaries and slowly moving objects that a fixed pixel threshold lets through.
    """
    errors = np.nan_to_num(reprojection_errors(model), nan=np.inf)
    candidates = errors[errors < cfg.max_reproj_px]
    if candidates.size:
        threshold = cfg.outlier_factor * np.median(candidates)
        model.inlier_px = float(np.clip(threshold, cfg.min_reproj_px, cfg.max_reproj_px))
    model.inlier = errors < model.inlier_px
    ids = np.nonzero(model.triangulated)[0]
    keep = model.inlier[:, ids].sum(0) >= 2
    keep[keep] &= triangulation_angles(model, ids[keep], model.inlier[:, ids[keep]]) >= cfg.min_tri_angle_deg
    model.points[ids[~keep]] = np.nan
    model.inlier[:, ids[~keep]] = False


# A Cauchy scale far above every inlier error: the least-squares fit that the focal's uncertainty
# model (`labelers.sfm.focal`) assumes, and the scale bundle adjustment used throughout before.
LEAST_SQUARES_SCALE_PX = 1.0


def bundle_adjust(
    model: SfmModel,
    refine_focal: bool,
    cfg: SfmConfig,
    fixed_focal: float | None = None,
    scale_px: float | None = None,
) -> float:
    """Global BA over registered frames and inlier observations (pycolmap / Ceres, Cauchy loss).

    The loss scale follows the tracks' accuracy: `cfg.loss_scale_factor` times the median
    reprojection error of the inlier observations before the adjustment (at least
    `cfg.min_loss_scale_px`). A moving object whose tracks stay within the inlier threshold,
    because it moves nearly along its epipolar lines (a mover approaching a camera that dollies
    forward), would otherwise pull the cameras with the weight of a static surface; a least-squares
    fit (a scale far above every residual) trades its motion for a rotation of the cameras against
    their path (docs/benchmarks.md, "Labeler design measurements", SfM camera).
    Frame poses, points and (with `refine_focal`) the shared focal are updated in place.
    The gauge is fixed on the initial pair (COLMAP's TWO_CAMS_FROM_WORLD takes the two lowest
    image ids: the first pose and one translation coordinate of the second), whose wide
    baseline pins the scale; two neighbouring frames of a video would leave it near-singular.
    `scale_px` overrides that scale (e.g. `LEAST_SQUARES_SCALE_PX`); Ceres then stops at a
    relative cost decrease of 1e-9 instead of `cfg.robust_function_tolerance`.
    Returns the final robust cost of the inlier observations, sum of c^2 log(1 + r^2 / c^2) over
    their reprojection errors r (c the loss scale; about the sum of r^2 for r well below c).
    """
    frames = np.nonzero(model.registered)[0]
    robust = scale_px is None
    scale_px = _loss_scale_px(model, cfg) if robust else scale_px
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
            rec.add_camera_with_trivial_rig(_pinhole_camera(model.K[t], model.width, model.height, image_id[int(t)]))
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
    options.ceres.loss_function_scale = scale_px
    options.ceres.solver_options.num_threads = cfg.num_threads
    options.ceres.solver_options.max_num_iterations = 100
    options.ceres.solver_options.function_tolerance = cfg.robust_function_tolerance if robust else 1e-9
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
    return _robust_cost(model, scale_px)


def _robust_cost(model: SfmModel, loss_scale_px: float) -> float:
    """Cauchy cost of the inlier observations at the given scale (what `bundle_adjust` minimises)."""
    errors = np.where(model.inlier, reprojection_errors(model), 0.0)
    return float(np.sum(loss_scale_px**2 * np.log1p((errors / loss_scale_px) ** 2)))


def _loss_scale_px(model: SfmModel, cfg: SfmConfig) -> float:
    """Cauchy scale of the next adjustment (`bundle_adjust`), from the current inlier errors."""
    errors = reprojection_errors(model)[model.inlier]
    errors = errors[np.isfinite(errors)]
    typical = float(np.median(errors)) if errors.size else 0.0
    return max(cfg.loss_scale_factor * typical, cfg.min_loss_scale_px)


def image_K(model: SfmModel) -> np.ndarray:
    """(T, 3, 3) intrinsics of the model in image pixel coordinates (without COLMAP's offset)."""
    K = model.K.copy()
    K[:, :2, 2] -= COLMAP_OFFSET
    return K


def copy_model(model: SfmModel) -> SfmModel:
    return SfmModel(
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
