"""On-disk cache of VAE posterior moments for the RGB and geometry-motion videos of each clip.

The video VAE is frozen, so encoding the two 49-frame videos of a clip every step is wasted
work. The cache keeps each clip's posterior (mean, std) and training draws a fresh sample
mean + std * eps every step (finetrainers' approach), rather than reusing one frozen sample.
The image condition (one noised frame) is still encoded online: its noise level is drawn
per step and one frame is cheap.

Layout: `root/<fingerprint>/<clip_id>.safetensors` with tensors rgb_mean, rgb_std, gm_mean,
gm_std, each (F, C, h, w) in the DiT layout, stored in float16 (VAE moments are small
numbers, well inside its range). The fingerprint hashes the VAE config,
the clip size (T, H, W) and a format version, so a different VAE or resolution never reads
stale latents. Files appear atomically (write to a temporary name, then rename).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from model.encoders import VideoLatentEncoder

__all__ = ["LatentCache", "cache_fingerprint", "fill_latent_cache"]

_FORMAT = 1
_KEYS = ("rgb_mean", "rgb_std", "gm_mean", "gm_std")


def cache_fingerprint(encoder: VideoLatentEncoder, frames: int, height: int, width: int) -> str:
    """Hash of what determines a clip's latents besides its pixels: VAE config and weights
    (a per-tensor sum, enough to tell checkpoints apart), clip size, cache format."""
    config = {k: v for k, v in dict(encoder.vae.config).items() if not k.startswith("_")}
    with torch.no_grad():
        weights = [round(float(p.double().sum()), 6) for p in encoder.vae.parameters()]
    payload = json.dumps(
        {"format": _FORMAT, "vae": config, "weights": weights, "size": [frames, height, width]}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class LatentCache:
    """Posterior moments per clip id under `root/<fingerprint>/`."""

    def __init__(self, root: str | os.PathLike, fingerprint: str) -> None:
        self.dir = Path(root) / fingerprint
        self.dir.mkdir(parents=True, exist_ok=True)

    def path(self, clip_id: str) -> Path:
        return self.dir / f"{clip_id}.safetensors"

    def has(self, clip_id: str) -> bool:
        return self.path(clip_id).exists()

    def save(self, clip_id: str, moments: dict[str, torch.Tensor]) -> None:
        missing = [k for k in _KEYS if k not in moments]
        if missing:
            raise ValueError(f"moments lack {missing}")
        tensors = {k: moments[k].detach().to("cpu", torch.float16).contiguous() for k in _KEYS}
        tmp = self.path(clip_id).with_suffix(".tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, self.path(clip_id))

    def load(self, clip_id: str) -> dict[str, torch.Tensor]:
        if not self.has(clip_id):
            raise KeyError(f"clip {clip_id!r} is not in the latent cache {self.dir}")
        return {k: v.float() for k, v in load_file(str(self.path(clip_id))).items()}

    def load_batch(self, clip_ids: Iterable[str], device: torch.device | str) -> dict[str, torch.Tensor]:
        """(B, F, C, h, w) moments of several clips, stacked in order."""
        items = [self.load(c) for c in clip_ids]
        return {k: torch.stack([it[k] for it in items]).to(device) for k in _KEYS}


@torch.no_grad()
def fill_latent_cache(dataset, encoder: VideoLatentEncoder, cache: LatentCache, device: torch.device | str = "cpu") -> int:
    """Encode every clip of `dataset` (a `LabelClipDataset`) that the cache lacks. Returns how many."""
    written = 0
    for index, entry in enumerate(dataset.entries):
        if cache.has(entry.clip_id):
            continue
        sample = dataset[index]
        rgb_mean, rgb_std = encoder.moments(sample["rgb"][None].to(device))
        gm_mean, gm_std = encoder.moments(sample["gm"][None].to(device))
        cache.save(entry.clip_id, {"rgb_mean": rgb_mean[0], "rgb_std": rgb_std[0], "gm_mean": gm_mean[0], "gm_std": gm_std[0]})
        written += 1
    return written
