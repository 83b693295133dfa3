"""The FID Inception-v3: 2048-d pool3 features, in the layout of pytorch-fid's weights.

Our module reproduces pytorch-fid's `fid_inception_v3()` (mseitzer/pytorch-fid
src/pytorch_fid/inception.py): torchvision's Inception3 with 1008 classes and no auxiliary
head, its Mixed_5b-d / 6b-e / 7b / 7c blocks patched as FIDInceptionA / C / E_1 / E_2 to
match the TensorFlow graph the weights come from (average pools ignore the zero padding;
Mixed_7c pools with a max instead of an average). Module names are torchvision's, so
`pt_inception-2015-12-05-6726825d.pth` loads strictly (`load_fid_inception`): 566 tensors,
every BatchNorm with its `num_batches_tracked` (the manifest is
tests/model/data/video_metrics/pt_inception-2015-12-05-6726825d.json). The 1008-way `fc`
is part of that checkpoint and kept for strict loading; FID never runs it.

Preprocessing is pytorch-fid's `InceptionV3(resize_input=True, normalize_input=True)`:
RGB in [0, 1] resized to 299 x 299 (bilinear, align_corners=False, no antialiasing, aspect
not kept), then mapped to [-1, 1]. `pool3` is the global average of Mixed_7c.

`InceptionConfig.width_divisor` > 1 divides every convolution's width, for tiny CPU tests
of the same code; only width_divisor = 1 matches the weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from model.video_metrics.weights import load_strict, read_state_dict

__all__ = [
    "FID_INCEPTION_CONFIG",
    "INCEPTION_INPUT_SIZE",
    "FIDInceptionV3",
    "InceptionConfig",
    "inception_features",
    "load_fid_inception",
]

INCEPTION_INPUT_SIZE = 299


@dataclass(frozen=True)
class InceptionConfig:
    """Architecture of the FID Inception-v3.

    Attributes:
        num_classes: width of the `fc` head in the checkpoint (1008 for the TF graph).
        width_divisor: every convolution has (official width // width_divisor) channels.
    """

    num_classes: int = 1008
    width_divisor: int = 1

    def __post_init__(self) -> None:
        if self.num_classes < 1 or self.width_divisor < 1:
            raise ValueError(
                f"num_classes and width_divisor must be >= 1, got {self.num_classes}, {self.width_divisor}"
            )

    def width(self, channels: int) -> int:
        return max(1, channels // self.width_divisor)

    @property
    def feature_dim(self) -> int:
        """pool3 width: Mixed_7c's 320 + 2 x 384 + 2 x 384 + 192 (2048 at full width)."""
        return self.width(320) + 4 * self.width(384) + self.width(192)


FID_INCEPTION_CONFIG = InceptionConfig()


class BasicConv2d(nn.Module):
    """Convolution without bias, BatchNorm (eps 1e-3, TF's), ReLU: torchvision's unit."""

    def __init__(self, in_channels: int, out_channels: int, **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    # TensorFlow's 3x3 average pool leaves the zero padding out of the mean.
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    def __init__(self, cfg: InceptionConfig, in_channels: int, pool_features: int) -> None:
        super().__init__()
        w = cfg.width
        self.branch1x1 = BasicConv2d(in_channels, w(64), kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, w(48), kernel_size=1)
        self.branch5x5_2 = BasicConv2d(w(48), w(64), kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, w(64), kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(w(64), w(96), kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(w(96), w(96), kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, w(pool_features), kernel_size=1)
        self.out_channels = w(64) + w(64) + w(96) + w(pool_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, self.branch_pool(_tf_avg_pool(x))], 1)


class InceptionB(nn.Module):
    def __init__(self, cfg: InceptionConfig, in_channels: int) -> None:
        super().__init__()
        w = cfg.width
        self.branch3x3 = BasicConv2d(in_channels, w(384), kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, w(64), kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(w(64), w(96), kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(w(96), w(96), kernel_size=3, stride=2)
        self.out_channels = w(384) + w(96) + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), branch3x3dbl, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionC(nn.Module):
    def __init__(self, cfg: InceptionConfig, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        w = cfg.width
        c7 = w(channels_7x7)
        self.branch1x1 = BasicConv2d(in_channels, w(192), kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, w(192), kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, w(192), kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, w(192), kernel_size=1)
        self.out_channels = 4 * w(192)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = layer(branch7x7dbl)
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, self.branch_pool(_tf_avg_pool(x))], 1)


class InceptionD(nn.Module):
    def __init__(self, cfg: InceptionConfig, in_channels: int) -> None:
        super().__init__()
        w = cfg.width
        self.branch3x3_1 = BasicConv2d(in_channels, w(192), kernel_size=1)
        self.branch3x3_2 = BasicConv2d(w(192), w(320), kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, w(192), kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(w(192), w(192), kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(w(192), w(192), kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(w(192), w(192), kernel_size=3, stride=2)
        self.out_channels = w(320) + w(192) + in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            branch7x7x3 = layer(branch7x7x3)
        return torch.cat([branch3x3, branch7x7x3, F.max_pool2d(x, kernel_size=3, stride=2)], 1)


class FIDInceptionE(nn.Module):
    """InceptionE; `max_pool=True` is FIDInceptionE_2 (Mixed_7c), which pools with a max."""

    def __init__(self, cfg: InceptionConfig, in_channels: int, max_pool: bool) -> None:
        super().__init__()
        w = cfg.width
        self.max_pool = max_pool
        self.branch1x1 = BasicConv2d(in_channels, w(320), kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, w(384), kernel_size=1)
        self.branch3x3_2a = BasicConv2d(w(384), w(384), kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(w(384), w(384), kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, w(448), kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(w(448), w(384), kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(w(384), w(384), kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(w(384), w(384), kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, w(192), kernel_size=1)
        self.out_channels = cfg.feature_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """pytorch-fid's FID Inception-v3 up to pool3.

    Example:
        >>> net = load_fid_inception("pt_inception-2015-12-05-6726825d.pth")
        >>> feats = net(images)  # (N, 3, H, W) in [0, 1] -> (N, 2048)
    """

    def __init__(self, config: InceptionConfig = FID_INCEPTION_CONFIG) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.Conv2d_1a_3x3 = BasicConv2d(3, w(32), kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(w(32), w(32), kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(w(32), w(64), kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(w(64), w(80), kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(w(80), w(192), kernel_size=3)
        self.Mixed_5b = FIDInceptionA(config, w(192), pool_features=32)
        self.Mixed_5c = FIDInceptionA(config, self.Mixed_5b.out_channels, pool_features=64)
        self.Mixed_5d = FIDInceptionA(config, self.Mixed_5c.out_channels, pool_features=64)
        self.Mixed_6a = InceptionB(config, self.Mixed_5d.out_channels)
        self.Mixed_6b = FIDInceptionC(config, self.Mixed_6a.out_channels, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(config, self.Mixed_6b.out_channels, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(config, self.Mixed_6c.out_channels, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(config, self.Mixed_6d.out_channels, channels_7x7=192)
        self.Mixed_7a = InceptionD(config, self.Mixed_6e.out_channels)
        self.Mixed_7b = FIDInceptionE(config, self.Mixed_7a.out_channels, max_pool=False)
        self.Mixed_7c = FIDInceptionE(config, self.Mixed_7b.out_channels, max_pool=True)
        self.fc = nn.Linear(config.feature_dim, config.num_classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """pool3 features.

        Args:
            images: (N, 3, H, W) float RGB in [0, 1], any size.

        Returns:
            (N, feature_dim) float features (2048 at full width).
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        size = (INCEPTION_INPUT_SIZE, INCEPTION_INPUT_SIZE)
        x = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        x = 2 * x - 1
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, kernel_size=3, stride=2)
        for block in (self.Mixed_5b, self.Mixed_5c, self.Mixed_5d, self.Mixed_6a, self.Mixed_6b, self.Mixed_6c):
            x = block(x)
        for block in (self.Mixed_6d, self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3))


def load_fid_inception(
    path: str | Path, device: str | torch.device = "cpu", config: InceptionConfig = FID_INCEPTION_CONFIG
) -> FIDInceptionV3:
    """FID Inception from a local state dict (`.pth` / `.safetensors`), strictly, in eval mode."""
    state = read_state_dict(path, "Inception")
    with torch.device("meta"):
        net = FIDInceptionV3(config)
    load_strict(net, state, f"Inception weights {path}")
    return net.to(device).eval()


@torch.no_grad()
def inception_features(
    net: FIDInceptionV3, frames: np.ndarray, device: str | torch.device = "cpu", batch_size: int = 32
) -> np.ndarray:
    """pool3 features of uint8 frames.

    Args:
        frames: (N, H, W, 3) uint8 RGB.

    Returns:
        (N, feature_dim) float64.
    """
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    out = []
    for start in range(0, len(frames), batch_size):
        batch = torch.from_numpy(frames[start : start + batch_size]).to(device)
        images = batch.permute(0, 3, 1, 2).float() / 255.0
        out.append(net(images).double().cpu().numpy())
    return np.concatenate(out)
