"""Neural depth backend: a Depth-Anything-style network through `transformers`, aligned to the cameras.

The network (`AutoModelForDepthEstimation`, e.g. `DepthAnythingForDepthEstimation`) and its
image processor are loaded only from a local folder given by the user
(`from_pretrained(local_dir, local_files_only=True)`); nothing is downloaded. A "relative"
model predicts affine-invariant inverse depth; a "metric" one predicts depth, which is
inverted first, so both are aligned the same way.

Alignment (`fit_scale_shift`): the prediction p is mapped to inverse depth a * p + b in the
camera's scale by a robust least-squares fit against a sparse reference inverse depth
rho_ref, by default the weight-free multi-view depth (`labelers.depth.MultiViewDepth`) on
static pixels: RANSAC on pairs of pixels for a start that ignores outliers, then iteratively
reweighted least squares (Cauchy weights) on the relative residual (a p + b - rho_ref) / rho_ref,
which is the relative depth error to first order. One (a, b) per clip (`per_frame=False`,
the default) or per frame.

The aligned inverse depth becomes z-depth 1 / (a p + b), valid only where
- a * p + b > `min_inv_depth_fraction` times the median reference inverse depth (<= 0
  would be at or beyond infinity),
- the frame has enough reference pixels and its fit residual is small (per-frame median
  relative residual <= `max_frame_rel_residual`),
- the relative residual, at reference pixels and averaged over a window of
  `residual_window_fraction` of the image width around every pixel, is at most
  `max_rel_residual` (the network disagrees with the geometry there).
Without parallax (a fixed or a rotating camera: every camera centre at the origin) there is no
multi-view depth to align to; `own_scale` then keeps the network's own depth with one scale
for the clip: a "metric" network's metres (`metric_scale`), or, for a "relative" one, its
inverse depth divided by its clip median (the shift taken as 0), so the clip's median inverse
depth is 1. Valid where the inverse depth exceeds `min_inv_depth_fraction` of that median;
`rel_sigma` is `max_rel_residual` there, an assumed error (nothing measures it), and there is
no `prior_depth` (the masks need none without translation).

Pixels far from any reference (e.g. moving objects) keep the network's aligned depth: that is
what this backend adds over the multi-view one. `rel_sigma` reports the local residual.
`prior_depth` holds the aligned depth wherever it is defined on a frame whose fit passed,
including the pixels withheld for disagreeing with the reference: a surface moving along its
epipolar lines is triangulated consistently but wrongly, and only this prior shows its motion
(`labelers.dynamic_mask`).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from labelers.depth import DepthEstimator, DepthResult, MultiViewDepth, check_depth_inputs
from labelers.flow import PairFlows
from labelers.geometry import check_frames

__all__ = ["ScaleShift", "fit_scale_shift", "NeuralDepthConfig", "NeuralDepth", "load_depth_model", "has_parallax"]


@dataclass(frozen=True)
class ScaleShift:
    """Result of `fit_scale_shift`: inverse depth = scale * prediction + shift.

    Attributes:
        scale, shift: the fitted affine map.
        inliers: (N,) bool, samples whose relative residual is within the inlier bound.
        rel_residual: (N,) float64 (scale * p + shift - ref) / ref.
    """

    scale: float
    shift: float
    inliers: np.ndarray
    rel_residual: np.ndarray


def fit_scale_shift(
    prediction: np.ndarray,
    reference: np.ndarray,
    ransac_trials: int = 256,
    ransac_rel_tol: float = 0.05,
    irls_iterations: int = 10,
    seed: int = 0,
) -> ScaleShift:
    """Robust fit of reference ~= scale * prediction + shift, in relative residuals (module docstring).

    Args:
        prediction: (N,) network output (inverse depth up to scale and shift).
        reference: (N,) reference inverse depth (> 0), e.g. 1 / multi-view depth.
        ransac_trials: random pixel pairs tried for the start.
        ransac_rel_tol: relative residual counting as agreement during RANSAC.
        irls_iterations: reweighted least-squares refinements.
        seed: RNG seed of the pair sampling (deterministic fits).
    """
    prediction = np.asarray(prediction, np.float64).ravel()
    reference = np.asarray(reference, np.float64).ravel()
    if prediction.shape != reference.shape:
        raise ValueError(f"prediction and reference differ in size: {prediction.size} vs {reference.size}")
    if prediction.size < 2 or not (np.all(np.isfinite(prediction)) and np.all(np.isfinite(reference))):
        raise ValueError("need at least 2 finite samples")
    if np.any(reference <= 0):
        raise ValueError("reference inverse depth must be > 0")
    if np.ptp(prediction) <= 1e-12 * max(1.0, float(np.abs(prediction).max())):
        raise ValueError("prediction is constant: scale and shift are not identifiable")
    rng = np.random.default_rng(seed)
    scale, shift = _ransac(prediction, reference, rng, ransac_trials, ransac_rel_tol)
    for _ in range(irls_iterations):
        rel = (scale * prediction + shift - reference) / reference
        spread = max(1.4826 * np.median(np.abs(rel - np.median(rel))), 1e-6)
        weight = 1.0 / (1.0 + (rel / (2.385 * spread)) ** 2)  # Cauchy, 95 % efficiency constant
        scale, shift = _weighted_affine(prediction, reference, weight / reference**2)
    rel = (scale * prediction + shift - reference) / reference
    spread = 1.4826 * np.median(np.abs(rel - np.median(rel)))
    inliers = np.abs(rel) <= max(3.0 * spread, ransac_rel_tol)
    return ScaleShift(float(scale), float(shift), inliers, rel)


def _weighted_affine(x: np.ndarray, y: np.ndarray, weight: np.ndarray) -> tuple[float, float]:
    """argmin_{s, t} sum weight (s x + t - y)^2."""
    sw = weight.sum()
    mx, my = (weight * x).sum() / sw, (weight * y).sum() / sw
    var = (weight * (x - mx) ** 2).sum()
    if var <= 0:
        raise ValueError("prediction is constant on the weighted samples: the fit is degenerate")
    scale = (weight * (x - mx) * (y - my)).sum() / var
    return float(scale), float(my - scale * mx)


def _ransac(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, trials: int, rel_tol: float) -> tuple[float, float]:
    i, j = rng.integers(0, x.size, (2, trials))
    distinct = np.abs(x[i] - x[j]) > 1e-12
    i, j = i[distinct], j[distinct]
    if i.size == 0:
        return _weighted_affine(x, y, 1.0 / y**2)
    scales = (y[i] - y[j]) / (x[i] - x[j])
    shifts = y[i] - scales * x[i]
    # Score on a subsample: the count of agreeing pixels, which is what RANSAC needs.
    sub = rng.choice(x.size, size=min(x.size, 4096), replace=False)
    agree = np.abs((scales[:, None] * x[sub] + shifts[:, None] - y[sub]) / y[sub]) <= rel_tol
    best = int(np.argmax(agree.sum(axis=1)))
    return float(scales[best]), float(shifts[best])


@dataclass(frozen=True)
class NeuralDepthConfig:
    """Settings of `NeuralDepth` (serialised into the clip's `labelers` attribute).

    Attributes:
        batch_size: frames per network call.
        dtype: "float32", "float16" or "bfloat16" network precision (half only on GPU).
        per_frame: fit scale and shift per frame instead of once per clip.
        min_reference_pixels: fewest reference pixels for a fit (per clip or per frame).
        max_fit_pixels: a fit uses at most this many reference pixels, drawn at random
            (deterministically): two parameters need no more, and a clip has millions.
        min_inv_depth_fraction: aligned inverse depth below this fraction of the median
            reference inverse depth is invalid (too far or beyond infinity).
        max_rel_residual: largest relative residual, per reference pixel and locally averaged.
        max_frame_rel_residual: a frame whose median relative residual exceeds this is invalid.
        residual_window_fraction: size of the local residual window, as a fraction of the width.
    """

    batch_size: int = 4
    dtype: str = "float32"
    per_frame: bool = False
    min_reference_pixels: int = 200
    max_fit_pixels: int = 200_000
    min_inv_depth_fraction: float = 0.02
    max_rel_residual: float = 0.15
    max_frame_rel_residual: float = 0.1
    residual_window_fraction: float = 0.06

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.min_reference_pixels < 2 or self.max_fit_pixels < self.min_reference_pixels:
            raise ValueError("need batch_size >= 1 and 2 <= min_reference_pixels <= max_fit_pixels")
        if self.dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"dtype must be float32, float16 or bfloat16, got {self.dtype!r}")
        if min(self.min_inv_depth_fraction, self.max_rel_residual, self.max_frame_rel_residual) <= 0:
            raise ValueError("min_inv_depth_fraction, max_rel_residual and max_frame_rel_residual must be > 0")
        if not 0 < self.residual_window_fraction <= 1:
            raise ValueError(f"residual_window_fraction must be in (0, 1], got {self.residual_window_fraction}")


def load_depth_model(weights_dir: str | Path, device: str = "cpu", dtype: str = "float32") -> tuple[Any, Any]:
    """Network and image processor from a local `transformers` folder (never the hub).

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: it is not a transformers depth-estimation model with its processor.
    """
    from transformers import AutoImageProcessor, AutoModelForDepthEstimation

    folder = Path(weights_dir)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"depth weights folder {str(folder)!r} does not exist (give a local folder, not a hub id)"
        )
    missing = [name for name in ("config.json", "preprocessor_config.json") if not (folder / name).is_file()]
    if not _weight_files(folder):
        missing.append("model.safetensors (or pytorch_model.bin)")
    if missing:
        raise ValueError(
            f"{str(folder)!r} is not a transformers depth model folder: missing {', '.join(missing)} "
            "(save one with model.save_pretrained(dir) and processor.save_pretrained(dir))"
        )
    try:
        model = AutoModelForDepthEstimation.from_pretrained(folder, local_files_only=True, dtype=getattr(torch, dtype))
        processor = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"cannot load a depth-estimation model and image processor from {str(folder)!r}: {e}") from e
    return model.to(device).eval(), processor


def _weight_files(folder: Path) -> list[Path]:
    return sorted(p for pattern in ("*.safetensors", "*.bin") for p in folder.glob(pattern))


class NeuralDepth:
    """`DepthEstimator`: network inverse depth aligned to the multi-view reference (module docstring).

    Example:
        >>> depth = NeuralDepth.from_pretrained("/models/depth-anything-v2-small-hf", device="cuda")
        >>> result = depth.estimate(frames, flows, c2w, K, dynamic_mask)
    """

    name = "transformers_depth_aligned"
    version = "2"
    dense = True

    def __init__(
        self,
        weights_dir: str | Path,
        config: NeuralDepthConfig | None = None,
        device: str = "cpu",
        reference: DepthEstimator | None = None,
    ) -> None:
        self.config = config or NeuralDepthConfig()
        self.device = device
        self.weights_dir = Path(weights_dir)
        self.model, self.processor = load_depth_model(self.weights_dir, device, self.config.dtype)
        self.reference = reference or MultiViewDepth()
        self.weights_sha256 = _sha256(_weight_files(self.weights_dir))

    @classmethod
    def from_pretrained(
        cls,
        weights_dir: str | Path,
        device: str = "cpu",
        config: NeuralDepthConfig | None = None,
        reference: DepthEstimator | None = None,
    ) -> NeuralDepth:
        """The backend on the network saved in the local folder `weights_dir` (never a hub id)."""
        return cls(weights_dir, config, device, reference)

    @property
    def params(self) -> dict[str, Any]:
        return {
            **asdict(self.config),
            "model_type": self.model.config.model_type,
            "depth_estimation_type": self._estimation_type,
            "weights_dir": str(self.weights_dir),
            "without_parallax": "network metres" if self.metric_scale else "network inverse depth / clip median",
            "reference": {
                "name": self.reference.name,
                "version": self.reference.version,
                "params": self.reference.params,
            },
        }

    @property
    def metric_scale(self) -> bool:
        """Whether depth without parallax (`own_scale`) is in metres: the network is metric."""
        return self._estimation_type == "metric"

    @property
    def _estimation_type(self) -> str:
        return getattr(self.model.config, "depth_estimation_type", "relative")

    @torch.inference_mode()
    def predict_inverse_depth(self, frames: np.ndarray) -> np.ndarray:
        """Network inverse depth (up to scale and shift) at label resolution.

        Args:
            frames: (T, H, W, 3) uint8 RGB.

        Returns:
            (T, H, W) float32; the network output resized bilinearly back to (H, W), inverted
            first for "metric" models.
        """
        _, height, width = check_frames(frames)
        out = []
        for start in range(0, len(frames), self.config.batch_size):
            batch = self.processor(images=list(frames[start : start + self.config.batch_size]), return_tensors="pt")
            pixels = batch["pixel_values"].to(self.device, dtype=self.model.dtype)
            predicted = self.model(pixel_values=pixels).predicted_depth.float()
            resized = torch.nn.functional.interpolate(
                predicted[:, None], size=(height, width), mode="bilinear", align_corners=False
            )[:, 0]
            out.append(resized.cpu().numpy())
        prediction = np.concatenate(out).astype(np.float32)
        if self._estimation_type == "metric":
            with np.errstate(divide="ignore"):
                prediction = np.where(prediction > 0, 1.0 / prediction, 0.0).astype(np.float32)
        return prediction

    def estimate(
        self,
        frames: np.ndarray,
        flows: PairFlows,
        c2w: np.ndarray,
        K: np.ndarray,
        dynamic_mask: np.ndarray | None = None,
    ) -> DepthResult:
        """Aligned network depth of every frame; see `labelers.depth.DepthEstimator.estimate`."""
        check_depth_inputs(frames, flows, c2w, K, dynamic_mask)
        if not has_parallax(c2w):
            return self.own_scale(self.predict_inverse_depth(frames))
        reference = self.reference.estimate(frames, flows, c2w, K, dynamic_mask)
        return self.align(self.predict_inverse_depth(frames), reference)

    def own_scale(self, prediction: np.ndarray) -> DepthResult:
        """Network inverse depth (T, H, W) as depth with one scale for the clip, for cameras
        without parallax (module docstring)."""
        if prediction.ndim != 3:
            raise ValueError(f"prediction must be (T, H, W), got {prediction.shape}")
        inv = prediction.astype(np.float64)
        positive = inv > 0
        if not positive.any():
            zeros = np.zeros(prediction.shape, np.float32)
            return DepthResult(zeros, np.zeros(prediction.shape, bool), np.full(prediction.shape, np.inf, np.float32))
        median = float(np.median(inv[positive]))
        if not self.metric_scale:
            inv = inv / median
            median = 1.0
        valid = inv > self.config.min_inv_depth_fraction * median
        depth = np.where(valid, 1.0 / np.where(valid, inv, 1.0), 0.0).astype(np.float32)
        rel_sigma = np.where(valid, self.config.max_rel_residual, np.inf).astype(np.float32)
        return DepthResult(depth, valid, rel_sigma)

    def align(self, prediction: np.ndarray, reference: DepthResult) -> DepthResult:
        """Align network inverse depth (T, H, W) to a sparse reference depth and validate it (module docstring)."""
        cfg = self.config
        if prediction.shape != reference.depth.shape:
            raise ValueError(f"prediction {prediction.shape} and reference {reference.depth.shape} differ")
        num_frames, height, width = prediction.shape
        ref_inv = np.where(reference.depth_valid, 1.0 / np.where(reference.depth_valid, reference.depth, 1.0), 0.0)
        aligned = np.zeros(prediction.shape, np.float64)
        fitted = np.zeros(num_frames, bool)
        groups = [[t] for t in range(num_frames)] if cfg.per_frame else [list(range(num_frames))]
        for frames_of_fit in groups:
            sel = reference.depth_valid[frames_of_fit]
            if sel.sum() < cfg.min_reference_pixels:
                continue
            samples = np.flatnonzero(sel)
            if samples.size > cfg.max_fit_pixels:
                samples = np.random.default_rng(0).choice(samples, cfg.max_fit_pixels, replace=False)
            fit = fit_scale_shift(prediction[frames_of_fit].ravel()[samples], ref_inv[frames_of_fit].ravel()[samples])
            aligned[frames_of_fit] = fit.scale * prediction[frames_of_fit] + fit.shift
            fitted[frames_of_fit] = True
        depth = np.zeros(prediction.shape, np.float32)
        valid = np.zeros(prediction.shape, bool)
        rel_sigma = np.full(prediction.shape, np.inf, np.float32)
        prior = np.zeros(prediction.shape, np.float32)
        if not fitted.any():
            return DepthResult(depth, valid, rel_sigma, prior)
        floor = cfg.min_inv_depth_fraction * np.median(ref_inv[reference.depth_valid])
        window = max(3, int(round(cfg.residual_window_fraction * width)) | 1)
        for t in np.flatnonzero(fitted):
            has_ref = reference.depth_valid[t]
            rel = np.where(has_ref, np.abs(aligned[t] - ref_inv[t]) / np.where(has_ref, ref_inv[t], 1.0), 0.0)
            if has_ref.sum() >= cfg.min_reference_pixels and np.median(rel[has_ref]) > cfg.max_frame_rel_residual:
                continue
            local = _local_mean(rel, has_ref, window)
            defined = aligned[t] > floor
            prior[t] = np.where(defined, 1.0 / np.where(defined, aligned[t], 1.0), 0.0)
            frame_valid = defined & ~(has_ref & (rel > cfg.max_rel_residual))
            frame_valid &= ~(np.isfinite(local) & (local > cfg.max_rel_residual))
            valid[t] = frame_valid
            depth[t] = np.where(frame_valid, 1.0 / np.where(frame_valid, aligned[t], 1.0), 0.0)
            spread = float(np.median(rel[has_ref])) if has_ref.any() else np.inf
            rel_sigma[t] = np.where(frame_valid, np.where(np.isfinite(local), local, spread), np.inf)
        return DepthResult(depth, valid, rel_sigma, prior)


def has_parallax(c2w: np.ndarray) -> bool:
    """Whether the camera centres of c2w (T, 4, 4) differ, i.e. views can be triangulated."""
    centres = np.asarray(c2w)[:, :3, 3]
    return bool(np.any(np.abs(centres - centres[0]) > 0))


def _local_mean(values: np.ndarray, where: np.ndarray, window: int) -> np.ndarray:
    """Mean of `values` over `where` in a window around each pixel; NaN where the window holds none."""
    weight = cv2.blur(where.astype(np.float32), (window, window), borderType=cv2.BORDER_CONSTANT)
    total = cv2.blur(np.where(where, values, 0.0).astype(np.float32), (window, window), borderType=cv2.BORDER_CONSTANT)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(weight > 1e-6, total / weight, np.nan)


def _sha256(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode())
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
