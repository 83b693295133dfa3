"""The paper's video-quality table: FVD, FID and VBench's dynamic degree, motion smoothness,
subject consistency and background consistency (docs/video_metrics.md defines each one).

Entry point: `paper_metrics(generated, reference, weights)`. Each network loads only from a
local path in `VideoMetricWeights`; a metric whose weights are missing comes back as
`MetricResult(value=None, note="not computed: pass --i3d-weights PATH")`. To fail fast on a
wrong weight file before a long generation run, build `MetricNetworks.load(weights)` first
and pass it as `networks=`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.video_metrics.frechet import frechet_distance_of_features
from model.video_metrics.i3d import I3D_CONFIG, I3DConfig, I3DFeature, i3d_features, load_i3d
from model.video_metrics.inception import FID_INCEPTION_CONFIG, InceptionConfig, inception_features, load_fid_inception
from model.video_metrics.vbench import (
    CLIP_B32,
    DINO_B16,
    ClipVisionSpec,
    DinoSpec,
    FeatureEncoder,
    dynamic_degree_video,
    frame_interval,
    load_clip_vision,
    load_dino,
    motion_smoothness_video,
)

__all__ = [
    "PAPER_METRICS",
    "WEIGHT_OPTIONS",
    "MetricNetworks",
    "MetricResult",
    "VideoMetricConfig",
    "VideoMetricWeights",
    "paper_metrics",
]

PAPER_METRICS = (
    "fvd",
    "fid",
    "dynamic_degree",
    "motion_smoothness",
    "subject_consistency",
    "background_consistency",
)
# Command-line option that provides each network's weights (named in "not computed" notes).
WEIGHT_OPTIONS = {
    "inception": "--inception-weights",
    "i3d": "--i3d-weights",
    "dino": "--dino-weights",
    "clip": "--clip-weights",
}


@dataclass(frozen=True)
class VideoMetricWeights:
    """Local weight paths (file, or Hugging Face snapshot folder for DINO / CLIP); None: not computed.

    Attributes:
        inception: pytorch-fid's pt_inception-2015-12-05-6726825d.pth (FID).
        i3d: VideoGPT's i3d_pretrained_400.pt or piergiaj's rgb_imagenet.pt (FVD).
        dino: facebook/dino-vitb16 (subject consistency).
        clip: openai/clip-vit-base-patch32 (background consistency).
    """

    inception: str | Path | None = None
    i3d: str | Path | None = None
    dino: str | Path | None = None
    clip: str | Path | None = None


@dataclass(frozen=True)
class MetricResult:
    """One metric's value, or None with the reason in `note`.

    Attributes:
        value: the benchmark value (FVD / FID: squared Fréchet distance; VBench dimensions in [0, 1]).
        note: protocol summary when computed, "not computed: ..." otherwise.
        per_clip: one value per generated clip where the metric has one (VBench dimensions).
        details: counts and settings behind the value.
    """

    value: float | None
    note: str
    per_clip: tuple[float, ...] | None = None
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def computed(self) -> bool:
        return self.value is not None


@dataclass(frozen=True)
class VideoMetricConfig:
    """Protocol settings; the defaults are the references' (docs/video_metrics.md).

    Attributes:
        fvd_num_frames, fvd_resolution, fvd_feature: I3D clip length, crop size and feature.
        fid_frame_stride: FID uses frames 0, s, 2s, ... of every clip.
        fps: frame rate of the generated clips; dynamic degree subsamples to ~8 fps when known.
        batch_size: frames (FID, DINO, CLIP) or clips (FVD) per network call.
        inception, i3d, dino, clip: architectures; only the defaults match the official weights.
    """

    fvd_num_frames: int = 16
    fvd_resolution: int = 224
    fvd_feature: I3DFeature = "logits"
    fid_frame_stride: int = 1
    fps: float | None = None
    batch_size: int = 16
    inception: InceptionConfig = FID_INCEPTION_CONFIG
    i3d: I3DConfig = I3D_CONFIG
    dino: DinoSpec = DINO_B16
    clip: ClipVisionSpec = CLIP_B32

    def __post_init__(self) -> None:
        if self.fvd_num_frames < 1 or self.fvd_resolution < 1 or self.fid_frame_stride < 1 or self.batch_size < 1:
            raise ValueError("fvd_num_frames, fvd_resolution, fid_frame_stride and batch_size must be >= 1")
        if self.fvd_feature not in ("logits", "pool"):
            raise ValueError(f"fvd_feature must be 'logits' or 'pool', got {self.fvd_feature!r}")


@dataclass
class MetricNetworks:
    """Loaded networks (None where no weights were given)."""

    inception: torch.nn.Module | None = None
    i3d: torch.nn.Module | None = None
    dino: torch.nn.Module | None = None
    clip: torch.nn.Module | None = None

    @classmethod
    def load(
        cls, weights: VideoMetricWeights, device: str | torch.device = "cpu", config: VideoMetricConfig | None = None
    ) -> MetricNetworks:
        """Load every network whose weights are given, strictly; a bad file raises one ValueError line."""
        cfg = config or VideoMetricConfig()
        loaders = {
            "inception": (load_fid_inception, cfg.inception),
            "i3d": (load_i3d, cfg.i3d),
            "dino": (load_dino, cfg.dino),
            "clip": (load_clip_vision, cfg.clip),
        }
        return cls(
            **{
                name: None if getattr(weights, name) is None else load(getattr(weights, name), device, arch)
                for name, (load, arch) in loaders.items()
            }
        )


def _check_clips(clips: Sequence[np.ndarray], name: str) -> None:
    if not isinstance(clips, Sequence) or len(clips) == 0:
        raise ValueError(f"{name} must be a non-empty list of (T, H, W, 3) uint8 clips")
    for index, clip in enumerate(clips):
        if not isinstance(clip, np.ndarray) or clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[-1] != 3:
            shape = getattr(clip, "shape", type(clip).__name__)
            dtype = getattr(clip, "dtype", "")
            raise ValueError(f"{name} clip {index}: expected a (T, H, W, 3) uint8 array, got {shape} {dtype}")
        if clip.shape[0] < 1 or clip.shape[1] < 1 or clip.shape[2] < 1:
            raise ValueError(f"{name} clip {index}: empty shape {clip.shape}")


def _not_computed(reason: str) -> MetricResult:
    return MetricResult(None, f"not computed: {reason}")


def _missing(option: str) -> MetricResult:
    return _not_computed(f"pass {option} PATH")


def _short_clip(clips: Sequence[np.ndarray], name: str, needed: int) -> str | None:
    for index, clip in enumerate(clips):
        if clip.shape[0] < needed:
            return f"{name} clip {index} has {clip.shape[0]} frames, needs >= {needed}"
    return None


def _fvd(generated, reference, net, device, cfg: VideoMetricConfig) -> MetricResult:
    for name, clips in (("generated", generated), ("reference", reference)):
        if len(clips) < 2:
            return _not_computed(f"FVD needs >= 2 {name} clips, got {len(clips)}")
        short = _short_clip(clips, name, cfg.fvd_num_frames)
        if short:
            return _not_computed(short)
    kwargs = dict(device=device, feature=cfg.fvd_feature, num_frames=cfg.fvd_num_frames,
                  resolution=cfg.fvd_resolution, batch_size=cfg.batch_size)
    gen, ref = i3d_features(net, list(generated), **kwargs), i3d_features(net, list(reference), **kwargs)
    note = (
        f"I3D Kinetics-400 {cfg.fvd_feature} ({gen.shape[1]}-d), first {cfg.fvd_num_frames} frames per clip, "
        f"{cfg.fvd_resolution}x{cfg.fvd_resolution} centre crop, {len(gen)} generated vs {len(ref)} reference clips"
    )
    details = {"num_generated": len(gen), "num_reference": len(ref), "feature_dim": int(gen.shape[1])}
    return MetricResult(frechet_distance_of_features(gen, ref), note, details=details)


def _frame_features(net, clips: Sequence[np.ndarray], device, cfg: VideoMetricConfig) -> np.ndarray:
    """Inception features of frames 0, s, 2s, ... of every clip, stacked."""
    stride = cfg.fid_frame_stride
    return np.concatenate([inception_features(net, clip[::stride], device, cfg.batch_size) for clip in clips])


def _fid(generated, reference, net, device, cfg: VideoMetricConfig) -> MetricResult:
    gen, ref = _frame_features(net, generated, device, cfg), _frame_features(net, reference, device, cfg)
    if len(gen) < 2 or len(ref) < 2:
        return _not_computed(f"FID needs >= 2 frames per side, got {len(gen)} generated and {len(ref)} reference")
    dim = gen.shape[1]
    note = (
        f"Inception-v3 pool3 ({dim}-d), frames 1 in {cfg.fid_frame_stride} of every clip, "
        f"{len(gen)} generated vs {len(ref)} reference frames"
    )
    if min(len(gen), len(ref)) <= dim:
        note += f"; fewer frames than {dim} + 1 on a side: rank-deficient covariance, value biased"
    details = {"num_generated_frames": len(gen), "num_reference_frames": len(ref), "feature_dim": int(dim)}
    return MetricResult(frechet_distance_of_features(gen, ref), note, details=details)


def _dynamic_degree(generated, flow, cfg: VideoMetricConfig) -> MetricResult:
    # two frames must remain after keeping one in frame_interval(fps)
    short = _short_clip(generated, "generated", frame_interval(cfg.fps) + 1)
    if short:
        return _not_computed(short)
    results = [dynamic_degree_video(clip, flow, cfg.fps) for clip in generated]
    flags = tuple(float(r.is_dynamic) for r in results)
    step = results[0].frame_interval
    note = (
        f"share of dynamic clips, VBench rule (top-5% flow magnitude > 6 min(H,W)/256 px in >= round(4T/16) pairs), "
        f"flow from {getattr(flow, 'name', type(flow).__name__)} instead of RAFT, frames 1 in {step}"
    )
    return MetricResult(float(np.mean(flags)), note, per_clip=flags, details={"num_clips": len(flags)})


def _motion_smoothness(generated, flow) -> MetricResult:
    short = _short_clip(generated, "generated", 3)
    if short:
        return _not_computed(short)
    values = tuple(motion_smoothness_video(clip, flow) for clip in generated)
    note = (
        "(255 - mean |odd frame - flow interpolation of its even neighbours|) / 255, "
        f"flow from {getattr(flow, 'name', type(flow).__name__)} instead of AMT-S (not comparable with VBench numbers)"
    )
    return MetricResult(float(np.mean(values)), note, per_clip=values, details={"num_clips": len(values)})


def _consistency(generated, net, kind: str, device, cfg: VideoMetricConfig) -> MetricResult:
    short = _short_clip(generated, "generated", 2)
    if short:
        return _not_computed(short)
    encoder = FeatureEncoder(net, kind, device, cfg.batch_size)
    results = [encoder.consistency(clip) for clip in generated]
    total, count = sum(r.total for r in results), sum(r.count for r in results)
    features = "DINO ViT-B/16 CLS" if kind == "dino" else "CLIP ViT-B/32 image embedding"
    note = f"VBench formula on {features} features, frame-weighted mean over {len(results)} clips"
    return MetricResult(total / count, note, per_clip=tuple(r.value for r in results), details={"num_frames": count})


def paper_metrics(
    generated: list[np.ndarray],
    reference: list[np.ndarray],
    weights: VideoMetricWeights,
    device: str = "cpu",
    *,
    config: VideoMetricConfig | None = None,
    networks: MetricNetworks | None = None,
    flow: Any = None,
) -> dict[str, MetricResult]:
    """The paper's table for one set of generated clips against reference clips.

    Args:
        generated: clips (T, H, W, 3) uint8 RGB from the model under test.
        reference: real clips (T, H, W, 3) uint8 RGB (FVD and FID only).
        weights: local weight paths; a metric without its network is "not computed".
        device: torch device of the networks.
        config: protocol settings (defaults: the references').
        networks: networks already loaded (`MetricNetworks.load`); `weights` then only names options.
        flow: a `labelers.flow.FlowEstimator` for dynamic degree and motion smoothness
            (default `labelers.dis_flow.DisFlow()`).

    Returns:
        {name: MetricResult} for every name of PAPER_METRICS, in that order.
    """
    _check_clips(generated, "generated")
    _check_clips(reference, "reference")
    cfg = config or VideoMetricConfig()
    nets = networks if networks is not None else MetricNetworks.load(weights, device, cfg)
    if flow is None:
        from labelers.dis_flow import DisFlow

        flow = DisFlow()
    with torch.no_grad():
        network_metrics = {
            "fvd": ("i3d", lambda net: _fvd(generated, reference, net, device, cfg)),
            "fid": ("inception", lambda net: _fid(generated, reference, net, device, cfg)),
            "subject_consistency": ("dino", lambda net: _consistency(generated, net, "dino", device, cfg)),
            "background_consistency": ("clip", lambda net: _consistency(generated, net, "clip", device, cfg)),
        }
        results = {}
        for metric, (network, compute) in network_metrics.items():
            net = getattr(nets, network)
            results[metric] = _missing(WEIGHT_OPTIONS[network]) if net is None else compute(net)
    results["dynamic_degree"] = _dynamic_degree(generated, flow, cfg)
    results["motion_smoothness"] = _motion_smoothness(generated, flow)
    return {name: results[name] for name in PAPER_METRICS}
