"""Depth labeler protocol and the weight-free multi-view backend (flow + cameras -> z-depth).

Conventions (LABELS.md): depth is z-depth in the unit of the camera translations (one
unknown scale per clip), 0 where invalid; `c2w` maps camera to first-frame coordinates;
flow F_{i->j}(u) = q - u in pixels.

`MultiViewDepth` triangulates, for every pixel of frame i, the flow correspondences with
several neighbouring frames j and fuses them:

1. Correspondences i -> j come from the given flows, composed along the fewest (at most
   `max_hops`) given pairs, e.g. 5 -> 4 -> 8 -> 12 from consecutive and key-frame flows,
   for `max_views` frames j with 0 < |j - i| <= `max_frame_gap`: those farthest from i in
   camera position (parallax, and so precision, grows with the baseline), optionally with
   the `near_views` nearest among them. A composed flow is valid only where every hop is, so
   over long gaps it is lost wherever the point was occluded or left the view on the way;
   near views still see it, but put part of what they add too near beside occluders
   (measured: docs/benchmarks.md, "Session 40").
2. Two-view triangulation: with the relative pose (R, t) of j w.r.t. i, a point at inverse
   depth rho on the ray of u projects to q(rho) = pi(a + rho b), a = K_j R K_i^-1 (u, 1),
   b = K_j t, a straight line through the vanishing point pi(a) (rho = 0). The measured
   q is split into its distance to that epipolar line (`epipolar_px`, the motion no static
   point can have) and its position along it, which gives rho in closed form, together with
   the sensitivity |dq/drho| (pixels per unit inverse depth) and hence the standard
   deviation sigma_rho = sigma_px / |dq/drho| for an error sigma_px of q. That error has two
   parts: the flow's, and the cameras', which move the vanishing point itself by a share
   `camera_sigma_rel` of the rotation's image motion |pi(a) - u| (measured on an orbit: a
   focal length 1 % off moves it by 0.8 % of that motion, SfM's cameras whose focal was 1 %
   off, poses fitted to it, by 1.9 %).
   On stripes and single edges (`labelers.flow.aperture_normals`) a flow estimate is measured
   across them only and slides along them with the estimator's smoothing (by the same amount
   forward and backward, so the validity checks keep it). There the flow's error along the
   stripes counts as `stripe_slide_ratio` times its error across them: q is the point of the
   epipolar line nearest the measured target in that metric, and its sigma grows as the line
   turns towards the stripes. Triangulating the slide as if it were measured put about half
   of a striped ground's depth more than 25 % off; ignoring the flow along stripes entirely
   cost 5 points of coverage on rich texture for no accuracy (measured: docs/benchmarks.md,
   "Session 13"). Flow that passed the forward-backward check only across stripes
   (`PairFlows.across_only_fwd`) is not used at all: its two directions slid apart there.
3. Fusion per pixel in inverse depth: the weighted median (weights 1/sigma_rho^2) of the
   views that pass the epipolar check, then the inverse-variance mean of the views within
   `inlier_sigmas` standard deviations of it. Its sigma adds the flow parts in quadrature
   but takes the weighted mean of the camera parts: every view of the clip shares one set of
   cameras, so averaging views does not average a camera error away.
4. A pixel is valid only if it is static (outside the given dynamic mask grown by
   `dynamic_margin_px`), at least `min_views` views agree and carry at least
   `min_inlier_weight_fraction` of the weight, the fused inverse depth is positive, its
   relative standard deviation is at most `max_rel_sigma`, the best single view alone puts
   it at least `min_parallax_sigmas` of its own sigmas from infinity, and it is not at a depth
   discontinuity (flow is smoothed across those, so depth right next to them is biased;
   see `edge_radius_px`). So dynamic pixels, low parallax (pure rotation, the focus of
   expansion, far points such as a sky), views behind a camera, inconsistent views and
   occlusions (invalid flow) all leave the pixel invalid rather than guessed.

   The parallax test is there because the fused sigma treats the views as independent, yet
   they share flow hops (5 -> 8 and 5 -> 12 both start with 5 -> 8), so their errors are
   correlated and the fused sigma of a far point is too small: the views' agreement alone lets
   part of a far sky through, far too near (measured: docs/benchmarks.md, "Labeler design
   measurements", multi-view depth).

   The camera part is there because the cameras of a clip come from SfM with an estimated
   focal length: a far point's few pixels of parallax are then of the size of the camera
   error, and without it the fused depth of a sky 80 m away was valid on 57 % of the sky,
   20-40 % too near, on an orbit whose focal length SfM had 1 % off (same section).

Moving objects whose motion leaves the epipolar line fail step 2's check by themselves;
motion along it is caught by the dynamic mask (see `labelers.dynamic_mask`, which also
implements the mask -> depth -> mask order).
"""

from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Mapping, Protocol, Sequence, runtime_checkable

import cv2
import numpy as np

from labelers.flow import STRIPE_MAX_ISOTROPY, STRIPE_WINDOW_PX, PairFlows, aperture_normals, compose_flows
from labelers.geometry import check_frames, grow_mask, relative_pose

__all__ = [
    "DepthResult",
    "DepthEstimator",
    "EpipolarPlanes",
    "TwoViewTriangulation",
    "MultiViewDepthConfig",
    "MultiViewDepth",
    "check_depth_inputs",
    "check_pair_flows",
    "compose_flows",
    "flow_paths",
    "correspondences_along",
    "triangulate_flow",
    "median_scale",
]

@dataclass(frozen=True)
class DepthResult:
    """Depth of T frames.

    Attributes:
        depth: (T, H, W) float32 z-depth, 0 where invalid.
        depth_valid: (T, H, W) bool.
        rel_sigma: (T, H, W) float32 relative standard deviation of the depth (inf where
            invalid); neural backends report their alignment residual here.
        prior_depth: optional (T, H, W) float32 z-depth of a dense prior (a network aligned to
            the cameras) wherever it is defined, 0 elsewhere. Unlike `depth` it keeps pixels
            withheld for contradicting the multi-view geometry: on a surface that moves along
            its epipolar lines the triangulation is consistently wrong and the prior is the
            only evidence of the motion (`labelers.dynamic_mask`). None without a prior.
    """

    depth: np.ndarray
    depth_valid: np.ndarray
    rel_sigma: np.ndarray
    prior_depth: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.depth.ndim != 3 or self.depth.dtype != np.float32:
            raise ValueError(f"depth must be (T, H, W) float32, got {self.depth.shape} {self.depth.dtype}")
        if self.depth_valid.shape != self.depth.shape or self.depth_valid.dtype != bool:
            raise ValueError(f"depth_valid must be (T, H, W) bool like depth, got {self.depth_valid.shape}")
        if self.rel_sigma.shape != self.depth.shape:
            raise ValueError(f"rel_sigma must be {self.depth.shape}, got {self.rel_sigma.shape}")
        if self.prior_depth is not None and (
            self.prior_depth.shape != self.depth.shape or self.prior_depth.dtype != np.float32
        ):
            raise ValueError(f"prior_depth must be (T, H, W) float32 like depth, got {self.prior_depth.shape}")


@runtime_checkable
class DepthEstimator(Protocol):
    """A depth backend; `name`, `version`, `params` go into the clip's `labelers` attribute.

    `dense` says whether the backend also labels moving pixels (a network) or, assuming a
    static scene, only static ones (triangulation): depth of the latter must be dropped
    wherever motion is found later.
    """

    name: str
    version: str
    dense: bool

    @property
    def params(self) -> dict[str, Any]: ...

    def estimate(
        self,
        frames: np.ndarray,
        flows: PairFlows,
        c2w: np.ndarray,
        K: np.ndarray,
        dynamic_mask: np.ndarray | None = None,
    ) -> DepthResult:
        """Depth of every frame.

        Args:
            frames: (T, H, W, 3) uint8 RGB.
            flows: flows of any set of frame pairs, both directions (`PairFlows.lookup`).
            c2w: (T, 4, 4) camera-to-world in first-frame coordinates (any global scale).
            K: (T, 3, 3) intrinsics in pixels of (H, W).
            dynamic_mask: optional (T, H, W) bool, True where the pixel of frame t moves.
        """
        ...


def check_depth_inputs(
    frames: np.ndarray, flows: PairFlows, c2w: np.ndarray, K: np.ndarray, dynamic_mask: np.ndarray | None
) -> tuple[int, int, int]:
    """Validate the `DepthEstimator.estimate` arguments; returns (T, H, W)."""
    num_frames, height, width = check_frames(frames)
    if np.shape(c2w) != (num_frames, 4, 4):
        raise ValueError(f"c2w must be (T, 4, 4) = ({num_frames}, 4, 4), got {np.shape(c2w)}")
    if np.shape(K) != (num_frames, 3, 3):
        raise ValueError(f"K must be (T, 3, 3) = ({num_frames}, 3, 3), got {np.shape(K)}")
    expected = (num_frames, height, width)
    if dynamic_mask is not None and (np.shape(dynamic_mask) != expected or dynamic_mask.dtype != bool):
        raise ValueError(f"dynamic_mask must be (T, H, W) = {expected} bool, got {np.shape(dynamic_mask)}")
    check_pair_flows(flows, num_frames, height, width)
    return num_frames, height, width


def check_pair_flows(flows: PairFlows, num_frames: int, height: int, width: int) -> None:
    """Raise unless `flows` holds P >= 1 pairs (i, j) of distinct frames in [0, T), with (P, H, W, 2)
    flows and (P, H, W) bool validity in both directions."""
    if not isinstance(flows, PairFlows):
        raise TypeError(f"flows must be labelers.flow.PairFlows, got {type(flows).__name__}")
    pairs = np.asarray(flows.pairs)
    if pairs.ndim != 2 or pairs.shape[1:] != (2,) or len(pairs) == 0:
        raise ValueError(f"flows must hold (P, 2) frame pairs, P >= 1, got pairs of shape {pairs.shape}")
    for i, j in pairs.tolist():
        if not (0 <= i < num_frames and 0 <= j < num_frames) or i == j:
            raise ValueError(f"flow pair ({i}, {j}) is not two distinct frames of [0, {num_frames})")
    expected = (len(pairs), height, width)
    for name in ("flow_fwd_px", "flow_bwd_px"):
        shape = np.shape(getattr(flows, name))
        if shape != (*expected, 2):
            raise ValueError(f"flows.{name} must be (P, H, W, 2) = {(*expected, 2)}, got {shape}")
    for name in ("valid_fwd", "valid_bwd"):
        valid = getattr(flows, name)
        if np.shape(valid) != expected or np.asarray(valid).dtype != bool:
            raise ValueError(f"flow validity flows.{name} must be (P, H, W) = {expected} bool, got {np.shape(valid)}")


def flow_paths(
    pairs: Iterable[tuple[int, int]], src: int, max_frame_gap: int, max_hops: int
) -> dict[int, tuple[int, ...]]:
    """Shortest chains of given flow pairs from `src` to every frame within `max_frame_gap`.

    Breadth-first over the pair graph, so each target is reached with the fewest hops (fewer
    compositions, less accumulated error).

    Returns:
        dst -> path (src, ..., dst) of at most `max_hops` hops.
    """
    edges: dict[int, list[int]] = {}
    for i, j in pairs:
        edges.setdefault(i, []).append(j)
    paths: dict[int, tuple[int, ...]] = {src: (src,)}
    queue: deque[int] = deque([src])
    while queue:
        node = queue.popleft()
        if len(paths[node]) > max_hops:
            continue
        for nxt in sorted(edges.get(node, ())):
            if nxt not in paths and abs(nxt - src) <= max_frame_gap:
                paths[nxt] = paths[node] + (nxt,)
                queue.append(nxt)
    del paths[src]
    return paths


def correspondences_along(
    flows: PairFlows, paths: Mapping[int, tuple[int, ...]]
) -> dict[int, tuple[np.ndarray, np.ndarray, int]]:
    """Flow along each path (composed hop by hop; shared prefixes are composed once).

    Returns:
        dst -> (flow_px (H, W, 2) float32, valid (H, W) bool, hops).
    """
    composed: dict[tuple[int, ...], tuple[np.ndarray, np.ndarray]] = {}

    def along(path: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        if path not in composed:
            flow_px, valid = flows.lookup(*path[-2:])
            if len(path) > 2:
                flow_px, valid = compose_flows(*along(path[:-1]), flow_px, valid)
            composed[path] = (np.asarray(flow_px, np.float32), np.asarray(valid, bool))
        return composed[path]

    return {dst: (*along(path), len(path) - 1) for dst, path in paths.items()}


@dataclass(frozen=True)
class TwoViewTriangulation:
    """Per-pixel triangulation of one flow field (H, W arrays, float64).

    The static positions of a source pixel in the destination image form the epipolar
    line q(rho) = pi(a + rho b); its offset from the vanishing point pi(a) (rho = 0) splits
    into `along_px` (along the line, towards growing rho) and `epipolar_px` (across it).

    Attributes:
        inv_depth: rho = 1 / z-depth in the source camera (may be <= 0: beyond infinity).
        sensitivity: |dq/drho|, pixels of image motion per unit of inverse depth.
        epipolar_px: signed distance of the flow target to the epipolar line.
        along_px: position of the target along the line, from the vanishing point.
        offset_px: distance of the target from the vanishing point (NaN where a_z <= 0).
        rotation_px: distance of the vanishing point from the source pixel, the image motion of a
            point at infinity (the rotation's alone; NaN where a_z <= 0).
        line_scale: |h| of the line, so that along(rho) = line_scale rho / (a_z (a_z + rho b_z)).
        a_z: (H, W) depth factor of the vanishing point.
        b_z: scalar, depth component of K_dst t.
        line_direction: (H, W, 2) unit vector along the line, towards growing rho.
        ok: bool, the geometry is defined (line exists, point in front of both cameras).
    """

    inv_depth: np.ndarray
    sensitivity: np.ndarray
    epipolar_px: np.ndarray
    along_px: np.ndarray
    offset_px: np.ndarray
    rotation_px: np.ndarray
    line_scale: np.ndarray
    a_z: np.ndarray
    b_z: float
    line_direction: np.ndarray
    ok: np.ndarray

    def along_at(self, inv_depth: np.ndarray | float) -> np.ndarray:
        """Position along the line (pixels) of a static point at `inv_depth`; inf where it passes behind dst."""
        with np.errstate(divide="ignore", invalid="ignore"):
            z_ratio = self.a_z + inv_depth * self.b_z
            along = self.line_scale * inv_depth / (self.a_z * z_ratio)
        return np.where(z_ratio > 0, along, np.inf)


@dataclass(frozen=True)
class EpipolarPlanes:
    """The epipolar lines of every source pixel in a destination image, per component on (H, W)
    float64 planes (several times faster than arrays with a trailing axis of 2 or 3).

    Attributes:
        u, v: the source pixel's coordinates.
        a_x, a_y, a_z: a = K_dst R K_src^-1 (u, v, 1); a point at infinity lands at (a_x, a_y) / a_z.
        b: (3,) K_dst t, with (R, t) the source-to-destination transform.
        h_x, h_y: direction of growing inverse depth along the line (not normalised).
    """

    u: np.ndarray
    v: np.ndarray
    a_x: np.ndarray
    a_y: np.ndarray
    a_z: np.ndarray
    b: np.ndarray
    h_x: np.ndarray
    h_y: np.ndarray

    @classmethod
    def of(cls, K_src: np.ndarray, K_dst: np.ndarray, src_to_dst: np.ndarray, height: int, width: int) -> EpipolarPlanes:
        """The lines of an (height, width) source image; K_src, K_dst (3, 3), src_to_dst (4, 4)."""
        K_dst = np.asarray(K_dst, np.float64)
        src_to_dst = np.asarray(src_to_dst, np.float64)
        v, u = np.mgrid[0:height, 0:width].astype(np.float64)
        M = K_dst @ src_to_dst[:3, :3] @ np.linalg.inv(np.asarray(K_src, np.float64))
        a_x, a_y, a_z = (M[i, 0] * u + M[i, 1] * v + M[i, 2] for i in range(3))
        b = K_dst @ src_to_dst[:3, 3]
        return cls(u, v, a_x, a_y, a_z, b, b[0] * a_z - a_x * b[2], b[1] * a_z - a_y * b[2])


def triangulate_flow(
    flow_px: np.ndarray,
    K_src: np.ndarray,
    K_dst: np.ndarray,
    src_to_dst: np.ndarray,
    across_normal: np.ndarray | None = None,
    slide_ratio: float = np.inf,
) -> TwoViewTriangulation:
    """Inverse depth of every source pixel from its flow target (module docstring, step 2).

    Args:
        flow_px: (H, W, 2) F_{src->dst}.
        K_src, K_dst: (3, 3) intrinsics.
        src_to_dst: (4, 4) source-camera to destination-camera transform
            (`labelers.geometry.relative_pose(c2w_src, c2w_dst)`).
        across_normal: optional (H, W, 2) unit normals of stripes (`labelers.flow.aperture_normals`),
            NaN elsewhere. Where given, the flow's error along the stripes is taken as
            `slide_ratio` times its error across them, and the target is the point of the
            epipolar line nearest the measured one in that metric (for an infinite ratio: where
            the line through the measured target along the stripes crosses the epipolar line).
            There `epipolar_px` is 0 and `sensitivity` is scaled so that the flow's error across
            the stripes gives the standard deviation along the line: by |cos| of the angle
            between the normal and the line for an infinite ratio (a line along the stripes
            then determines no depth).
    """
    if flow_px.ndim != 3 or flow_px.shape[-1] != 2:
        raise ValueError(f"flow_px must be (H, W, 2), got {flow_px.shape}")
    lines = EpipolarPlanes.of(K_src, K_dst, src_to_dst, *flow_px.shape[:2])
    a_z, b = lines.a_z, lines.b
    h_norm = np.hypot(lines.h_x, lines.h_y)
    flow_x, flow_y = np.asarray(flow_px[..., 0], np.float64), np.asarray(flow_px[..., 1], np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        dir_x, dir_y = lines.h_x / h_norm, lines.h_y / h_norm
        to_vanishing_x, to_vanishing_y = lines.a_x / a_z - lines.u, lines.a_y / a_z - lines.v  # where infinity moves
        offset_x, offset_y = flow_x - to_vanishing_x, flow_y - to_vanishing_y  # of the target from the vanishing point
        along = offset_x * dir_x + offset_y * dir_y
        epipolar = offset_x * dir_y - offset_y * dir_x
        direction = np.stack([dir_x, dir_y], axis=-1)
        on_stripes = None if across_normal is None else np.isfinite(across_normal[..., 0])
        if on_stripes is not None and on_stripes.any():
            offset = np.stack([offset_x[on_stripes], offset_y[on_stripes]], axis=-1)
            aperture = _along_stripes(along, epipolar, offset, direction[on_stripes], across_normal[on_stripes],
                                      on_stripes, slide_ratio)
        denom = h_norm - along * a_z * b[2]
        inv_depth = along * a_z**2 / denom
        z_ratio = a_z + inv_depth * b[2]  # z_dst * rho: positive iff the point is in front of dst
        sensitivity = h_norm / z_ratio**2
        if on_stripes is not None and on_stripes.any():
            sensitivity[on_stripes] *= aperture
        ok = (a_z > 0) & (h_norm > 0) & (denom > 0) & (z_ratio > 0) & np.isfinite(inv_depth) & np.isfinite(epipolar)
        rotation_px = np.where(a_z > 0, np.hypot(to_vanishing_x, to_vanishing_y), np.nan)
    offset_px = np.where(a_z > 0, np.hypot(offset_x, offset_y), np.nan)
    return TwoViewTriangulation(
        inv_depth, sensitivity, epipolar, along, offset_px, rotation_px, h_norm, a_z, float(b[2]), direction, ok
    )


def _along_stripes(
    along: np.ndarray,
    epipolar: np.ndarray,
    offset: np.ndarray,
    direction: np.ndarray,
    normal: np.ndarray,
    on_stripes: np.ndarray,
    slide_ratio: float,
) -> np.ndarray:
    """`triangulate_flow` on the N stripe pixels: writes their `along` and `epipolar` (H, W) in place
    from their (N, 2) offsets, line directions and normals, and returns the (N,) factor of their
    sensitivity. Weighted least squares along the line: weight 1 across the stripes,
    1 / slide_ratio^2 along them."""
    nx, ny = normal[:, 0], normal[:, 1]  # the stripes run along (-ny, nx)
    n_line = nx * direction[:, 0] + ny * direction[:, 1]
    s_line = (nx * direction[:, 1] - ny * direction[:, 0]) / slide_ratio
    n_offset = nx * offset[:, 0] + ny * offset[:, 1]
    s_offset = (nx * offset[:, 1] - ny * offset[:, 0]) / slide_ratio
    information = n_line**2 + s_line**2
    position = (n_line * n_offset + s_line * s_offset) / information
    along[on_stripes] = np.where(np.isfinite(position), position, np.inf)
    epipolar[on_stripes] = 0.0
    return np.sqrt(information)


@dataclass(frozen=True)
class MultiViewDepthConfig:
    """Settings of `MultiViewDepth` (serialised into the clip's `labelers` attribute).

    Attributes:
        max_frame_gap: views come from frames at most this far from the reference frame.
        max_hops: most flow pairs composed into one correspondence.
        max_views: views per frame, those with the longest camera baselines first.
        near_views: of those, this many are the frames with the shortest baselines instead
            (module docstring, step 1).
        flow_sigma_px: assumed standard deviation of one flow field's error.
        flow_sigma_rel: extra flow error per pixel of flow magnitude (large motions are
            estimated less precisely).
        epipolar_sigmas: a view whose target lies farther than this many sigmas (flow and
            camera) from the epipolar line is not a static observation and is dropped.
        inlier_sigmas: views within this many sigmas of the weighted median are fused.
        min_views: fewest agreeing views for a valid pixel.
        min_inlier_weight_fraction: agreeing views must carry at least this share of the weight.
        max_rel_sigma: largest relative standard deviation of the fused depth.
        dynamic_margin_px: the given dynamic mask is grown by this many pixels, since flow
            next to a moving object is smeared across its boundary.
        edge_radius_px, edge_rel_jump, edge_sigmas: a pixel is invalid where the fused
            inverse depth within `edge_radius_px` (of any pixel with an estimate, valid or not,
            so that the far side of an edge counts too) spans more than a factor
            1 + `edge_rel_jump` + `edge_sigmas` * its relative sigma: flow is smoothed across
            depth discontinuities, so depth right at them is unreliable (radius 0 disables it).
        min_parallax_sigmas: the view with the smallest sigma must place the point at least this
            many of its sigmas nearer than infinity (module docstring, step 4).
        camera_sigma_rel: assumed error of the cameras (rotation and focal length) in where a
            point at infinity lands, per pixel of its motion (`TwoViewTriangulation.rotation_px`);
            0.02 matches the focal uncertainty that `labelers.sfm` accepts (`max_focal_rel_std`).
            The views share it, so fusion does not average it down (module docstring, step 3).
        min_isotropy, isotropy_window_px: on stripes and single edges (`labelers.flow.aperture_normals`)
            the flow along them counts as `stripe_slide_ratio` times less precise than across
            them (`triangulate_flow`'s `across_normal` and `slide_ratio`); 0 disables.
    """

    max_frame_gap: int = 16
    max_hops: int = 6
    max_views: int = 12
    near_views: int = 0
    flow_sigma_px: float = 0.35
    flow_sigma_rel: float = 0.01
    epipolar_sigmas: float = 3.0
    inlier_sigmas: float = 3.0
    min_views: int = 2
    min_inlier_weight_fraction: float = 0.6
    max_rel_sigma: float = 0.16
    dynamic_margin_px: int = 2
    edge_radius_px: int = 1
    edge_rel_jump: float = 0.1
    edge_sigmas: float = 2.0
    min_parallax_sigmas: float = 3.0
    camera_sigma_rel: float = 0.02
    min_isotropy: float = STRIPE_MAX_ISOTROPY
    isotropy_window_px: int = STRIPE_WINDOW_PX
    stripe_slide_ratio: float = 8.0

    def __post_init__(self) -> None:
        if min(self.max_frame_gap, self.max_hops, self.max_views, self.min_views) < 1:
            raise ValueError("max_frame_gap, max_hops, max_views and min_views must be >= 1")
        if min(self.flow_sigma_px, self.epipolar_sigmas, self.inlier_sigmas, self.max_rel_sigma) <= 0 or (
            self.edge_rel_jump <= 0
        ):
            raise ValueError("flow_sigma_px, epipolar_sigmas, inlier_sigmas, max_rel_sigma, edge_rel_jump must be > 0")
        if self.edge_sigmas < 0 or self.min_parallax_sigmas < 0:
            raise ValueError(f"need edge_sigmas >= 0 and min_parallax_sigmas >= 0, got {self.edge_sigmas}, "
                             f"{self.min_parallax_sigmas}")
        if min(self.flow_sigma_rel, self.camera_sigma_rel, self.dynamic_margin_px, self.edge_radius_px) < 0:
            raise ValueError("flow_sigma_rel, camera_sigma_rel, dynamic_margin_px and edge_radius_px must be >= 0")
        if not 0 <= self.min_isotropy < 1 or self.isotropy_window_px < 3 or not self.stripe_slide_ratio >= 1:
            raise ValueError(f"need 0 <= min_isotropy < 1, isotropy_window_px >= 3 and stripe_slide_ratio >= 1, got "
                             f"{self.min_isotropy}, {self.isotropy_window_px}, {self.stripe_slide_ratio}")
        if not 0 <= self.near_views <= self.max_views:
            raise ValueError(f"need 0 <= near_views <= max_views, got {self.near_views}, {self.max_views}")
        if not 0 < self.min_inlier_weight_fraction <= 1:
            raise ValueError(f"min_inlier_weight_fraction must be in (0, 1], got {self.min_inlier_weight_fraction}")


class MultiViewDepth:
    """`DepthEstimator` from flow and cameras on static pixels (CPU, no weights); see the module docstring.

    Example:
        >>> result = MultiViewDepth().estimate(frames, flows, c2w, K, dynamic_mask)
        >>> result.depth.shape, result.depth_valid.shape  # (T, H, W) each
    """

    name = "multiview_flow_triangulation"
    # 2: parallax test against infinity, edge test against invalid estimates; 3: camera error;
    # 4: on stripes the flow along them weighs less, and flow valid only across them is left out
    version = "4"
    dense = False

    def __init__(self, config: MultiViewDepthConfig | None = None) -> None:
        self.config = config or MultiViewDepthConfig()

    @property
    def params(self) -> dict[str, Any]:
        return asdict(self.config)

    def estimate(
        self,
        frames: np.ndarray,
        flows: PairFlows,
        c2w: np.ndarray,
        K: np.ndarray,
        dynamic_mask: np.ndarray | None = None,
    ) -> DepthResult:
        """Depth (T, H, W) of every frame; see `DepthEstimator.estimate` for the arguments."""
        num_frames, height, width = check_depth_inputs(frames, flows, c2w, K, dynamic_mask)
        shape = (num_frames, height, width)
        none = DepthResult(np.zeros(shape, np.float32), np.zeros(shape, bool), np.full(shape, np.inf, np.float32))
        return self.reestimate(none, range(num_frames), frames, flows, c2w, K, dynamic_mask)

    def reestimate(
        self,
        depth: DepthResult,
        frame_indices: Sequence[int],
        frames: np.ndarray,
        flows: PairFlows,
        c2w: np.ndarray,
        K: np.ndarray,
        dynamic_mask: np.ndarray | None = None,
    ) -> DepthResult:
        """A copy of `depth` (T, H, W) whose frames `frame_indices` are estimated again from `flows`
        (e.g. after some pairs' flows were improved); other arguments as in `estimate`."""
        check_depth_inputs(frames, flows, c2w, K, dynamic_mask)
        # Flow valid only across stripes says nothing reliable along them (the two directions
        # slid apart there), and triangulation reads both components.
        flows = flows.without_across_only()
        c2w = np.asarray(c2w, np.float64)
        out = DepthResult(depth.depth.copy(), depth.depth_valid.copy(), depth.rel_sigma.copy(), depth.prior_depth)
        cfg = self.config
        for t in frame_indices:
            static = None if dynamic_mask is None else ~grow_mask(dynamic_mask[t], cfg.dynamic_margin_px)
            out.depth[t], out.depth_valid[t], out.rel_sigma[t] = self.frame_depth(t, flows, c2w, K, static, frames[t])
        return out

    def frame_depth(
        self,
        t: int,
        flows: PairFlows,
        c2w: np.ndarray,
        K: np.ndarray,
        static: np.ndarray | None = None,
        image: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Depth, validity and relative sigma (each (H, W)) of frame t; `static` (H, W) bool restricts
        it; `image` (H, W, 3) uint8 RGB of frame t gives its stripes (module docstring, step 2;
        None: no stripe model)."""
        cfg = self.config
        flows = flows.without_across_only()  # no copy when `estimate` already dropped them
        across_normal = None
        if image is not None and cfg.min_isotropy:
            gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
            across_normal = aperture_normals(gray, cfg.isotropy_window_px, cfg.min_isotropy)
        height, width = flows.valid_fwd.shape[1:]
        paths = flow_paths(flows.directed_pairs(), t, cfg.max_frame_gap, cfg.max_hops)
        # Longest baselines first: parallax, and so precision, grows with them.
        baseline = {dst: float(np.linalg.norm(c2w[dst][:3, 3] - c2w[t][:3, 3])) for dst in paths}
        ranked = sorted(paths, key=lambda dst: (-baseline[dst], len(paths[dst]), dst))
        far = cfg.max_views - cfg.near_views
        chosen = ranked[:far] + ranked[far:][len(ranked[far:]) - cfg.near_views:]
        views = correspondences_along(flows, {dst: paths[dst] for dst in chosen})
        if not views:
            shape = (height, width)
            return np.zeros(shape, np.float32), np.zeros(shape, bool), np.full(shape, np.inf, np.float32)
        inv_depth, flow_sigma, camera_sigma = [], [], []
        for dst, (flow_px, flow_valid, hops) in sorted(views.items()):
            tri = triangulate_flow(flow_px, K[t], K[dst], relative_pose(c2w[t], c2w[dst]), across_normal, cfg.stripe_slide_ratio)
            flow_px_sigma = np.sqrt(hops) * cfg.flow_sigma_px + cfg.flow_sigma_rel * np.hypot(flow_px[..., 0], flow_px[..., 1])
            camera_px_sigma = cfg.camera_sigma_rel * tri.rotation_px
            with np.errstate(invalid="ignore"):
                tolerance_px = cfg.epipolar_sigmas * np.hypot(flow_px_sigma, camera_px_sigma)
                keep = tri.ok & flow_valid & (np.abs(tri.epipolar_px) <= tolerance_px)
            with np.errstate(divide="ignore", invalid="ignore"):
                sigmas = (flow_px_sigma / tri.sensitivity, camera_px_sigma / tri.sensitivity)
            keep &= np.isfinite(sigmas[0]) & np.isfinite(sigmas[1])
            inv_depth.append(np.where(keep, tri.inv_depth, np.nan))
            flow_sigma.append(np.where(keep, sigmas[0], np.nan))
            camera_sigma.append(np.where(keep, sigmas[1], np.nan))
        fused, valid, rel_sigma = self._fuse(np.stack(inv_depth), np.stack(flow_sigma), np.stack(camera_sigma))
        if static is not None:
            valid &= static
        if cfg.edge_radius_px:
            # The tolerance grows with the pixel's own uncertainty, so noise alone is no edge.
            tolerance = cfg.edge_rel_jump + cfg.edge_sigmas * np.where(valid, rel_sigma, 0.0)
            # Neighbours count with any fused estimate, valid or not: next to the sky, a pixel
            # whose flow is smeared from the occluding object must not keep the object's depth.
            valid &= _smooth_neighbourhood(fused, np.isfinite(fused), cfg.edge_radius_px, tolerance)
        depth = np.where(valid, 1.0 / np.where(valid, fused, 1.0), 0.0)
        return depth.astype(np.float32), valid, np.where(valid, rel_sigma, np.inf).astype(np.float32)

    def _fuse(
        self, inv_depth: np.ndarray, flow_sigma: np.ndarray, camera_sigma: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Robust inverse-variance fusion of V views (V, H, W) (module docstring, steps 3-4).

        Args:
            inv_depth: (V, H, W) inverse depth per view, NaN where the view is unusable.
            flow_sigma: (V, H, W) its standard deviation from flow errors (independent per view).
            camera_sigma: (V, H, W) its standard deviation from camera errors (shared by the views).

        Returns:
            fused inverse depth, validity and relative sigma, each (H, W).
        """
        cfg = self.config
        sigma = np.hypot(flow_sigma, camera_sigma)
        usable = np.isfinite(inv_depth) & np.isfinite(sigma) & (sigma > 0)
        weight = np.where(usable, 1.0 / np.where(usable, sigma, 1.0) ** 2, 0.0)
        centre = _weighted_median(np.where(usable, inv_depth, np.inf), weight)
        with np.errstate(invalid="ignore"):
            inlier = usable & (np.abs(inv_depth - centre) <= cfg.inlier_sigmas * sigma)
        w_in = np.where(inlier, weight, 0.0)
        total_in = w_in.sum(axis=0)
        best_sigma = np.where(inlier, sigma, np.inf).min(axis=0)
        with np.errstate(divide="ignore", invalid="ignore"):
            fused = (np.where(inlier, inv_depth, 0.0) * w_in).sum(axis=0) / total_in
            # Flow errors add in quadrature; camera errors move every view alike, so their
            # weighted mean is the fused one (without them this is 1 / sqrt(total_in)).
            flow_var = (w_in**2 * np.where(inlier, flow_sigma, 0.0) ** 2).sum(axis=0) / total_in**2
            camera_sd = (w_in * np.where(inlier, camera_sigma, 0.0)).sum(axis=0) / total_in
            rel_sigma = np.sqrt(flow_var + camera_sd**2) / fused
            valid = (
                (inlier.sum(axis=0) >= cfg.min_views)
                & (total_in >= cfg.min_inlier_weight_fraction * weight.sum(axis=0))
                & (fused > 0)
                & (rel_sigma <= cfg.max_rel_sigma)
                & (fused >= cfg.min_parallax_sigmas * best_sigma)
            )
        return fused, valid, rel_sigma


def _smooth_neighbourhood(inv_depth: np.ndarray, valid: np.ndarray, radius_px: int, rel_jump: np.ndarray) -> np.ndarray:
    """Where the inverse depth of the `valid` pixels within `radius_px` spans at most a factor 1 + rel_jump (H, W)."""
    kernel = np.ones((2 * radius_px + 1, 2 * radius_px + 1), np.uint8)
    finite = np.where(valid, inv_depth, 0.0).astype(np.float32)
    highest = cv2.dilate(np.where(valid, finite, -np.inf).astype(np.float32), kernel)
    lowest = cv2.erode(np.where(valid, finite, np.inf).astype(np.float32), kernel)
    with np.errstate(invalid="ignore", over="ignore"):
        return highest <= (1.0 + rel_jump) * lowest


def _weighted_median(values: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Weighted median over axis 0 of (V, H, W); entries with zero weight must hold +inf (NaN if no weight)."""
    order = np.argsort(values, axis=0)
    sorted_values = np.take_along_axis(values, order, axis=0)
    cumulative = np.cumsum(np.take_along_axis(weight, order, axis=0), axis=0)
    half = 0.5 * cumulative[-1]
    index = np.minimum((cumulative < half[None]).sum(axis=0), values.shape[0] - 1)
    median = np.take_along_axis(sorted_values, index[None], axis=0)[0]
    return np.where(cumulative[-1] > 0, median, np.nan)


def median_scale(depth_pred: np.ndarray, depth_ref: np.ndarray, valid: np.ndarray) -> float:
    """The one factor s making s * depth_pred match depth_ref: the median of ref / pred on `valid` pixels."""
    if depth_pred.shape != depth_ref.shape or valid.shape != depth_ref.shape:
        raise ValueError(f"shapes differ: {depth_pred.shape}, {depth_ref.shape}, {valid.shape}")
    sel = valid & (depth_pred > 0) & (depth_ref > 0)
    if not sel.any():
        raise ValueError("no pixel where both depths are valid and positive")
    return float(np.median(depth_ref[sel] / depth_pred[sel]))
