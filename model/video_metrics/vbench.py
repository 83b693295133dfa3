"""VBench's per-video quality dimensions, with the project's flow labeler where VBench uses RAFT / AMT.

Formulas follow Vchitect/VBench @ 45e79ec (vbench/dynamic_degree.py, motion_smoothness.py,
subject_consistency.py, background_consistency.py, utils.py); deviations are named in each
function and in docs/video_metrics.md.

- Dynamic degree. Per consecutive frame pair, the mean of the top 5 % flow magnitudes
  (`int(H W 0.05)` pixels); a video is dynamic when at least round(4 T / 16) pairs exceed
  6 min(H, W) / 256 px (T frames, after keeping every round(fps / 8)-th frame when the fps
  is known, as VBench does for .mp4 input; Python's round). The benchmark value is the share
  of dynamic videos. Deviation: the flow comes from a project labeler (`labelers.dis_flow.DisFlow`
  by default, or any `labelers.flow.FlowEstimator` such as SEA-RAFT) instead of RAFT-things
  with 20 iterations, and on the unpadded frame (VBench pads to a multiple of 8 by edge
  replication and ranks the padded flow).
- Motion smoothness. VBench drops the odd frames, re-creates each from its two even
  neighbours with the AMT-S interpolation network, and scores (255 - mean |I - I_hat|) / 255
  over the re-created frames (uint8, all pixels and channels), averaged over videos.
  Deviation: no AMT; the odd frame is re-created from the flows of the project labeler
  between its even neighbours I0 and I1, with Super SloMo's linear intermediate-flow
  approximation at t = 1/2, F_t0 = (-F_01 + F_10) / 4 and F_t1 = (F_01 - F_10) / 4, and
  I_hat = (warp(I0, F_t0) + warp(I1, F_t1)) / 2 (bilinear backward warps, edge replication,
  truncated to uint8 as VBench's `tensor2img` does with AMT's output). Exact for uniform translation, so uniform motion scores near 1; values are
  not comparable with VBench's AMT numbers.
- Subject consistency (DINO ViT-B/16) and background consistency (CLIP ViT-B/32): per frame
  i >= 1, (max(0, cos(f_i, f_{i-1})) + max(0, cos(f_i, f_0))) / 2; the video's value is the
  mean over its T - 1 frames, the benchmark value the sum over all videos' frames divided by
  their count (frame-weighted, as VBench's `sim / cnt`). DINO features: the CLS token after
  the final LayerNorm, on frames whose shorter side is resized to 224 (bilinear, no
  antialiasing, no crop; position embeddings interpolated), ImageNet mean/std. CLIP features:
  the projected image embedding (`encode_image`), on frames resized to 224 on the shorter side
  (bicubic, no antialiasing), centre-cropped to 224 x 224, CLIP mean/std. Both resizes round
  to uint8 first, as torchvision does on VBench's uint8 tensors.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from model.video_metrics.weights import load_strict, read_state_dict

__all__ = [
    "CLIP_B32",
    "DINO_B16",
    "ClipVisionSpec",
    "ConsistencyResult",
    "DinoSpec",
    "DynamicDegreeResult",
    "FeatureEncoder",
    "consistency_from_features",
    "dynamic_degree_video",
    "dynamic_threshold",
    "frame_interval",
    "interpolate_midframe",
    "load_clip_vision",
    "load_dino",
    "motion_smoothness_video",
    "preprocess_clip",
    "preprocess_dino",
    "rename_official_vit_keys",
    "top_flow_magnitude",
]

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
CLIP_MEAN, CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
VBENCH_SIZE = 224


def _check_video(video: np.ndarray, name: str = "video", min_frames: int = 1) -> None:
    if not isinstance(video, np.ndarray) or video.dtype != np.uint8 or video.ndim != 4 or video.shape[-1] != 3:
        shape = getattr(video, "shape", type(video).__name__)
        raise ValueError(f"{name} must be a (T, H, W, 3) uint8 array, got {shape} {getattr(video, 'dtype', '')}")
    if video.shape[0] < min_frames:
        raise ValueError(f"{name} has {video.shape[0]} frames, needs >= {min_frames}")


# ----------------------------------------------------------------------------- dynamic degree


@dataclass(frozen=True)
class DynamicDegreeResult:
    """Dynamic degree of one video.

    Attributes:
        is_dynamic: VBench's decision.
        pair_scores_px: (P,) mean of the top 5 % flow magnitudes of each consecutive pair.
        threshold_px: 6 min(H, W) / 256.
        pairs_needed: round(4 T / 16) pairs above the threshold.
        frame_interval: frames kept one in `frame_interval` (1 when the fps is unknown).
    """

    is_dynamic: bool
    pair_scores_px: np.ndarray
    threshold_px: float
    pairs_needed: int
    frame_interval: int


def frame_interval(fps: float | None) -> int:
    """VBench keeps one frame in max(1, round(fps / 8)) (about 8 fps); 1 when the fps is unknown."""
    if fps is None:
        return 1
    if not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps}")
    return max(1, round(fps / 8))


def dynamic_threshold(height: int, width: int, num_frames: int) -> tuple[float, int]:
    """(threshold in px, pairs needed) of VBench's `set_params`."""
    return 6.0 * (min(height, width) / 256.0), round(4 * (num_frames / 16.0))


def top_flow_magnitude(flow_px: np.ndarray, fraction: float = 0.05) -> float:
    """Mean of the largest `int(H W fraction)` flow magnitudes of one (H, W, 2) flow.

    VBench takes int(H W 0.05) values, which is 0 below 20 pixels; we take at least one.
    """
    magnitude = np.linalg.norm(flow_px.reshape(-1, 2).astype(np.float64), axis=-1)
    count = max(1, int(magnitude.size * fraction))
    return float(np.partition(magnitude, magnitude.size - count)[magnitude.size - count :].mean())


def _pairs_exceeding(scores: list[float], threshold: float, needed: int) -> bool:
    # VBench's check_move: counts scores above the threshold and stops once `needed` is met,
    # so needed = 0 is True as soon as there is one pair.
    count = 0
    for score in scores:
        if score > threshold:
            count += 1
        if count >= needed:
            return True
    return False


def dynamic_degree_video(video: np.ndarray, flow: Any, fps: float | None = None) -> DynamicDegreeResult:
    """VBench's dynamic-degree decision for one video, flow from a project labeler.

    Args:
        video: (T, H, W, 3) uint8 RGB, T >= 2.
        flow: a `labelers.flow.FlowEstimator` (e.g. `DisFlow()`).
        fps: frame rate; when given, frames are subsampled to about 8 fps as VBench does.
    """
    _check_video(video, min_frames=2)
    step = frame_interval(fps)
    frames = video[::step]
    if len(frames) < 2:
        raise ValueError(f"video has {len(frames)} frame after keeping 1 in {step} (fps {fps}); needs 2")
    threshold, needed = dynamic_threshold(frames.shape[1], frames.shape[2], len(frames))
    flow_px = flow.estimate(np.ascontiguousarray(frames[:-1]), np.ascontiguousarray(frames[1:])).flow_px
    scores = [top_flow_magnitude(f) for f in flow_px]
    return DynamicDegreeResult(
        _pairs_exceeding(scores, threshold, needed), np.asarray(scores), threshold, needed, step
    )


# ----------------------------------------------------------------------------- motion smoothness


def _backward_warp(image: np.ndarray, flow_px: np.ndarray) -> np.ndarray:
    """image sampled at x + flow(x) (bilinear, edge replication), float32."""
    height, width = flow_px.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    map_x = grid_x + flow_px[..., 0].astype(np.float32)
    map_y = grid_y + flow_px[..., 1].astype(np.float32)
    return cv2.remap(image.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def interpolate_midframe(
    image0: np.ndarray, image1: np.ndarray, flow_01: np.ndarray, flow_10: np.ndarray
) -> np.ndarray:
    """Frame halfway between image0 and image1 (Super SloMo's flow approximation at t = 1/2).

    Args:
        image0, image1: (H, W, 3) uint8.
        flow_01, flow_10: (H, W, 2) flows image0 -> image1 and image1 -> image0, px.

    Returns:
        (H, W, 3) uint8.
    """
    flow_t0 = 0.25 * (flow_10 - flow_01)
    flow_t1 = 0.25 * (flow_01 - flow_10)
    mid = 0.5 * (_backward_warp(image0, flow_t0) + _backward_warp(image1, flow_t1))
    return np.clip(mid, 0, 255).astype(np.uint8)  # truncated, as VBench's AMT `tensor2img`


def motion_smoothness_video(video: np.ndarray, flow: Any) -> float:
    """(255 - mean |odd frame - its re-creation from the even neighbours|) / 255, T >= 3."""
    _check_video(video, min_frames=3)
    even = np.ascontiguousarray(video[0::2])
    fwd, bwd = flow.estimate_bidirectional(even[:-1], even[1:])
    errors = []
    for k in range(len(even) - 1):
        recreated = interpolate_midframe(even[k], even[k + 1], fwd.flow_px[k], bwd.flow_px[k])
        errors.append(float(np.mean(cv2.absdiff(video[2 * k + 1], recreated))))
    return (255.0 - float(np.mean(errors))) / 255.0


# ----------------------------------------------------------------------------- consistency


@dataclass(frozen=True)
class ConsistencyResult:
    """VBench consistency of one video: `total` over `count` = T - 1 frames, `value` = total / count."""

    total: float
    count: int

    @property
    def value(self) -> float:
        return self.total / self.count


def consistency_from_features(features: torch.Tensor | np.ndarray) -> ConsistencyResult:
    """Sum over frames i >= 1 of (max(0, cos(f_i, f_{i-1})) + max(0, cos(f_i, f_0))) / 2.

    Args:
        features: (T, D) per-frame features, T >= 2.
    """
    feats = torch.as_tensor(np.asarray(features) if not torch.is_tensor(features) else features).double()
    if feats.ndim != 2 or feats.shape[0] < 2:
        raise ValueError(f"features must be (T, D) with T >= 2, got {tuple(feats.shape)}")
    feats = F.normalize(feats, dim=-1)
    to_previous = (feats[1:] * feats[:-1]).sum(-1).clamp_min(0.0)
    to_first = (feats[1:] * feats[:1]).sum(-1).clamp_min(0.0)
    return ConsistencyResult(float(((to_previous + to_first) / 2).sum()), int(feats.shape[0] - 1))


def _resized_short_side(height: int, width: int, size: int) -> tuple[int, int]:
    # torchvision Resize(int): the short side becomes `size`, the long side int(size * long / short).
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def _resize_uint8(frames: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """torchvision's resize of a uint8 tensor: float interpolation, clamp, round back to uint8 levels."""
    if tuple(frames.shape[-2:]) == size:
        return frames.float()
    out = F.interpolate(frames.float(), size=size, mode=mode, align_corners=False, antialias=False)
    return out.clamp(0, 255).round()


def _normalize(frames: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    mean_t = torch.tensor(mean, dtype=frames.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=frames.dtype).view(1, 3, 1, 1)
    return (frames / 255.0 - mean_t) / std_t


def preprocess_dino(video: np.ndarray, size: int = VBENCH_SIZE) -> torch.Tensor:
    """VBench's `dino_transform(224)`: (T, H, W, 3) uint8 -> (T, 3, 224, W') float, no crop."""
    _check_video(video)
    frames = torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2)
    frames = _resize_uint8(frames, _resized_short_side(*video.shape[1:3], size), "bilinear")
    return _normalize(frames, IMAGENET_MEAN, IMAGENET_STD)


def preprocess_clip(video: np.ndarray, size: int = VBENCH_SIZE) -> torch.Tensor:
    """VBench's `clip_transform(224)`: (T, H, W, 3) uint8 -> (T, 3, 224, 224) float."""
    _check_video(video)
    frames = torch.from_numpy(np.ascontiguousarray(video)).permute(0, 3, 1, 2)
    frames = _resize_uint8(frames, _resized_short_side(*video.shape[1:3], size), "bicubic")
    height, width = frames.shape[-2:]
    top, left = int(round((height - size) / 2.0)), int(round((width - size) / 2.0))
    frames = frames[:, :, top : top + size, left : left + size]
    return _normalize(frames, CLIP_MEAN, CLIP_STD)


@dataclass(frozen=True)
class DinoSpec:
    """facebook/dino-vitb16 as a transformers ViTModel without pooler.

    `layer_norm_eps` is DINO's own 1e-6 (the hub config.json says 1e-12, a conversion default;
    VBench runs DINO's torch.hub model).
    """

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    patch_size: int = 16
    image_size: int = 224
    layer_norm_eps: float = 1e-6

    def build(self) -> torch.nn.Module:
        from transformers import ViTConfig, ViTModel

        config = ViTConfig(
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            patch_size=self.patch_size,
            image_size=self.image_size,
            layer_norm_eps=self.layer_norm_eps,
            qkv_bias=True,
            hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0,
        )
        return ViTModel(config, add_pooling_layer=False)


@dataclass(frozen=True)
class ClipVisionSpec:
    """openai/clip-vit-base-patch32's image tower as CLIPVisionModelWithProjection."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    patch_size: int = 32
    image_size: int = 224
    projection_dim: int = 512

    def build(self) -> torch.nn.Module:
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        config = CLIPVisionConfig(
            hidden_size=self.hidden_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            intermediate_size=self.intermediate_size,
            patch_size=self.patch_size,
            image_size=self.image_size,
            projection_dim=self.projection_dim,
            hidden_act="quick_gelu",
            layer_norm_eps=1e-5,
        )
        return CLIPVisionModelWithProjection(config)


DINO_B16 = DinoSpec()
CLIP_B32 = ClipVisionSpec()

_VIT_LAYER = re.compile(r"^encoder\.layer\.(\d+)\.")
_VIT_RENAMES = (
    (".attention.attention.query.", ".attention.q_proj."),
    (".attention.attention.key.", ".attention.k_proj."),
    (".attention.attention.value.", ".attention.v_proj."),
    (".attention.output.dense.", ".attention.o_proj."),
    (".intermediate.dense.", ".mlp.fc1."),
    (".output.dense.", ".mlp.fc2."),
)


def rename_official_vit_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """facebook/dino-vitb16 names (transformers 4.x ViTModel) -> the installed ViTModel's names.

    transformers 5 renamed `encoder.layer.i.attention.attention.query` to
    `layers.i.attention.q_proj` (and key, value, output, MLP likewise); names already in the
    new scheme pass unchanged. Layer-local renames apply once per key, in the order above, so
    `attention.output.dense` never becomes `mlp.fc2`.
    """
    out = {}
    for key, value in state.items():
        new = _VIT_LAYER.sub(r"layers.\1.", key)
        if new != key:
            for old, repl in _VIT_RENAMES:
                if old in new:
                    new = new.replace(old, repl)
                    break
        out[new] = value
    return out


def load_dino(path: str | Path, device: str | torch.device = "cpu", spec: DinoSpec = DINO_B16) -> torch.nn.Module:
    """DINO ViT from a local folder (HF snapshot) or weight file, strictly, in eval mode."""
    state = rename_official_vit_keys(read_state_dict(path, "DINO"))
    return load_strict(spec.build(), state, f"DINO weights {path}").to(device).eval()


_CLIP_IGNORED_PREFIXES = ("text_model.", "text_projection.", "logit_scale")


def _clip_vision_state(state: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in state.items():
        if key.startswith(_CLIP_IGNORED_PREFIXES):
            continue
        if key.endswith("embeddings.position_ids"):
            # a buffer older transformers saved; recomputed by the model, must be 0..N-1
            if not torch.equal(value.flatten().long(), torch.arange(value.numel())):
                raise ValueError(f"{source}: {key} is not 0..{value.numel() - 1}")
            continue
        out[key] = value
    return out


def load_clip_vision(
    path: str | Path, device: str | torch.device = "cpu", spec: ClipVisionSpec = CLIP_B32
) -> torch.nn.Module:
    """CLIP image tower + projection from a local CLIPModel (or vision-only) checkpoint, strictly.

    The text tower, `text_projection`, `logit_scale` and `position_ids` buffers of a full
    CLIPModel file are set aside; every `vision_model.*` key and `visual_projection.weight`
    must match exactly.
    """
    source = f"CLIP weights {path}"
    state = _clip_vision_state(read_state_dict(path, "CLIP"), source)
    return load_strict(spec.build(), state, source).to(device).eval()


class FeatureEncoder:
    """Per-frame features for the consistency metrics: `kind` "dino" (CLS) or "clip" (image embeds)."""

    def __init__(self, model: torch.nn.Module, kind: str, device: str | torch.device = "cpu", batch_size: int = 32):
        if kind not in ("dino", "clip"):
            raise ValueError(f"kind must be 'dino' or 'clip', got {kind!r}")
        self.model, self.kind, self.device, self.batch_size = model, kind, device, batch_size

    @torch.no_grad()
    def __call__(self, video: np.ndarray) -> torch.Tensor:
        """(T, H, W, 3) uint8 -> (T, D) float features."""
        frames = preprocess_dino(video) if self.kind == "dino" else preprocess_clip(video)
        out = []
        for start in range(0, len(frames), self.batch_size):
            batch = frames[start : start + self.batch_size].to(self.device)
            if self.kind == "dino":
                hidden = self.model(pixel_values=batch, interpolate_pos_encoding=True).last_hidden_state
                out.append(hidden[:, 0].float().cpu())
            else:
                out.append(self.model(pixel_values=batch).image_embeds.float().cpu())
        return torch.cat(out)

    def consistency(self, video: np.ndarray) -> ConsistencyResult:
        _check_video(video, min_frames=2)
        return consistency_from_features(self(video))
