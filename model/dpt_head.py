"""Temporal DPT head: DiT hidden states -> depth, point map, camera, scene flow, dynamic mask.

Where the features come from: `GeoMotionDiT` taps the outputs of four transformer blocks
(`GMAugmentationConfig.tap_blocks`, default [10, 20, 30, 41] of CogVideoX-5B's 42, spread
like VGGT's [4, 11, 17, 23] of 24). Each tap holds the video tokens only (text dropped),
(B, F*h*w, D), in diffusers' order: frame-major, then rows, then columns of the patch grid,
with h = H / (8 * 2), w = W / (8 * 2) (VAE stride 8, patch 2: 30 x 45 for 480 x 720) and
F latent frames. CogVideoX's causal VAE codes video frame 0 alone into latent frame 0 and
frames 4k-3..4k into latent frame k, so latent frame k ends on video frame 4k: the label key
frame k of LABELS.md (stride 4, S = 13 for 49 frames). The head therefore predicts one output
per latent frame, S = F. (CogVideoX 1.5's temporal patching, p_t = 2, halves the token frames
and is not supported here.)

Architecture (VGGT / Video Depth Anything style, sizes from `DPTHeadConfig`):
1. reassemble: per tap LayerNorm, 1x1 conv to `level_channels[i]`, resample the token grid
   by x4, x2, x1, x0.5 (level 1 = 4x tokens = 1/4 label resolution);
2. temporal attention (zero-initialised residual, so it starts as identity) on the two
   low-resolution levels and after the two low-resolution fusion blocks, attending across
   the S frames at each spatial position;
3. RefineNet fusion to one `features`-channel map at 8x tokens (1/2 label resolution),
   run in frame chunks (`frames_chunk_size`) to bound memory;
4. shared trunk: conv, bilinear upsampling to the label resolution, conv + ReLU; then light
   per-task heads (conv3x3, ReLU, conv1x1): depth (exp, positive), point map in first-frame
   coordinates (VGGT's inv_log: sign(y)(e^|y| - 1)), scene flow (linear), dynamic-mask logits;
5. camera: per frame attention-pooling of the last tap's tokens into one token, temporal
   transformer across frames, MLP to the 9-d camera vector (t linear; quaternion normalised
   to unit length with q_w >= 0; fields of view pi * sigmoid, in (0, pi)).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn
from torch.utils.checkpoint import checkpoint

__all__ = ["DPTHeadConfig", "DPTOutput", "TemporalDPTHead", "tokens_to_grid"]


def tokens_to_grid(tokens: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    """Video tokens (B, frames*height*width, D) in diffusers' CogVideoX order -> (B, frames, D, height, width)."""
    if tokens.ndim != 3 or tokens.shape[1] != frames * height * width:
        raise ValueError(f"tokens must be (B, {frames}*{height}*{width}, D), got {tuple(tokens.shape)}")
    batch, _, dim = tokens.shape
    return tokens.reshape(batch, frames, height, width, dim).permute(0, 1, 4, 2, 3)


@dataclass
class DPTHeadConfig:
    """Sizes of the temporal DPT head (serialisable).

    Attributes:
        embed_dim: DiT hidden size (3072 for CogVideoX-5B).
        level_channels: channels of the four reassembled levels.
        features: channels of the fusion trunk.
        head_channels: hidden channels of each light task head.
        temporal_heads: attention heads of the temporal blocks.
        max_frames: length of the learned temporal position table.
        camera_dim: width of the camera branch.
        camera_layers: temporal transformer layers in the camera branch.
        frames_chunk_size: frames per chunk in the high-resolution part (0: all at once).
        checkpoint_high_res: recompute high-resolution chunks in backward to save memory.
    """

    embed_dim: int = 3072
    level_channels: list[int] = field(default_factory=lambda: [256, 512, 1024, 1024])
    features: int = 256
    head_channels: int = 32
    temporal_heads: int = 8
    max_frames: int = 32
    camera_dim: int = 512
    camera_layers: int = 2
    frames_chunk_size: int = 4
    checkpoint_high_res: bool = False

    def __post_init__(self) -> None:
        if len(self.level_channels) != 4:
            raise ValueError(f"level_channels must list 4 levels, got {self.level_channels}")
        for name in ("features", "level_channels"):
            values = [self.features] if name == "features" else self.level_channels
            if any(c % self.temporal_heads for c in values):
                raise ValueError(f"{name} must be divisible by temporal_heads={self.temporal_heads}")
        if self.camera_dim % self.temporal_heads:
            raise ValueError("camera_dim must be divisible by temporal_heads")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def tiny(cls, embed_dim: int = 32) -> DPTHeadConfig:
        return cls(
            embed_dim=embed_dim,
            level_channels=[8, 8, 16, 16],
            features=8,
            head_channels=8,
            temporal_heads=2,
            max_frames=8,
            camera_dim=16,
            camera_layers=1,
            frames_chunk_size=2,
        )


@dataclass
class DPTOutput:
    """Predictions on the S key frames at label resolution (H, W).

    depth: (B, S, H, W) > 0; points: (B, S, H, W, 3); camera: (B, S, 9);
    scene_flow: (B, S-1, H, W, 3) (key frame k -> k+1); mask_logits: (B, S, H, W).
    """

    depth: torch.Tensor
    points: torch.Tensor
    camera: torch.Tensor
    scene_flow: torch.Tensor
    mask_logits: torch.Tensor


class TemporalBlock(nn.Module):
    """Self-attention across frames at every spatial position; zero-initialised output."""

    def __init__(self, channels: int, heads: int, max_frames: int) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(max_frames, channels))
        nn.init.normal_(self.pos, std=0.02)
        self.norm1 = nn.LayerNorm(channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(channels)
        self.ff = nn.Sequential(nn.Linear(channels, 4 * channels), nn.GELU(), nn.Linear(4 * channels, channels))
        for layer in (self.attn.out_proj, self.ff[2]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, S, C, h, w) -> same shape."""
        batch, frames, channels, height, width = x.shape
        if frames > self.pos.shape[0]:
            raise ValueError(f"{frames} frames exceed max_frames={self.pos.shape[0]}")
        seq = x.permute(0, 3, 4, 1, 2).reshape(batch * height * width, frames, channels)
        h = self.norm1(seq + self.pos[:frames])
        seq = seq + self.attn(h, h, h, need_weights=False)[0]
        seq = seq + self.ff(self.norm2(seq))
        return seq.reshape(batch, height, width, frames, channels).permute(0, 3, 4, 1, 2)


class ResidualConvUnit(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """RefineNet fusion: add the skip (after a residual unit), refine, upsample to `size`."""

    def __init__(self, channels: int, has_skip: bool) -> None:
        super().__init__()
        self.skip_unit = ResidualConvUnit(channels) if has_skip else None
        self.unit = ResidualConvUnit(channels)
        self.out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None, size: tuple[int, int]) -> torch.Tensor:
        if skip is not None:
            x = x + self.skip_unit(skip)
        x = self.unit(x)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return self.out(x)


def _task_head(in_channels: int, hidden: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(in_channels, hidden, 3, padding=1), nn.ReLU(), nn.Conv2d(hidden, out_channels, 1))


def _inv_log(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs().clamp_max(30.0))


class TemporalDPTHead(ModelMixin, ConfigMixin):
    """See the module docstring. Forward takes the four tapped token tensors.

    A diffusers component: `save_pretrained(folder)` writes `config.json` (the `DPTHeadConfig`
    fields) and the weights, `from_pretrained(folder)` reads them back; build one from sizes with
    `from_head_config(DPTHeadConfig(...))`.
    """

    config_name = "config.json"

    @register_to_config
    def __init__(
        self,
        embed_dim: int = 3072,
        level_channels: tuple[int, ...] = (256, 512, 1024, 1024),
        features: int = 256,
        head_channels: int = 32,
        temporal_heads: int = 8,
        max_frames: int = 32,
        camera_dim: int = 512,
        camera_layers: int = 2,
        frames_chunk_size: int = 4,
        checkpoint_high_res: bool = False,
    ) -> None:
        super().__init__()
        config = DPTHeadConfig(  # checks the sizes fit together
            embed_dim, list(level_channels), features, head_channels, temporal_heads, max_frames, camera_dim,
            camera_layers, frames_chunk_size, checkpoint_high_res,
        )
        c, feat = config.level_channels, config.features
        self.norms = nn.ModuleList(nn.LayerNorm(config.embed_dim) for _ in range(4))
        self.projects = nn.ModuleList(nn.Conv2d(config.embed_dim, ci, 1) for ci in c)
        self.resize = nn.ModuleList(
            [
                nn.ConvTranspose2d(c[0], c[0], 4, stride=4),
                nn.ConvTranspose2d(c[1], c[1], 2, stride=2),
                nn.Identity(),
                nn.Conv2d(c[3], c[3], 3, stride=2, padding=1),
            ]
        )
        self.layer_rn = nn.ModuleList(nn.Conv2d(ci, feat, 3, padding=1, bias=False) for ci in c)
        heads, max_frames = config.temporal_heads, config.max_frames
        self.temporal_levels = nn.ModuleList(TemporalBlock(c[i], heads, max_frames) for i in (2, 3))
        self.temporal_fused = nn.ModuleList(TemporalBlock(feat, heads, max_frames) for _ in range(2))
        self.fusion = nn.ModuleList([FusionBlock(feat, has_skip=i < 3) for i in range(4)])  # refinenet1..4
        self.trunk_in = nn.Conv2d(feat, feat // 2, 3, padding=1)
        self.trunk_out = nn.Conv2d(feat // 2, config.head_channels, 3, padding=1)
        hidden = config.head_channels
        self.depth_head = _task_head(hidden, hidden, 1)
        self.points_head = _task_head(hidden, hidden, 3)
        self.flow_head = _task_head(hidden, hidden, 3)
        self.mask_head = _task_head(hidden, hidden, 1)
        # camera branch
        cam = config.camera_dim
        self.cam_norm = nn.LayerNorm(config.embed_dim)
        self.cam_in = nn.Linear(config.embed_dim, cam)
        self.cam_query = nn.Parameter(torch.randn(1, 1, cam) * 0.02)
        self.cam_pool = nn.MultiheadAttention(cam, heads, batch_first=True)
        self.cam_pos = nn.Parameter(torch.randn(max_frames, cam) * 0.02)
        layer = nn.TransformerEncoderLayer(cam, heads, 4 * cam, dropout=0.0, batch_first=True, norm_first=True)
        self.cam_temporal = nn.TransformerEncoder(layer, config.camera_layers, enable_nested_tensor=False)
        self.cam_out = nn.Sequential(nn.LayerNorm(cam), nn.Linear(cam, cam), nn.GELU(), nn.Linear(cam, 9))
        with torch.no_grad():  # start at identity rotation and 60 degree fields of view
            self.cam_out[-1].bias.zero_()
            self.cam_out[-1].bias[6] = 1.0
            self.cam_out[-1].bias[7:] = math.log(1.0 / 2.0)  # sigmoid^-1(1/3): pi/3

    # ----------------------------------------------------------------- helpers
    @classmethod
    def from_head_config(cls, config: DPTHeadConfig) -> TemporalDPTHead:
        """A new head (random weights) of the sizes `config` gives."""
        return cls(**config.to_dict())

    @property
    def head_config(self) -> DPTHeadConfig:
        """The head's sizes as a `DPTHeadConfig`."""
        return DPTHeadConfig(**{name: self.config[name] for name in DPTHeadConfig.__dataclass_fields__})

    def _reassemble(self, taps: list[torch.Tensor], frames: int, height: int, width: int) -> list[torch.Tensor]:
        levels = []
        for i, tokens in enumerate(taps):
            grid = tokens_to_grid(self.norms[i](tokens), frames, height, width)
            x = grid.flatten(0, 1)  # (B*S, D, h, w)
            levels.append(self.resize[i](self.projects[i](x)))
        return levels

    @staticmethod
    def _per_frame(x: torch.Tensor, batch: int) -> torch.Tensor:
        return x.reshape(batch, -1, *x.shape[1:])

    def _camera(self, tokens: torch.Tensor, batch: int, frames: int) -> torch.Tensor:
        x = self.cam_in(self.cam_norm(tokens)).reshape(batch * frames, -1, self.config.camera_dim)
        query = self.cam_query.expand(x.shape[0], -1, -1)
        pooled = self.cam_pool(query, x, x, need_weights=False)[0].reshape(batch, frames, -1)
        y = self.cam_out(self.cam_temporal(pooled + self.cam_pos[:frames]))
        t, q, fov = y[..., :3], y[..., 3:7], y[..., 7:9]
        q = F.normalize(q, dim=-1)
        q = q * torch.where(q[..., 3:4] < 0, -1.0, 1.0)
        return torch.cat([t, q, math.pi * torch.sigmoid(fov)], dim=-1)

    def _high_res(self, l1: torch.Tensor, l2: torch.Tensor, x: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        """refinenet2/1 + shared trunk + task heads for one chunk of frames -> (n, 8, H, W)."""
        x = self.fusion[1](x, l2, l1.shape[-2:])
        x = self.fusion[0](x, l1, (2 * l1.shape[-2], 2 * l1.shape[-1]))
        x = F.interpolate(self.trunk_in(x), size=out_size, mode="bilinear", align_corners=False)
        x = F.relu(self.trunk_out(x))
        return torch.cat([self.depth_head(x), self.points_head(x), self.flow_head(x), self.mask_head(x)], dim=1)

    # ----------------------------------------------------------------- forward
    def forward(self, taps: list[torch.Tensor], frames: int, grid_size: tuple[int, int], out_size: tuple[int, int]) -> DPTOutput:
        """Args:
        taps: four (B, frames*h*w, D) token tensors (shallow to deep).
        frames: latent frames S.
        grid_size: (h, w) patch grid.
        out_size: (H, W) label resolution.
        """
        if len(taps) != 4:
            raise ValueError(f"expected 4 tapped hidden states, got {len(taps)}")
        if frames < 2:
            raise ValueError(f"need at least 2 frames for scene flow, got {frames}")
        batch = taps[0].shape[0]
        h, w = grid_size
        l1, l2, l3, l4 = self._reassemble(taps, frames, h, w)
        l3 = self.temporal_levels[0](self._per_frame(l3, batch)).flatten(0, 1)
        l4 = self.temporal_levels[1](self._per_frame(l4, batch)).flatten(0, 1)
        r1, r2, r3, r4 = (rn(level) for rn, level in zip(self.layer_rn, (l1, l2, l3, l4), strict=True))
        x = self.fusion[3](r4, None, r3.shape[-2:])
        x = self.temporal_fused[0](self._per_frame(x, batch)).flatten(0, 1)
        x = self.fusion[2](x, r3, r2.shape[-2:])
        x = self.temporal_fused[1](self._per_frame(x, batch)).flatten(0, 1)

        chunk = self.config.frames_chunk_size or x.shape[0]
        outs = []
        for start in range(0, x.shape[0], chunk):
            args = (r1[start : start + chunk], r2[start : start + chunk], x[start : start + chunk])
            if self.config.checkpoint_high_res and torch.is_grad_enabled():
                outs.append(checkpoint(self._high_res, *args, out_size, use_reentrant=False))
            else:
                outs.append(self._high_res(*args, out_size))
        y = self._per_frame(torch.cat(outs, dim=0), batch).float()  # (B, S, 8, H, W)

        depth = torch.exp(y[:, :, 0].clamp(-20.0, 20.0))
        points = _inv_log(y[:, :, 1:4]).permute(0, 1, 3, 4, 2)
        scene_flow = y[:, :-1, 4:7].permute(0, 1, 3, 4, 2)
        camera = self._camera(taps[-1], batch, frames).float()
        return DPTOutput(depth=depth, points=points, camera=camera, scene_flow=scene_flow, mask_logits=y[:, :, 7])
