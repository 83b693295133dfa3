"""Key-pair flow estimated from a start: the consecutive flows composed (the first pass), then the
labelled geometry (a second pass that starts where the depth and cameras say a static scene would go).

Every pass has one mechanism (`prior_guided_pair_flows`): the destination frame is warped back by
the start flow, the estimator measures what is left, and the two are composed; the result is
checked like a direct estimate. With `LabelConfig.key_flow_chain_start` (off by default) and
multi-view depth, the label pipeline's first key-pair pass starts from the consecutive flows composed
over the key interval (`chain_guided_pair_flows`): a search from zero motion over four frames locks a striped
ground one period off and loses movers that move farther than its coarsest level reaches, while
each consecutive step stays within reach; the composition is taken whole, validity aside, since
the estimator only needs a start and the checks judge the result. Where the texture is too weak to
move the estimator off its start, the chain's drift stays and passes the forward-backward check (the
fused consecutive flows agree with their mirror): depth triangulated from the same flow shares it,
an import's does not (docs/benchmarks.md, "Session 38").

Near the camera, weak texture is magnified between key frames into smooth blobs, and a flow
estimator that searches coarse to fine from zero motion goes 1-4 px wrong there, in both
directions alike, so the forward-backward and photometric checks keep it (docs/benchmarks.md,
"Session 19"). Once depth and cameras are labelled, the rigid flow they predict is a far better
start:

1. the rigid flow R_{i->j} of frame i's labelled depth and the cameras
   (`labelers.geometry.rigid_flow`); where depth is invalid (far points, moving objects,
   weak texture) R is inpainted from the valid pixels around it (OpenCV Telea), a smooth guess
   whose error the estimator removes;
2. frame j warped by R back onto frame i (`warp_by_flow`), so what is left is the residual
   motion: the depth's error, and a mover's own motion;
3. the flow estimator on (frame i, warped frame j) gives the residual r; the flow is
   F(u) = r(u) + R(u + r(u));
4. both directions, then the same validity checks as a direct estimate
   (`labelers.flow.validate_pair_flows`) and the same chain repair (`fill_from_chains`);
5. per pixel and direction, the guided flow where it is valid, else the direct flow
   (`labelers.flow.prefer_valid`): the guided estimate loses part of the movers, whose motion
   the inpainted start does not hold, and the direct one keeps them;
6. once the key-frame masks are labelled, the direct flow again where they call a pixel moving
   that the depth did not hold, and the direct flow is valid (`direct_flow_on_movers`): the start
   inpainted from the background around a mover is wrong by its motion, and the direct flow is
   the closer one there (multi-view depth, which never holds movers). Where an import's depth
   holds the mover, the guided start includes the camera's share of its motion and the guided
   flow is the closer one (docs/benchmarks.md, "Session 21").

`labelers.dynamic_mask.label_depth_and_masks` then estimates every frame's depth again from
the refined flows (`labelers.depth.MultiViewDepth.reestimate`) before the key-frame masks: the
first depth was triangulated from the flow now corrected, and the masks read a correct flow
that disagrees with it as motion (on a degraded orbit at T = 49, false alarms 1.50 % before the
guided pass, 1.89 % with it alone, 1.21 % with the depth again). The frames between the key
frames reach their far views through the key pairs as well, so their depth gains wherever the
guided flow is valid and the first was not: the far ground of open orbits, 2-7 points of static
coverage (docs/benchmarks.md, "Session 35"). The prior flow is smoothed
(`PRIOR_SMOOTH_SIGMA_PX`): the labelled depth's pixel noise would otherwise pass straight into F
through R.

An import's depth and cameras (`--camera import --depth import`) guide the same pass, and stay as
imported; a fixed camera (one pose for every key frame) gets no second pass, since its rigid flow
is zero. The labelled depth was triangulated from the direct flow, so it carries part of that
flow's error, and the guided flow keeps part of it too (on one dolly's last key pairs the share of
valid static pixels more than 1 px off went from 14.5-39 % to 8.8-29 %; with the true depth to
0.6-1.4 %). Measured on the label pipeline: docs/benchmarks.md, "Session 20".
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

import cv2
import numpy as np

from labelers.flow import (
    DEFAULT_MAX_UNCERTAINTY_PX,
    FlowEstimator,
    FlowResult,
    PairFlows,
    ValidityChecks,
    fill_from_chains,
    prefer_valid,
    validate_pair_flows,
)
from labelers.geometry import check_frames, pixel_grid, rigid_flow

__all__ = [
    "CHAIN_START_VERSION",
    "GUIDED_KEY_FLOW_VERSION",
    "INPAINT_RADIUS_PX",
    "PRIOR_SMOOTH_SIGMA_PX",
    "GuidedKeyFlows",
    "rigid_prior_flow",
    "warp_by_flow",
    "prior_guided_pair_flows",
    "geometry_guided_pair_flows",
    "composed_chain_px",
    "chain_guided_pair_flows",
    "direct_flow_on_movers",
    "GEOMETRY_REL_TOL",
    "invalid_against_depth",
]

CHAIN_START_VERSION = "1"
GUIDED_KEY_FLOW_VERSION = "3"  # 3: every frame's depth again from the refined flows, not the key frames' only
INPAINT_RADIUS_PX = 5
# The estimator only needs a start within its reach; the depth's pixel noise would reach F.
PRIOR_SMOOTH_SIGMA_PX = 2.0
# `invalid_against_depth`: the rigid flow's own error grows with its length (the depth's relative error)
GEOMETRY_REL_TOL = 0.05


def rigid_prior_flow(
    depth: np.ndarray, depth_valid: np.ndarray, K_src: np.ndarray, c2w_src: np.ndarray, K_dst: np.ndarray,
    c2w_dst: np.ndarray,
) -> np.ndarray | None:
    """The rigid flow (H, W, 2) float32 of `depth` (H, W) from src to dst, inpainted where `depth_valid`
    is False or the point falls behind dst, smoothed (Gaussian, `PRIOR_SMOOTH_SIGMA_PX`); None where
    no pixel has valid depth."""
    if not depth_valid.any():
        return None
    filled_depth = np.where(depth_valid, depth, float(np.median(depth[depth_valid])))
    flow, z_dst = rigid_flow(filled_depth, K_src, c2w_src, K_dst, c2w_dst)
    known = depth_valid & np.isfinite(flow).all(axis=-1) & (z_dst > 0)
    if not known.any():
        return None
    flow = np.where(known[..., None], flow, 0.0).astype(np.float32)
    if not known.all():
        unknown = (~known).astype(np.uint8)
        flow = np.stack([cv2.inpaint(flow[..., c], unknown, INPAINT_RADIUS_PX, cv2.INPAINT_TELEA) for c in range(2)], -1)
    return cv2.GaussianBlur(flow, (0, 0), PRIOR_SMOOTH_SIGMA_PX)


def warp_by_flow(image: np.ndarray, flow_px: np.ndarray, outside: float | None = None) -> np.ndarray:
    """`image` (H, W[, C]) read at u + flow_px(u): the destination brought back onto the source's grid
    (bilinear; outside the image the border replicated, or `outside` where given)."""
    at = pixel_grid(*flow_px.shape[:2]).astype(np.float32) + flow_px
    if outside is None:
        return cv2.remap(image, at[..., 0], at[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.remap(image, at[..., 0], at[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=outside)


def _add_prior(residual_px: np.ndarray, prior_px: np.ndarray) -> np.ndarray:
    """F(u) = r(u) + R(u + r(u)) for (H, W, 2) residual r and prior R."""
    return (residual_px + warp_by_flow(prior_px, residual_px)).astype(np.float32)


def prior_guided_pair_flows(
    estimator: FlowEstimator,
    frames: np.ndarray,
    pairs: Sequence[tuple[int, int]],
    priors: Sequence[np.ndarray | None],
    max_uncertainty_px: float = DEFAULT_MAX_UNCERTAINTY_PX,
    checks: ValidityChecks | None = ValidityChecks(),
    batch_size: int = 8,
) -> PairFlows:
    """Flows of frame pairs estimated from a start flow per direction (module docstring, steps 2-4
    but the chain repair): the destination warped back by the start, the estimator's residual added
    to it, the direct estimate's validity checks.

    Args:
        estimator: any `FlowEstimator`.
        frames: (T, H, W, 3) uint8 RGB.
        pairs: P frame index pairs (i, j).
        priors: 2P start flows (H, W, 2) float32, those of i -> j of every pair, then those of j -> i;
            None: that direction is estimated directly.
        batch_size: image pairs handed to the estimator per call.
    """
    num_frames, height, width = check_frames(frames)
    index = np.asarray(pairs, np.int64).reshape(-1, 2)
    directions = [(int(i), int(j)) for i, j in index] + [(int(j), int(i)) for i, j in index]
    if len(priors) != len(directions):
        raise ValueError(f"need {len(directions)} priors (both directions of {len(index)} pairs), got {len(priors)}")
    zero = np.zeros((height, width, 2), np.float32)
    warped = np.stack([frames[d] if prior is None else warp_by_flow(frames[d], prior)
                       for (_, d), prior in zip(directions, priors)])
    sources = np.asarray([s for s, _ in directions])
    parts = [estimator.estimate(frames[sources[b : b + batch_size]], warped[b : b + batch_size])
             for b in range(0, len(directions), batch_size)]
    residual = np.concatenate([r.flow_px for r in parts])
    uncertainty = np.concatenate([r.uncertainty_px for r in parts])
    flow = np.stack([_add_prior(r, zero if prior is None else prior) for r, prior in zip(residual, priors)])
    P = len(index)
    return validate_pair_flows(
        frames, index, FlowResult(flow[:P], uncertainty[:P]), FlowResult(flow[P:], uncertainty[P:]),
        max_uncertainty_px, checks=checks,
    )


def geometry_guided_pair_flows(
    estimator: FlowEstimator,
    frames: np.ndarray,
    pairs: Sequence[tuple[int, int]],
    depth: np.ndarray,
    depth_valid: np.ndarray,
    c2w: np.ndarray,
    K: np.ndarray,
    max_uncertainty_px: float = DEFAULT_MAX_UNCERTAINTY_PX,
    checks: ValidityChecks | None = ValidityChecks(),
    batch_size: int = 8,
) -> PairFlows:
    """Flows of frame pairs estimated from the rigid flow of the labelled geometry (module docstring,
    steps 1-4 but the chain repair); a direction without valid depth at its source is estimated
    directly.

    Args:
        estimator: any `FlowEstimator`.
        frames: (T, H, W, 3) uint8 RGB.
        pairs: frame index pairs (i, j).
        depth, depth_valid: (T, H, W) z-depth in the unit of the cameras' translations, and where it holds.
        c2w: (T, 4, 4) camera-to-world; K: (T, 3, 3).
        batch_size: image pairs handed to the estimator per call.
    """
    num_frames, height, width = check_frames(frames)
    if depth.shape != (num_frames, height, width) or depth_valid.shape != depth.shape:
        raise ValueError(f"depth {depth.shape} and depth_valid {depth_valid.shape} must be {(num_frames, height, width)}")
    index = np.asarray(pairs, np.int64).reshape(-1, 2)
    directions = [(int(i), int(j)) for i, j in index] + [(int(j), int(i)) for i, j in index]
    priors = [rigid_prior_flow(depth[s], depth_valid[s], K[s], c2w[s], K[d], c2w[d]) for s, d in directions]
    return prior_guided_pair_flows(estimator, frames, index, priors, max_uncertainty_px, checks, batch_size)


def composed_chain_px(flows_px: Sequence[np.ndarray]) -> np.ndarray:
    """The flows (H, W, 2) of consecutive hops a -> b -> ... -> c composed into F_{a->c}, without
    their validity (bilinear reads, the border replicated where a hop leaves the image): a start
    for `prior_guided_pair_flows`, not a label (`labelers.flow.compose_flows` is the validated one)."""
    composed = np.asarray(flows_px[0], np.float32).copy()
    for hop in flows_px[1:]:
        composed += warp_by_flow(np.asarray(hop, np.float32), composed)
    return composed


def chain_guided_pair_flows(
    estimator: FlowEstimator,
    frames: np.ndarray,
    pairs: Sequence[tuple[int, int]],
    consecutive: PairFlows,
    max_uncertainty_px: float = DEFAULT_MAX_UNCERTAINTY_PX,
    checks: ValidityChecks | None = ValidityChecks(),
    batch_size: int = 8,
) -> PairFlows:
    """Flows of frame pairs (i, j), i < j, estimated from the consecutive flows composed over the
    pair's frames (module docstring, the first pass): each step of such a chain is small
    against a texture's period, so the start lies within the estimator's reach where a search
    from zero motion over the whole interval locks onto a wrong match.

    Args:
        estimator: any `FlowEstimator`.
        frames: (T, H, W, 3) uint8 RGB.
        pairs: frame index pairs (i, j) with i < j.
        consecutive: flows holding every consecutive pair (t, t + 1) the pairs span.
    """
    index = np.asarray(pairs, np.int64).reshape(-1, 2)
    if np.any(index[:, 0] >= index[:, 1]):
        raise ValueError(f"need pairs (i, j) with i < j, got {index.tolist()}")
    forward = [composed_chain_px([consecutive.lookup(t, t + 1)[0] for t in range(i, j)]) for i, j in index]
    backward = [composed_chain_px([consecutive.lookup(t, t - 1)[0] for t in range(j, i, -1)]) for i, j in index]
    return prior_guided_pair_flows(estimator, frames, index, forward + backward, max_uncertainty_px, checks, batch_size)


@dataclass(frozen=True)
class GuidedKeyFlows:
    """The second key-pair flow pass of the label pipeline (module docstring).

    Attributes:
        estimator: the flow backend of the first pass.
        max_uncertainty_px: flow with a larger expected error is invalid (as in the first pass).
        chains: repair the guided flows from the consecutive ones (`fill_from_chains`), as the
            first pass's key flows were.
    """

    estimator: FlowEstimator
    max_uncertainty_px: float = DEFAULT_MAX_UNCERTAINTY_PX
    chains: bool = True

    def refine(
        self,
        frames: np.ndarray,
        flows: PairFlows,
        key_frames: Sequence[int],
        depth: np.ndarray,
        depth_valid: np.ndarray,
        c2w: np.ndarray,
        K: np.ndarray,
    ) -> PairFlows:
        """The key pairs' flows (S - 1 pairs (k_n, k_n+1)): guided where valid, else `flows`' own (only
        `flows`' own when every key frame has the same camera).

        Args:
            frames: (T, H, W, 3) uint8 RGB; flows: the first pass's flows, holding every key pair and,
                with `chains`, every consecutive pair; key_frames: the S key-frame indices.
            depth, depth_valid: (T, H, W) the labelled depth; c2w (T, 4, 4); K (T, 3, 3).
        """
        keys = [int(k) for k in key_frames]
        pairs = list(zip(keys[:-1], keys[1:]))
        if np.array_equal(c2w[keys], np.broadcast_to(c2w[keys[0]], (len(keys), 4, 4))):
            return flows.select(pairs)  # a fixed camera: the rigid flow is zero, the pass would repeat the first
        guided = geometry_guided_pair_flows(
            self.estimator, frames, pairs, depth, depth_valid, c2w, K, self.max_uncertainty_px
        )
        if self.chains:
            guided = fill_from_chains(guided, flows, self.max_uncertainty_px)
        return prefer_valid(guided, flows.select(pairs))


def direct_flow_on_movers(
    refined: PairFlows, direct: PairFlows, dynamic_key: np.ndarray, prior_depth_valid_key: np.ndarray
) -> PairFlows:
    """`refined` key-pair flows with `direct`'s flow where the key-frame masks call the source pixel
    moving, the depth that guided it did not hold it (its prior was inpainted from the background
    around it) and the direct flow is valid (module docstring, step 6).

    Args:
        refined: the S - 1 key pairs (k_n, k_n+1) from `GuidedKeyFlows.refine`.
        direct: the same pairs' first-pass flows.
        dynamic_key: (S, H, W) bool key-frame masks (frame k_n's for the forward direction, k_n+1's
            for the backward one).
        prior_depth_valid_key: (S, H, W) bool, where the depth `refine` was given held on the key frames.
    """
    inpainted_mover = np.asarray(dynamic_key, bool) & ~np.asarray(prior_depth_valid_key, bool)
    return prefer_valid(direct, refined, within=(inpainted_mover[:-1], inpainted_mover[1:]))


def invalid_against_depth(
    flows: PairFlows, depth: np.ndarray, depth_valid: np.ndarray, c2w: np.ndarray, K: np.ndarray, abs_px: float
) -> PairFlows:
    """A copy of `flows` whose flow is invalid where its source pixel has valid depth and the flow
    lands farther than `abs_px` + `GEOMETRY_REL_TOL` |R| from the rigid flow R of that depth and the
    cameras.

    For the weight-free multi-view depth, which holds static points only and is valid where the
    views through several frames agree. On repeated texture a flow estimate can lock one period
    off and pass the forward-backward and photometric checks, which a repeated pattern fools alike;
    the views at other baselines are off by other amounts, so the fused depth outvotes it. A pixel
    whose depth holds and whose flow contradicts it is then wrong flow (a mover's pixels have no
    depth). Pixels valid only across stripes (`PairFlows.across_only_fwd`) are left as they are:
    their flow along the stripes is not measured. Measured: docs/benchmarks.md, "Session 36".

    Args:
        flows: P pairs (i, j); both directions are checked, each against its source frame's depth.
        depth, depth_valid: (T, H, W) z-depth in the unit of the cameras' translations, and where it holds.
        c2w: (T, 4, 4) camera-to-world; K: (T, 3, 3).
        abs_px: tolerance in pixels on top of the relative one.
    """
    valid_fwd, valid_bwd = flows.valid_fwd.copy(), flows.valid_bwd.copy()
    for p, (i, j) in enumerate(flows.pairs.tolist()):
        valid_fwd[p] &= _agrees_with_depth(flows.flow_fwd_px[p], depth[i], depth_valid[i], K[i], c2w[i], K[j], c2w[j],
                                           abs_px) | flows.across_only_fwd[p]
        valid_bwd[p] &= _agrees_with_depth(flows.flow_bwd_px[p], depth[j], depth_valid[j], K[j], c2w[j], K[i], c2w[i],
                                           abs_px) | flows.across_only_bwd[p]
    return replace(flows, valid_fwd=valid_fwd, valid_bwd=valid_bwd)


def _agrees_with_depth(
    flow_px: np.ndarray, depth: np.ndarray, depth_valid: np.ndarray, K_src: np.ndarray, c2w_src: np.ndarray,
    K_dst: np.ndarray, c2w_dst: np.ndarray, abs_px: float,
) -> np.ndarray:
    """(H, W) bool: no valid depth, the point falls behind dst, or `flow_px` within tolerance of the rigid flow."""
    rigid, z_dst = rigid_flow(np.where(depth_valid, depth, 1.0), K_src, c2w_src, K_dst, c2w_dst)
    gap = np.hypot(flow_px[..., 0] - rigid[..., 0], flow_px[..., 1] - rigid[..., 1])
    with np.errstate(invalid="ignore"):
        within = gap <= abs_px + GEOMETRY_REL_TOL * np.hypot(rigid[..., 0], rigid[..., 1])
        return ~depth_valid | ~(z_dst > 0) | ~np.isfinite(gap) | within
