"""Reading metric-network checkpoints from a local path and checking their layout strictly.

Every network here loads weights only from a path the user gives (nothing downloads). A
checkpoint is accepted when, after the documented renaming of its official layout, its keys
and shapes equal the module's `state_dict()` exactly; otherwise one line names the file and
the missing, unexpected and misshaped keys (a few of each, with counts).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

__all__ = ["WEIGHT_FILE_NAMES", "check_layout", "layout_of", "load_strict", "read_state_dict", "resolve_weight_file"]

# Looked for, in this order, when a folder (a Hugging Face snapshot) is given.
WEIGHT_FILE_NAMES = ("model.safetensors", "pytorch_model.bin")
_SHOWN = 3


def resolve_weight_file(path: str | Path, what: str) -> Path:
    """The weight file at `path`, or inside the folder `path` (WEIGHT_FILE_NAMES)."""
    path = Path(path).expanduser()
    if path.is_dir():
        for name in WEIGHT_FILE_NAMES:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{what} weights: no {' or '.join(WEIGHT_FILE_NAMES)} in folder {path}")
    if not path.is_file():
        raise FileNotFoundError(f"{what} weights: {path} does not exist")
    return path


def read_state_dict(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """Tensors of a `.safetensors` file or a torch pickle (weights only; a `state_dict` entry is unwrapped)."""
    file = resolve_weight_file(path, what)
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file))
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any reader failure becomes one line naming the file
        raise ValueError(f"{what} weights {file}: cannot be read ({type(error).__name__}: {error})") from None
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{what} weights {file}: not a state dict of tensors")
    return dict(state)


def layout_of(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of `module.state_dict()` (works on the meta device)."""
    return {key: tuple(value.shape) for key, value in module.state_dict().items()}


def _first(keys: list[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f", ... ({len(keys)} in all)" if len(keys) > _SHOWN else "")


def check_layout(expected: Mapping[str, tuple[int, ...]], state: Mapping[str, torch.Tensor], source: str) -> None:
    """Raise one ValueError line unless `state` has exactly the keys and shapes of `expected`."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    misshaped = sorted(
        f"{key} {tuple(state[key].shape)} != {tuple(expected[key])}"
        for key in set(expected) & set(state)
        if tuple(state[key].shape) != tuple(expected[key])
    )
    problems = []
    if missing:
        problems.append(f"missing {_first(missing)}")
    if unexpected:
        problems.append(f"unexpected {_first(unexpected)}")
    if misshaped:
        problems.append(f"misshaped {_first(misshaped)}")
    if problems:
        raise ValueError(f"{source}: not the expected layout: " + "; ".join(problems))


def load_strict(module: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """Check `state` against `module`'s layout, then load it with strict=True (assign on meta)."""
    check_layout(layout_of(module), state, source)
    on_meta = any(p.is_meta for p in module.parameters())
    module.load_state_dict(dict(state), strict=True, assign=on_meta)
    return module
