"""Geometry-motion augmented CogVideoX DiT.

WorldReel widens only the DiT's input patch projection and its output projection so the
transformer sees, and predicts, geometry-motion (gm) latents next to the RGB latents. All
transformer blocks are untouched.

Channel layout (the pretrained channels keep their positions, new ones go last):

    input  = [noisy_rgb (rgb) | image_cond (image_cond) | noisy_gm (gm)]   I2V: 16 | 16 | 16
    input  = [noisy_rgb (rgb) | noisy_gm (gm)]                             T2V: 16 | 16
    output = [rgb (rgb) | gm (gm)]

Why the new channels go last: in both diffusers layouts the input channel is the slowest
axis of the patch projection's input features (1.0: `Conv2d(C, D, p, p)`, weight
(D, C, p, p); 1.5: `Linear(C*p_t*p*p, D)` fed by a (C, p_t, p, p) flatten), and the output
channel is the slowest axis of `proj_out`'s rows (unpatchify reshapes rows to (C, p, p) or
(C, p_t, p, p)). So appending channels appends a contiguous block of input columns / output
rows, and the pretrained weights are copied to the leading block unchanged
(`tests/model/test_model_dit.py` checks this against diffusers' own forward).

Initialisation:
- new input columns are zero, so at step 0 the model ignores the gm latents and its RGB
  prediction equals the base model's exactly;
- new output rows (`gm_out_init`): "zero" (default) makes the initial gm v-prediction 0,
  the minimum-MSE guess for a target independent of what the model sees, so the initial gm
  loss is Var(v) ~= 1 and the RGB path is untouched; the rows still get non-zero gradients
  at once because the final hidden states are non-zero. "copy_rgb" duplicates the RGB rows
  (GeoVideo's choice) for experiments.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.models.embeddings import get_3d_rotary_pos_embed
from torch import nn

__all__ = [
    "COGVIDEOX_5B_I2V_CONFIG",
    "GMAugmentationConfig",
    "default_tap_blocks",
    "GeoMotionDiT",
    "GeoMotionDiTOutput",
    "expand_transformer",
    "rotary_embeddings",
    "tiny_transformer_config",
]

AUGMENTATION_FILE = "gm_augmentation.json"


def default_tap_blocks(num_layers: int) -> list[int]:
    """Four DPT taps spread over the depth: [10, 20, 30, 41] for CogVideoX-5B's 42 blocks (VGGT
    taps [4, 11, 17, 23] of 24), else blocks L/4, L/2, 3L/4 (rounded down) and the last one."""
    if num_layers == 42:
        return [10, 20, 30, 41]
    return [num_layers * k // 4 for k in (1, 2, 3)] + [num_layers - 1]


@dataclass
class GMAugmentationConfig:
    """How the base DiT is widened (serialisable; saved next to the transformer weights).

    Attributes:
        rgb_channels: VAE latent channels of the noisy RGB video (16 for CogVideoX).
        image_cond_channels: channels of the I2V image condition (16), 0 for T2V models.
        gm_channels: VAE latent channels of the geometry-motion video (16: same VAE).
        gm_out_init: initialisation of the new `proj_out` rows, "zero" or "copy_rgb".
        tap_blocks: indices of the transformer blocks whose outputs feed the DPT head.
    """

    rgb_channels: int = 16
    image_cond_channels: int = 16
    gm_channels: int = 16
    gm_out_init: Literal["zero", "copy_rgb"] = "zero"
    tap_blocks: list[int] = field(default_factory=lambda: default_tap_blocks(42))

    def __post_init__(self) -> None:
        if self.rgb_channels <= 0 or self.gm_channels <= 0 or self.image_cond_channels < 0:
            raise ValueError("rgb_channels and gm_channels must be > 0, image_cond_channels >= 0")
        if self.gm_out_init not in ("zero", "copy_rgb"):
            raise ValueError(f"gm_out_init must be 'zero' or 'copy_rgb', got {self.gm_out_init!r}")
        if self.gm_out_init == "copy_rgb" and self.gm_channels > self.rgb_channels:
            raise ValueError("gm_out_init='copy_rgb' needs gm_channels <= rgb_channels")
        self.tap_blocks = [int(i) for i in self.tap_blocks]

    @property
    def base_in_channels(self) -> int:
        return self.rgb_channels + self.image_cond_channels

    @property
    def in_channels(self) -> int:
        return self.base_in_channels + self.gm_channels

    @property
    def out_channels(self) -> int:
        return self.rgb_channels + self.gm_channels

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GMAugmentationConfig:
        return cls(**data)


# The transformer config of CogVideoX-5B-I2V (diffusers layout): 42 blocks, hidden 3072, 48 heads,
# input [noisy | image] = 32 channels, 13 x 60 x 90 latents (49 x 480 x 720 video), RoPE and
# learned positional embeddings. Used to build the full-size architecture with random weights.
COGVIDEOX_5B_I2V_CONFIG: dict[str, Any] = dict(
    num_attention_heads=48,
    attention_head_dim=64,
    in_channels=32,
    out_channels=16,
    flip_sin_to_cos=True,
    freq_shift=0,
    time_embed_dim=512,
    ofs_embed_dim=None,
    text_embed_dim=4096,
    num_layers=42,
    dropout=0.0,
    attention_bias=True,
    sample_width=90,
    sample_height=60,
    sample_frames=49,
    patch_size=2,
    patch_size_t=None,
    temporal_compression_ratio=4,
    max_text_seq_length=226,
    activation_fn="gelu-approximate",
    timestep_activation_fn="silu",
    norm_elementwise_affine=True,
    norm_eps=1e-5,
    spatial_interpolation_scale=1.875,
    temporal_interpolation_scale=1.0,
    use_rotary_positional_embeddings=True,
    use_learned_positional_embeddings=True,
)


def tiny_transformer_config(image_conditioned: bool = True, patch_size_t: int | None = None, **overrides: Any) -> dict:
    """A CogVideoX transformer config small enough for CPU tests (2 layers, hidden 32).

    Same structure as CogVideoX-5B-I2V (rotary + learned positional embeddings for I2V),
    with an 8x12 latent grid and 3 latent frames (9 video frames).
    """
    config = dict(
        num_attention_heads=2,
        attention_head_dim=16,
        in_channels=32 if image_conditioned else 16,
        out_channels=16,
        time_embed_dim=16,
        text_embed_dim=24,
        num_layers=2,
        sample_width=12,
        sample_height=8,
        sample_frames=9,
        patch_size=2,
        patch_size_t=patch_size_t,
        max_text_seq_length=4,
        use_rotary_positional_embeddings=True,
        use_learned_positional_embeddings=image_conditioned and patch_size_t is None,
    )
    config.update(overrides)
    return config


def _patch_block(config: Any) -> int:
    """Number of input features (patch projection) / output rows (proj_out) per latent channel."""
    p_t = config.patch_size_t or 1
    return p_t * config.patch_size * config.patch_size


@torch.no_grad()
def _expand_patch_embed(transformer: CogVideoXTransformer3DModel, new_in: int) -> None:
    old = transformer.patch_embed.proj
    old_in = transformer.config.in_channels
    if isinstance(old, nn.Conv2d):
        new = nn.Conv2d(new_in, old.out_channels, old.kernel_size, old.stride, bias=old.bias is not None)
        new = new.to(device=old.weight.device, dtype=old.weight.dtype)
        new.weight.zero_()
        new.weight[:, :old_in].copy_(old.weight)
    else:
        block = _patch_block(transformer.config)
        new = nn.Linear(new_in * block, old.out_features, bias=old.bias is not None)
        new = new.to(device=old.weight.device, dtype=old.weight.dtype)
        new.weight.zero_()
        new.weight[:, : old_in * block].copy_(old.weight)
    if old.bias is not None:
        new.bias.copy_(old.bias)
    new.requires_grad_(old.weight.requires_grad)
    transformer.patch_embed.proj = new


@torch.no_grad()
def _expand_proj_out(transformer: CogVideoXTransformer3DModel, aug: GMAugmentationConfig) -> None:
    old = transformer.proj_out
    block = _patch_block(transformer.config)
    rgb_rows = aug.rgb_channels * block
    gm_rows = aug.gm_channels * block
    new = nn.Linear(old.in_features, rgb_rows + gm_rows).to(device=old.weight.device, dtype=old.weight.dtype)
    new.weight[:rgb_rows].copy_(old.weight)
    new.bias[:rgb_rows].copy_(old.bias)
    if aug.gm_out_init == "zero":
        new.weight[rgb_rows:].zero_()
        new.bias[rgb_rows:].zero_()
    else:
        new.weight[rgb_rows:].copy_(old.weight[:gm_rows])
        new.bias[rgb_rows:].copy_(old.bias[:gm_rows])
    new.requires_grad_(old.weight.requires_grad)
    transformer.proj_out = new


def expand_transformer(transformer: CogVideoXTransformer3DModel, aug: GMAugmentationConfig) -> CogVideoXTransformer3DModel:
    """Widen a base CogVideoX transformer in place for gm latents (see the module docstring).

    The base must have in_channels = rgb + image_cond and out_channels = rgb; afterwards its
    config says in_channels = rgb + image_cond + gm and out_channels = rgb + gm, so it saves
    and loads with plain diffusers `save_pretrained` / `from_pretrained`.
    """
    config = transformer.config
    if config.in_channels != aug.base_in_channels or (config.out_channels or config.in_channels) != aug.rgb_channels:
        raise ValueError(
            f"base transformer has in/out channels {config.in_channels}/{config.out_channels}, "
            f"augmentation expects {aug.base_in_channels}/{aug.rgb_channels}"
        )
    _expand_patch_embed(transformer, aug.in_channels)
    _expand_proj_out(transformer, aug)
    transformer.register_to_config(in_channels=aug.in_channels, out_channels=aug.out_channels)
    return transformer


def rotary_embeddings(
    config: Any, latent_frames: int, latent_height: int, latent_width: int, device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """3D RoPE tables exactly as diffusers' CogVideoX pipelines build them (None if unused)."""
    if not config.use_rotary_positional_embeddings:
        return None
    p, p_t = config.patch_size, config.patch_size_t
    grid_h, grid_w = latent_height // p, latent_width // p
    base_w, base_h = config.sample_width // p, config.sample_height // p
    if p_t is None:
        crops = _resize_crop_region_for_grid((grid_h, grid_w), base_w, base_h)
        return get_3d_rotary_pos_embed(
            embed_dim=config.attention_head_dim,
            crops_coords=crops,
            grid_size=(grid_h, grid_w),
            temporal_size=latent_frames,
            device=device,
        )
    return get_3d_rotary_pos_embed(
        embed_dim=config.attention_head_dim,
        crops_coords=None,
        grid_size=(grid_h, grid_w),
        temporal_size=(latent_frames + p_t - 1) // p_t,
        grid_type="slice",
        max_size=(base_h, base_w),
        device=device,
    )


def _resize_crop_region_for_grid(src: tuple[int, int], tgt_width: int, tgt_height: int):
    # Same arithmetic as diffusers' CogVideoX pipelines: fit the grid into the base grid, centred.
    h, w = src
    if h / w > tgt_height / tgt_width:
        resize_h, resize_w = tgt_height, int(round(tgt_height / h * w))
    else:
        resize_w, resize_h = tgt_width, int(round(tgt_width / w * h))
    top = int(round((tgt_height - resize_h) / 2.0))
    left = int(round((tgt_width - resize_w) / 2.0))
    return (top, left), (top + resize_h, left + resize_w)


@dataclass
class GeoMotionDiTOutput:
    """rgb: (B, F, rgb, h, w) and gm: (B, F, gm, h, w) v-predictions; hidden_states: video
    tokens (B, N, D) of each tap block, in `tap_blocks` order (None unless requested)."""

    rgb: torch.Tensor
    gm: torch.Tensor
    hidden_states: list[torch.Tensor] | None = None


class GeoMotionDiT(nn.Module):
    """A widened `CogVideoXTransformer3DModel` plus its augmentation config.

    Latents use diffusers' CogVideoX layout (B, F, C, h, w). Token order of the tapped
    hidden states is diffusers': frame-major, then rows, then columns of the patch grid
    (see `model.dpt_head.tokens_to_grid`).
    """

    def __init__(self, transformer: CogVideoXTransformer3DModel, aug: GMAugmentationConfig) -> None:
        super().__init__()
        if transformer.config.in_channels != aug.in_channels or transformer.config.out_channels != aug.out_channels:
            raise ValueError(
                f"transformer in/out channels {transformer.config.in_channels}/{transformer.config.out_channels} "
                f"do not match the augmentation ({aug.in_channels}/{aug.out_channels}); use expand_transformer first"
            )
        bad = [i for i in aug.tap_blocks if not 0 <= i < transformer.config.num_layers]
        if bad:
            raise ValueError(f"tap_blocks {bad} outside 0..{transformer.config.num_layers - 1}")
        self.transformer = transformer
        self.aug = aug
        self._taps: dict[int, torch.Tensor] | None = None
        for index in aug.tap_blocks:
            transformer.transformer_blocks[index].register_forward_hook(self._make_hook(index))

    # ----------------------------------------------------------------- construction
    @classmethod
    def from_config(cls, transformer_config: dict, aug: GMAugmentationConfig) -> GeoMotionDiT:
        """Random-weight base built from a diffusers transformer config, then widened."""
        base = CogVideoXTransformer3DModel.from_config(transformer_config)
        return cls(expand_transformer(base, aug), aug)

    @classmethod
    def from_pretrained(
        cls,
        local_path: str | os.PathLike,
        aug: GMAugmentationConfig | None = None,
        subfolder: str | None = None,
        torch_dtype: torch.dtype | None = None,
    ) -> GeoMotionDiT:
        """Load from a local folder, never the hub.

        A folder holding `gm_augmentation.json` is an already widened WorldReel checkpoint
        (written by `save_pretrained`) and loads as is; any other folder is a base diffusers
        CogVideoX checkpoint (e.g. CogVideoX-5b-I2V with `subfolder="transformer"`), widened
        with `aug` (defaults to `GMAugmentationConfig()`).
        """
        root = Path(local_path)
        folder = root / subfolder if subfolder else root
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder} is not a local directory (hub ids are not accepted)")
        kwargs: dict[str, Any] = {"local_files_only": True}
        # float32 is what diffusers builds; asking for it would also cast the float64 positional table
        if torch_dtype not in (None, torch.float32):
            kwargs["torch_dtype"] = torch_dtype
        saved = folder / AUGMENTATION_FILE
        if saved.exists():
            saved_aug = GMAugmentationConfig.from_dict(json.loads(saved.read_text()))
            if aug is not None and aug.to_dict() != saved_aug.to_dict():
                raise ValueError(f"{folder} is already widened with {saved_aug}, not {aug}")
            return cls(CogVideoXTransformer3DModel.from_pretrained(folder, **kwargs), saved_aug)
        aug = aug or GMAugmentationConfig()
        base = CogVideoXTransformer3DModel.from_pretrained(folder, **kwargs)
        return cls(expand_transformer(base, aug), aug)

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """diffusers weights + config of the widened transformer, and the augmentation config."""
        self.transformer.save_pretrained(path)
        (Path(path) / AUGMENTATION_FILE).write_text(json.dumps(self.aug.to_dict(), indent=2))

    # ----------------------------------------------------------------- forward
    def _make_hook(self, index: int):
        def hook(module: nn.Module, args: Any, output: tuple[torch.Tensor, torch.Tensor]) -> None:
            # Only record during our own forward; gradient checkpointing re-runs blocks in backward.
            if self._taps is not None:
                self._taps[index] = output[0]

        return hook

    def enable_gradient_checkpointing(self) -> None:
        self.transformer.enable_gradient_checkpointing()

    @property
    def config(self) -> Any:
        return self.transformer.config

    def forward(
        self,
        rgb_latents: torch.Tensor,
        gm_latents: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        image_latents: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        ofs: torch.Tensor | None = None,
        return_hidden_states: bool = False,
    ) -> GeoMotionDiTOutput:
        """Predict v for the RGB and gm latents.

        Args:
            rgb_latents: (B, F, rgb, h, w) noisy RGB latents.
            gm_latents: (B, F, gm, h, w) noisy geometry-motion latents.
            encoder_hidden_states: (B, L, text_embed_dim).
            timestep: (B,) diffusion timesteps.
            image_latents: (B, F, image_cond, h, w) I2V condition (required iff the model has one).
            image_rotary_emb: RoPE tables; built with `rotary_embeddings` when None.
            return_hidden_states: also return the tapped blocks' video tokens.
        """
        aug = self.aug
        if rgb_latents.ndim != 5 or rgb_latents.shape[2] != aug.rgb_channels:
            raise ValueError(f"rgb_latents must be (B, F, {aug.rgb_channels}, h, w), got {tuple(rgb_latents.shape)}")
        expected_gm = (*rgb_latents.shape[:2], aug.gm_channels, *rgb_latents.shape[3:])
        if tuple(gm_latents.shape) != expected_gm:
            raise ValueError(f"gm_latents must be {expected_gm}, got {tuple(gm_latents.shape)}")
        parts = [rgb_latents]
        if aug.image_cond_channels:
            expected_image = (*rgb_latents.shape[:2], aug.image_cond_channels, *rgb_latents.shape[3:])
            if image_latents is None or tuple(image_latents.shape) != expected_image:
                got = None if image_latents is None else tuple(image_latents.shape)
                raise ValueError(f"image_latents must be {expected_image}, got {got}")
            parts.append(image_latents)
        elif image_latents is not None:
            raise ValueError("this model has no image condition channels; pass image_latents=None")
        parts.append(gm_latents)
        hidden = torch.cat(parts, dim=2)
        if image_rotary_emb is None:
            _, frames, _, height, width = hidden.shape
            image_rotary_emb = rotary_embeddings(self.config, frames, height, width, device=hidden.device)

        self._taps = {} if return_hidden_states else None
        try:
            out = self.transformer(
                hidden_states=hidden,
                encoder_hidden_states=encoder_hidden_states,
                timestep=timestep,
                ofs=ofs,
                image_rotary_emb=image_rotary_emb,
                return_dict=False,
            )[0]
            taps = [self._taps[i] for i in aug.tap_blocks] if return_hidden_states else None
        finally:
            self._taps = None
        return GeoMotionDiTOutput(rgb=out[:, :, : aug.rgb_channels], gm=out[:, :, aug.rgb_channels :], hidden_states=taps)
