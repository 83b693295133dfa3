"""Data-parallel training helpers (torch.distributed) for `model.train`.

`worldreel train --gpus N` re-launches itself as `python -m torch.distributed.run --standalone
--nproc-per-node N -m model.train ...`; every process then finds `WORLD_SIZE`, `RANK` and
`LOCAL_RANK` in its environment and joins the process group (NCCL on CUDA, one GPU per
process; gloo on CPU). On one process every helper here is a no-op.

Data: the mixture sampler is one endless seeded stream shared by all ranks; draw i goes to
rank i % world_size (DistributedSampler's interleaving), so a step consumes
batch_size * world_size draws of the global stream and a resume fast-forwards it exactly.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

__all__ = [
    "DistContext",
    "all_gather_objects",
    "barrier",
    "cleanup",
    "init_distributed",
    "launched_world_size",
    "mean_over_ranks",
    "relaunch_with_torchrun",
    "shard_stream",
    "torchrun_command",
    "wrap_ddp",
]


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job (defaults: a single process)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world_size() -> int:
    """Processes in this job as the launcher (torchrun) says; 1 when not launched by one."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device_type: str) -> DistContext:
    """Join the process group torchrun prepared (env:// rendezvous); a no-op for one process.

    Args:
        device_type: "cuda" (NCCL, and this process's GPU is set to LOCAL_RANK) or "cpu" (gloo).
    """
    world_size = launched_world_size()
    if world_size <= 1:
        return DistContext()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    if device_type == "cuda":
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return DistContext(rank, local_rank, world_size)


def cleanup() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def shard_stream(indices: Iterator[int], ctx: DistContext) -> Iterator[int]:
    """This rank's share of a global index stream: draws rank, rank + world_size, ..."""
    return itertools.islice(indices, ctx.rank, None, ctx.world_size)


def all_gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """Every rank's `obj` (picklable), in rank order, on every rank."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_over_ranks(values: dict[str, float], ctx: DistContext, device: torch.device) -> dict[str, float]:
    """Average float metrics over ranks (every rank must pass the same keys)."""
    if not ctx.enabled:
        return dict(values)
    keys = sorted(values)
    total = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return {k: float(v) / ctx.world_size for k, v in zip(keys, total.tolist(), strict=True)}


def wrap_ddp(module: torch.nn.Module, device: torch.device, find_unused_parameters: bool = False) -> torch.nn.Module:
    """DistributedDataParallel around a trained module (gradients all-reduced in backward)."""
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=device_ids, find_unused_parameters=find_unused_parameters)


def torchrun_command(nproc: int, module: str, argv: list[str]) -> list[str]:
    """`python -m torch.distributed.run --standalone --nproc-per-node N -m MODULE ARGV...`."""
    if nproc < 1:
        raise ValueError(f"nproc must be >= 1, got {nproc}")
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", module, *argv]


def relaunch_with_torchrun(nproc: int, module: str, argv: list[str]) -> int:
    """Run `module` with `argv` in `nproc` local processes under torchrun; returns its exit code."""
    return subprocess.run(torchrun_command(nproc, module, argv), check=False).returncode
