"""Training checkpoints on disk: one format for every strategy and world size.

`OUTPUT_DIR/checkpoints/step_N/` holds

    dit/                diffusers `save_pretrained` of the widened transformer + gm_augmentation.json
    dpt_head/           diffusers `save_pretrained` of the DPT head (config.json + weights); absent in stage 1a
    trainer_state.pt    step, data position, LR schedule, every rank's RNG states, AdamW state with
                        full (unsharded) tensors keyed by parameter name ("dit.transformer.<name>", "head.<name>")
    train_config.json   the run's `TrainConfig`

A checkpoint is written under `step_N.tmp/` and renamed into place, so it is visible only once
complete; only folders holding `trainer_state.pt` count. Checkpoints written before the head
became a diffusers component (`dpt_head.safetensors` + `dpt_head.json`) are still read.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from model.dit import GeoMotionDiT
from model.dpt_head import DPTHeadConfig, TemporalDPTHead

__all__ = [
    "HEAD_FOLDER",
    "list_checkpoints",
    "has_head",
    "head_config",
    "load_head",
    "dit_from_state",
    "load_trainer_state",
    "read_train_config",
    "write_checkpoint",
]

HEAD_FOLDER = "dpt_head"
_LEGACY_HEAD_WEIGHTS, _LEGACY_HEAD_CONFIG = "dpt_head.safetensors", "dpt_head.json"


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints of a run folder, oldest first."""
    root = Path(output_dir) / "checkpoints"
    return sorted(p for p in root.glob("step_*") if (p / "trainer_state.pt").exists()) if root.exists() else []


def has_head(ckpt: Path) -> bool:
    """True when the checkpoint saved a DPT head (stages 1b and 2)."""
    return (ckpt / HEAD_FOLDER / "config.json").exists() or (ckpt / _LEGACY_HEAD_WEIGHTS).exists()


def head_config(ckpt: Path) -> DPTHeadConfig:
    """The sizes of the checkpoint's head."""
    if (ckpt / HEAD_FOLDER / "config.json").exists():
        config = TemporalDPTHead.load_config(ckpt / HEAD_FOLDER)
        return DPTHeadConfig(**{name: config[name] for name in DPTHeadConfig.__dataclass_fields__})
    return DPTHeadConfig(**json.loads((ckpt / _LEGACY_HEAD_CONFIG).read_text()))


def load_head(ckpt: Path, expected: DPTHeadConfig | None = None) -> TemporalDPTHead:
    """The checkpoint's head, weights read straight into an empty module (never a random one first).

    Args:
        expected: the sizes the caller builds; the checkpoint's must equal them.
    """
    saved = head_config(ckpt)
    if expected is not None and saved != expected:
        differ = next(k for k in DPTHeadConfig.__dataclass_fields__ if getattr(saved, k) != getattr(expected, k))
        raise ValueError(f"{ckpt} holds a DPT head with {differ}={getattr(saved, differ)!r}, "
                         f"this run builds {getattr(expected, differ)!r}")
    if (ckpt / HEAD_FOLDER / "config.json").exists():
        return TemporalDPTHead.from_pretrained(ckpt / HEAD_FOLDER, low_cpu_mem_usage=True)
    with torch.device("meta"):
        head = TemporalDPTHead.from_head_config(saved)
    head.load_state_dict(load_file(str(ckpt / _LEGACY_HEAD_WEIGHTS)), assign=True)
    return head


def dit_from_state(dit: GeoMotionDiT, state: dict[str, torch.Tensor]) -> GeoMotionDiT:
    """A DiT like `dit` holding `state` (the gathered weights of a sharded one), so it saves with
    diffusers' own `save_pretrained`. Built on the meta device: no second copy is allocated."""
    from diffusers import CogVideoXTransformer3DModel

    with torch.device("meta"):
        transformer = CogVideoXTransformer3DModel.from_config(dit.config)
    copy = GeoMotionDiT(transformer, dit.aug)
    copy.load_state_dict(state, assign=True)
    return copy


def _head_from_state(head: TemporalDPTHead, state: dict[str, torch.Tensor]) -> TemporalDPTHead:
    """A head like `head` holding `state` (gathered from shards, or its own), to save with diffusers."""
    with torch.device("meta"):
        copy = TemporalDPTHead.from_config(head.config)
    copy.load_state_dict({k: v.contiguous() for k, v in state.items()}, assign=True)
    return copy


# TrainConfig attributes renamed since some checkpoints were written: old name -> new name
_RENAMED_TRAIN_FIELDS = {"model": "config", "data": "stores", "data_weights": "store_weights", "pretrained": "weights"}


def read_train_config(ckpt: Path) -> dict[str, Any]:
    """A checkpoint's `train_config.json`, with the field names `TrainConfig` has today."""
    run = json.loads((ckpt / "train_config.json").read_text())
    return {_RENAMED_TRAIN_FIELDS.get(key, key): value for key, value in run.items()}


def load_trainer_state(ckpt: Path, stage: str) -> dict[str, Any]:
    """A checkpoint's trainer state (step, data position, LR schedule, RNGs, optimizer state),
    memory-mapped: under FSDP only rank 0 reads the optimizer tensors (and broadcasts them)."""
    state = torch.load(ckpt / "trainer_state.pt", map_location="cpu", weights_only=False, mmap=True)
    if state["config"]["stage"] != stage:
        raise ValueError(f"{ckpt} is from stage {state['config']['stage']}, this run is stage {stage}")
    # AdamW keeps the "step" tensors it loads as given: views of the map would keep it, and every
    # page of the moments read through it, resident for the whole run
    for param_state in state["optimizer"]["state"].values():
        if torch.is_tensor(param_state.get("step")):
            param_state["step"] = param_state["step"].clone()
    return state


def write_checkpoint(
    final: Path,
    dit: GeoMotionDiT,
    head: TemporalDPTHead | None,
    head_state: dict[str, torch.Tensor] | None,
    trainer_state: dict[str, Any],
    train_config: dict[str, Any],
    keep: int,
) -> None:
    """Write `final` atomically (a `.tmp` folder renamed into place), then keep the `keep` latest (0: all).

    Args:
        dit: the DiT to save (whole: a sharded one is first gathered with `dit_from_state`).
        head, head_state: the head module (for its config) and its full state, or None (stage 1a).
    """
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dit.save_pretrained(tmp / "dit")
    if head is not None and head_state is not None:
        _head_from_state(head, head_state).save_pretrained(tmp / HEAD_FOLDER)
    torch.save(trainer_state, tmp / "trainer_state.pt")
    (tmp / "train_config.json").write_text(json.dumps(train_config, indent=2))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    for old in list_checkpoints(final.parent.parent)[:-keep] if keep else []:
        shutil.rmtree(old, ignore_errors=True)
