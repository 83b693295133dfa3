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

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from labelers.geometry import bilinear_sample, inside_image, pixel_grid

__all__ = [
    "FB_ALPHA",
    "FB_BETA",
    "DEFAULT_MAX_UNCERTAINTY_PX",
    "FlowResult",
    "FlowEstimator",
    "ForwardBackwardCheck",
    "PairFlows",
    "check_image_pairs",
    "warp_flow_to_source",
    "forward_backward_check",
    "flow_valid_mask",
    "compute_pair_flows",
    "consecutive_pairs",
    "key_frame_pairs",
]

FB_ALPHA = 0.01
FB_BETA = 0.5
# Flow whose expected end-point error exceeds this is not a label. Backends differ in how
# sharp their uncertainty is (SEA-RAFT's floor is ~1.6 px, see labelers.sea_raft), so
# pipelines may set it per backend; this default keeps SEA-RAFT's confident pixels.
DEFAULT_MAX_UNCERTAINTY_PX = 3.0


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
