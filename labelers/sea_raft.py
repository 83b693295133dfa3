"""SEA-RAFT optical flow (Wang, Lipson, Deng, ECCV 2024): our implementation of S, M and L.

Written from the architecture notes in reference/sea_raft/ARCHITECTURE.md; module and
parameter names follow the released checkpoints, so the official weights load strictly
in both published layouts:

* `.pth` (Google Drive): a plain state dict in which the projection-shortcut BatchNorm of
  `cnet/fnet.layer{2,3}.0` appears twice, as `bn3.*` and `downsample.1.*` (same tensor);
* `model.safetensors` (Hugging Face): the same tensors de-duplicated, only `bn3.*` kept.

Our residual block owns that BatchNorm once (as `bn3`) and folds `downsample.1.*` into it
while loading, after checking that both copies agree; `SeaRaft.state_dict()` therefore has
the safetensors layout. L is not a separate network: it is the M weights run with 12
refinement iterations instead of 4.

Input conventions are upstream's: RGB in [0, 255], normalised inside to [-1, 1], padded by
edge replication to a multiple of 8 (floor(p/2) before, the rest after) and cropped back.
Upstream needs a padded size of at least 128 px because it halves the last pyramid level
once more than it uses; we skip that halving and need only 64 px (all four correlation
levels non-empty), so outputs can be compared with upstream's from 128 px on.

Uncertainty. The flow head also predicts, per pixel, a mixture of two Laplace
distributions for the error of each flow component: `info` = [l_A, l_B, s_A, s_B] (the
last refinement step's values, convex-upsampled to full resolution like the flow).
Mixture weights are pi = softmax(l_A, l_B); scales are b_A = exp(clamp(s_A, 0, var_max))
(the wide component for ambiguous or occluded pixels) and b_B = exp(clamp(s_B, var_min,
0)), which is 1 px for the released configs (var_min = 0). The model was trained with the
x and y errors independent, each p(e) = pi_A Lap(e; 0, b_A) + pi_B Lap(e; 0, b_B). Our
`uncertainty_px` is the expected end-point error of that model:

    E sqrt(e_x^2 + e_y^2) = sum_{m, n in {A, B}} pi_m pi_n g(b_m, b_n),
    g(b1, b2) = E sqrt(b1^2 X^2 + b2^2 Y^2),  X, Y iid standard Laplace,

and in closed form, with b_hi >= b_lo, r = b_lo / b_hi and R = sqrt(1 + r^2),

    g = b_hi [ (1 + r^3) / R^2 + r^2 / R^3 * ln((R + r)(R + 1) / r) ],

so g(b, b) = b (1 + ln(3 + 2 sqrt 2) / (2 sqrt 2)) = 1.6232 b and g(b, b') -> b as
b' / b -> 0. With b_B = 1 px the uncertainty is therefore at least 1.6232 px: the released
models describe their ordinary errors with a 1-px Laplace, so thresholds on it (see
`labelers.flow.DEFAULT_MAX_UNCERTAINTY_PX`) must sit above that floor.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labelers.flow import FlowResult, check_image_pairs

__all__ = [
    "SeaRaftConfig",
    "SEA_RAFT_VARIANTS",
    "MIN_PADDED_SIZE",
    "SeaRaft",
    "SeaRaftOutput",
    "SeaRaftFlow",
    "expected_epe_from_info",
    "laplace_pair_epe",
    "load_checkpoint_state_dict",
    "infer_variant",
]

MIN_PADDED_SIZE = 64
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class SeaRaftConfig:
    """Architecture and inference settings of one SEA-RAFT variant.

    Attributes:
        variant: "S", "M" or "L" (L = M weights with 12 iterations).
        blocks_per_stage: residual blocks in encoder stages 1-3 (ResNet-18 or -34 trunk).
        iters: refinement iterations after the directly regressed initial flow.
        hidden_dim: width of the hidden state and of the context features.
        stem_dim, stage_dims: encoder widths (stem, stages 1-3).
        corr_levels, corr_radius: correlation pyramid depth and lookup radius.
        var_min, var_max: clamps of the mixture log-scales (see module docstring).
    """

    variant: str = "M"
    blocks_per_stage: tuple[int, int, int] = (3, 4, 6)
    iters: int = 4
    hidden_dim: int = 128
    stem_dim: int = 64
    stage_dims: tuple[int, int, int] = (64, 128, 256)
    corr_levels: int = 4
    corr_radius: int = 4
    var_min: float = 0.0
    var_max: float = 10.0

    def __post_init__(self) -> None:
        if self.iters < 0:
            raise ValueError(f"iters must be >= 0, got {self.iters}")
        if len(self.blocks_per_stage) != 3 or min(self.blocks_per_stage) < 1:
            raise ValueError(f"blocks_per_stage must be three counts >= 1, got {self.blocks_per_stage}")
        if self.var_min > 0 or self.var_max < 0:
            raise ValueError(f"need var_min <= 0 <= var_max, got {self.var_min}, {self.var_max}")

    @property
    def feature_dim(self) -> int:
        """Encoder output width: hidden state and context side by side."""
        return 2 * self.hidden_dim

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


SEA_RAFT_VARIANTS: dict[str, SeaRaftConfig] = {
    "S": SeaRaftConfig(variant="S", blocks_per_stage=(2, 2, 2), iters=4),
    "M": SeaRaftConfig(variant="M", blocks_per_stage=(3, 4, 6), iters=4),
    "L": SeaRaftConfig(variant="L", blocks_per_stage=(3, 4, 6), iters=12),
}


# --------------------------------------------------------------------------- encoders
class _ResidualBlock(nn.Module):
    """conv-BN-ReLU, conv-BN-ReLU, plus a (projected) shortcut, then ReLU; convs have biases."""

    def __init__(self, in_dim: int, out_dim: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_dim, out_dim, 3, stride=stride, padding=1)
        self.bn1 = nn.BatchNorm2d(out_dim)
        self.conv2 = nn.Conv2d(out_dim, out_dim, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(out_dim)
        self.downsample: nn.Sequential | None = None
        self.bn3: nn.BatchNorm2d | None = None
        if stride != 1 or in_dim != out_dim:
            self.downsample = nn.Sequential(nn.Conv2d(in_dim, out_dim, 1, stride=stride))
            self.bn3 = nn.BatchNorm2d(out_dim)
            self.register_load_state_dict_pre_hook(_fold_shortcut_bn_alias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        if self.downsample is not None:
            x = self.bn3(self.downsample(x))
        return F.relu(x + y)


def _fold_shortcut_bn_alias(module: nn.Module, state_dict: dict, prefix: str, *_: Any) -> None:
    """Take the `.pth` alias `downsample.1.*` of the shortcut BatchNorm into `bn3.*`."""
    for name in _BN_KEYS:
        alias, own = f"{prefix}downsample.1.{name}", f"{prefix}bn3.{name}"
        if alias not in state_dict:
            continue
        value = state_dict.pop(alias)
        if own not in state_dict:
            state_dict[own] = value
        elif state_dict[own].shape != value.shape or not torch.equal(state_dict[own], value):
            raise ValueError(f"aliased BatchNorm tensors {own} and {alias} differ; the checkpoint is inconsistent")


class _Encoder(nn.Module):
    """ResNet trunk to 1/8 resolution: 7x7/2 stem, three stages (strides 1, 2, 2), 1x1 head."""

    def __init__(self, in_channels: int, cfg: SeaRaftConfig) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, cfg.stem_dim, 7, stride=2, padding=3)
        self.bn1 = nn.BatchNorm2d(cfg.stem_dim)
        dims = (cfg.stem_dim, *cfg.stage_dims)
        for stage, (blocks, stride) in enumerate(zip(cfg.blocks_per_stage, (1, 2, 2))):
            layer = [_ResidualBlock(dims[stage], dims[stage + 1], stride)]
            layer += [_ResidualBlock(dims[stage + 1], dims[stage + 1], 1) for _ in range(blocks - 1)]
            setattr(self, f"layer{stage + 1}", nn.Sequential(*layer))
        self.final_conv = nn.Conv2d(cfg.stage_dims[-1], cfg.feature_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.final_conv(x)


# --------------------------------------------------------------------------- update block
class _MotionEncoder(nn.Module):
    """Correlation and current flow -> 126 motion features, plus the flow itself (128)."""

    def __init__(self, corr_channels: int) -> None:
        super().__init__()
        self.convc1 = nn.Conv2d(corr_channels, 256, 1)
        self.convc2 = nn.Conv2d(256, 192, 3, padding=1)
        self.convf1 = nn.Conv2d(2, 128, 7, padding=3)
        self.convf2 = nn.Conv2d(128, 64, 3, padding=1)
        self.conv = nn.Conv2d(192 + 64, 128 - 2, 3, padding=1)

    def forward(self, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        c = F.relu(self.convc2(F.relu(self.convc1(corr))))
        f = F.relu(self.convf2(F.relu(self.convf1(flow))))
        out = F.relu(self.conv(torch.cat([c, f], dim=1)))
        return torch.cat([out, flow.to(out.dtype)], dim=1)


class _ConvNextBlock(nn.Module):
    """Depthwise 7x7, LayerNorm, MLP (x -> 4*out_dim -> x), layer scale, residual, 1x1 to out_dim."""

    def __init__(self, dim: int, out_dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * out_dim)
        self.pwconv2 = nn.Linear(4 * out_dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6))
        self.final = nn.Conv2d(dim, out_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(F.gelu(self.pwconv1(self.norm(y))))
        y = (self.gamma * y).permute(0, 3, 1, 2)
        return self.final(x + y)


class _UpdateBlock(nn.Module):
    def __init__(self, cfg: SeaRaftConfig) -> None:
        super().__init__()
        corr_channels = cfg.corr_levels * (2 * cfg.corr_radius + 1) ** 2
        self.encoder = _MotionEncoder(corr_channels)
        block_in = 3 * cfg.hidden_dim  # hidden state + context + motion features
        self.refine = nn.ModuleList([_ConvNextBlock(block_in, cfg.hidden_dim) for _ in range(2)])

    def forward(self, net: torch.Tensor, context: torch.Tensor, flow: torch.Tensor, corr: torch.Tensor) -> torch.Tensor:
        inp = torch.cat([context, self.encoder(flow, corr)], dim=1)
        for block in self.refine:
            net = block(torch.cat([net, inp], dim=1))
        return net


# --------------------------------------------------------------------------- correlation
def _correlation_pyramid(fmap1: torch.Tensor, fmap2: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """All-pairs correlation <f1(p), f2(q)> / sqrt(C), with f2 halved bilinearly per level.

    Returns:
        `levels` float32 tensors of shape (N*h*w, 1, h_i, w_i).
    """
    n, c, h, w = fmap1.shape
    # Scaling both sides by C^-1/4 gives the 1/sqrt(C) normalisation without fp16 overflow.
    scale = c**-0.25
    f1 = (fmap1 * scale).flatten(2).transpose(1, 2)
    f2 = fmap2 * scale
    pyramid = []
    for level in range(levels):
        if level:
            f2 = F.interpolate(f2, scale_factor=0.5, mode="bilinear", align_corners=False)
        corr = torch.bmm(f1, f2.flatten(2)).float()
        pyramid.append(corr.reshape(n * h * w, 1, *f2.shape[-2:]))
    return pyramid


def _lookup(pyramid: list[torch.Tensor], coords: torch.Tensor, radius: int) -> torch.Tensor:
    """Bilinear (2r+1)^2 windows around coords / 2^level, zeros outside the map.

    Args:
        coords: (N, 2, h, w) float32 (x, y) positions in frame 2 at 1/8 resolution.

    Returns:
        (N, levels * (2r+1)^2, h, w); per level, channel (2r+1) * i + j holds the x-offset
        i - r and the y-offset j - r (x is the slow index, as the trained weights expect).
    """
    n, _, h, w = coords.shape
    offsets = torch.arange(-radius, radius + 1, device=coords.device, dtype=coords.dtype)
    window = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=-1)  # [i, j] = (dx_i, dy_j)
    centres = coords.permute(0, 2, 3, 1).reshape(n * h * w, 1, 1, 2)
    sampled = []
    for level, corr in enumerate(pyramid):
        height, width = corr.shape[-2:]
        points = centres / 2**level + window
        # align_corners=False normalisation maps pixel centres exactly and stays defined for 1-px maps.
        size = torch.tensor([width, height], device=coords.device, dtype=coords.dtype)
        grid = (2 * points + 1) / size - 1
        out = F.grid_sample(corr, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        sampled.append(out.reshape(n, h, w, -1))
    return torch.cat(sampled, dim=-1).permute(0, 3, 1, 2)


def _convex_upsample(x: torch.Tensor, mask: torch.Tensor, factor: int = 8) -> torch.Tensor:
    """Each fine pixel is a softmax-weighted mix of the 3x3 coarse neighbourhood (zero padded).

    Args:
        x: (N, C, h, w); mask: (N, 9 * factor^2, h, w), neighbour index slowest.

    Returns:
        (N, C, factor*h, factor*w).
    """
    n, c, h, w = x.shape
    weights = torch.softmax(mask.reshape(n, 1, 9, factor, factor, h, w), dim=2)
    patches = F.unfold(x, 3, padding=1).reshape(n, c, 9, 1, 1, h, w)
    up = (weights * patches).sum(dim=2)  # (n, c, factor, factor, h, w)
    return up.permute(0, 1, 4, 2, 5, 3).reshape(n, c, factor * h, factor * w)


# --------------------------------------------------------------------------- uncertainty
_G_EQUAL = 1.0 + math.log(3.0 + 2.0 * math.sqrt(2.0)) / (2.0 * math.sqrt(2.0))


def laplace_pair_epe(b1: torch.Tensor, b2: torch.Tensor) -> torch.Tensor:
    """E sqrt(b1^2 X^2 + b2^2 Y^2) for X, Y iid standard Laplace, elementwise (b > 0)."""
    b_hi, b_lo = torch.maximum(b1, b2), torch.minimum(b1, b2)
    r = b_lo / b_hi
    r2 = r * r
    big_r2 = 1.0 + r2
    big_r = torch.sqrt(big_r2)
    log_term = torch.log((big_r + r) * (big_r + 1.0) / r)
    return b_hi * ((1.0 + r2 * r) / big_r2 + r2 / (big_r2 * big_r) * log_term)


def expected_epe_from_info(info: torch.Tensor, var_min: float = 0.0, var_max: float = 10.0) -> torch.Tensor:
    """Expected end-point error of SEA-RAFT's Laplace mixture (derivation in the module docstring).

    Args:
        info: (N, 4, H, W) raw [logit_A, logit_B, log_scale_A, log_scale_B].

    Returns:
        (N, H, W) float32 expected end-point error in pixels.
    """
    if info.ndim != 4 or info.shape[1] != 4:
        raise ValueError(f"info must be (N, 4, H, W), got {tuple(info.shape)}")
    info = info.double()
    weights = torch.softmax(info[:, :2], dim=1)
    b_a = torch.exp(info[:, 2].clamp(0.0, var_max))
    b_b = torch.exp(info[:, 3].clamp(var_min, 0.0))
    p_a, p_b = weights[:, 0], weights[:, 1]
    epe = (p_a * p_a * b_a + p_b * p_b * b_b) * _G_EQUAL + 2.0 * p_a * p_b * laplace_pair_epe(b_a, b_b)
    return epe.float()


# --------------------------------------------------------------------------- network
@dataclass
class SeaRaftOutput:
    """Network output at the input resolution.

    Attributes:
        flow: (N, 2, H, W) float32 final flow in pixels, channels (dx, dy).
        info: (N, 4, H, W) float32 raw mixture parameters of the final step.
        flow_predictions, info_predictions: all iters + 1 predictions (index 0 is the
            directly regressed initial flow) when requested, else empty.
    """

    flow: torch.Tensor
    info: torch.Tensor
    flow_predictions: list[torch.Tensor]
    info_predictions: list[torch.Tensor]


class SeaRaft(nn.Module):
    """The SEA-RAFT network (all variants; the config picks depth and iterations).

    Shapes: images (N, 3, H, W) RGB in [0, 255]; any H, W whose padded size is >= 64.
    """

    def __init__(self, config: SeaRaftConfig | None = None) -> None:
        super().__init__()
        self.config = config or SEA_RAFT_VARIANTS["M"]
        cfg = self.config
        self.cnet = _Encoder(6, cfg)
        self.fnet = _Encoder(3, cfg)
        self.init_conv = nn.Conv2d(cfg.feature_dim, cfg.feature_dim, 3, padding=1)
        self.flow_head = nn.Sequential(
            nn.Conv2d(cfg.hidden_dim, 256, 3, padding=1), nn.ReLU(), nn.Conv2d(256, 6, 3, padding=1)
        )
        self.upsample_weight = nn.Sequential(
            nn.Conv2d(cfg.hidden_dim, 256, 3, padding=1), nn.ReLU(), nn.Conv2d(256, 9 * 8 * 8, 1)
        )
        self.update_block = _UpdateBlock(cfg)

    def forward(
        self,
        image1: torch.Tensor,
        image2: torch.Tensor,
        iters: int | None = None,
        return_all: bool = False,
    ) -> SeaRaftOutput:
        """Flow from image1 to image2.

        Args:
            image1, image2: (N, 3, H, W) RGB in [0, 255].
            iters: refinement iterations (default: the config's).
            return_all: also return every intermediate prediction.
        """
        if image1.ndim != 4 or image1.shape[1] != 3 or image1.shape != image2.shape:
            raise ValueError(f"images must both be (N, 3, H, W), got {tuple(image1.shape)} and {tuple(image2.shape)}")
        iters = self.config.iters if iters is None else iters
        if iters < 0:
            raise ValueError(f"iters must be >= 0, got {iters}")
        height, width = image1.shape[-2:]
        pad = _padding(height, width)
        image1 = F.pad(image1.float() / 127.5 - 1.0, pad, mode="replicate")
        image2 = F.pad(image2.float() / 127.5 - 1.0, pad, mode="replicate")

        hidden = self.config.hidden_dim
        features = self.init_conv(self.cnet(torch.cat([image1, image2], dim=1)))
        net, context = features[:, :hidden], features[:, hidden:]
        head = self.flow_head(net)
        flow = head[:, :2].float()  # 1/8-resolution pixels; accumulated in float32
        info = head[:, 2:]
        predictions = [(flow, info, net)] if return_all or iters == 0 else []

        if iters:
            fmap1, fmap2 = self.fnet(torch.cat([image1, image2], dim=0)).chunk(2, dim=0)
            pyramid = _correlation_pyramid(fmap1, fmap2, self.config.corr_levels)
            base = _coords_grid(flow)
            for step in range(iters):
                corr = _lookup(pyramid, base + flow, self.config.corr_radius)
                net = self.update_block(net, context, flow, corr)
                head = self.flow_head(net)
                flow = flow + head[:, :2].float()
                info = head[:, 2:]
                if return_all or step == iters - 1:
                    predictions.append((flow, info, net))

        outputs = [self._upsample(f, i, n, pad, height, width) for f, i, n in predictions]
        return SeaRaftOutput(
            flow=outputs[-1][0],
            info=outputs[-1][1],
            flow_predictions=[o[0] for o in outputs] if return_all else [],
            info_predictions=[o[1] for o in outputs] if return_all else [],
        )

    def _upsample(
        self,
        flow: torch.Tensor,
        info: torch.Tensor,
        net: torch.Tensor,
        pad: tuple[int, int, int, int],
        height: int,
        width: int,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Convex-upsample flow (x8 in magnitude) and raw info, then crop the padding."""
        mask = 0.25 * self.upsample_weight(net).float()
        flow_full = _convex_upsample(8.0 * flow, mask)
        info_full = _convex_upsample(info.float(), mask)
        left, _, top, _ = pad
        crop = (slice(None), slice(None), slice(top, top + height), slice(left, left + width))
        return flow_full[crop], info_full[crop]


def _padding(height: int, width: int) -> tuple[int, int, int, int]:
    """(left, right, top, bottom) replicate padding to a multiple of 8, split floor/ceil."""
    pad_h, pad_w = -height % 8, -width % 8
    if height + pad_h < MIN_PADDED_SIZE or width + pad_w < MIN_PADDED_SIZE:
        raise ValueError(
            f"SEA-RAFT input {height}x{width} is too small: padded to a multiple of 8 it must be at least "
            f"{MIN_PADDED_SIZE}x{MIN_PADDED_SIZE} (upstream needs 128x128)"
        )
    return pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2


def _coords_grid(flow: torch.Tensor) -> torch.Tensor:
    """(1, 2, h, w) float32 (x, y) = (column, row) of every 1/8-resolution pixel."""
    h, w = flow.shape[-2:]
    ys, xs = torch.meshgrid(
        torch.arange(h, device=flow.device, dtype=torch.float32),
        torch.arange(w, device=flow.device, dtype=torch.float32),
        indexing="ij",
    )
    return torch.stack([xs, ys])[None]


# --------------------------------------------------------------------------- checkpoints
def load_checkpoint_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an official SEA-RAFT checkpoint (`.pth` state dict or `.safetensors`) onto the CPU.

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file cannot be read as a state dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SEA-RAFT checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state_dict = load_file(str(path), device="cpu")
        else:
            state_dict = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # the readers raise many types for a wrong file; name the path once
        raise ValueError(f"{path}: not a readable SEA-RAFT checkpoint ({type(err).__name__}: {err})") from err
    if not isinstance(state_dict, dict):
        raise ValueError(f"{path}: expected a plain state dict of tensors, got {type(state_dict).__name__}")
    wrapped = sorted(k for k, v in state_dict.items() if not isinstance(v, torch.Tensor))
    if wrapped:
        raise ValueError(
            f"{path}: expected a plain state dict of tensors (the official layouts), but entries "
            f"{wrapped[:3]} are not tensors; unwrap e.g. a Lightning {{'state_dict': ...}} checkpoint first"
        )
    return state_dict


def infer_variant(state_dict: dict[str, torch.Tensor], source: str = "state dict") -> str:
    """"S" or "M" from the depth of the context encoder's first stage (L shares M's weights)."""
    blocks = {key.split(".")[2] for key in state_dict if key.startswith("cnet.layer1.")}
    if not blocks or "cnet.conv1.weight" not in state_dict:
        sample = ", ".join(sorted(state_dict)[:3]) or "none"
        raise ValueError(f"{source}: not a SEA-RAFT checkpoint (no cnet.conv1/cnet.layer1 keys; first keys: {sample})")
    for name, cfg in SEA_RAFT_VARIANTS.items():
        if cfg.blocks_per_stage[0] == len(blocks):
            return name
    raise ValueError(
        f"{source}: cnet.layer1 has {len(blocks)} blocks, which matches no SEA-RAFT variant (S: 2, M/L: 3)"
    )


def _weights_variant_family(variant: str) -> str:
    return "M" if variant == "L" else variant


# --------------------------------------------------------------------------- labeler
class SeaRaftFlow:
    """`FlowEstimator` running `SeaRaft` on batches of uint8 image pairs.

    fp16 autocast is used on CUDA when `fp16` is set (correlation, flow accumulation,
    upsampling and uncertainty stay float32); on the CPU everything is float32 and
    deterministic.
    """

    name = "sea_raft"
    version = "1"

    def __init__(
        self,
        model: SeaRaft,
        device: str | torch.device | None = None,
        iters: int | None = None,
        fp16: bool = True,
        batch_size: int = 4,
        weights_sha256: str | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = model.eval().to(self.device)
        self.iters = model.config.iters if iters is None else iters
        self.fp16 = fp16
        self.batch_size = batch_size
        self.weights_sha256 = weights_sha256

    @classmethod
    def from_checkpoint(cls, path: str | Path, variant: str | None = None, **kwargs: Any) -> SeaRaftFlow:
        """Load official weights from a local `.pth` or `.safetensors` file, strictly.

        Args:
            path: checkpoint file.
            variant: "S", "M" or "L"; inferred from the weights if None (M, not L, for M
                weights: L is only M with 12 iterations).
            **kwargs: passed to the constructor (device, iters, fp16, batch_size).

        Raises:
            FileNotFoundError: missing file. ValueError: unreadable file, not SEA-RAFT,
            weights of another variant, or any missing, unexpected or mis-shaped key.
        """
        state_dict = load_checkpoint_state_dict(path)
        found = infer_variant(state_dict, source=str(path))
        if variant is None:
            variant = found
        if variant not in SEA_RAFT_VARIANTS:
            raise ValueError(f"variant must be one of {sorted(SEA_RAFT_VARIANTS)}, got {variant!r}")
        if _weights_variant_family(variant) != found:
            raise ValueError(
                f"{path}: checkpoint holds SEA-RAFT {'S' if found == 'S' else 'M/L'} weights, "
                f"but variant {variant!r} was requested"
            )
        model = SeaRaft(SEA_RAFT_VARIANTS[variant])
        try:
            model.load_state_dict(state_dict, strict=True)
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"{path}: weights do not fit SEA-RAFT {variant}: {err}") from err
        return cls(model, weights_sha256=_sha256(Path(path)), **kwargs)

    @property
    def params(self) -> dict[str, Any]:
        return {
            **self.model.config.to_dict(),
            "iters": self.iters,
            "fp16": self.fp16 and self.device.type == "cuda",
            "weights_sha256": self.weights_sha256,
        }

    def estimate(self, images_src: np.ndarray, images_dst: np.ndarray) -> FlowResult:
        """Flow src -> dst of N pairs (N, H, W, 3) uint8 RGB, with expected EPE per pixel."""
        check_image_pairs(images_src, images_dst)
        flows, uncertainties = [], []
        for start in range(0, images_src.shape[0], self.batch_size):
            stop = start + self.batch_size
            flow, uncertainty = self._run(images_src[start:stop], images_dst[start:stop])
            flows.append(flow)
            uncertainties.append(uncertainty)
        return FlowResult(np.concatenate(flows), np.concatenate(uncertainties))

    def estimate_bidirectional(self, images_src: np.ndarray, images_dst: np.ndarray) -> tuple[FlowResult, FlowResult]:
        """Forward and backward flow, as one batch of 2N pairs."""
        check_image_pairs(images_src, images_dst)
        both = self.estimate(np.concatenate([images_src, images_dst]), np.concatenate([images_dst, images_src]))
        n = images_src.shape[0]
        return (
            FlowResult(both.flow_px[:n], both.uncertainty_px[:n]),
            FlowResult(both.flow_px[n:], both.uncertainty_px[n:]),
        )

    @torch.inference_mode()
    def _run(self, images_src: np.ndarray, images_dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        use_fp16 = self.fp16 and self.device.type == "cuda"
        with torch.autocast(device_type=self.device.type, dtype=torch.float16, enabled=use_fp16):
            out = self.model(self._to_tensor(images_src), self._to_tensor(images_dst), iters=self.iters)
        cfg = self.model.config
        uncertainty = expected_epe_from_info(out.info, cfg.var_min, cfg.var_max)
        return out.flow.permute(0, 2, 3, 1).float().cpu().numpy(), uncertainty.cpu().numpy()

    def _to_tensor(self, images: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 in [0, 255] on the model's device."""
        return torch.from_numpy(np.ascontiguousarray(images)).to(self.device).permute(0, 3, 1, 2).float()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

