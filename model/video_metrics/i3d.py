"""I3D (Inception-v1 inflated to 3D, Kinetics-400) for FVD, in the layout of VideoGPT's weights.

Our module reproduces `InceptionI3d(400, in_channels=3)` of VideoGPT
(wilson1yan/VideoGPT videogpt/fvd/pytorch_i3d.py, itself piergiaj/pytorch-i3d's
pytorch_i3d.py): Unit3D = Conv3d without bias + BatchNorm3d + ReLU with TensorFlow "same"
padding computed from the input size, InceptionModule branches b0, b1a/b1b, b2a/b2b and
b3b after a 3x3x3 max pool, end points Conv3d_1a_7x7 ... Mixed_5c, then a [2, 7, 7]
average pool and the 1x1x1 `logits` convolution with bias. Module names are upstream's, so
`i3d_pretrained_400.pt` (VideoGPT's port of DeepMind's TF-Hub `i3d-kinetics-400/1`, the
network of the original FVD) loads strictly (`load_i3d`; piergiaj's `rgb_imagenet.pt`
comes from the same class, so it has the same names, not checked on the file): VideoGPT's file is a plain dict built from the TF variables, 287 tensors
with no `num_batches_tracked` (manifest:
tests/model/data/video_metrics/i3d_pretrained_400.json); a missing `num_batches_tracked`
is filled with 0 (it only counts training steps), every other key must match exactly.

FVD protocol (VideoGPT's `get_fvd_logits` / `frechet_distance`, the reference we follow):
one clip per video, its first 16 frames (`I3D_NUM_FRAMES`); each frame's shorter side
resized to 224 (bilinear, align_corners=False, the longer side rounded up), a central
224 x 224 crop, RGB mapped to [-1, 1]; feature = the 400 Kinetics logits (before softmax),
averaged over the remaining time steps (one step at 16 x 224 x 224). `feature="pool"`
gives the 1024-d average-pooled activations under the logits instead (piergiaj's
`extract_features`, spatio-temporally averaged). BatchNorm eps is VideoGPT's 1e-5
(TF and piergiaj use 1e-3; `I3DConfig.bn_eps`).

`I3DConfig.width_divisor` > 1 and a smaller `final_pool` give tiny CPU test networks of the
same code; only the defaults match the weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.video_metrics.weights import load_strict, read_state_dict

__all__ = [
    "I3D_CONFIG",
    "I3D_NUM_FRAMES",
    "I3D_RESOLUTION",
    "I3DConfig",
    "InceptionI3d",
    "i3d_features",
    "load_i3d",
    "preprocess_i3d",
]

I3D_NUM_FRAMES = 16
I3D_RESOLUTION = 224
I3DFeature = Literal["logits", "pool"]

# Inception-module widths (b0, b1a, b1b, b2a, b2b, b3b) of the end points, upstream's table.
_MIXED = {
    "Mixed_3b": (64, 96, 128, 16, 32, 32),
    "Mixed_3c": (128, 128, 192, 32, 96, 64),
    "Mixed_4b": (192, 96, 208, 16, 48, 64),
    "Mixed_4c": (160, 112, 224, 24, 64, 64),
    "Mixed_4d": (128, 128, 256, 24, 64, 64),
    "Mixed_4e": (112, 144, 288, 32, 64, 64),
    "Mixed_4f": (256, 160, 320, 32, 128, 128),
    "Mixed_5b": (256, 160, 320, 32, 128, 128),
    "Mixed_5c": (384, 192, 384, 48, 128, 128),
}


@dataclass(frozen=True)
class I3DConfig:
    """Architecture of the I3D feature network.

    Attributes:
        num_classes: logits width (400 for Kinetics-400).
        width_divisor: every convolution has (official width // width_divisor) channels.
        bn_eps: BatchNorm epsilon (VideoGPT's 1e-5).
        final_pool: kernel (t, h, w) of the average pool before the logits.
    """

    num_classes: int = 400
    width_divisor: int = 1
    bn_eps: float = 1e-5
    final_pool: tuple[int, int, int] = (2, 7, 7)

    def __post_init__(self) -> None:
        if self.num_classes < 1 or self.width_divisor < 1 or self.bn_eps <= 0 or min(self.final_pool) < 1:
            raise ValueError(f"invalid I3DConfig {self}")

    def width(self, channels: int) -> int:
        return max(1, channels // self.width_divisor)

    def mixed_out(self, name: str) -> int:
        b0, _, b1b, _, b2b, b3b = (self.width(c) for c in _MIXED[name])
        return b0 + b1b + b2b + b3b


I3D_CONFIG = I3DConfig()


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow "same" padding of one dimension: (before, after), the extra pixel after."""
    total = max(kernel - stride, 0) if size % stride == 0 else max(kernel - size % stride, 0)
    return total // 2, total - total // 2


def _pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    (tf, tb), (hf, hb), (wf, wb) = (_same_pad(s, k, st) for s, k, st in zip(x.shape[2:], kernel, stride))
    return F.pad(x, (wf, wb, hf, hb, tf, tb))


def _max_pool_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    # Zero padding as upstream's MaxPool3dSamePadding; inputs are post-ReLU, so >= 0.
    return F.max_pool3d(_pad_same(x, kernel, stride), kernel, stride)


class Unit3D(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        bn_eps: float | None = 1e-5,
        relu: bool = True,
    ) -> None:
        super().__init__()
        self.kernel, self.stride, self.relu = kernel, stride, relu
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride=stride, padding=0, bias=bn_eps is None)
        if bn_eps is not None:
            self.bn = nn.BatchNorm3d(out_channels, eps=bn_eps, momentum=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(_pad_same(x, self.kernel, self.stride))
        if hasattr(self, "bn"):
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class InceptionModule(nn.Module):
    def __init__(self, cfg: I3DConfig, in_channels: int, name: str) -> None:
        super().__init__()
        b0, b1a, b1b, b2a, b2b, b3b = (cfg.width(c) for c in _MIXED[name])
        eps = cfg.bn_eps
        self.b0 = Unit3D(in_channels, b0, bn_eps=eps)
        self.b1a = Unit3D(in_channels, b1a, bn_eps=eps)
        self.b1b = Unit3D(b1a, b1b, (3, 3, 3), bn_eps=eps)
        self.b2a = Unit3D(in_channels, b2a, bn_eps=eps)
        self.b2b = Unit3D(b2a, b2b, (3, 3, 3), bn_eps=eps)
        self.b3b = Unit3D(in_channels, b3b, bn_eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.b3b(_max_pool_same(x, (3, 3, 3), (1, 1, 1)))
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), b3], dim=1)


class InceptionI3d(nn.Module):
    """I3D RGB stream up to the Kinetics logits.

    Example:
        >>> net = load_i3d("i3d_pretrained_400.pt")
        >>> feats = net(clips)  # (B, 3, 16, 224, 224) in [-1, 1] -> (B, 400)
    """

    def __init__(self, config: I3DConfig = I3D_CONFIG) -> None:
        super().__init__()
        self.config = config
        w, eps = config.width, config.bn_eps
        self.Conv3d_1a_7x7 = Unit3D(3, w(64), (7, 7, 7), (2, 2, 2), bn_eps=eps)
        self.Conv3d_2b_1x1 = Unit3D(w(64), w(64), bn_eps=eps)
        self.Conv3d_2c_3x3 = Unit3D(w(64), w(192), (3, 3, 3), bn_eps=eps)
        channels = w(192)
        for name in _MIXED:
            setattr(self, name, InceptionModule(config, channels, name))
            channels = config.mixed_out(name)
        self.feature_dim = channels
        self.logits = Unit3D(channels, config.num_classes, bn_eps=None, relu=False)

    def forward(self, clips: torch.Tensor, feature: I3DFeature = "logits") -> torch.Tensor:
        """Features of clips.

        Args:
            clips: (B, 3, T, H, W) float RGB in [-1, 1] (protocol: T = 16, H = W = 224).
            feature: "logits" (num_classes) or "pool" (feature_dim, 1024 at full width).

        Returns:
            (B, num_classes) or (B, feature_dim).
        """
        if clips.ndim != 5 or clips.shape[1] != 3:
            raise ValueError(f"clips must be (B, 3, T, H, W), got {tuple(clips.shape)}")
        x = self.Conv3d_1a_7x7(clips)
        x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.Conv3d_2c_3x3(self.Conv3d_2b_1x1(x))
        x = _max_pool_same(x, (1, 3, 3), (1, 2, 2))
        x = self.Mixed_3c(self.Mixed_3b(x))
        x = _max_pool_same(x, (3, 3, 3), (2, 2, 2))
        for name in ("Mixed_4b", "Mixed_4c", "Mixed_4d", "Mixed_4e", "Mixed_4f"):
            x = getattr(self, name)(x)
        x = _max_pool_same(x, (2, 2, 2), (2, 2, 2))
        x = self.Mixed_5c(self.Mixed_5b(x))
        if any(s < k for s, k in zip(x.shape[2:], self.config.final_pool)):
            map_size, pool = tuple(x.shape[2:]), self.config.final_pool
            raise ValueError(f"clip {tuple(clips.shape[2:])} too small: Mixed_5c map {map_size} < pool {pool}")
        x = F.avg_pool3d(x, self.config.final_pool, stride=1)
        if feature == "pool":
            return x.mean(dim=(2, 3, 4))
        if feature != "logits":
            raise ValueError(f"feature must be 'logits' or 'pool', got {feature!r}")
        # Upstream squeezes the 1x1 spatial map and averages the logits over time.
        return self.logits(x).mean(dim=(2, 3, 4))


def _fill_num_batches_tracked(net: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = dict(state)
    for name, module in net.named_modules():
        key = f"{name}.num_batches_tracked"
        if isinstance(module, nn.BatchNorm3d) and key not in state and f"{name}.running_mean" in state:
            state[key] = torch.tensor(0, dtype=torch.long)
    return state


def load_i3d(path: str | Path, device: str | torch.device = "cpu", config: I3DConfig = I3D_CONFIG) -> InceptionI3d:
    """I3D from a local state dict (`i3d_pretrained_400.pt`, `rgb_imagenet.pt`), strictly, in eval mode."""
    state = read_state_dict(path, "I3D")
    with torch.device("meta"):
        net = InceptionI3d(config)
    load_strict(net, _fill_num_batches_tracked(net, state), f"I3D weights {path}")
    return net.to(device).eval()


def preprocess_i3d(
    video: np.ndarray, num_frames: int = I3D_NUM_FRAMES, resolution: int = I3D_RESOLUTION
) -> torch.Tensor:
    """VideoGPT's FVD preprocessing of one video.

    Args:
        video: (T, H, W, 3) uint8 RGB, T >= num_frames.

    Returns:
        (3, num_frames, resolution, resolution) float32 in [-1, 1]: the first num_frames
        frames, shorter side resized to `resolution`, centrally cropped.
    """
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8:
        raise ValueError(f"video must be (T, H, W, 3) uint8, got {video.shape} {video.dtype}")
    if video.shape[0] < num_frames:
        raise ValueError(f"video has {video.shape[0]} frames, the FVD protocol needs {num_frames}")
    frames = torch.from_numpy(np.ascontiguousarray(video[:num_frames])).permute(0, 3, 1, 2).float() / 255.0
    height, width = frames.shape[-2:]
    scale = resolution / min(height, width)
    size = (resolution, math.ceil(width * scale)) if height < width else (math.ceil(height * scale), resolution)
    frames = F.interpolate(frames, size=size, mode="bilinear", align_corners=False)
    top, left = (frames.shape[-2] - resolution) // 2, (frames.shape[-1] - resolution) // 2
    frames = frames[:, :, top : top + resolution, left : left + resolution]
    return (frames.permute(1, 0, 2, 3) - 0.5) * 2.0


@torch.no_grad()
def i3d_features(
    net: InceptionI3d,
    videos: list[np.ndarray],
    device: str | torch.device = "cpu",
    feature: I3DFeature = "logits",
    num_frames: int = I3D_NUM_FRAMES,
    resolution: int = I3D_RESOLUTION,
    batch_size: int = 8,
) -> np.ndarray:
    """FVD features of videos, one clip each (see the module docstring).

    Returns:
        (len(videos), D) float64.
    """
    out = []
    for start in range(0, len(videos), batch_size):
        clips = torch.stack([preprocess_i3d(v, num_frames, resolution) for v in videos[start : start + batch_size]])
        out.append(net(clips.to(device), feature=feature).double().cpu().numpy())
    return np.concatenate(out)
