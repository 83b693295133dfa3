"""The models a training run builds: random tiny ones, CogVideoX-5B-I2V from a local folder, or a checkpoint's.

Every builder follows a `BuildPlan`: build from initial weights, straight from a checkpoint's
files (so no process holds two copies), or empty on the meta device (FSDP ranks > 0, which
receive rank 0's weights as shards; frozen encoders of ranks > 0, which receive them whole).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from model.checkpoints import has_head, load_head
from model.dit import GeoMotionDiT, GMAugmentationConfig, default_tap_blocks, expand_transformer, tiny_transformer_config
from model.dpt_head import DPTHeadConfig, TemporalDPTHead
from model.encoders import HashTextEncoder, T5TextEncoder, VideoLatentEncoder, load_vae, tiny_vae_config
from model.losses import cogvideox_scheduler, load_scheduler

__all__ = ["BuildPlan", "Models", "build_full_models", "build_tiny_models", "check_clip_size", "empty_dit"]


@dataclass
class Models:
    dit: GeoMotionDiT
    head: TemporalDPTHead | None
    vae: VideoLatentEncoder
    text: torch.nn.Module
    scheduler: Any


def _empty_if(empty: bool) -> contextlib.AbstractContextManager:
    """Build modules on the meta device (no storage, no random draws) when `empty`."""
    return torch.device("meta") if empty else contextlib.nullcontext()


@dataclass(frozen=True)
class BuildPlan:
    """How this process builds its models.

    checkpoint: a checkpoint folder whose DiT (and DPT head, if it saved one) are built straight
        from its files instead of the initial weights, so the process never holds both.
    empty: the DiT and head on the meta device (FSDP ranks > 0: rank 0's weights arrive as shards).
    empty_frozen: the VAE and text encoder on the meta device (ranks > 0 of a multi-process run:
        rank 0's arrive whole).
    """

    checkpoint: Path | None = None
    empty: bool = False
    empty_frozen: bool = False


def build_tiny_models(stage: str, seed: int, frames: int, height: int, width: int, build: BuildPlan = BuildPlan()) -> Models:
    """Random tiny models sized to the data (no head in stage 1a). The DiT, VAE and head draw their
    initial weights from seeds of their own (seed, + 1, + 2), so one built from a checkpoint or
    empty leaves the others as a fresh build makes them (`model.pipeline` rebuilds the VAE so)."""
    if height % 16 or width % 16 or (frames - 1) % 4:
        raise ValueError(f"tiny model needs H, W multiples of 16 and T = 1 + 4k, got {frames}x{height}x{width}")
    tconf = tiny_transformer_config(sample_height=height // 8, sample_width=width // 8, sample_frames=frames)
    aug = GMAugmentationConfig(tap_blocks=default_tap_blocks(tconf["num_layers"]))
    from diffusers import AutoencoderKLCogVideoX

    def random_dit() -> GeoMotionDiT:
        return GeoMotionDiT.from_config(tconf, aug)

    def empty_dit() -> GeoMotionDiT:
        with torch.device("meta"):
            return random_dit()

    torch.manual_seed(seed)
    dit = _dit(random_dit, empty_dit, torch.float32, build)
    torch.manual_seed(seed + 1)
    with _empty_if(build.empty_frozen):
        vae = VideoLatentEncoder(AutoencoderKLCogVideoX(**tiny_vae_config(height, width)))
    text = HashTextEncoder(tconf["text_embed_dim"], tconf["max_text_seq_length"])
    torch.manual_seed(seed + 2)
    head = _head(DPTHeadConfig.tiny(_embed_dim(dit)), build) if stage != "1a" else None
    return Models(dit, head, vae, text, cogvideox_scheduler())


def build_full_models(stage: str, weights: str | Path, dtype: torch.dtype, build: BuildPlan = BuildPlan()) -> Models:
    """CogVideoX-5B-I2V from a local folder (no head in stage 1a). Frozen parts in `dtype`; a DiT
    that trains keeps fp32 master weights (bf16 only under autocast): updates of lr 2e-5 vanish in
    bf16 weights. Empty modules (`build`) are built from config files alone, reading no weights;
    their dtypes follow rank 0's when they receive its weights."""
    path = Path(weights)
    dit_dtype = dtype if stage == "1b" else torch.float32
    layers = json.loads((path / "transformer" / "config.json").read_text())["num_layers"]
    aug = GMAugmentationConfig(tap_blocks=default_tap_blocks(layers))
    dit = _dit(
        lambda: GeoMotionDiT.from_pretrained(path, aug, subfolder="transformer", torch_dtype=dit_dtype),
        lambda: empty_dit(path / "transformer", aug),
        dit_dtype,
        build,
    )
    vae = VideoLatentEncoder(load_vae(path, torch_dtype=dtype, empty=build.empty_frozen))
    text = T5TextEncoder(path, max_length=dit.config.max_text_seq_length, torch_dtype=dtype, empty=build.empty_frozen)
    head = _head(DPTHeadConfig(embed_dim=_embed_dim(dit)), build) if stage != "1a" else None
    return Models(dit, head, vae, text, load_scheduler(path))


def _embed_dim(dit: GeoMotionDiT) -> int:
    return dit.config.num_attention_heads * dit.config.attention_head_dim


def _dit(
    initial: Callable[[], GeoMotionDiT], empty: Callable[[], GeoMotionDiT], dtype: torch.dtype, build: BuildPlan
) -> GeoMotionDiT:
    """The run's DiT: `initial()` (random or pretrained weights), `empty()` (the same on the meta
    device) when `build.empty`, or else `build.checkpoint`'s DiT, which must be the one `empty()`
    describes (transformer config and augmentation) and comes in `dtype`, loaded straight from its
    files by diffusers (low-memory loading: parameters start empty and take the file's tensors)."""
    if build.empty:
        return empty()
    if build.checkpoint is None:
        return initial()
    expected = empty()
    dit = GeoMotionDiT.from_pretrained(build.checkpoint / "dit", expected.aug, torch_dtype=dtype)
    ours, theirs = _public_config(expected.config), _public_config(dit.config)
    differ = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
    if differ:
        key = differ[0]
        raise ValueError(f"{build.checkpoint} holds a DiT with {key}={theirs.get(key)!r}, this run builds {ours.get(key)!r}")
    # its tensors are views of the file's (copy-on-write) memory map, which lives while any of them
    # does: buffers (FSDP leaves them whole) get private copies, so the map and every page read
    # through it go once the parameters are sharded or moved to a GPU
    with torch.no_grad():
        for name, buffer in list(dit.named_buffers()):
            owner, _, leaf = name.rpartition(".")
            setattr(dit.get_submodule(owner), leaf, buffer.clone())
    return dit


def _public_config(config: Any) -> dict[str, Any]:
    return {k: v for k, v in config.items() if not k.startswith("_")}


def _head(config: DPTHeadConfig, build: BuildPlan) -> TemporalDPTHead:
    """A new (random) DPT head, empty when `build.empty`, or `build.checkpoint`'s when it saved one
    (read straight into an empty module, `model.checkpoints.load_head`)."""
    if build.empty:
        with torch.device("meta"):
            return TemporalDPTHead.from_head_config(config)
    if build.checkpoint is not None and has_head(build.checkpoint):
        return load_head(build.checkpoint, config)
    return TemporalDPTHead.from_head_config(config)


def empty_dit(folder: Path, aug: GMAugmentationConfig) -> GeoMotionDiT:
    """The DiT `GeoMotionDiT.from_pretrained(folder.parent, aug, subfolder=folder.name)` builds
    (a base CogVideoX checkpoint, widened), on the meta device, from its config alone."""
    from diffusers import CogVideoXTransformer3DModel

    with torch.device("meta"):
        base = CogVideoXTransformer3DModel.from_config(CogVideoXTransformer3DModel.load_config(folder))
        return GeoMotionDiT(expand_transformer(base, aug), aug)


def check_clip_size(models: Models, frames: int, height: int, width: int) -> None:
    """The pretrained DiT's learned positional embeddings fix the clip size (49x480x720 for 5B-I2V)."""
    config = models.dit.config
    scale = 2 ** (len(models.vae.vae.config.block_out_channels) - 1)
    expected = (config.sample_frames, config.sample_height * scale, config.sample_width * scale)
    if (frames, height, width) != expected:
        size = "x".join(map(str, expected))
        raise ValueError(f"the pretrained model trains on {size} clips, the data is {frames}x{height}x{width}")
