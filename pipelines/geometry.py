"""Point maps and scene-flow pseudo-labels exactly as LABELS.md defines them (vectorised numpy).

P_k(u)   = c2w_k [D_k(u) K_k^-1 (u, v, 1)^T; 1]            (first-frame coordinates)
F3d_k(u) = P_{k+1}(u + F_{k->k+1}(u)) - P_k(u)  where M_k(u) = 1, else 0

`P_{k+1}` is sampled bilinearly; a target outside the image is invalid (never clamped), and
so is a target whose bilinear footprint touches invalid depth. Non-finite inputs never
reach the outputs: invalid pixels, and every pixel outside the dynamic mask, are exactly 0.

Scene flow is a pseudo-label held to a tolerance: within max(5 %, 1 cm) of the true motion
(`SceneFlowTolerance`). A flow error that passes every 2D check (forward-backward, chain
agreement) still moves the target along the surface by Z / f metres per pixel, which at a
few metres exceeds 1 cm for one pixel, so validity also asks that the flow's expected error,
carried into metres by the point map's slope at the target, and the disagreement with a
robust rigid fit of the mover's motion stay within a fraction of that tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from labelers.camera import ate_sim3, relative_rotation_errors_deg, umeyama_sim3
from labelers.flow import PairFlows, compose_flows
from labelers.geometry import bilinear_sample, inside_image, pixel_grid, rigid_fit

# Trajectory alignment lives with the camera labeler; re-exported here because `model` may
# import `pipelines` geometry but not `labelers` (DESIGN.md dependency table).
__all__ = [
    "point_maps",
    "scene_flow",
    "SceneFlowTolerance",
    "key_flow_error_px",
    "rigid_motion_residual",
    "ate_sim3",
    "relative_rotation_errors_deg",
    "umeyama_sim3",
]


@dataclass(frozen=True)
class SceneFlowTolerance:
    """How close a valid scene-flow pixel must be to the true motion: max(`relative` |F3d|, `absolute`).

    Attributes:
        relative: share of the motion's length.
        absolute: floor in scene units (metres when the clip has metric scale).
    """

    relative: float = 0.05
    absolute: float = 0.01

    def __post_init__(self) -> None:
        if self.relative < 0 or self.absolute <= 0:
            raise ValueError(f"need relative >= 0 and absolute > 0, got {self.relative}, {self.absolute}")

    def of(self, flow3d: np.ndarray) -> np.ndarray:
        """(...,) tolerance of (..., 3) scene-flow vectors."""
        return np.maximum(self.relative * np.linalg.norm(flow3d, axis=-1), self.absolute)


def point_maps(depth: np.ndarray, depth_valid: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:
    """Point maps of several frames in first-frame coordinates.

    Args:
        depth: (N, H, W) z-depth.
        depth_valid: (N, H, W) bool.
        K: (N, 3, 3) intrinsics.
        c2w: (N, 4, 4) camera-to-world (first-frame coordinates).

    Returns:
        (N, H, W, 3) float64 points, 0 where depth is invalid or non-finite.
    """
    depth = np.asarray(depth, np.float64)
    n, height, width = depth.shape
    if depth_valid.shape != depth.shape or K.shape != (n, 3, 3) or c2w.shape != (n, 4, 4):
        raise ValueError(
            f"shapes disagree: depth {depth.shape}, depth_valid {depth_valid.shape}, K {K.shape}, c2w {c2w.shape}"
        )
    valid = depth_valid & np.isfinite(depth) & (depth > 0)
    uv1 = np.concatenate([pixel_grid(height, width), np.ones((height, width, 1))], axis=-1)
    rays = np.einsum("nij,hwj->nhwi", np.linalg.inv(np.asarray(K, np.float64)), uv1)
    cam = rays * np.where(valid, depth, 0.0)[..., None]
    c2w = np.asarray(c2w, np.float64)
    world = np.einsum("nij,nhwj->nhwi", c2w[:, :3, :3], cam) + c2w[:, None, None, :3, 3]
    world[~valid] = 0.0
    return world


def scene_flow(
    points: np.ndarray,
    depth: np.ndarray,
    depth_valid: np.ndarray,
    key_flow: np.ndarray,
    key_flow_valid: np.ndarray,
    dynamic_mask: np.ndarray,
    max_footprint_depth_ratio: float = 1.05,
    flow_error_px: np.ndarray | None = None,
    tolerance: SceneFlowTolerance = SceneFlowTolerance(),
    max_error_fraction: float | None = 0.5,
    max_rigid_residual: float | None = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Scene flow between consecutive key frames and its validity mask.

    Args:
        points: (S, H, W, 3) point maps P_k (first-frame coordinates).
        depth: (S, H, W) z-depth of the key frames.
        depth_valid: (S, H, W) where depth (hence P_k) is valid.
        key_flow: (S-1, H, W, 2) flow F_{k->k+1} in pixels.
        key_flow_valid: (S-1, H, W) forward-backward consistent flow.
        dynamic_mask: (S, H, W) M_k.
        max_footprint_depth_ratio: largest max/min depth of the target's 4 bilinear neighbours.
        flow_error_px: optional (S-1, H, W) expected end-point error of `key_flow` (e.g. the
            one `key_flow_error_px` gives); None skips that test.
        tolerance: the accuracy a valid pixel is held to.
        max_error_fraction: `flow_error_px` times the point map's metres per pixel at the
            target must be at most this share of the pixel's tolerance (None: no test).
        max_rigid_residual: distance to the mover's robust rigid motion
            (`rigid_motion_residual`) allowed, as a share of the tolerance (None: no test).

    Returns:
        scene_flow: (S-1, H, W, 3), F3d_k on valid pixels, exactly 0 elsewhere (so always 0
            outside the dynamic mask);
        scene_flow_valid: (S-1, H, W) = dynamic & depth valid at both ends & key flow valid
            & target inside the image (all bilinear neighbours of the target valid), the
            target's footprint not straddling a depth edge (there bilinear sampling would blend
            two surfaces), and the two accuracy tests above.
    """
    points_valid = np.asarray(depth_valid, bool)
    S, height, width = points.shape[:3]
    expected = {"depth": (S, height, width), "points_valid": (S, height, width), "key_flow": (S - 1, height, width, 2),
                "key_flow_valid": (S - 1, height, width), "dynamic_mask": (S, height, width)}
    given = {"depth": depth.shape, "points_valid": points_valid.shape, "key_flow": key_flow.shape,
             "key_flow_valid": key_flow_valid.shape, "dynamic_mask": dynamic_mask.shape}
    if flow_error_px is not None:
        expected["flow_error_px"], given["flow_error_px"] = (S - 1, height, width), flow_error_px.shape
    for name, shape in expected.items():
        if given[name] != shape:
            raise ValueError(f"{name}: expected shape {shape} for points {points.shape}, got {given[name]}")
    flow_out = np.zeros((S - 1, height, width, 3))
    valid_out = np.zeros((S - 1, height, width), bool)
    grid = pixel_grid(height, width)
    for k in range(S - 1):
        flow_k = np.asarray(key_flow[k], np.float64)
        target = grid + np.where(np.isfinite(flow_k), flow_k, np.nan)
        # The target's bilinear footprint must be valid depth: sampling the mask as 0/1 gives 1 only then.
        target_valid = bilinear_sample(points_valid[k + 1].astype(np.float64), target) > 1 - 1e-9
        valid = (
            dynamic_mask[k]
            & points_valid[k]
            & key_flow_valid[k]
            & inside_image(target, height, width)
            & np.nan_to_num(target_valid, nan=0.0).astype(bool)
        )
        moved = bilinear_sample(points[k + 1], target) - points[k]
        valid &= np.isfinite(moved).all(axis=-1)
        lo, hi = _footprint_min_max(np.asarray(depth[k + 1], np.float64), target)
        with np.errstate(invalid="ignore", divide="ignore"):
            valid &= hi <= max_footprint_depth_ratio * lo
        moved[~valid] = 0.0
        allowed = tolerance.of(moved)
        if flow_error_px is not None and max_error_fraction is not None:
            with np.errstate(invalid="ignore"):  # inf px (broken chain) x 0 m/px (no depth) is NaN: invalid
                error_m = np.asarray(flow_error_px[k], np.float64) * _metres_per_pixel(points[k + 1], target)
                valid &= error_m <= max_error_fraction * allowed
        if max_rigid_residual is not None:
            residual = rigid_motion_residual(points[k], moved, valid, dynamic_mask[k], allowed, seed=k)
            valid &= residual <= max_rigid_residual
        flow_out[k][valid] = moved[valid]
        valid_out[k] = valid
    return flow_out, valid_out


def key_flow_error_px(key_flows: PairFlows, links: PairFlows, frames: np.ndarray | None = None) -> np.ndarray:
    """Expected end-point error of each key-pair forward flow: the larger of its own uncertainty and
    its gap to the consecutive flows composed over the key interval.

    The direct estimate over the interval and the chain of single-frame estimates err mostly
    independently; where they disagree, at least one is wrong by about that much, an error the
    forward-backward check of either cannot see (both directions share it). Where the chain
    breaks (a hop invalid), the key flow has no second opinion and its error is unknown (inf).

    With `frames`, also the Lucas-Kanade correction that the images still ask for: one
    Gauss-Newton step of brightness constancy over a 7x7 window around each pixel, after
    warping. Sensor noise and weak texture bias the direct and the chained flow alike (both
    smoothed towards slower motion), which neither check above sees; the images do.

    Args:
        key_flows: flows of pairs (i, j), i < j (e.g. `labelers.flow.key_frame_pairs`).
        links: flows holding (t, t + 1) for every step of every key pair (e.g. `consecutive_pairs`).
        frames: optional (T, H, W, 3) uint8 RGB frames the flows were estimated on.

    Returns:
        (P, H, W) float64 pixels, inf where the chain is invalid or the flow not finite.

    Raises:
        ValueError: a chain step has no flow in `links`, or the two differ in image size.
    """
    if key_flows.flow_fwd_px.shape[1:] != links.flow_fwd_px.shape[1:]:
        raise ValueError(f"key and link flows differ in size: {key_flows.flow_fwd_px.shape} vs {links.flow_fwd_px.shape}")
    hops = {(int(i), int(j)): p for p, (i, j) in enumerate(links.pairs)}
    errors = np.empty(key_flows.flow_fwd_px.shape[:-1])
    for p, (i, j) in enumerate(key_flows.pairs.tolist()):
        steps = [(t, t + 1) for t in range(i, j)]
        missing = [step for step in steps if step not in hops]
        if i >= j or missing:
            raise ValueError(f"no forward link flows {missing} to chain key pair ({i}, {j})")
        flow, valid = links.flow_fwd_px[hops[steps[0]]], links.valid_fwd[hops[steps[0]]]
        for step in steps[1:]:
            flow, valid = compose_flows(flow, valid, links.flow_fwd_px[hops[step]], links.valid_fwd[hops[step]])
        gap = np.linalg.norm(np.asarray(key_flows.flow_fwd_px[p], np.float64) - flow, axis=-1)
        error = np.maximum(gap, key_flows.uncertainty_fwd_px[p])
        if frames is not None:
            error = np.maximum(error, _photometric_correction_px(frames[i], frames[j], key_flows.flow_fwd_px[p]))
        errors[p] = np.where(valid & np.isfinite(error), error, np.inf)
    return errors


def _photometric_correction_px(src: np.ndarray, dst: np.ndarray, flow_px: np.ndarray, window: int = 7) -> np.ndarray:
    """|Lucas-Kanade step| (H, W) that brightness constancy asks of `flow_px` src -> dst, inf where untextured."""
    gray_src = cv2.cvtColor(src, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gray_dst = cv2.cvtColor(dst, cv2.COLOR_RGB2GRAY).astype(np.float32)
    target = (pixel_grid(*gray_src.shape) + flow_px).astype(np.float32)
    warped = cv2.remap(gray_dst, target[..., 0], target[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    gx = cv2.Sobel(warped, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(warped, cv2.CV_32F, 0, 1, ksize=3) / 8
    residual = warped - gray_src
    box = lambda image: cv2.boxFilter(image, -1, (window, window), normalize=False)  # noqa: E731
    sxx, sxy, syy = box(gx * gx).astype(np.float64), box(gx * gy).astype(np.float64), box(gy * gy).astype(np.float64)
    bx, by = box(gx * residual).astype(np.float64), box(gy * residual).astype(np.float64)
    det = sxx * syy - sxy * sxy
    with np.errstate(divide="ignore", invalid="ignore"):
        step_x = (syy * bx - sxy * by) / det
        step_y = (sxx * by - sxy * bx) / det
    step = np.hypot(step_x, step_y)
    return np.where(np.isfinite(step) & (det > 1e-6), step, np.inf)


def rigid_motion_residual(
    points: np.ndarray,
    flow3d: np.ndarray,
    valid: np.ndarray,
    dynamic_mask: np.ndarray,
    tolerance: np.ndarray,
    max_models: int = 3,
    min_support: int = 50,
    min_share: float = 0.2,
    seed: int = 0,
) -> np.ndarray:
    """Distance of each pixel's scene flow to a robust rigid motion of its moving region, in tolerances.

    Flow errors that every 2D check misses come in smooth blobs (the flow's regularisation
    fills in weak texture), and a blob's 3D motion disagrees with the rest of its object.
    Each connected region of the dynamic mask gets up to `max_models` rigid motions, fitted
    in turn to the pixels the previous ones do not explain (an articulated or non-rigid mover
    gets several; a region holding too few valid pixels gets none): RANSAC on 3-point
    samples, then iteratively reweighted least squares. Every motion must explain a good
    share of its region: a blob of wrong flow is smooth enough to look rigid on its own (on
    an orbit clip, small extra motions validated blobs 1.5-2 px off, 6 % of the valid pixels).

    Args:
        points: (H, W, 3) P_k.
        flow3d: (H, W, 3) scene flow.
        valid: (H, W) pixels to fit and score.
        dynamic_mask: (H, W) M_k; its 8-connected regions are fitted separately.
        tolerance: (H, W) per-pixel tolerance (> 0), the unit of the residual.
        max_models: rigid motions per region.
        min_support, min_share: a motion must explain (within one tolerance) at least this many
            pixels and this share of its region's valid pixels.
        seed: RANSAC seed (the result is deterministic).

    Returns:
        (H, W) float64 residual / tolerance; inf where invalid or explained by no motion.
    """
    residual = np.full(valid.shape, np.inf)
    rng = np.random.default_rng(seed)
    count, regions = cv2.connectedComponents(np.asarray(dynamic_mask, np.uint8), connectivity=8)
    for region in range(1, count):
        pixels = (regions == region) & valid
        if pixels.sum() < min_support:
            continue
        src = np.asarray(points[pixels], np.float64)
        dst = src + flow3d[pixels]
        support = max(min_support, int(np.ceil(min_share * len(src))))
        residual[pixels] = _sequential_rigid_residual(src, dst, tolerance[pixels], rng, max_models, support)
    return residual


def _sequential_rigid_residual(
    src: np.ndarray,
    dst: np.ndarray,
    tol: np.ndarray,
    rng: np.random.Generator,
    max_models: int,
    min_support: int,
    hypotheses: int = 256,
    scored: int = 2000,
    irls_scale: float = 0.3,
    irls_iterations: int = 6,
) -> np.ndarray:
    """Residual (in tolerances) of each src -> dst pair (N, 3) to the best of up to `max_models` rigid motions."""
    residual = np.full(len(src), np.inf)
    remaining = np.arange(len(src))
    for _ in range(max_models):
        if len(remaining) < min_support:
            break
        s, d, t = src[remaining], dst[remaining], tol[remaining]
        triples = rng.integers(0, len(s), (hypotheses, 3))
        R, shift = rigid_fit(s[triples], d[triples])
        subset = rng.choice(len(s), min(len(s), scored), replace=False)
        spread = np.linalg.norm(s[subset] @ R.transpose(0, 2, 1) + shift[:, None] - d[subset], axis=-1)
        best = int(np.argmax((spread <= 0.5 * t[subset]).sum(axis=1)))
        R, shift = R[best], shift[best]
        for _ in range(irls_iterations):
            r = np.linalg.norm(s @ R.T + shift - d, axis=-1) / t
            # Cauchy weights, and nothing from gross outliers (another motion, or a wrong match).
            weights = np.where(r <= 3.0, 1.0 / (1.0 + (r / irls_scale) ** 2), 0.0)
            if weights.sum() < 3:
                break
            R, shift = rigid_fit(s, d, weights)
        r = np.linalg.norm(s @ R.T + shift - d, axis=-1) / t
        explained = r <= 1.0
        if explained.sum() < min_support:
            break
        residual[remaining] = np.minimum(residual[remaining], r)
        remaining = remaining[~explained]
    return residual


def _metres_per_pixel(points: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """How far the bilinear read of a point map (H, W, 3) moves per pixel of shift of (u, v), the larger
    of the two image directions, from the 4 neighbours (NaN outside the image)."""
    height, width = points.shape[:2]
    inside = inside_image(uv, height, width)
    u0 = np.clip(np.floor(np.where(inside, uv[..., 0], 0)).astype(np.int64), 0, width - 2)
    v0 = np.clip(np.floor(np.where(inside, uv[..., 1], 0)).astype(np.int64), 0, height - 2)
    p00, p01 = points[v0, u0], points[v0, u0 + 1]
    p10, p11 = points[v0 + 1, u0], points[v0 + 1, u0 + 1]
    along_u = np.linalg.norm(0.5 * (p01 - p00 + p11 - p10), axis=-1)
    along_v = np.linalg.norm(0.5 * (p10 - p00 + p11 - p01), axis=-1)
    out = np.maximum(along_u, along_v)
    out[~inside] = np.nan
    return out


def _footprint_min_max(image: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Min and max of the 4 pixels around each (u, v) (NaN outside the image)."""
    height, width = image.shape
    inside = inside_image(uv, height, width)
    u0 = np.clip(np.floor(np.where(inside, uv[..., 0], 0)).astype(np.int64), 0, width - 2)
    v0 = np.clip(np.floor(np.where(inside, uv[..., 1], 0)).astype(np.int64), 0, height - 2)
    corners = np.stack([image[v0, u0], image[v0, u0 + 1], image[v0 + 1, u0], image[v0 + 1, u0 + 1]])
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    lo[~inside], hi[~inside] = np.nan, np.nan
    return lo, hi
