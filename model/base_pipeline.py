"""The base CogVideoX image-to-video model (no geometry channels, no DPT head) as an evaluation baseline.

Sampling is diffusers' own `CogVideoXImageToVideoPipeline`, loaded from a local diffusers folder
(`model_index.json`, transformer/, vae/, text_encoder/, tokenizer/, scheduler/; nothing downloads),
with the sampler swapped the way `model.pipeline` swaps it (`make_scheduler`: DPM or DDIM on the
folder's noise schedule) and the same inputs as `WorldReelPipeline`: an image in [-1, 1], a
caption, steps, guidance (<= 1: none, as diffusers decides) and a CPU generator, so a clip gets
the same first frame, caption and seed under both. It gives RGB only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch

from model.pipeline import make_scheduler

__all__ = ["BaseModelSampler"]


class BaseModelSampler:
    """RGB video from one image and a caption with the base CogVideoX-I2V model.

    Args:
        pipe: a loaded `diffusers.CogVideoXImageToVideoPipeline`.
    """

    def __init__(self, pipe) -> None:
        self.pipe = pipe
        self.pipe.set_progress_bar_config(disable=True)

    @classmethod
    def from_folder(
        cls,
        folder: str | os.PathLike,
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
        scheduler: Literal["dpm", "ddim"] = "dpm",
    ) -> BaseModelSampler:
        """Load the base model from a local diffusers folder; a folder that is not one fails in one line."""
        from diffusers import CogVideoXImageToVideoPipeline

        root = Path(folder)
        if not (root / "model_index.json").is_file():
            raise FileNotFoundError(f"{root} is not a local diffusers folder of the base model (no model_index.json)")
        try:
            pipe = CogVideoXImageToVideoPipeline.from_pretrained(root, dtype=dtype, local_files_only=True)
        except (OSError, ValueError, TypeError) as e:  # a missing or foreign component: diffusers' own message
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise ValueError(f"{root}: not a CogVideoX image-to-video folder: {first}") from None
        if pipe.transformer.config.in_channels != 2 * pipe.transformer.config.out_channels:
            raise ValueError(f"{root}: the transformer takes no image latents (a text-to-video model, not I2V)")
        pipe.scheduler = make_scheduler(pipe.scheduler, scheduler)
        pipe.vae.enable_tiling()  # 49 x 480 x 720 decodes in tiles: bounded memory, as model.pipeline does
        return cls(pipe.to(device))

    @property
    def spatial_scale(self) -> int:
        return self.pipe.vae_scale_factor_spatial

    @property
    def temporal_scale(self) -> int:
        return self.pipe.vae_scale_factor_temporal

    @property
    def video_size(self) -> tuple[int, int, int]:
        """(T, H, W) the transformer was built for (learned positional embeddings fix it for CogVideoX-5B-I2V)."""
        config = self.pipe.transformer.config
        return config.sample_frames, config.sample_height * self.spatial_scale, config.sample_width * self.spatial_scale

    @torch.no_grad()
    def __call__(
        self,
        image: torch.Tensor,
        prompt: str,
        num_inference_steps: int,
        guidance_scale: float,
        generator: torch.Generator,
        num_frames: int,
    ) -> torch.Tensor:
        """(1, T, 3, H, W) video in [0, 1] from a (1, 3, H, W) image in [-1, 1]."""
        if image.ndim != 4 or image.shape[:2] != (1, 3):
            raise ValueError(f"image must be a (1, 3, H, W) tensor in [-1, 1], got {tuple(image.shape)}")
        height, width = image.shape[-2:]
        return self.pipe(
            image=((image + 1.0) / 2.0).clamp(0.0, 1.0),
            prompt=prompt,
            height=height,
            width=width,
            num_frames=num_frames,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            generator=generator,
            output_type="pt",
            return_dict=False,
            max_sequence_length=self.pipe.transformer.config.max_text_seq_length,
        )[0].float()
