"""Weight-free optical flow with OpenCV's DIS, refined, with forward-backward uncertainty.

Plain DIS at PRESET_MEDIUM stops its coarse-to-fine patch search at half resolution.
This backend keeps the preset's other settings and improves on it in three ways:

1. patch search down to full resolution (`finest_scale=0`), the largest gain and most of
   the extra cost;
2. one more full-resolution variational refinement pass (`cv2.VariationalRefinement`,
   10 fixed-point iterations) on the DIS result;
3. forward-backward fusion: flow in both directions is computed anyway (for the
   uncertainty), and where the two agree to within `fuse_max_fb_error_px` the forward
   flow is replaced by the mean of F(x) and -B(x + F(x)), two nearly independent
   estimates of the same displacement.

Where the finest patches see only noise but the texture is coarse (a smooth, low-contrast
cloudy sky: `coarse_texture_mask`), the flow of the patch search stopped one scale coarser is
taken before the extra pass: 8 px patches of such texture at full resolution are mostly codec
noise, and there our flow was worse than plain DIS-medium's (measured: docs/benchmarks.md,
"Session 12"). Fine low-contrast texture and stripes keep the full-resolution search, which is
far better there.

Brightness constancy, which the variational refinement assumes, fails when the exposure changes
between the two frames (auto exposure, a light turning on): on smooth, low-contrast surfaces the
flow then shifts along the intensity gradient by up to a pixel or two over a key-frame
interval, the same way in both directions, so the forward-backward check keeps it, and the
dynamic masks flag static surfaces (measured: docs/benchmarks.md, "Session 14"). The destination
frame's exposure is therefore matched to the source's first (`exposure_gain`): a global gain,
measured at the correspondences of a quarter-resolution flow, applied when it differs from 1
by more than `exposure_min_change`.

Each step pays for itself on every scene class we render (measured: docs/benchmarks.md,
"Labeler design measurements", DIS flow; tests/labelers/test_dis_flow.py checks the gains).

The uncertainty (expected end-point error in pixels) is `uncertainty_scale` times the
forward-backward error |F + B(x + F)| of the unfused flows. The default scale 1.2 is
calibrated on the synthetic scenes (same section). Other settings need their own scale:
plain DIS-medium flows are smoother and wrong more consistently in both directions, so their
error is a larger multiple of the forward-backward error.

Where x + F(x) leaves the image there is no backward flow to compare with; there the
backward flow is read at the nearest in-image position and the distance by which the
target lies outside is added.
Such pixels are never valid (`labelers.flow.flow_valid_mask` rejects off-image targets);
the value only keeps the uncertainty finite and growing with the extrapolation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from labelers.flow import (
    NOISE_FLOOR_LEVELS,
    FlowResult,
    check_image_pairs,
    image_noise_sigma,
    texture_energy,
    texture_snr,
)
from labelers.geometry import inside_image, pixel_grid

__all__ = ["DisFlowConfig", "DisFlow", "coarse_texture_mask", "exposure_gain"]


@dataclass(frozen=True)
class DisFlowConfig:
    """Settings of the DIS backend (serialised into the clip's `labelers` attribute).

    Attributes:
        finest_scale: finest pyramid level of the patch search (0 = full resolution).
        patch_size, patch_stride: DIS patch size and spacing in pixels.
        gradient_descent_iterations: patch alignment iterations per scale.
        variational_refinement_iterations: DIS's own variational iterations per scale.
        variational_alpha, variational_delta, variational_gamma: smoothness, colour
            constancy and gradient constancy weights of the variational energy.
        use_mean_normalization: normalise patch means (robust to brightness changes).
        extra_refinement_iterations: fixed-point iterations of the final full-resolution
            variational pass (0 disables it).
        coarse_max_snr: a pixel takes the coarser search's flow when the smaller eigenvalue of
            its `patch_size` structure tensor is below this times the noise variance (0
            disables the fallback) ...
        coarse_max_fine_ratio: ... and its gradient energy at full resolution is below this
            fraction of the energy at half resolution (coarse texture: about 1/4 for a smooth
            signal, more for fine texture and noise).
        fuse_backward: average forward and inverted backward flow where they agree.
        fuse_max_fb_error_px: agreement needed for fusion.
        uncertainty_scale: expected end-point error per pixel of forward-backward error.
        match_exposure: scale the destination frame's intensities by `exposure_gain` before
            the flow in both directions is estimated ...
        exposure_min_change: ... when the gain differs from 1 by more than this (smaller
            changes move a mid-grey 8-bit level by under half a level).
    """

    finest_scale: int = 0
    patch_size: int = 8
    patch_stride: int = 3
    gradient_descent_iterations: int = 25
    variational_refinement_iterations: int = 5
    variational_alpha: float = 20.0
    variational_delta: float = 5.0
    variational_gamma: float = 10.0
    use_mean_normalization: bool = True
    extra_refinement_iterations: int = 10
    coarse_max_snr: float = 1.0
    coarse_max_fine_ratio: float = 0.4
    fuse_backward: bool = True
    fuse_max_fb_error_px: float = 0.5
    uncertainty_scale: float = 1.2
    match_exposure: bool = True
    exposure_min_change: float = 0.004

    def __post_init__(self) -> None:
        if self.finest_scale < 0 or self.patch_size < 2 or not 1 <= self.patch_stride <= self.patch_size:
            raise ValueError(
                f"need finest_scale >= 0, patch_size >= 2 and 1 <= patch_stride <= patch_size, got "
                f"{self.finest_scale}, {self.patch_size}, {self.patch_stride}"
            )
        if min(self.gradient_descent_iterations, self.variational_refinement_iterations) < 0:
            raise ValueError("iteration counts must be >= 0")
        if min(self.coarse_max_snr, self.coarse_max_fine_ratio) < 0:
            raise ValueError("coarse_max_snr and coarse_max_fine_ratio must be >= 0")
        if self.extra_refinement_iterations < 0 or self.fuse_max_fb_error_px < 0 or self.uncertainty_scale <= 0:
            raise ValueError("extra_refinement_iterations and fuse_max_fb_error_px must be >= 0, uncertainty_scale > 0")
        if not 0 <= self.exposure_min_change < 1:
            raise ValueError(f"need 0 <= exposure_min_change < 1, got {self.exposure_min_change}")

    @classmethod
    def plain_medium(cls) -> DisFlowConfig:
        """The settings of cv2.DISOPTICAL_FLOW_PRESET_MEDIUM, with no refinement or fusion."""
        return cls(
            finest_scale=1,
            patch_size=8,
            patch_stride=3,
            gradient_descent_iterations=25,
            variational_refinement_iterations=5,
            extra_refinement_iterations=0,
            coarse_max_snr=0.0,
            fuse_backward=False,
            match_exposure=False,
        )


class DisFlow:
    """`FlowEstimator` on OpenCV DIS (CPU, no weights).

    Example:
        >>> flow = DisFlow()
        >>> fwd, bwd = flow.estimate_bidirectional(frames[:-1], frames[1:])  # (N, H, W, 3) uint8
    """

    name = "opencv_dis"
    version = "3"  # 2: coarser search on coarse, noise-level texture; 3: exposure matched

    def __init__(self, config: DisFlowConfig | None = None) -> None:
        self.config = config or DisFlowConfig()

    @property
    def params(self) -> dict[str, Any]:
        return {**asdict(self.config), "opencv": cv2.__version__}

    def estimate(self, images_src: np.ndarray, images_dst: np.ndarray) -> FlowResult:
        """Forward flow src -> dst of N pairs; see the module docstring for the uncertainty."""
        return self.estimate_bidirectional(images_src, images_dst)[0]

    def estimate_bidirectional(self, images_src: np.ndarray, images_dst: np.ndarray) -> tuple[FlowResult, FlowResult]:
        """Forward (src -> dst) and backward (dst -> src) flow of N pairs.

        Args:
            images_src, images_dst: (N, H, W, 3) uint8 RGB.

        Returns:
            Two `FlowResult`s with flow_px (N, H, W, 2) and uncertainty_px (N, H, W).
        """
        check_image_pairs(images_src, images_dst)
        out_fwd, out_bwd = [], []
        for src, dst in zip(images_src, images_dst):
            gray_src = cv2.cvtColor(src, cv2.COLOR_RGB2GRAY)
            gray_dst = cv2.cvtColor(dst, cv2.COLOR_RGB2GRAY)
            if self.config.match_exposure:
                gray_dst = _scaled(gray_dst, exposure_gain(gray_src, gray_dst), self.config.exposure_min_change)
            flow_fwd = self._dis_flow(gray_src, gray_dst)
            flow_bwd = self._dis_flow(gray_dst, gray_src)
            out_fwd.append(self._finish(flow_fwd, flow_bwd))
            out_bwd.append(self._finish(flow_bwd, flow_fwd))
        return (
            FlowResult(np.stack([f for f, _ in out_fwd]), np.stack([u for _, u in out_fwd])),
            FlowResult(np.stack([f for f, _ in out_bwd]), np.stack([u for _, u in out_bwd])),
        )

    def _dis_flow(self, gray_src: np.ndarray, gray_dst: np.ndarray) -> np.ndarray:
        cfg = self.config
        flow = self._patch_search(gray_src, gray_dst, cfg.finest_scale)
        if cfg.coarse_max_snr > 0:
            coarse = coarse_texture_mask(gray_src, cfg.patch_size, cfg.coarse_max_snr, cfg.coarse_max_fine_ratio)
            if coarse.any():
                flow[coarse] = self._patch_search(gray_src, gray_dst, cfg.finest_scale + 1)[coarse]
        if cfg.extra_refinement_iterations:
            refine = cv2.VariationalRefinement_create()
            refine.setFixedPointIterations(cfg.extra_refinement_iterations)
            refine.setAlpha(cfg.variational_alpha)
            refine.setDelta(cfg.variational_delta)
            refine.setGamma(cfg.variational_gamma)
            flow = refine.calc(gray_src, gray_dst, flow)
        return flow

    def _patch_search(self, gray_src: np.ndarray, gray_dst: np.ndarray, finest_scale: int) -> np.ndarray:
        cfg = self.config
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
        dis.setFinestScale(finest_scale)
        dis.setPatchSize(cfg.patch_size)
        dis.setPatchStride(cfg.patch_stride)
        dis.setGradientDescentIterations(cfg.gradient_descent_iterations)
        dis.setVariationalRefinementIterations(cfg.variational_refinement_iterations)
        dis.setVariationalRefinementAlpha(cfg.variational_alpha)
        dis.setVariationalRefinementDelta(cfg.variational_delta)
        dis.setVariationalRefinementGamma(cfg.variational_gamma)
        dis.setUseMeanNormalization(cfg.use_mean_normalization)
        dis.setUseSpatialPropagation(True)
        return dis.calc(gray_src, gray_dst, None)

    def _finish(self, flow_fwd: np.ndarray, flow_bwd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Fused forward flow and its uncertainty, from the raw forward and backward flows."""
        cfg = self.config
        height, width = flow_fwd.shape[:2]
        target = (pixel_grid(height, width) + flow_fwd).astype(np.float32)
        inside = inside_image(target, height, width)
        # cv2.remap instead of labelers.geometry.bilinear_sample: ~8x faster here, and its
        # 1/32-pixel sample positions move B by |grad B|/64, negligible where F and B agree.
        # Border replication only affects off-image targets, which get the distance below.
        flow_bwd_at_target = cv2.remap(flow_bwd, target, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        fb_error = np.linalg.norm(flow_fwd + flow_bwd_at_target, axis=-1)
        off_image = np.linalg.norm(target - _clamp_to_image(target, height, width), axis=-1)
        fb_error = np.where(inside, fb_error, fb_error + off_image)
        flow = flow_fwd.copy()
        if cfg.fuse_backward:
            agree = inside & (fb_error <= cfg.fuse_max_fb_error_px)
            flow[agree] = 0.5 * (flow_fwd[agree] - flow_bwd_at_target[agree])
        return flow, (cfg.uncertainty_scale * fb_error).astype(np.float32)


def coarse_texture_mask(gray: np.ndarray, window_px: int, max_snr: float, max_fine_ratio: float) -> np.ndarray:
    """Pixels whose `window_px` patch is noise at full resolution but whose texture is coarse.

    Noise: the smaller eigenvalue of the structure tensor is below `max_snr` times the image's
    noise variance (`labelers.flow.image_noise_sigma`, at least `NOISE_FLOOR_LEVELS`).
    Coarse: the gradient energy per pixel at full resolution is below `max_fine_ratio` of the
    energy per pixel at half resolution (same window in half-resolution pixels); a smooth
    signal gives about 1/4, fine texture and noise more.

    Args:
        gray: (H, W) uint8 or float grey image.

    Returns:
        (H, W) bool.
    """
    gray = np.asarray(gray, np.float32)
    sigma = max(image_noise_sigma(gray), NOISE_FLOOR_LEVELS)
    noisy = texture_snr(gray, sigma, window_px) < max_snr
    half = texture_energy(cv2.pyrDown(gray), window_px)
    half = cv2.resize(half, (gray.shape[1], gray.shape[0]), interpolation=cv2.INTER_LINEAR)
    return noisy & (texture_energy(gray, window_px) < max_fine_ratio * half)


def exposure_gain(gray_src: np.ndarray, gray_dst: np.ndarray, scale: int = 4, max_asymmetry: float = 0.005) -> float:
    """Global gain g such that g * dst matches src at corresponding points (exposure change).

    Both images are reduced `scale` times (area average: noise and small flow errors cancel),
    and DIS-medium at that size gives the correspondences (`_gain_at_correspondences`). The
    gain is measured in both directions; where the two are not reciprocal to within
    `max_asymmetry` the small flow did not find the correspondences (a wide viewpoint change)
    and the gain is 1.

    Args:
        gray_src, gray_dst: (H, W) uint8.
    """
    height, width = gray_src.shape
    size = (max(width // scale, 16), max(height // scale, 16))
    small_src = cv2.resize(gray_src, size, interpolation=cv2.INTER_AREA)
    small_dst = cv2.resize(gray_dst, size, interpolation=cv2.INTER_AREA)
    forward = _gain_at_correspondences(small_src, small_dst)
    backward = _gain_at_correspondences(small_dst, small_src)
    if abs(np.log(forward * backward)) > max_asymmetry:
        return 1.0
    return float(np.sqrt(forward / backward))


def _gain_at_correspondences(gray_src: np.ndarray, gray_dst: np.ndarray) -> float:
    """Ratio of the sums of src and of dst warped by DIS-medium flow, over the pixels whose log
    ratio lies in its interquartile range: a flow error in texture moves single ratios either
    way (the sums cancel it), a mover or a disocclusion moves some far (the range leaves them
    out). Dark, saturated and off-image pixels do not count; 1.0 where fewer than 1 % qualify."""
    height, width = gray_src.shape
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(gray_src, gray_dst, None)
    target = (pixel_grid(height, width) + flow).astype(np.float32)
    src = gray_src.astype(np.float32)
    warped = cv2.remap(gray_dst.astype(np.float32), target, None, cv2.INTER_LINEAR)
    usable = inside_image(target, height, width) & (src > 16) & (src < 240) & (warped > 16) & (warped < 240)
    if usable.mean() < 0.01:
        return 1.0
    src, warped = src[usable], warped[usable]
    log_ratio = np.log(src / warped)
    low, high = np.percentile(log_ratio, [25, 75])
    central = (log_ratio >= low) & (log_ratio <= high)
    return float(src[central].sum() / warped[central].sum())


def _scaled(gray: np.ndarray, gain: float, min_change: float) -> np.ndarray:
    if abs(gain - 1.0) <= min_change:
        return gray
    return np.clip(np.round(gray.astype(np.float32) * gain), 0, 255).astype(np.uint8)


def _clamp_to_image(uv: np.ndarray, height: int, width: int) -> np.ndarray:
    return np.stack([np.clip(uv[..., 0], 0, width - 1), np.clip(uv[..., 1], 0, height - 1)], axis=-1)
