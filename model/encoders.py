"""Frozen encoders around the DiT: the video VAE (RGB, geometry-motion and image-condition
latents) and the text encoder.

Both load from local folders only. CPU tests use a tiny random `AutoencoderKLCogVideoX`
with the real one's compression (8x space, 4x time) and `HashTextEncoder`, which gives
each caption fixed pseudo-random embeddings (a stand-in with the shape of T5's output).

`empty=True` (`load_vae`, `T5TextEncoder`) builds the same module on the meta device from its
config.json alone, reading no weight file: in a multi-process run (`model.train`) only rank 0
loads the frozen encoders and the other ranks receive them whole, straight onto their device
(`model.distributed.replicate_from_rank0`, which also gives them rank 0's dtypes). So a node
reads the T5-XXL weights (~9.5 GB in bf16) once, and only rank 0 holds them in host memory on
the way to its GPU. The T5 tokenizer files are small; every rank reads them.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKLCogVideoX
from torch import nn

__all__ = [
    "HashTextEncoder",
    "T5TextEncoder",
    "VideoLatentEncoder",
    "load_vae",
    "tiny_vae_config",
]


def tiny_vae_config(height: int, width: int) -> dict[str, Any]:
    """A ~0.2M-parameter CogVideoX VAE config with the real compression (8x, 4x) and 16 latents."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("CogVideoXDownBlock3D",) * 4,
        up_block_types=("CogVideoXUpBlock3D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        latent_channels=16,
        layers_per_block=1,
        norm_num_groups=4,
        temporal_compression_ratio=4,
        sample_height=height,
        sample_width=width,
    )


def load_vae(
    local_path: str | os.PathLike,
    subfolder: str | None = "vae",
    torch_dtype: torch.dtype | None = None,
    empty: bool = False,
) -> AutoencoderKLCogVideoX:
    """The CogVideoX VAE of a local diffusers folder, in `torch_dtype` (None: diffusers' default, float32).

    `empty`: built from the folder's config.json on the meta device (default dtype, no storage),
    never opening the weight file; `replicate_from_rank0` fills it.
    """
    folder = Path(local_path) / subfolder if subfolder else Path(local_path)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} is not a local directory")
    if empty:
        with torch.device("meta"):
            return AutoencoderKLCogVideoX.from_config(AutoencoderKLCogVideoX.load_config(folder))
    kwargs: dict[str, Any] = {"local_files_only": True}
    if torch_dtype is not None:
        kwargs["torch_dtype"] = torch_dtype
    return AutoencoderKLCogVideoX.from_pretrained(folder, **kwargs)


class VideoLatentEncoder(nn.Module):
    """Frozen VAE: videos in [-1, 1] -> scaled latents in the DiT layout (B, F, C, h, w).

    Every call samples the posterior (mean + std * eps), as finetrainers does with cached
    moments, rather than reusing one frozen sample.
    """

    def __init__(self, vae: AutoencoderKLCogVideoX) -> None:
        super().__init__()
        self.vae = vae.requires_grad_(False).eval()
        self.scaling_factor = float(vae.config.scaling_factor)

    @torch.no_grad()
    def moments(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """video (B, T, 3, H, W) -> posterior (mean, std), each (B, F, C, h, w), unscaled."""
        if video.ndim != 5 or video.shape[2] != 3:
            raise ValueError(f"video must be (B, T, 3, H, W), got {tuple(video.shape)}")
        x = video.permute(0, 2, 1, 3, 4).to(self.vae.dtype)
        dist = self.vae.encode(x).latent_dist
        return dist.mean.permute(0, 2, 1, 3, 4), dist.std.permute(0, 2, 1, 3, 4)

    @torch.no_grad()
    def sample_from_moments(
        self, mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """A scaled posterior sample (mean + std * eps) * scaling_factor; eps drawn on the generator's device."""
        eps = torch.randn(mean.shape, generator=generator, device="cpu" if generator is None else generator.device)
        return (mean + std * eps.to(mean.device, mean.dtype)) * self.scaling_factor

    @torch.no_grad()
    def sample(self, video: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """video (B, T, 3, H, W) in [-1, 1] -> scaled latent sample (B, F, C, h, w)."""
        return self.sample_from_moments(*self.moments(video), generator)

    @torch.no_grad()
    def image_condition(
        self,
        first_frame: torch.Tensor,
        latent_frames: int,
        noise_log_sigma: tuple[float, float] = (-3.0, 0.5),
        dropout: float = 0.05,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """CogVideoX-I2V condition: frame 0 + N(0, sigma^2) noise with log sigma ~ N(-3, 0.5),
        encoded, zero-padded to `latent_frames`; dropped (zeroed) with probability `dropout`.

        Args:
            first_frame: (B, 3, H, W) in [-1, 1].

        Returns:
            (B, latent_frames, C, h, w) scaled latents.
        """
        B = first_frame.shape[0]
        dev = first_frame.device

        def rand(*shape: int) -> torch.Tensor:
            return torch.randn(*shape, generator=generator).to(dev)

        sigma = torch.exp(noise_log_sigma[0] + noise_log_sigma[1] * rand(B)).view(B, 1, 1, 1)
        noisy = first_frame + sigma * rand(*first_frame.shape)
        latent = self.sample(noisy[:, None], generator)  # (B, 1, C, h, w)
        keep = (torch.rand(B, generator=generator) >= dropout).to(dev, latent.dtype).view(B, 1, 1, 1, 1)
        pad = latent.new_zeros(B, latent_frames - 1, *latent.shape[2:])
        return torch.cat([latent * keep, pad], dim=1)


class HashTextEncoder(nn.Module):
    """Deterministic stand-in text encoder for tiny runs: caption -> fixed N(0, 1) embeddings
    (B, length, dim) seeded by the caption's hash. No weights, no training."""

    def __init__(self, dim: int, length: int) -> None:
        super().__init__()
        self.dim, self.length = dim, length

    def forward(self, captions: list[str]) -> torch.Tensor:
        out = []
        for caption in captions:
            seed = int.from_bytes(hashlib.sha256(caption.encode()).digest()[:8], "little")
            g = torch.Generator().manual_seed(seed % (2**63))
            out.append(torch.randn(self.length, self.dim, generator=g))
        return torch.stack(out)


class T5TextEncoder(nn.Module):
    """CogVideoX's T5 (v1.1 XXL) from a local diffusers folder: `text_encoder/` + `tokenizer/`,
    captions padded/truncated to `max_length` (226) tokens, as the CogVideoX pipelines do.

    `empty`: the encoder is built from `text_encoder/config.json` on the meta device (default
    dtype, no storage), never opening its weight files; the tokenizer loads as usual.
    `replicate_from_rank0` fills it (its tied token embedding stays tied).
    """

    def __init__(
        self,
        local_path: str | os.PathLike,
        max_length: int = 226,
        torch_dtype: torch.dtype | None = None,
        empty: bool = False,
    ) -> None:
        super().__init__()
        from transformers import T5Config, T5EncoderModel, T5Tokenizer

        root = Path(local_path)
        for sub in ("text_encoder", "tokenizer"):
            if not (root / sub).is_dir():
                raise FileNotFoundError(f"{root / sub} is not a local directory")
        self.tokenizer = T5Tokenizer.from_pretrained(root / "tokenizer", local_files_only=True)
        if empty:
            config = T5Config.from_pretrained(root / "text_encoder", local_files_only=True)
            with torch.device("meta"):
                model = T5EncoderModel(config)
        else:
            kwargs: dict[str, Any] = {"local_files_only": True}
            if torch_dtype is not None:
                kwargs["torch_dtype"] = torch_dtype
            model = T5EncoderModel.from_pretrained(root / "text_encoder", **kwargs)
        self.model = model.requires_grad_(False).eval()
        self.max_length = max_length

    @torch.no_grad()
    def forward(self, captions: list[str]) -> torch.Tensor:
        tokens = self.tokenizer(
            captions,
            padding="max_length",
            max_length=self.max_length,
            truncation=True,
            add_special_tokens=True,
            return_tensors="pt",
        )
        device = next(self.model.parameters()).device
        return self.model(tokens.input_ids.to(device))[0]
