"""Optical-flow labeler protocol, its result type and the forward-backward check.

Conventions (LABELS.md): images are RGB uint8 (N, H, W, 3); flow F_{i->j}(u) = q - u in
pixels with channels (dx, dy); pixel centres at integer (u, v). A backend implements
`FlowEstimator`; `compute_pair_flows` runs it on (i, j) frame pairs of a clip in both
directions and derives `flow_valid` from the forward-backward check of DESIGN.md:

    occluded or inconsistent  where  |F(x) + B(x + F(x))| > alpha (|F(x)| + |B(x)|) + beta,

with Euclidean norms, alpha = 0.01 and beta = 0.5 (UnFlow's constants, in the form of the
reference implementation named in reference/labeling_anchors.md section 7, whose magnitude
term uses the backward flow at the source pixel x). B(x + F) is sampled bilinearly with
`labelers.geometry.bilinear_sample`; a target outside the image is invalid, never clamped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

from labelers.geometry import bilinear_sample, inside_image, pixel_grid

__all__ = [
    "FB_ALPHA",
    "FB_BETA",
    "DEFAULT_MAX_UNCERTAINTY_PX",
    "CHAIN_MIN_CORRECTION_PX",
    "CHAIN_REPLACE_GAP_PX",
    "CHAIN_FILL_VERSION",
    "FlowResult",
    "FlowEstimator",
    "ForwardBackwardCheck",
    "PairFlows",
    "check_image_pairs",
    "warp_flow_to_source",
    "forward_backward_check",
    "flow_valid_mask",
    "compute_pair_flows",
    "compose_flows",
    "fill_from_chains",
    "consecutive_pairs",
    "key_frame_pairs",
]

FB_ALPHA = 0.01
FB_BETA = 0.5
# Flow whose expected end-point error exceeds this is not a label. Backends differ in how
# sharp their uncertainty is (SEA-RAFT's floor is ~1.6 px, see labelers.sea_raft), so
# pipelines may set it per backend; this default keeps SEA-RAFT's confident pixels.
DEFAULT_MAX_UNCERTAINTY_PX = 3.0
CHAIN_MIN_CORRECTION_PX = 3.0
CHAIN_REPLACE_GAP_PX = 8.0
CHAIN_FILL_VERSION = "2"  # 2: valid direct pixels a chain contradicts by > 8 px are replaced


@dataclass(frozen=True)
class FlowResult:
    """Flow of N image pairs and its per-pixel uncertainty.

    Attributes:
        flow_px: (N, H, W, 2) float32, F_{src->dst} in pixels, channels (dx, dy).
        uncertainty_px: (N, H, W) float32, expected end-point error in pixels (>= 0).
    """

    flow_px: np.ndarray
    uncertainty_px: np.ndarray

    def __post_init__(self) -> None:
        flow, unc = self.flow_px, self.uncertainty_px
        if not isinstance(flow, np.ndarray) or flow.ndim != 4 or flow.shape[-1] != 2:
            raise ValueError(f"flow_px must be an (N, H, W, 2) array, got {getattr(flow, 'shape', type(flow))}")
        if not isinstance(unc, np.ndarray) or unc.shape != flow.shape[:3]:
            raise ValueError(
                f"uncertainty_px must be (N, H, W) = {flow.shape[:3]}, got {getattr(unc, 'shape', type(unc))}"
            )
        if flow.dtype != np.float32 or unc.dtype != np.float32:
            raise TypeError(f"flow_px and uncertainty_px must be float32, got {flow.dtype} and {unc.dtype}")


@runtime_checkable
class FlowEstimator(Protocol):
    """A flow backend.

    `name`, `version` and `params` (JSON-serialisable) go into the clip's `labelers`
    attribute, so that a label can always be traced to the code and settings behind it.
    """

    name: str
    version: str

    @property
    def params(self) -> dict[str, Any]: ...

    def estimate(self, images_src: np.ndarray, images_dst: np.ndarray) -> FlowResult:
        """Flow from each source image to its destination image.

        Args:
            images_src, images_dst: (N, H, W, 3) uint8 RGB.
        """
        ...

    def estimate_bidirectional(self, images_src: np.ndarray, images_dst: np.ndarray) -> tuple[FlowResult, FlowResult]:
        """Forward (src -> dst) and backward (dst -> src) flow of the same pairs."""
        ...


def check_image_pairs(images_src: np.ndarray, images_dst: np.ndarray) -> None:
    """Raise unless both are (N, H, W, 3) uint8 arrays of the same shape with N >= 1."""
    for name, images in (("images_src", images_src), ("images_dst", images_dst)):
        if not isinstance(images, np.ndarray):
            raise TypeError(f"{name} must be a numpy array, got {type(images).__name__}")
        if images.dtype != np.uint8:
            raise TypeError(f"{name} must be uint8 RGB, got {images.dtype}")
        if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] < 1:
            raise ValueError(f"{name} must be (N, H, W, 3) with N >= 1, got {images.shape}")
    if images_src.shape != images_dst.shape:
        raise ValueError(f"image batches differ in shape: {images_src.shape} vs {images_dst.shape}")


def _check_flow(flow_px: np.ndarray, name: str) -> None:
    if not isinstance(flow_px, np.ndarray) or flow_px.ndim != 3 or flow_px.shape[-1] != 2:
        raise ValueError(f"{name} must be an (H, W, 2) array, got {getattr(flow_px, 'shape', type(flow_px))}")


def warp_flow_to_source(flow_fwd_px: np.ndarray, flow_bwd_px: np.ndarray) -> np.ndarray:
    """B(x + F(x)): the backward flow read at each forward target, bilinearly.

    Args:
        flow_fwd_px: (H, W, 2) F_{i->j}.
        flow_bwd_px: (H, W, 2) F_{j->i}.

    Returns:
        (H, W, 2) float64; NaN where x + F(x) is outside the image or F is not finite.
    """
    _check_flow(flow_fwd_px, "flow_fwd_px")
    _check_flow(flow_bwd_px, "flow_bwd_px")
    if flow_fwd_px.shape != flow_bwd_px.shape:
        raise ValueError(f"flows differ in shape: {flow_fwd_px.shape} vs {flow_bwd_px.shape}")
    height, width = flow_fwd_px.shape[:2]
    return bilinear_sample(flow_bwd_px, pixel_grid(height, width) + flow_fwd_px)


@dataclass(frozen=True)
class ForwardBackwardCheck:
    """Outcome of the forward-backward check of one flow field (H, W).

    Attributes:
        fb_error_px: |F + B(x + F)| in pixels, float32; NaN where the target is outside.
        consistent: bool, target inside and fb_error_px <= alpha (|F| + |B|) + beta.
        target_inside: bool, x + F(x) can be sampled without leaving the image.
    """

    fb_error_px: np.ndarray
    consistent: np.ndarray
    target_inside: np.ndarray


def forward_backward_check(
    flow_fwd_px: np.ndarray,
    flow_bwd_px: np.ndarray,
    alpha: float = FB_ALPHA,
    beta: float = FB_BETA,
) -> ForwardBackwardCheck:
    """Forward-backward consistency of F_{i->j} against F_{j->i} (DESIGN.md, data path step 3).

    Args:
        flow_fwd_px: (H, W, 2) F_{i->j} in pixels.
        flow_bwd_px: (H, W, 2) F_{j->i} in pixels.
        alpha, beta: relative and absolute tolerance of the rule in the module docstring.
    """
    flow_bwd_at_target = warp_flow_to_source(flow_fwd_px, flow_bwd_px)
    height, width = flow_fwd_px.shape[:2]
    target_inside = inside_image(pixel_grid(height, width) + flow_fwd_px, height, width)
    fb_error = np.linalg.norm(flow_fwd_px + flow_bwd_at_target, axis=-1)
    tolerance = alpha * (np.linalg.norm(flow_fwd_px, axis=-1) + np.linalg.norm(flow_bwd_px, axis=-1)) + beta
    with np.errstate(invalid="ignore"):
        consistent = target_inside & (fb_error <= tolerance)
    return ForwardBackwardCheck(fb_error.astype(np.float32), consistent, target_inside)


def flow_valid_mask(
    flow_fwd_px: np.ndarray,
    flow_bwd_px: np.ndarray,
    uncertainty_px: np.ndarray | None = None,
    max_uncertainty_px: float = DEFAULT_MAX_UNCERTAINTY_PX,
    alpha: float = FB_ALPHA,
    beta: float = FB_BETA,
) -> np.ndarray:
    """`flow_valid` of LABELS.md for one forward flow field.

    A pixel is valid when its target lies inside the image (never clamped), the forward
    and backward flows agree (which rejects occluded and inconsistent pixels), and, if
    given, its uncertainty is finite and at most `max_uncertainty_px`.

    Args:
        flow_fwd_px, flow_bwd_px: (H, W, 2) F_{i->j} and F_{j->i}.
        uncertainty_px: optional (H, W) expected end-point error of F_{i->j}.

    Returns:
        (H, W) bool.
    """
    valid = forward_backward_check(flow_fwd_px, flow_bwd_px, alpha, beta).consistent
    if uncertainty_px is not None:
        if uncertainty_px.shape != flow_fwd_px.shape[:2]:
            raise ValueError(f"uncertainty_px must be {flow_fwd_px.shape[:2]}, got {uncertainty_px.shape}")
        valid &= _confident(uncertainty_px, max_uncertainty_px)
    return valid


def _confident(uncertainty_px: np.ndarray, max_uncertainty_px: float) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.isfinite(uncertainty_px) & (uncertainty_px <= max_uncertainty_px)


@dataclass(frozen=True)
class PairFlows:
    """Forward and backward flow of P frame pairs (i, j) of one clip.

    Attributes:
        pairs: (P, 2) int64 frame indices (i, j).
        flow_fwd_px, flow_bwd_px: (P, H, W, 2) float32 F_{i->j} and F_{j->i}.
        uncertainty_fwd_px, uncertainty_bwd_px: (P, H, W) float32 expected EPE of each.
        valid_fwd, valid_bwd: (P, H, W) bool `flow_valid` of each direction.
        fb_error_fwd_px, fb_error_bwd_px: (P, H, W) float32 |F + B(x + F)|, NaN off-image.
    """

    pairs: np.ndarray
    flow_fwd_px: np.ndarray
    flow_bwd_px: np.ndarray
    uncertainty_fwd_px: np.ndarray
    uncertainty_bwd_px: np.ndarray
    valid_fwd: np.ndarray
    valid_bwd: np.ndarray
    fb_error_fwd_px: np.ndarray
    fb_error_bwd_px: np.ndarray


def consecutive_pairs(num_frames: int) -> list[tuple[int, int]]:
    """(t, t + 1) for every frame t, the pairs behind the `flow` label."""
    return [(t, t + 1) for t in range(num_frames - 1)]


def key_frame_pairs(num_frames: int, stride: int) -> list[tuple[int, int]]:
    """(k, k + stride) between consecutive key frames, the pairs behind `key_flow`."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    return [(k, k + stride) for k in range(0, num_frames - stride, stride)]


def compute_pair_flows(
    estimator: FlowEstimator,
    frames: np.ndarray,
    pairs: list[tuple[int, int]],
    max_uncertainty_px: float = DEFAULT_MAX_UNCERTAINTY_PX,
    batch_size: int = 8,
    alpha: float = FB_ALPHA,
    beta: float = FB_BETA,
) -> PairFlows:
    """Forward and backward flow, uncertainty and validity for frame pairs of a clip.

    Args:
        estimator: any `FlowEstimator`.
        frames: (T, H, W, 3) uint8 RGB.
        pairs: frame index pairs (i, j), i != j.
        max_uncertainty_px: pixels with a larger expected EPE are invalid.
        batch_size: pairs handed to the estimator per call.
    """
    if not isinstance(frames, np.ndarray) or frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"frames must be (T, H, W, 3) uint8, got {getattr(frames, 'shape', type(frames))} "
            f"{getattr(frames, 'dtype', '')}"
        )
    if not pairs:
        raise ValueError("pairs is empty")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    index = np.asarray(pairs, dtype=np.int64)
    num_frames = frames.shape[0]
    if index.ndim != 2 or index.shape[1] != 2:
        raise ValueError(f"pairs must be (i, j) tuples, got array of shape {index.shape}")
    if index.min() < 0 or index.max() >= num_frames:
        raise ValueError(f"pair indices must lie in [0, {num_frames}), got range [{index.min()}, {index.max()}]")
    if np.any(index[:, 0] == index[:, 1]):
        raise ValueError("a pair (i, i) has no flow to estimate")

    fwd, bwd = [], []
    for start in range(0, len(index), batch_size):
        chunk = index[start : start + batch_size]
        result_fwd, result_bwd = estimator.estimate_bidirectional(frames[chunk[:, 0]], frames[chunk[:, 1]])
        fwd.append(result_fwd)
        bwd.append(result_bwd)
    flow_fwd = np.concatenate([r.flow_px for r in fwd])
    flow_bwd = np.concatenate([r.flow_px for r in bwd])
    unc_fwd = np.concatenate([r.uncertainty_px for r in fwd])
    unc_bwd = np.concatenate([r.uncertainty_px for r in bwd])

    def check(flow_a: np.ndarray, flow_b: np.ndarray, unc_a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        fb = forward_backward_check(flow_a, flow_b, alpha, beta)
        return fb.consistent & _confident(unc_a, max_uncertainty_px), fb.fb_error_px

    valid_fwd, err_fwd = zip(*(check(flow_fwd[p], flow_bwd[p], unc_fwd[p]) for p in range(len(index))))
    valid_bwd, err_bwd = zip(*(check(flow_bwd[p], flow_fwd[p], unc_bwd[p]) for p in range(len(index))))
    return PairFlows(
        pairs=index,
        flow_fwd_px=flow_fwd,
        flow_bwd_px=flow_bwd,
        uncertainty_fwd_px=unc_fwd,
        uncertainty_bwd_px=unc_bwd,
        valid_fwd=np.stack(valid_fwd),
        valid_bwd=np.stack(valid_bwd),
        fb_error_fwd_px=np.stack(err_fwd),
        fb_error_bwd_px=np.stack(err_bwd),
    )


def _sample(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Bilinear sample (H, W[, C]) float32 at (H, W, 2) positions; NaN where not inside the image.

    cv2.remap for speed, with `labelers.geometry.inside_image` deciding what is outside.
    """
    map_xy = np.nan_to_num(uv, nan=-1.0).astype(np.float32)
    out = cv2.remap(np.asarray(image, np.float32), map_xy[..., 0], map_xy[..., 1], cv2.INTER_LINEAR)
    out[~inside_image(uv, *image.shape[:2])] = np.nan
    return out


def compose_flows(
    flow_ab_px: np.ndarray, valid_ab: np.ndarray, flow_bc_px: np.ndarray, valid_bc: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """F_{a->c}(u) = F_{a->b}(u) + F_{b->c}(u + F_{a->b}(u)).

    Valid where F_{a->b} is valid and every pixel that the bilinear read of F_{b->c} touches is valid.

    Returns:
        flow_px (H, W, 2) float32, valid (H, W) bool.
    """
    flow, valid, _ = _compose_with_variance(flow_ab_px, valid_ab, None, flow_bc_px, valid_bc, None)
    return flow, valid


def _compose_with_variance(
    flow_ab_px: np.ndarray,
    valid_ab: np.ndarray,
    var_ab: np.ndarray | None,
    flow_bc_px: np.ndarray,
    valid_bc: np.ndarray,
    var_bc: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """`compose_flows`, and the variance of the composition (hop errors independent) when given."""
    channels = [flow_bc_px, valid_bc[..., None].astype(np.float32)]
    if var_bc is not None:
        channels.append(np.nan_to_num(var_bc, nan=np.inf, posinf=np.inf)[..., None].astype(np.float32))
    sampled = _sample(np.concatenate(channels, axis=-1), pixel_grid(*flow_ab_px.shape[:2]) + flow_ab_px)
    with np.errstate(invalid="ignore"):
        valid = valid_ab & (sampled[..., 2] > 1.0 - 1e-4)
    flow = np.where(valid[..., None], flow_ab_px + sampled[..., :2], 0.0).astype(np.float32)
    variance = None if var_ab is None or var_bc is None else np.where(valid, var_ab + sampled[..., 3], np.inf)
    return flow, valid, variance


def fill_from_chains(
    direct: PairFlows,
    links: PairFlows,
    max_uncertainty_px: float = DEFAULT_MAX_UNCERTAINTY_PX,
    alpha: float = FB_ALPHA,
    beta: float = FB_BETA,
    min_correction_px: float = CHAIN_MIN_CORRECTION_PX,
    replace_gap_px: float | None = CHAIN_REPLACE_GAP_PX,
) -> PairFlows:
    """Direct flows of pairs (i, j) repaired with the flow composed along the chain of `links`
    i -> i +- 1 -> ... -> j, in both directions: invalid pixels the chain resolves are filled,
    valid pixels it grossly contradicts are replaced.

    A fast object moves tens of pixels over a key-frame interval: a direct estimate loses it
    there (DIS at 240x360: 72 % of a mover moving 32 px invalid, 36 px error), while the same
    motion in single-frame steps is tracked. A composed pixel is kept where every hop is valid,
    the composed backward flow is valid at its target, the two pass the forward-backward check, and its
    uncertainty, the root sum of squares of the hops' uncertainties along the chain (hop errors
    taken as independent), is at most `max_uncertainty_px`, and it differs from the direct flow
    by more than `min_correction_px`: the direct estimate lost the motion there. Pixels whose
    direct flow is merely inconsistent (occlusion borders, the image edge) stay invalid, as the
    chain is no better there: filling them too added pixels with 0.2-0.8 px median error,
    which reached the multi-view depth and doubled the false alarms of the masks on a
    120x180 dolly clip.

    Pixels whose direct flow is valid keep it (one estimate does not accumulate the hops'
    errors) unless the chain differs from it by more than `replace_gap_px`. Over four frames
    DIS can lock onto a wrong match in repeated texture that the backward estimate repeats,
    so the check passes: on an orbit clip at 480x720, 4-5 % of the valid pixels of two key
    pairs were wrong by 35 px (median), on static objects that the masks then flagged as moving
    (5.7 % false alarms). Where a confident chain disagreed by more than 8 px, it was the closer to
    the truth on all 34,895 such pixels of three clips (median error 0.05-0.17 px against the
    direct flow's 35-43 px); between 3 and 8 px the direct flow was the closer on 239 of 286.

    Args:
        direct: flows of the pairs to fill (e.g. `key_frame_pairs`).
        links: flows holding (t, t + 1) or (t + 1, t) for every step of every chain
            (e.g. `consecutive_pairs`).
        min_correction_px: an invalid direct pixel is filled only if the chain is this far from it.
        replace_gap_px: a valid direct pixel is replaced only if the chain is this far from it
            (None: valid pixels are never replaced).

    Raises:
        ValueError: a chain step has no flow in `links`, or the two disagree in image size.
    """
    if direct.flow_fwd_px.shape[1:] != links.flow_fwd_px.shape[1:]:
        sizes = (direct.flow_fwd_px.shape[1:3], links.flow_fwd_px.shape[1:3])
        raise ValueError(f"direct and link flows differ in size: {sizes[0]} vs {sizes[1]}")
    hops: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for p, (i, j) in enumerate(links.pairs.tolist()):
        hops[(i, j)] = (links.flow_fwd_px[p], links.valid_fwd[p], links.uncertainty_fwd_px[p].astype(np.float64) ** 2)
        hops[(j, i)] = (links.flow_bwd_px[p], links.valid_bwd[p], links.uncertainty_bwd_px[p].astype(np.float64) ** 2)
    filled = {name: getattr(direct, name).copy() for name in _PER_PIXEL_FIELDS}
    for p, (i, j) in enumerate(direct.pairs.tolist()):
        fwd_flow, fwd_valid, fwd_var = _along_chain(hops, i, j)
        bwd_flow, bwd_valid, bwd_var = _along_chain(hops, j, i)
        for suffix, flow, valid, var, other, other_valid in (
            ("fwd", fwd_flow, fwd_valid, fwd_var, bwd_flow, bwd_valid),
            ("bwd", bwd_flow, bwd_valid, bwd_var, fwd_flow, fwd_valid),
        ):
            check = forward_backward_check(flow, other, alpha, beta)
            target = pixel_grid(*valid.shape) + flow
            with np.errstate(invalid="ignore"):
                other_valid_at_target = _sample(other_valid.astype(np.float32), target) > 1 - 1e-4
            uncertainty = np.sqrt(var).astype(np.float32)
            use = valid & other_valid_at_target & check.consistent & _confident(uncertainty, max_uncertainty_px)
            gap = np.linalg.norm(flow - getattr(direct, f"flow_{suffix}_px")[p], axis=-1)
            direct_valid = filled[f"valid_{suffix}"][p]
            wrong_if_valid = np.zeros_like(direct_valid) if replace_gap_px is None else gap > replace_gap_px
            use &= np.where(direct_valid, wrong_if_valid, gap > min_correction_px)
            filled[f"flow_{suffix}_px"][p][use] = flow[use]
            filled[f"uncertainty_{suffix}_px"][p][use] = uncertainty[use]
            filled[f"fb_error_{suffix}_px"][p][use] = check.fb_error_px[use]
            filled[f"valid_{suffix}"][p][use] = True
    return replace(direct, **filled)


_PER_PIXEL_FIELDS = (
    "flow_fwd_px", "flow_bwd_px", "uncertainty_fwd_px", "uncertainty_bwd_px",
    "valid_fwd", "valid_bwd", "fb_error_fwd_px", "fb_error_bwd_px",
)


def _along_chain(
    hops: dict[tuple[int, int], tuple[np.ndarray, np.ndarray, np.ndarray]], src: int, dst: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flow, validity and variance (px^2) from src to dst composed over single-frame hops."""
    step = 1 if dst > src else -1
    flow = valid = variance = None
    for a in range(src, dst, step):
        if (a, a + step) not in hops:
            raise ValueError(f"no link flow ({a}, {a + step}) to chain frames {src} -> {dst}")
        hop_flow, hop_valid, hop_var = hops[(a, a + step)]
        if flow is None:
            flow, valid, variance = hop_flow, hop_valid, hop_var
        else:
            flow, valid, variance = _compose_with_variance(flow, valid, variance, hop_flow, hop_valid, hop_var)
    return flow, valid, variance
