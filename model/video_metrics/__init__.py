"""The paper's video-quality table: FVD, FID and VBench's dynamic degree, motion smoothness,
subject consistency and background consistency (docs/video_metrics.md defines each one).

Entry points: `paper_metrics(generated, reference, weights)` on lists of clips, and
`PaperMetricsAccumulator` (`add(generated_clip, reference_clip)` per clip, then `result()`),
which keeps per clip only feature statistics and scalars, for evaluations too large to hold. Each network loads only from a
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

from model.video_metrics.frechet import RunningFeatureStatistics, frechet_distance_of_statistics
from model.video_metrics.i3d import I3D_CONFIG, I3DConfig, I3DFeature, load_i3d, preprocess_i3d
from model.video_metrics.inception import FID_INCEPTION_CONFIG, InceptionConfig, inception_features, load_fid_inception
from model.video_metrics.vbench import (
    CLIP_B32,
    DINO_B16,
    ClipVisionSpec,
    ConsistencyResult,
    DinoSpec,
    DynamicDegreeResult,
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
    "PaperMetricsAccumulator",
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


def _check_clip(clip: Any, name: str, index: int) -> None:
    if not isinstance(clip, np.ndarray) or clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[-1] != 3:
        shape = getattr(clip, "shape", type(clip).__name__)
        dtype = getattr(clip, "dtype", "")
        raise ValueError(f"{name} clip {index}: expected a (T, H, W, 3) uint8 array, got {shape} {dtype}")
    if clip.shape[0] < 1 or clip.shape[1] < 1 or clip.shape[2] < 1:
        raise ValueError(f"{name} clip {index}: empty shape {clip.shape}")


def _check_clips(clips: Sequence[np.ndarray], name: str) -> None:
    if not isinstance(clips, Sequence) or len(clips) == 0:
        raise ValueError(f"{name} must be a non-empty list of (T, H, W, 3) uint8 clips")
    for index, clip in enumerate(clips):
        _check_clip(clip, name, index)


def _not_computed(reason: str) -> MetricResult:
    return MetricResult(None, f"not computed: {reason}")


def _missing(option: str) -> MetricResult:
    return _not_computed(f"pass {option} PATH")


class _Side:
    """What one side (generated or reference) keeps of its clips: counts, FVD / FID statistics,
    the first clip too short for FVD, and the I3D inputs waiting for a full batch."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.clips = 0
        self.fvd = RunningFeatureStatistics()
        self.fid = RunningFeatureStatistics()
        self.fvd_short: str | None = None
        self.pending: list[torch.Tensor] = []


class PaperMetricsAccumulator:
    """The paper's table over a stream of clips, in bounded memory.

    Each `add` computes at once what the metrics need of a clip and keeps only that: I3D
    features (FVD) and Inception features (FID) folded into running mean / covariance
    (`RunningFeatureStatistics`, one D x D matrix per side), and per generated clip the VBench
    scalars (dynamic flag, motion smoothness, the DINO / CLIP consistency sum and frame
    count). The caller may drop the frames after `add`. `result()` gives the same table as
    `paper_metrics` on all the clips at once (which is this class fed clip by clip).

    Args:
        weights: local weight paths; a metric without its network is "not computed".
        device: torch device of the networks.
        config: protocol settings (defaults: the references').
        networks: networks already loaded (`MetricNetworks.load`); `weights` then only names options.
        flow: a `labelers.flow.FlowEstimator` for dynamic degree and motion smoothness
            (default `labelers.dis_flow.DisFlow()`).

    Several models scored against one held-out set encode the reference once: feed the
    reference clips to one accumulator and pass it as `result(reference=...)` to the others.
    """

    def __init__(
        self,
        weights: VideoMetricWeights | None = None,
        device: str | torch.device = "cpu",
        *,
        config: VideoMetricConfig | None = None,
        networks: MetricNetworks | None = None,
        flow: Any = None,
    ) -> None:
        self.config = config or VideoMetricConfig()
        self.device = device
        self.networks = networks if networks is not None else MetricNetworks.load(
            weights or VideoMetricWeights(), device, self.config)
        if flow is None:
            from labelers.dis_flow import DisFlow

            flow = DisFlow()
        self.flow = flow
        self._frame_interval = frame_interval(self.config.fps)  # a bad fps fails here, before any clip
        self._generated, self._reference = _Side("generated"), _Side("reference")
        self._dynamic: list[DynamicDegreeResult] = []
        self._smoothness: list[float] = []
        self._consistency: dict[str, list[ConsistencyResult]] = {"dino": [], "clip": []}
        # first generated clip too short for a metric family: "dynamic", "smoothness", "consistency"
        self._short: dict[str, str] = {}

    # ----------------------------------------------------------------- feeding
    def add(self, generated: np.ndarray | None, reference: np.ndarray | None = None) -> None:
        """One generated clip and / or one reference clip, (T, H, W, 3) uint8 RGB."""
        if generated is not None:
            self.add_generated(generated)
        if reference is not None:
            self.add_reference(reference)

    def add_generated(self, clip: np.ndarray) -> None:
        """Score one generated clip: FVD / FID features and the VBench per-clip values."""
        side = self._generated
        _check_clip(clip, side.name, side.clips)
        index = side.clips
        side.clips += 1
        with torch.no_grad():
            self._add_features(side, clip)
            if self._usable("dynamic", clip, index, self._frame_interval + 1):  # two frames after subsampling
                self._dynamic.append(dynamic_degree_video(clip, self.flow, self.config.fps))
            if self._usable("smoothness", clip, index, 3):
                self._smoothness.append(motion_smoothness_video(clip, self.flow))
            kinds = [k for k in ("dino", "clip") if getattr(self.networks, k) is not None]
            if kinds and self._usable("consistency", clip, index, 2):
                for kind in kinds:
                    encoder = FeatureEncoder(getattr(self.networks, kind), kind, self.device, self.config.batch_size)
                    self._consistency[kind].append(encoder.consistency(clip))

    def add_reference(self, clip: np.ndarray) -> None:
        """Encode one real clip for FVD and FID (the VBench dimensions score generated clips only)."""
        side = self._reference
        _check_clip(clip, side.name, side.clips)
        side.clips += 1
        with torch.no_grad():
            self._add_features(side, clip)

    def _usable(self, family: str, clip: np.ndarray, index: int, needed: int) -> bool:
        """False once a generated clip was too short for `family` (its metric is then not computed)."""
        if family not in self._short and clip.shape[0] < needed:
            self._short[family] = f"generated clip {index} has {clip.shape[0]} frames, needs >= {needed}"
        return family not in self._short

    def _add_features(self, side: _Side, clip: np.ndarray) -> None:
        cfg = self.config
        if self.networks.inception is not None:
            side.fid.add(inception_features(self.networks.inception, clip[:: cfg.fid_frame_stride], self.device,
                                            cfg.batch_size))
        if side.fvd_short is None and clip.shape[0] < cfg.fvd_num_frames:
            side.fvd_short = f"{side.name} clip {side.clips - 1} has {clip.shape[0]} frames, needs >= {cfg.fvd_num_frames}"
            side.pending.clear()
        if self.networks.i3d is not None and side.fvd_short is None:
            # preprocessed 16 x 224 x 224 inputs wait for a full batch: the network sees the same batches
            side.pending.append(preprocess_i3d(clip, cfg.fvd_num_frames, cfg.fvd_resolution))
            if len(side.pending) == cfg.batch_size:
                self._flush(side)

    def _flush(self, side: _Side) -> None:
        if side.pending:
            clips = torch.stack(side.pending).to(self.device)
            side.pending.clear()
            with torch.no_grad():
                side.fvd.add(self.networks.i3d(clips, feature=self.config.fvd_feature).double().cpu().numpy())

    # ----------------------------------------------------------------- results
    def result(self, reference: PaperMetricsAccumulator | None = None) -> dict[str, MetricResult]:
        """{name: MetricResult} for every name of PAPER_METRICS, in that order.

        Args:
            reference: an accumulator fed the reference clips (this one's own by default).
        """
        if self._generated.clips == 0:
            raise ValueError("no generated clip was added")
        ref = (reference or self)._reference
        if ref.clips == 0:
            raise ValueError("no reference clip was added")
        nets = self.networks
        results = {
            "fvd": _missing(WEIGHT_OPTIONS["i3d"]) if nets.i3d is None else self._fvd(reference or self),
            "fid": _missing(WEIGHT_OPTIONS["inception"]) if nets.inception is None else self._fid(ref),
            "dynamic_degree": self._dynamic_degree(),
            "motion_smoothness": self._motion_smoothness(),
        }
        for metric, kind in (("subject_consistency", "dino"), ("background_consistency", "clip")):
            results[metric] = (_missing(WEIGHT_OPTIONS[kind]) if getattr(nets, kind) is None
                               else self._consistency_result(kind))
        return {name: results[name] for name in PAPER_METRICS}

    def _fvd(self, reference: PaperMetricsAccumulator) -> MetricResult:
        cfg = self.config
        for owner, side in ((self, self._generated), (reference, reference._reference)):
            if side.clips < 2:
                return _not_computed(f"FVD needs >= 2 {side.name} clips, got {side.clips}")
            if side.fvd_short:
                return _not_computed(side.fvd_short)
            if owner.networks.i3d is None:
                return _not_computed(f"the reference accumulator has no I3D ({WEIGHT_OPTIONS['i3d']})")
            owner._flush(side)
        gen, ref = self._generated.fvd.statistics(), reference._reference.fvd.statistics()
        note = (
            f"I3D Kinetics-400 {cfg.fvd_feature} ({gen.mu.shape[0]}-d), first {cfg.fvd_num_frames} frames per clip, "
            f"{cfg.fvd_resolution}x{cfg.fvd_resolution} centre crop, {gen.count} generated vs {ref.count} reference clips"
        )
        details = {"num_generated": gen.count, "num_reference": ref.count, "feature_dim": int(gen.mu.shape[0])}
        return MetricResult(frechet_distance_of_statistics(gen, ref), note, details=details)

    def _fid(self, reference: _Side) -> MetricResult:
        gen_n, ref_n = self._generated.fid.count, reference.fid.count
        if gen_n < 2 or ref_n < 2:
            return _not_computed(f"FID needs >= 2 frames per side, got {gen_n} generated and {ref_n} reference")
        gen, ref = self._generated.fid.statistics(), reference.fid.statistics()
        dim = gen.mu.shape[0]
        note = (
            f"Inception-v3 pool3 ({dim}-d), frames 1 in {self.config.fid_frame_stride} of every clip, "
            f"{gen_n} generated vs {ref_n} reference frames"
        )
        if min(gen_n, ref_n) <= dim:
            note += f"; fewer frames than {dim} + 1 on a side: rank-deficient covariance, value biased"
        details = {"num_generated_frames": gen_n, "num_reference_frames": ref_n, "feature_dim": int(dim)}
        return MetricResult(frechet_distance_of_statistics(gen, ref), note, details=details)

    def _dynamic_degree(self) -> MetricResult:
        if "dynamic" in self._short:
            return _not_computed(self._short["dynamic"])
        flags = tuple(float(r.is_dynamic) for r in self._dynamic)
        note = (
            "share of dynamic clips, VBench rule (top-5% flow magnitude > 6 min(H,W)/256 px in >= round(4T/16) pairs), "
            f"flow from {getattr(self.flow, 'name', type(self.flow).__name__)} instead of RAFT, "
            f"frames 1 in {self._frame_interval}"
        )
        return MetricResult(float(np.mean(flags)), note, per_clip=flags, details={"num_clips": len(flags)})

    def _motion_smoothness(self) -> MetricResult:
        if "smoothness" in self._short:
            return _not_computed(self._short["smoothness"])
        values = tuple(self._smoothness)
        note = (
            "(255 - mean |odd frame - flow interpolation of its even neighbours|) / 255, "
            f"flow from {getattr(self.flow, 'name', type(self.flow).__name__)} instead of AMT-S "
            "(not comparable with VBench numbers)"
        )
        return MetricResult(float(np.mean(values)), note, per_clip=values, details={"num_clips": len(values)})

    def _consistency_result(self, kind: str) -> MetricResult:
        if "consistency" in self._short:
            return _not_computed(self._short["consistency"])
        results = self._consistency[kind]
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
    """The paper's table for one set of generated clips against reference clips
    (`PaperMetricsAccumulator` fed every clip; it keeps no frame, the lists do).

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
    accumulator = PaperMetricsAccumulator(weights, device, config=config, networks=networks, flow=flow)
    for clip in generated:
        accumulator.add_generated(clip)
    for clip in reference:
        accumulator.add_reference(clip)
    return accumulator.result()
