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

The forward-backward test passes wherever both directions make the same mistake: a
textureless wall whose flow both directions smooth in from its borders, an occluded band
that adopts its occluder's motion, a repeated pattern matched one period off. The
`ValidityChecks` that `compute_pair_flows` applies on top (see `flow_support`) reject
those: texture support, photometric (ZNCC) consistency at the target, and isolated islands.
A pattern that repeats within the search range over a large region (the sum-of-sinusoids sky
of an open orbit, 4 frames apart) can still be matched a period off with a high ZNCC: there
only the chain check of `fill_from_chains` helps, and not fully (measured: docs/benchmarks.md,
"Labeler design measurements", optical flow: repeated texture).
"""

from __future__ import annotations

from collections.abc import KeysView
from dataclasses import asdict, dataclass, fields, replace
from functools import cached_property
from typing import Any, Protocol, Sequence, runtime_checkable

import cv2
import numpy as np

from labelers.geometry import bilinear_sample, check_frames, inside_image, pixel_grid

__all__ = [
    "FB_ALPHA",
    "FB_BETA",
    "DEFAULT_MAX_UNCERTAINTY_PX",
    "CHAIN_MIN_CORRECTION_PX",
    "CHAIN_REPLACE_GAP_PX",
    "CHAIN_DISAGREE_GAP_PX",
    "CHAIN_FILL_VERSION",
    "VALIDITY_CHECKS_VERSION",
    "NOISE_FLOOR_LEVELS",
    "FlowResult",
    "FlowEstimator",
    "ValidityChecks",
    "image_noise_sigma",
    "texture_snr",
    "texture_energy",
    "texture_isotropy",
    "texture_normal",
    "aperture_normals",
    "texture_periods",
    "texture_support",
    "patch_zncc",
    "photometric_support",
    "drop_small_regions",
    "flow_support",
    "consistent_across_stripes",
    "ForwardBackwardCheck",
    "PairFlows",
    "check_image_pairs",
    "warp_flow_to_source",
    "forward_backward_check",
    "flow_valid_mask",
    "compute_pair_flows",
    "validate_pair_flows",
    "prefer_valid",
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
CHAIN_DISAGREE_GAP_PX = 3.0
CHAIN_FILL_VERSION = "4"  # 3: 3-8 px contradictions invalid; 4: direct pixels re-checked against the filled twin
# 1: texture, patch ZNCC, no small islands; 2: stripes checked across them; 3: texture at half resolution too;
# 4: ZNCC corrected for the image noise, larger patches where the texture is faint; 5: up to 11x11 while faint
VALIDITY_CHECKS_VERSION = "5"
NOISE_FLOOR_LEVELS = 0.3  # grey levels: 8-bit quantisation alone is 1/sqrt(12)
# Texture whose isotropy over the window is below this is stripes or a single edge (`aperture_normals`).
# One default for flow validity, depth and masks: the flow that validity passes across stripes only
# (`PairFlows.across_only_fwd`) is safe only where depth and masks read it across the same stripes.
STRIPE_MAX_ISOTROPY = 0.02
STRIPE_WINDOW_PX = 15


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
        mismatch_px: (H, W, 2) float64 F + B(x + F); NaN where the target is outside.
    """

    fb_error_px: np.ndarray
    consistent: np.ndarray
    target_inside: np.ndarray
    mismatch_px: np.ndarray


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
    mismatch = flow_fwd_px + flow_bwd_at_target
    fb_error = np.linalg.norm(mismatch, axis=-1)
    tolerance = alpha * (np.linalg.norm(flow_fwd_px, axis=-1) + np.linalg.norm(flow_bwd_px, axis=-1)) + beta
    with np.errstate(invalid="ignore"):
        consistent = target_inside & (fb_error <= tolerance)
    return ForwardBackwardCheck(fb_error.astype(np.float32), consistent, target_inside, mismatch)


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
class ValidityChecks:
    """Checks `compute_pair_flows` adds to the forward-backward test (serialised into the flow
    labeler's params, so that a label can be traced to them). Measured, with the defaults'
    sweeps: docs/benchmarks.md, "Labeler design measurements", optical flow: validity checks.

    Attributes:
        texture_window_px: side of the window of the structure tensor: the support of the flow
            (DIS's 8 px patches spread by its variational smoothing), so that a pixel a few
            pixels from texture keeps the flow its neighbourhood determines. The patch ZNCC
            below asks for structure at the pixel itself. A larger window keeps more of a noisy
            scene valid at the same error.
        texture_min_snr: a pixel needs the smaller eigenvalue of its structure tensor (gradients
            in 8-bit levels per pixel, averaged over the window) to be at least this times the
            image noise variance; pure noise stays below the default with a margin.
        texture_half_resolution: a pixel also has support where its texture passes the same
            test at half resolution (`cv2.pyrDown`, noise measured there, half the window):
            coarse texture under fine noise, which DIS's pyramid follows. On a noisy open
            yard (noise 3 levels, blur) the full-resolution test alone left a third of the
            ground valid, whose flow was as accurate as the valid part's (docs/benchmarks.md,
            "Session 14"). The noise floor stays `noise_floor_levels`.
        noise_floor_levels: the noise sigma used is at least this: 8-bit quantisation alone
            is 1/sqrt(12) = 0.29 levels.
        zncc_radius_px: the photometric check compares (2 r + 1)^2 patches.
        min_zncc: zero-mean normalised cross-correlation, at least this, between the patch at
            the source pixel and the patch at its target (gain and offset invariant, so exposure
            changes pass). It catches occluded bands that took a neighbour's motion; a higher
            value trades coverage for fewer wrong pixels.
        zncc_noise_correction, zncc_min_signal_ratio: the ZNCC is corrected for the image noise
            (the pair's sigma, as the texture test's) where both patches' variances exceed
            zncc_min_signal_ratio sigma^2 (`patch_zncc`): under noise a correct match of faint
            texture correlates well below 1. On the noisy, blurred class (sigma 1.6 levels) the
            plain ZNCC left 12 % of the visible pixels invalid whose flow was within 1 px.
        zncc_faint_ratio, zncc_faint_radius_px: where the source patch's variance is below
            `zncc_faint_ratio` times sigma^2, the patches grow by one pixel of radius, and
            further, up to `zncc_faint_radius_px`, where the larger patch is faint too: the
            correlation of 25 samples of faint texture under noise spreads too wide for
            `min_zncc` (ratio 0 disables). Textured pixels keep the smaller patch, which lets
            less of an occluded band pass, and a faint patch stops growing where it reaches
            strong texture (which would vouch for the flow of a pixel beside it). Up to 7x7
            patches only, a noisy dolly nearing a faint surface lost 0.8 points more of its
            consecutive coverage (docs/benchmarks.md, "Session 22").
        min_region_fraction: valid pixels form 8-connected regions of at least this fraction of
            the image; smaller islands amid invalid flow are chance agreements (0 disables).
        stripe_max_isotropy, stripe_window_px: source pixels whose `texture_isotropy` over the
            window is below this are stripes or an edge (`aperture_normals`; 0 disables what follows).
        stripe_along_fb_px, stripe_max_flow_px: on stripes a flow of at most
            `stripe_max_flow_px` that fails the forward-backward check only along the stripes
            (across them within the usual tolerance, along them within `stripe_along_fb_px`)
            stays a candidate for the checks above. Along stripes the two directions slide
            apart with the estimator's smoothing, but by little where the displacement is
            small; the depth and mask labelers use such flow across the stripes only.
    """

    texture_window_px: int = 21
    texture_min_snr: float = 0.75
    texture_half_resolution: bool = True
    noise_floor_levels: float = NOISE_FLOOR_LEVELS
    zncc_radius_px: int = 2
    min_zncc: float = 0.6
    zncc_noise_correction: bool = True
    zncc_min_signal_ratio: float = 1.5
    zncc_faint_ratio: float = 3.0
    zncc_faint_radius_px: int = 5
    min_region_fraction: float = 0.001
    stripe_max_isotropy: float = STRIPE_MAX_ISOTROPY
    stripe_window_px: int = STRIPE_WINDOW_PX
    stripe_along_fb_px: float = 2.0
    stripe_max_flow_px: float = 3.0

    def __post_init__(self) -> None:
        if self.texture_window_px < 3 or self.zncc_radius_px < 1:
            raise ValueError(
                "need texture_window_px >= 3 and zncc_radius_px >= 1, got "
                f"{self.texture_window_px}, {self.zncc_radius_px}"
            )
        if self.texture_min_snr < 0 or self.noise_floor_levels <= 0 or not -1 <= self.min_zncc <= 1:
            raise ValueError("need texture_min_snr >= 0, noise_floor_levels > 0 and -1 <= min_zncc <= 1")
        if not self.zncc_min_signal_ratio > 1 or self.zncc_faint_ratio < 0:
            raise ValueError("need zncc_min_signal_ratio > 1 and zncc_faint_ratio >= 0, got "
                             f"{self.zncc_min_signal_ratio}, {self.zncc_faint_ratio}")
        if self.zncc_faint_radius_px < self.zncc_radius_px:
            raise ValueError(f"zncc_faint_radius_px must be >= zncc_radius_px, got {self.zncc_faint_radius_px} "
                             f"< {self.zncc_radius_px}")
        if not 0 <= self.min_region_fraction < 1:
            raise ValueError(f"min_region_fraction must lie in [0, 1), got {self.min_region_fraction}")
        if not (0 <= self.stripe_max_isotropy < 1 and self.stripe_window_px >= 3 and self.stripe_along_fb_px >= 0
                and self.stripe_max_flow_px >= 0):
            raise ValueError(
                "need stripe_max_isotropy in [0, 1), stripe_window_px >= 3, stripe_along_fb_px >= 0 and "
                f"stripe_max_flow_px >= 0, got {self.stripe_max_isotropy}, {self.stripe_window_px}, "
                f"{self.stripe_along_fb_px}, {self.stripe_max_flow_px}"
            )

    def to_dict(self) -> dict[str, Any]:
        return {"version": VALIDITY_CHECKS_VERSION, **asdict(self)}


def _gray(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) float32 grey levels."""
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)


def image_noise_sigma(gray: np.ndarray, block_px: int = 8, percentile: float = 10.0) -> float:
    """Standard deviation of additive noise in an (H, W) grey image, in grey levels.

    Immerkaer's residual (the 3x3 kernel [1 -2 1; -2 4 -2; 1 -2 1] cancels planes and turns
    white noise of sigma into 6 sigma) taken over the flattest blocks: its RMS per
    `block_px` block, at the given low percentile, so that texture and edges do not count as
    noise. On pure Gaussian noise it reads slightly low (measured: docs/benchmarks.md, "Labeler
    design measurements", optical flow: noise estimate). An image without flat blocks gets a
    larger estimate, which only makes the texture check stricter.
    """
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    if gray.ndim != 2 or min(gray.shape) < 3:
        raise ValueError(f"gray must be an (H, W) image of at least 3x3, got {gray.shape}")
    residual = cv2.filter2D(np.asarray(gray, np.float32), -1, kernel)[1:-1, 1:-1]
    block_px = min(block_px, *residual.shape)  # a tiny image is one block
    rows, cols = residual.shape[0] // block_px, residual.shape[1] // block_px
    blocks = residual[: rows * block_px, : cols * block_px].reshape(rows, block_px, cols, block_px)
    rms = np.sqrt(np.mean(blocks.astype(np.float64) ** 2, axis=(1, 3)))
    return float(np.percentile(rms, percentile) / 6.0)


def _structure_tensor(gray: np.ndarray, window_px: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sxx, sxy, syy), each (H, W): the structure tensor of Sobel / 8 gradients (levels per
    pixel on a ramp), averaged over a `window_px` box."""
    gray = np.asarray(gray, np.float32)
    gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
    gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
    window = (window_px, window_px)
    sxx, sxy, syy = (cv2.boxFilter(g, -1, window) for g in (gx * gx, gx * gy, gy * gy))
    return sxx, sxy, syy


def _structure_tensor_eigenvalues(gray: np.ndarray, window_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Smaller and larger eigenvalue (H, W) of `_structure_tensor`."""
    sxx, sxy, syy = _structure_tensor(gray, window_px)
    half_trace, half_gap = 0.5 * (sxx + syy), np.sqrt(0.25 * (sxx - syy) ** 2 + sxy**2)
    return np.maximum(half_trace - half_gap, 0), half_trace + half_gap


def texture_snr(gray: np.ndarray, noise_sigma: float, window_px: int) -> np.ndarray:
    """Smaller eigenvalue of the structure tensor over a window, per unit noise variance.

    Gradients are Sobel / 8 (levels per pixel on a ramp). Where this is small the flow is
    unobservable (no texture) or observable along one direction only (an edge).

    Returns:
        (H, W) float32.
    """
    min_eig, _ = _structure_tensor_eigenvalues(gray, window_px)
    return (min_eig / noise_sigma**2).astype(np.float32)


def texture_energy(gray: np.ndarray, window_px: int) -> np.ndarray:
    """Trace of the structure tensor over a window: mean squared gradient (Sobel / 8, levels per
    pixel), whatever its direction.

    Returns:
        (H, W) float32.
    """
    sxx, _, syy = _structure_tensor(gray, window_px)
    return (sxx + syy).astype(np.float32)


def texture_isotropy(gray: np.ndarray, window_px: int) -> np.ndarray:
    """Smaller over larger eigenvalue of the structure tensor over a window, in [0, 1]; 0 where flat.

    Near 0 the texture is stripes or an edge: the estimator's data term is dominated by the
    one direction, and the flow along the stripes is set by smoothing and by whichever
    faint texture crosses them, however far above the noise that is.

    Returns:
        (H, W) float32.
    """
    min_eig, max_eig = _structure_tensor_eigenvalues(gray, window_px)
    return np.where(max_eig > 0, min_eig / np.where(max_eig > 0, max_eig, 1.0), 0.0).astype(np.float32)


def texture_normal(gray: np.ndarray, window_px: int) -> np.ndarray:
    """Unit vector (dx, dy) across the dominant texture direction over a window: the structure
    tensor's eigenvector of the larger eigenvalue, the one direction in which stripes determine
    the flow (sign arbitrary; (1, 0) where flat).

    Returns:
        (H, W, 2) float32.
    """
    sxx, sxy, syy = _structure_tensor(gray, window_px)
    angle = 0.5 * np.arctan2(2 * sxy, sxx - syy)
    return np.stack([np.cos(angle), np.sin(angle)], axis=-1).astype(np.float32)


def aperture_normals(gray: np.ndarray, window_px: int, min_isotropy: float) -> np.ndarray:
    """Unit vectors across the texture (`texture_normal`) where it is stripes or a single edge
    (`texture_isotropy` below `min_isotropy`), NaN where it determines the flow in both directions.

    There only the flow's component along the normal is measured (the aperture problem); along
    the stripes the estimate slides with the smoothing, by the same amount forward and backward.

    Returns:
        (H, W, 2) float32.
    """
    gray = np.asarray(gray, np.float32)
    stripes = texture_isotropy(gray, window_px) < min_isotropy
    return np.where(stripes[..., None], texture_normal(gray, window_px), np.nan).astype(np.float32)


def texture_periods(
    gray: np.ndarray, window_px: int, max_period_px: int, min_zncc: float, min_dip: float, angle_bins: int = 16
) -> np.ndarray:
    """Up to two repeat vectors of the texture around each pixel (a checkerboard, tiles, a fence).

    The window around x is compared (ZNCC) with the window around x + d for every integer
    offset d with 3 <= |d| <= `max_period_px` (in a half plane: d and -d are the same repeat).
    d is a period where its ZNCC is at least `min_zncc` and at least `min_dip` above the ZNCC
    at d / 2: the texture decorrelates, then repeats (smooth texture decorrelates without
    repeating; a multiple of a period fails the test at half of it). The first vector has the
    highest ZNCC; the second the highest among periods at least 3 of `angle_bins` angle bins
    (over 180 degrees) away. Flow on such texture is known only up to these vectors: the
    estimator may lock one period off, and both directions then agree on it.

    Returns:
        (H, W, 2, 2) float32: [..., k, :] the k-th vector (dx, dy) in pixels, 0 where none.
    """
    src = np.asarray(gray, np.float32)
    src = src - float(src.mean())  # float32 sums of squares keep their precision
    height, width = src.shape
    window = (window_px, window_px)
    pad = max_period_px
    mean = cv2.boxFilter(src, -1, window, borderType=cv2.BORDER_REFLECT)
    std = np.sqrt(np.maximum(cv2.boxFilter(src * src, -1, window, borderType=cv2.BORDER_REFLECT) - mean * mean, 0.0))
    padded = [cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT) for image in (src, mean, std)]

    def zncc(dx: int, dy: int) -> np.ndarray:
        rows, cols = slice(pad + dy, pad + dy + height), slice(pad + dx, pad + dx + width)
        moved, moved_mean, moved_std = (image[rows, cols] for image in padded)
        covariance = cv2.boxFilter(src * moved, -1, window, borderType=cv2.BORDER_REFLECT) - mean * moved_mean
        return covariance / np.maximum(std * moved_std, 1e-3)

    offsets = sorted(((dx, dy) for dy in range(0, pad + 1) for dx in range(-pad, pad + 1)
                      if (dy > 0 or dx > 0) and 9 <= dx * dx + dy * dy <= pad * pad), key=lambda d: d[0] ** 2 + d[1] ** 2)
    halves = {d: (int(round(d[0] / 2)), int(round(d[1] / 2))) for d in offsets}
    needed = set(halves.values())  # the ZNCC at half of each offset; shorter ones come first
    kept: dict[tuple[int, int], np.ndarray] = {half: zncc(*half) for half in needed if half not in halves}
    peak = np.zeros((angle_bins, height, width), np.float32)
    index = np.full((angle_bins, height, width), -1, np.int16)  # into offsets
    for n, (dx, dy) in enumerate(offsets):
        value = zncc(dx, dy)
        if (dx, dy) in needed:
            kept[(dx, dy)] = value
        k = int(np.arctan2(dy, dx) / np.pi * angle_bins) % angle_bins
        repeats = (value >= min_zncc) & (value - kept[halves[(dx, dy)]] >= min_dip) & (value > peak[k])
        np.copyto(peak[k], value, where=repeats)
        np.copyto(index[k], n, where=repeats)
    rows, cols = np.mgrid[0:height, 0:width]
    first = np.argmax(peak, axis=0)
    bins = np.arange(angle_bins)[:, None, None]
    apart = np.abs((bins - first + angle_bins // 2) % angle_bins - angle_bins // 2) >= 3
    second = np.argmax(np.where(apart, peak, 0.0), axis=0)
    vectors = np.array([(0.0, 0.0), *offsets], np.float32)  # index -1 -> row 0: no period
    periods = np.zeros((height, width, 2, 2), np.float32)
    for slot, k in enumerate((first, second)):
        found = (peak[k, rows, cols] > 0) & (apart[k, rows, cols] if slot else True)
        periods[..., slot, :] = np.where(found[..., None], vectors[index[k, rows, cols] + 1], 0.0)
    return periods


def patch_zncc(
    gray_src: np.ndarray,
    gray_dst: np.ndarray,
    flow_px: np.ndarray,
    radius_px: int,
    noise_sigma: float | None = None,
    min_signal_ratio: float = ValidityChecks.zncc_min_signal_ratio,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """ZNCC of the (2 r + 1)^2 patch of gray_src at x with the patch of gray_dst at x + F(x).

    The whole patch moves by F(x), so a pixel that took a neighbour's motion (an occluded
    band, a repeated pattern one period off) is judged by its own flow; patches are sampled
    bilinearly, off-image targets read the border (such pixels fail the target-inside test).

    With `noise_sigma` (grey levels), the correlation is corrected for the attenuation that
    independent noise in both patches causes: a correct match of patches with signal variance
    s^2 has a ZNCC of about s^2 / (s^2 + sigma^2), so the covariance is divided by
    sqrt((var_src - sigma^2) (var_dst - sigma^2)) instead, where both patch variances exceed
    `min_signal_ratio` sigma^2 (below that the corrected value is itself mostly noise, and the
    plain ZNCC is kept).

    With `where` ((H, W) bool), only those pixels are computed (0 elsewhere), at a cost that
    follows their number.

    Returns:
        (H, W) float32 in [-1, 1]; 0 where either patch is flat.
    """
    _check_flow(flow_px, "flow_px")
    height, width = flow_px.shape[:2]
    # Centred on a common level so that float32 sums of squares keep their precision.
    level = 0.5 * (float(np.mean(gray_src)) + float(np.mean(gray_dst)))
    src = np.asarray(gray_src, np.float32) - level
    dst = np.asarray(gray_dst, np.float32) - level
    at = np.nonzero(where) if where is not None else None
    sum_b, sum_bb, sum_ab = _target_sums(src, dst, flow_px, radius_px, at)
    n = (2 * radius_px + 1) ** 2
    window = (2 * radius_px + 1,) * 2
    mean_a = cv2.boxFilter(src, -1, window, borderType=cv2.BORDER_REFLECT)
    var_a = _box_variance(src, radius_px)
    if at is not None:
        mean_a, var_a = mean_a[at], var_a[at]
    mean_b = sum_b / n
    var_b = np.maximum(sum_bb / n - mean_b**2, 0)
    cov = sum_ab / n - mean_a * mean_b
    var_a, var_b = _noise_free_variances(var_a, var_b, noise_sigma, min_signal_ratio)
    denom = np.sqrt(var_a * var_b)
    flat = denom <= 1e-4
    zncc = np.clip(np.where(flat, 0.0, cov / np.where(flat, 1.0, denom)), -1.0, 1.0).astype(np.float32)
    if at is None:
        return zncc
    out = np.zeros((height, width), np.float32)
    out[at] = zncc
    return out


def _target_sums(
    src: np.ndarray, dst: np.ndarray, flow_px: np.ndarray, radius_px: int, at: tuple[np.ndarray, np.ndarray] | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sums of b, b^2 and a b over the patch offsets (`patch_zncc`): a the source patch, b the
    destination patch at the flow's target; (H, W) each, or (N,) at the pixels `at` (rows, cols)."""
    height, width = flow_px.shape[:2]
    padded = cv2.copyMakeBorder(src, *(radius_px,) * 4, cv2.BORDER_REFLECT)
    if at is None:
        grid = pixel_grid(height, width).astype(np.float32)
        target_u, target_v = grid[..., 0] + flow_px[..., 0], grid[..., 1] + flow_px[..., 1]
    else:
        rows, cols = at
        target_u = (cols + flow_px[rows, cols, 0]).astype(np.float32)
        target_v = (rows + flow_px[rows, cols, 1]).astype(np.float32)
    sums = [np.zeros(target_u.shape, np.float32) for _ in range(3)]
    for dv in range(-radius_px, radius_px + 1):
        for du in range(-radius_px, radius_px + 1):
            if at is None:
                a = np.ascontiguousarray(padded[radius_px + dv : radius_px + dv + height,
                                                radius_px + du : radius_px + du + width])
                b = cv2.remap(dst, target_u + du, target_v + dv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            else:
                a = padded[rows + radius_px + dv, cols + radius_px + du]
                b = _remap_points(dst, target_u + du, target_v + dv)
            sums[0] += b
            sums[1] += b * b
            sums[2] += a * b
    return sums[0], sums[1], sums[2]


def _remap_points(image: np.ndarray, u: np.ndarray, v: np.ndarray, row_px: int = 1024) -> np.ndarray:
    """`cv2.remap` (bilinear, border replicated) at (N,) positions: laid out in rows, since
    OpenCV's maps must stay under 32767 pixels a side. The same remap as the full-frame path of
    `patch_zncc` (not scipy's `map_coordinates`), so both give equal values at a pixel."""
    count = len(u)
    if count == 0:
        return np.zeros(0, np.float32)
    rows = -(-count // row_px)
    maps = [np.zeros(rows * row_px, np.float32) for _ in range(2)]
    maps[0][:count], maps[1][:count] = u, v
    out = cv2.remap(image, maps[0].reshape(rows, row_px), maps[1].reshape(rows, row_px), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(-1)[:count]


def _box_variance(image: np.ndarray, radius_px: int) -> np.ndarray:
    """(H, W) float32 variance of `image` (float32, centred near 0) over (2 r + 1)^2 boxes, borders reflected."""
    window = (2 * radius_px + 1,) * 2
    mean = cv2.boxFilter(image, -1, window, borderType=cv2.BORDER_REFLECT)
    return np.maximum(cv2.boxFilter(image * image, -1, window, borderType=cv2.BORDER_REFLECT) - mean**2, 0)


def _noise_free_variances(
    var_a: np.ndarray, var_b: np.ndarray, noise_sigma: float | None, min_signal_ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """Patch variances less the noise variance where both exceed `min_signal_ratio` times it (`patch_zncc`)."""
    if noise_sigma is None or noise_sigma <= 0:
        return var_a, var_b
    noise_var = np.float32(noise_sigma**2)
    signal = (var_a > min_signal_ratio * noise_var) & (var_b > min_signal_ratio * noise_var)
    return np.where(signal, var_a - noise_var, var_a), np.where(signal, var_b - noise_var, var_b)


def consistent_across_stripes(
    flow_fwd_px: np.ndarray,
    flow_bwd_px: np.ndarray,
    gray_src: np.ndarray,
    checks: ValidityChecks,
    alpha: float = FB_ALPHA,
    beta: float = FB_BETA,
) -> np.ndarray:
    """(H, W) bool: stripe pixels of the source whose flow fails the plain forward-backward check
    but passes it across the stripes, sliding along them by at most `checks.stripe_along_fb_px`,
    with a displacement of at most `checks.stripe_max_flow_px` and the target inside
    (`ValidityChecks`; `PairFlows.across_only_fwd`).

    Args:
        flow_fwd_px, flow_bwd_px: (H, W, 2) F_{i->j} and F_{j->i}.
        gray_src: (H, W) grey levels of frame i.
    """
    if checks.stripe_max_isotropy <= 0:
        return np.zeros(gray_src.shape, bool)
    normal = aperture_normals(gray_src, checks.stripe_window_px, checks.stripe_max_isotropy)
    fb = forward_backward_check(flow_fwd_px, flow_bwd_px, alpha, beta)
    return _consistent_across(fb, flow_fwd_px, flow_bwd_px, normal, checks, alpha, beta)


def _consistent_across(
    fb: ForwardBackwardCheck,
    flow_fwd_px: np.ndarray,
    flow_bwd_px: np.ndarray,
    normal: np.ndarray,
    checks: ValidityChecks,
    alpha: float,
    beta: float,
) -> np.ndarray:
    """`consistent_across_stripes` for the pixels `fb` found inconsistent, given the stripe
    normals (H, W, 2) of the source (NaN off stripes); only those pixels are computed."""
    magnitude = np.linalg.norm(flow_fwd_px, axis=-1)
    candidates = fb.target_inside & ~fb.consistent & np.isfinite(normal[..., 0]) & (magnitude <= checks.stripe_max_flow_px)
    out = np.zeros(candidates.shape, bool)
    if not candidates.any():
        return out
    mismatch, n = fb.mismatch_px[candidates], normal[candidates]
    across = np.abs(np.sum(mismatch * n, axis=-1))
    along = np.sqrt(np.maximum(np.sum(mismatch**2, axis=-1) - across**2, 0.0))
    tolerance = alpha * (magnitude[candidates] + np.linalg.norm(flow_bwd_px[candidates], axis=-1)) + beta
    out[candidates] = (across <= tolerance) & (along <= checks.stripe_along_fb_px)
    return out


def drop_small_regions(valid: np.ndarray, min_pixels: int) -> np.ndarray:
    """`valid` without its 8-connected regions of fewer than `min_pixels` pixels."""
    if min_pixels <= 1 or not valid.any():
        return valid.copy()
    _, labels, stats, _ = cv2.connectedComponentsWithStats(valid.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_pixels
    keep[0] = False  # the background label
    return keep[labels]


def flow_support(
    frame_src: np.ndarray,
    frame_dst: np.ndarray,
    flow_px: np.ndarray,
    valid: np.ndarray,
    checks: ValidityChecks,
    noise_sigma: float | None = None,
) -> np.ndarray:
    """`valid` narrowed by the `ValidityChecks`: texture support at the source, photometric
    consistency at the target, then no small islands.

    Args:
        frame_src, frame_dst: (H, W, 3) uint8 RGB of the flow's source and destination.
        flow_px: (H, W, 2) F_{src->dst}.
        valid: (H, W) bool, e.g. the forward-backward check.
        noise_sigma: noise of the pair in grey levels (default: the larger of the two frames').

    Returns:
        (H, W) bool.
    """
    _check_flow(flow_px, "flow_px")
    if valid.shape != flow_px.shape[:2] or frame_src.shape[:2] != valid.shape or frame_dst.shape != frame_src.shape:
        shapes = f"frames {frame_src.shape}, {frame_dst.shape}, flow {flow_px.shape} and valid {valid.shape}"
        raise ValueError(f"{shapes} disagree")
    gray_src, gray_dst = _gray(frame_src), _gray(frame_dst)
    if noise_sigma is None:
        noise_sigma = max(image_noise_sigma(gray_src), image_noise_sigma(gray_dst))
    sigma = max(noise_sigma, checks.noise_floor_levels)
    out = valid & texture_support(gray_src, sigma, checks)
    out &= photometric_support(gray_src, gray_dst, flow_px, sigma, checks, where=out)
    return drop_small_regions(out, int(np.ceil(checks.min_region_fraction * out.size)))


def photometric_support(
    gray_src: np.ndarray,
    gray_dst: np.ndarray,
    flow_px: np.ndarray,
    noise_sigma: float,
    checks: ValidityChecks,
    where: np.ndarray | None = None,
) -> np.ndarray:
    """(H, W) bool: the patch at the flow's target matches the source's (`ValidityChecks.min_zncc`,
    noise-corrected with `zncc_noise_correction`); where the source patch is faint
    (`zncc_faint_ratio`), the patches grow by one pixel of radius, and further, up to
    `zncc_faint_radius_px`, where the larger patch is faint too: a patch that reaches a
    neighbour's strong texture would let that texture vouch for the pixel's flow. With `where`,
    only those pixels need the larger patches (the others' answer does not matter to the caller)."""
    noise = noise_sigma if checks.zncc_noise_correction else None
    zncc = patch_zncc(gray_src, gray_dst, flow_px, checks.zncc_radius_px, noise, checks.zncc_min_signal_ratio)
    if checks.zncc_faint_ratio <= 0:
        return zncc >= checks.min_zncc
    src = np.asarray(gray_src, np.float32) - float(np.mean(gray_src))
    faint_limit = checks.zncc_faint_ratio * noise_sigma**2
    grows = np.ones(zncc.shape, bool) if where is None else np.asarray(where, bool)
    for radius in range(checks.zncc_radius_px + 1, checks.zncc_faint_radius_px + 1):
        faint_at = radius - 1 if radius == checks.zncc_radius_px + 1 else radius
        grows = grows & (_box_variance(src, faint_at) < faint_limit)
        if not grows.any():
            break
        wider = patch_zncc(gray_src, gray_dst, flow_px, radius, noise, checks.zncc_min_signal_ratio, where=grows)
        zncc = np.where(grows, wider, zncc)
    return zncc >= checks.min_zncc


def texture_support(gray: np.ndarray, noise_sigma: float, checks: ValidityChecks) -> np.ndarray:
    """(H, W) bool: the texture determines the flow (`ValidityChecks.texture_min_snr`), at full
    resolution or, with `texture_half_resolution`, at half resolution."""
    supported = texture_snr(gray, noise_sigma, checks.texture_window_px) >= checks.texture_min_snr
    if not checks.texture_half_resolution:
        return supported
    half = cv2.pyrDown(np.asarray(gray, np.float32))
    half_sigma = max(image_noise_sigma(half), checks.noise_floor_levels)
    coarse = texture_snr(half, half_sigma, checks.texture_window_px // 2 + 1) >= checks.texture_min_snr
    height, width = supported.shape
    return supported | cv2.resize(coarse.astype(np.uint8), (width, height), interpolation=cv2.INTER_NEAREST).astype(bool)


@dataclass(frozen=True)
class PairFlows:
    """Forward and backward flow of P frame pairs (i, j) of one clip.

    Attributes:
        pairs: (P, 2) int64 frame indices (i, j).
        flow_fwd_px, flow_bwd_px: (P, H, W, 2) float32 F_{i->j} and F_{j->i}.
        uncertainty_fwd_px, uncertainty_bwd_px: (P, H, W) float32 expected EPE of each.
        valid_fwd, valid_bwd: (P, H, W) bool `flow_valid` of each direction.
        fb_error_fwd_px, fb_error_bwd_px: (P, H, W) float32 |F + B(x + F)|, NaN off-image.
        across_only_fwd, across_only_bwd: (P, H, W) bool, valid pixels that passed the
            forward-backward check only across stripes (`consistent_across_stripes`): their flow
            along the stripes is unreliable (all False when not given).

    The depth and mask labelers read it as flows F_{i->j} by directed pair (`directed_pairs`,
    `lookup`): pair (i, j) gives F_{i->j} (forward) and F_{j->i} (backward). Where a pair occurs
    twice, in either orientation, the later one is read.
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
    across_only_fwd: np.ndarray | None = None
    across_only_bwd: np.ndarray | None = None

    def __post_init__(self) -> None:
        for suffix in ("fwd", "bwd"):
            if getattr(self, f"across_only_{suffix}") is None:
                object.__setattr__(self, f"across_only_{suffix}", np.zeros_like(getattr(self, f"valid_{suffix}")))

    def invalid_where(self, mask: np.ndarray) -> PairFlows:
        """A copy whose flows of every pair and direction are invalid on the (H, W) bool `mask`
        (pixels that show no scene, e.g. `labelers.overlay`); itself when the mask is empty."""
        if np.shape(mask) != self.valid_fwd.shape[1:]:
            raise ValueError(f"mask must be (H, W) = {self.valid_fwd.shape[1:]}, got {np.shape(mask)}")
        if not np.any(mask):
            return self
        keep = ~np.asarray(mask, bool)
        return replace(self, valid_fwd=self.valid_fwd & keep, valid_bwd=self.valid_bwd & keep,
                       across_only_fwd=self.across_only_fwd & keep, across_only_bwd=self.across_only_bwd & keep)

    def without_across_only(self) -> PairFlows:
        """A copy in which the pixels valid only across stripes are invalid: for labelers that use
        the flow's both components (itself when there are none)."""
        if not (self.across_only_fwd.any() or self.across_only_bwd.any()):
            return self
        return replace(
            self,
            valid_fwd=self.valid_fwd & ~self.across_only_fwd,
            valid_bwd=self.valid_bwd & ~self.across_only_bwd,
            across_only_fwd=np.zeros_like(self.across_only_fwd),
            across_only_bwd=np.zeros_like(self.across_only_bwd),
        )

    @cached_property
    def _directions(self) -> dict[tuple[int, int], tuple[int, bool]]:
        """(i, j) -> (index p of the pair holding F_{i->j}, whether it is p's forward flow)."""
        out: dict[tuple[int, int], tuple[int, bool]] = {}
        for p, (i, j) in enumerate(self.pairs.tolist()):
            out[(i, j)] = (p, True)
            out[(j, i)] = (p, False)
        return out

    def directed_pairs(self) -> KeysView[tuple[int, int]]:
        """Every (i, j) whose flow F_{i->j} is held: both orientations of each pair."""
        return self._directions.keys()

    def lookup(self, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
        """F_{i->j}: flow_px (H, W, 2) and its validity (H, W), views of the forward flow of pair
        (i, j) or the backward flow of pair (j, i).

        Raises:
            KeyError: no pair links frames i and j.
        """
        p, forward = self._directions[(i, j)]
        if forward:
            return self.flow_fwd_px[p], self.valid_fwd[p]
        return self.flow_bwd_px[p], self.valid_bwd[p]

    def select(self, pairs: Sequence[tuple[int, int]]) -> PairFlows:
        """The flows of `pairs` (a copy), in the given orientation: a pair held as (j, i) has its
        forward and backward fields swapped.

        Raises:
            KeyError: no pair links the two frames of one of `pairs`.
        """
        rows = [self._directions[(int(i), int(j))] for i, j in pairs]
        out = {}
        for suffix, other in (("fwd", "bwd"), ("bwd", "fwd")):
            for name in _direction_fields(suffix):
                flipped = name.replace(f"_{suffix}", f"_{other}")
                out[name] = np.stack([getattr(self, name if forward else flipped)[p] for p, forward in rows])
        return PairFlows(pairs=np.asarray(pairs, np.int64).reshape(-1, 2), **out)

    def merged(self, other: PairFlows) -> PairFlows:
        """The pairs of both in one `PairFlows` (a copy); a pair `other` holds too, in either
        orientation, keeps only `other`'s flows.

        Raises:
            ValueError: the two differ in image size.
        """
        if self.flow_fwd_px.shape[1:] != other.flow_fwd_px.shape[1:]:
            sizes = (self.flow_fwd_px.shape[1:3], other.flow_fwd_px.shape[1:3])
            raise ValueError(f"pair flows differ in size: {sizes[0]} vs {sizes[1]}")
        theirs = {frozenset(pair) for pair in other.pairs.tolist()}
        keep = np.array([frozenset(pair) not in theirs for pair in self.pairs.tolist()], bool)
        return PairFlows(
            **{f.name: np.concatenate([getattr(self, f.name)[keep], getattr(other, f.name)]) for f in fields(self)}
        )


def prefer_valid(
    first: PairFlows, second: PairFlows, within: tuple[np.ndarray, np.ndarray] | None = None
) -> PairFlows:
    """Per pair, direction and pixel, `first`'s flow where it is valid, else `second`'s (same pairs).

    Args:
        within: optional (P, H, W) bool masks of the forward and the backward direction's source
            pixels: `first` is taken only inside them (outside, always `second`).

    Raises:
        ValueError: the two hold different pairs or image sizes, or `within` another shape.
    """
    if not np.array_equal(first.pairs, second.pairs) or first.flow_fwd_px.shape != second.flow_fwd_px.shape:
        raise ValueError(f"pair flows differ: pairs {first.pairs.tolist()} vs {second.pairs.tolist()}, "
                         f"flows {first.flow_fwd_px.shape} vs {second.flow_fwd_px.shape}")
    if within is not None and any(np.shape(m) != first.valid_fwd.shape for m in within):
        raise ValueError(f"within must be two masks of shape {first.valid_fwd.shape}, got "
                         f"{[np.shape(m) for m in within]}")
    out = {}
    for index, suffix in enumerate(("fwd", "bwd")):
        keep = getattr(first, f"valid_{suffix}")
        if within is not None:
            keep = keep & within[index]
        for name in _direction_fields(suffix):
            a, b = getattr(first, name), getattr(second, name)
            out[name] = np.where(keep.reshape(keep.shape + (1,) * (a.ndim - keep.ndim)), a, b)
    return PairFlows(pairs=first.pairs.copy(), **out)


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
    checks: ValidityChecks | None = ValidityChecks(),
) -> PairFlows:
    """Forward and backward flow, uncertainty and validity for frame pairs of a clip.

    A pixel is valid when it passes the forward-backward check (on stripes, with `checks`, the
    check across them: `consistent_across_stripes`), its uncertainty is at most
    `max_uncertainty_px` and, unless `checks` is None, the `ValidityChecks` (`flow_support`).

    Args:
        estimator: any `FlowEstimator`.
        frames: (T, H, W, 3) uint8 RGB.
        pairs: frame index pairs (i, j), i != j.
        max_uncertainty_px: pixels with a larger expected EPE are invalid.
        batch_size: pairs handed to the estimator per call.
        checks: validity checks beyond forward-backward (None: forward-backward and uncertainty only).
    """
    check_frames(frames)
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
    return validate_pair_flows(
        frames, index, FlowResult(np.concatenate([r.flow_px for r in fwd]), np.concatenate([r.uncertainty_px for r in fwd])),
        FlowResult(np.concatenate([r.flow_px for r in bwd]), np.concatenate([r.uncertainty_px for r in bwd])),
        max_uncertainty_px, alpha, beta, checks,
    )


def validate_pair_flows(
    frames: np.ndarray,
    pairs: np.ndarray,
    fwd: FlowResult,
    bwd: FlowResult,
    max_uncertainty_px: float = DEFAULT_MAX_UNCERTAINTY_PX,
    alpha: float = FB_ALPHA,
    beta: float = FB_BETA,
    checks: ValidityChecks | None = ValidityChecks(),
) -> PairFlows:
    """`PairFlows` of P frame pairs from their estimated flows, with `compute_pair_flows`' validity.

    Args:
        frames: (T, H, W, 3) uint8 RGB the flows were estimated on.
        pairs: (P, 2) int64 frame indices (i, j).
        fwd, bwd: F_{i->j} and F_{j->i} of every pair, flow_px (P, H, W, 2), uncertainty_px (P, H, W).
    """
    flow_fwd, flow_bwd = fwd.flow_px, bwd.flow_px
    noise = {} if checks is None else {t: image_noise_sigma(_gray(frames[t])) for t in np.unique(pairs).tolist()}
    normals: dict[int, np.ndarray] = {}

    def stripe_normals_of(t: int) -> np.ndarray:
        if t not in normals:
            normals[t] = aperture_normals(_gray(frames[t]), checks.stripe_window_px, checks.stripe_max_isotropy)
        return normals[t]

    def check(
        src: int, dst: int, flow_a: np.ndarray, flow_b: np.ndarray, unc_a: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        fb = forward_backward_check(flow_a, flow_b, alpha, beta)
        consistent = fb.consistent
        if checks is not None and checks.stripe_max_isotropy > 0:
            consistent = consistent | _consistent_across(fb, flow_a, flow_b, stripe_normals_of(src), checks, alpha, beta)
        valid = consistent & _confident(unc_a, max_uncertainty_px)
        if checks is not None:
            valid = flow_support(frames[src], frames[dst], flow_a, valid, checks, max(noise[src], noise[dst]))
        return valid, fb.fb_error_px, valid & ~fb.consistent

    pair_list = list(enumerate(np.asarray(pairs).tolist()))
    valid_fwd, err_fwd, across_fwd = zip(*(check(i, j, flow_fwd[p], flow_bwd[p], fwd.uncertainty_px[p])
                                          for p, (i, j) in pair_list))
    valid_bwd, err_bwd, across_bwd = zip(*(check(j, i, flow_bwd[p], flow_fwd[p], bwd.uncertainty_px[p])
                                          for p, (i, j) in pair_list))
    return PairFlows(
        pairs=np.asarray(pairs, np.int64),
        flow_fwd_px=flow_fwd,
        flow_bwd_px=flow_bwd,
        uncertainty_fwd_px=fwd.uncertainty_px,
        uncertainty_bwd_px=bwd.uncertainty_px,
        valid_fwd=np.stack(valid_fwd),
        valid_bwd=np.stack(valid_bwd),
        fb_error_fwd_px=np.stack(err_fwd),
        fb_error_bwd_px=np.stack(err_bwd),
        across_only_fwd=np.stack(across_fwd),
        across_only_bwd=np.stack(across_bwd),
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
    disagree_gap_px: float | None = CHAIN_DISAGREE_GAP_PX,
) -> PairFlows:
    """Direct flows of pairs (i, j) repaired with the flow composed along the chain of `links`
    i -> i +- 1 -> ... -> j, in both directions: invalid pixels the chain resolves are filled,
    valid pixels it grossly contradicts are replaced.

    A fast object moves tens of pixels over a key-frame interval: a direct estimate loses it
    there, while the same motion in single-frame steps is tracked. A composed pixel is kept where every hop is valid,
    the composed backward flow is valid at its target, the two pass the forward-backward check, and its
    uncertainty, the root sum of squares of the hops' uncertainties along the chain (hop errors
    taken as independent), is at most `max_uncertainty_px`, and it differs from the direct flow
    by more than `min_correction_px`: the direct estimate lost the motion there. Pixels whose
    direct flow is merely inconsistent (occlusion borders, the image edge) stay invalid, as the
    chain is no better there: filling them too added errors that reached the multi-view depth
    and the masks' false alarms.

    Pixels whose direct flow is valid keep it (one estimate does not accumulate the hops'
    errors) unless the chain differs from it by more than `replace_gap_px`. Over four frames
    DIS can lock onto a wrong match in repeated texture that the backward estimate repeats,
    so the check passes, and the masks then flag static objects as moving. Where a confident
    chain disagrees by more than `replace_gap_px` it is the closer to the truth; between
    `disagree_gap_px` and `replace_gap_px` the direct flow mostly is. Closer is not right,
    though: where a confident chain and a valid direct flow disagree by more than
    `disagree_gap_px` (and at most `replace_gap_px`) neither is trusted and the pixel becomes
    invalid. Last, a direct pixel whose target reads a flow of the other direction that the
    chain replaced is checked again against it: the wrong flow that agreed with a wrong twin no
    longer passes. Measured: docs/benchmarks.md, "Labeler design measurements", optical flow:
    chain fill.

    Args:
        direct: flows of the pairs to fill (e.g. `key_frame_pairs`).
        links: flows holding (t, t + 1) or (t + 1, t) for every step of every chain
            (e.g. `consecutive_pairs`).
        min_correction_px: an invalid direct pixel is filled only if the chain is this far from it.
        replace_gap_px: a valid direct pixel is replaced only if the chain is this far from it
            (None: valid pixels are never replaced).
        disagree_gap_px: a valid direct pixel the chain is farther from than this (but not
            replaced) becomes invalid (None: kept valid).

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
        from_chain: dict[str, np.ndarray] = {}
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
            doubted = direct_valid & use & ~wrong_if_valid
            doubted &= np.zeros_like(direct_valid) if disagree_gap_px is None else gap > disagree_gap_px
            use &= np.where(direct_valid, wrong_if_valid, gap > min_correction_px)
            filled[f"valid_{suffix}"][p][doubted] = False
            filled[f"flow_{suffix}_px"][p][use] = flow[use]
            filled[f"uncertainty_{suffix}_px"][p][use] = uncertainty[use]
            filled[f"fb_error_{suffix}_px"][p][use] = check.fb_error_px[use]
            filled[f"valid_{suffix}"][p][use] = True
            filled[f"across_only_{suffix}"][p][use | doubted] = False
            from_chain[suffix] = use
        _recheck_direct(filled, p, from_chain, alpha, beta)
    return replace(direct, **filled)


def _recheck_direct(
    filled: dict[str, np.ndarray], p: int, from_chain: dict[str, np.ndarray], alpha: float, beta: float
) -> None:
    """Pair p of the filled flows (in place): a direct pixel of either direction whose target
    reads a flow of the other direction that the chain replaced keeps its validity only if it
    passes the forward-backward check against it. A wrong direct flow whose backward twin was
    equally wrong passed the check before the chain replaced the twin; unchecked, it stayed
    valid 20 px off (the sky leaving the view of an orbiting camera). Chain pixels passed the
    check against the composed backward chain; the other direct pixels read what they were
    checked against."""
    for suffix, other in (("fwd", "bwd"), ("bwd", "fwd")):
        flow, twin = filled[f"flow_{suffix}_px"][p], filled[f"flow_{other}_px"][p]
        target = pixel_grid(*flow.shape[:2]) + flow
        with np.errstate(invalid="ignore"):
            twin_replaced = np.nan_to_num(_sample(from_chain[other].astype(np.float32), target)) > 0
        recheck = twin_replaced & ~from_chain[suffix]
        check = forward_backward_check(flow, twin, alpha, beta)
        filled[f"fb_error_{suffix}_px"][p][recheck] = check.fb_error_px[recheck]
        filled[f"valid_{suffix}"][p] &= check.consistent | ~recheck
        filled[f"across_only_{suffix}"][p] &= filled[f"valid_{suffix}"][p]


_PER_PIXEL_FIELDS = (
    "flow_fwd_px", "flow_bwd_px", "uncertainty_fwd_px", "uncertainty_bwd_px",
    "valid_fwd", "valid_bwd", "fb_error_fwd_px", "fb_error_bwd_px", "across_only_fwd", "across_only_bwd",
)


def _direction_fields(suffix: str) -> tuple[str, ...]:
    """The per-pixel fields of one direction of `PairFlows` ("fwd" or "bwd")."""
    return tuple(name for name in _PER_PIXEL_FIELDS if f"_{suffix}" in name)


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
