"""Data-parallel training helpers (torch.distributed) for `model.train`.

`worldreel train --gpus N` re-launches itself as `python -m torch.distributed.run --standalone
--nproc-per-node N -m model.train ...`; every process then finds `WORLD_SIZE`, `RANK` and
`LOCAL_RANK` in its environment and joins the process group (NCCL on CUDA, one GPU per
process; gloo on CPU). On one process every helper here is a no-op.

Strategies: "ddp" replicates the trained modules (DistributedDataParallel, gradients
all-reduced); "fsdp" shards them with FSDP2 (`fully_shard`): parameters, gradients and AdamW
moments live as dim-0 shards (DTensors) on every rank, each transformer block is one
all-gather / reduce-scatter group and the root module holds the rest. Both average gradients
over ranks, so a step equals one step on the global batch.

FSDP start-up holds full weights on rank 0 only (`shard_fsdp_from_rank0`): rank 0 builds and
loads the modules as a single process would, the other ranks build them on the meta device
(shapes and dtypes, no storage); after `fully_shard` those ranks `to_empty` onto their device
and receive their shards from rank 0, one tensor at a time (`set_model_state_dict` with
`broadcast_from_rank0`). Buffers the state dict leaves out (non-persistent tables a module
computes at construction) are broadcast too, so every rank's shards and buffers equal those of
rank 0's module (empty modules take rank 0's dtypes; names and shapes must match). A
replicated module (`replicate_from_rank0`: stage 1b's frozen DiT, the frozen VAE and text
encoder) gets every tensor of rank 0's broadcast whole, in place; parameters tied in the module
(T5's shared token embedding) stay one tensor. Checkpoints go the other way: the full model and
optimizer states are gathered one tensor at a time and kept on rank 0's CPU only
(`full_model_state`, `full_optimizer_state`); on resume rank 0 alone reads the optimizer state
and broadcasts it (`load_full_optimizer_state`). So ranks > 0 never hold more of a sharded module than their
shards plus one full tensor; rank 0 holds one full copy (at start-up and while saving).

Data: the mixture sampler is one endless seeded stream shared by all ranks; draw i goes to
rank i % world_size (DistributedSampler's interleaving), so a step consumes
batch_size * world_size draws of the global stream and a resume fast-forwards it exactly.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "STRATEGIES",
    "DistContext",
    "all_gather_objects",
    "barrier",
    "cleanup",
    "clip_grad_norm",
    "device_mesh",
    "fsdp_mixed_precision",
    "full_model_state",
    "full_optimizer_state",
    "init_distributed",
    "is_meta",
    "is_sharded",
    "load_full_optimizer_state",
    "launched_world_size",
    "mean_over_ranks",
    "relaunch_with_torchrun",
    "replicate_from_rank0",
    "shard_fsdp",
    "shard_fsdp_from_rank0",
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


STRATEGIES = ("ddp", "fsdp")


def fsdp_mixed_precision(device: torch.device, mixed_precision: str):
    """FSDP2 precision policy: bf16 all-gathered parameters and compute with fp32 gradient
    reduce-scatter (fp32 sharded master weights and optimizer) on CUDA under "bf16"; fp32
    throughout otherwise (CPU: bf16 matmuls there are slow and the tests compare in fp32)."""
    from torch.distributed.fsdp import MixedPrecisionPolicy

    if device.type == "cuda" and mixed_precision == "bf16":
        return MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
    return MixedPrecisionPolicy()


def device_mesh(device: torch.device, ctx: DistContext):
    """The 1-D mesh of all ranks that FSDP shards over (one per job: the DTensors of modules
    sharded on one mesh mix in one gradient norm)."""
    from torch.distributed.device_mesh import init_device_mesh

    return init_device_mesh(device.type, (ctx.world_size,))


def shard_fsdp(
    module: nn.Module, groups: Sequence[nn.Module], mesh: Any, mp_policy: Any, reduce_unused_params: bool = False
) -> nn.Module:
    """FSDP2 in place: each of `groups` (e.g. the transformer blocks) becomes its own shard
    group, `module` (the root, called by the training step) takes the remaining parameters.

    Frozen parameters may sit in any group: they are sharded and all-gathered for forward but
    get no gradient. `reduce_unused_params` reduce-scatters zero gradients for trainable
    parameters a rank did not use (DDP's find_unused_parameters): without it, ranks whose
    batches use different parameters issue mismatched collectives.
    """
    from torch.distributed.fsdp import fully_shard

    for group in groups:
        fully_shard(group, mesh=mesh, mp_policy=mp_policy)
    fully_shard(module, mesh=mesh, mp_policy=mp_policy)
    if reduce_unused_params:
        module.set_reduce_scatter_unused_params(True)
    return module


def is_meta(module: nn.Module) -> bool:
    """Whether `module` has tensors on the meta device (built empty: shapes and dtypes only)."""
    return any(t.is_meta for _, t in _named_tensors(module))


def _named_tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    return itertools.chain(module.named_parameters(), module.named_buffers())


def _take_rank0_layout(module: nn.Module, ctx: DistContext, what: str) -> None:
    """Check that every rank's `module` has rank 0's parameters and buffers (names and shapes)
    and give an empty (meta) one rank 0's dtypes: a loader's dtype policy (diffusers keeps some
    buffers in float64) need not be replayed on the meta ranks, and a broadcast into another
    dtype would cast silently. Rank 0 must hold real weights. Collective; every rank raises alike."""
    own = [(name, t.dtype, tuple(t.shape)) for name, t in _named_tensors(module)]
    layouts = all_gather_objects((is_meta(module), own), ctx)
    rank0_empty, reference = layouts[0]
    if rank0_empty:
        raise ValueError(f"rank 0's {what} is on the meta device; it must hold the weights to broadcast")
    for rank, (empty, layout) in enumerate(layouts[1:], start=1):
        shapes = [(name, shape) for name, _, shape in layout]
        expected = [(name, shape) for name, _, shape in reference]
        if shapes != expected:
            diff = next((a, b) for a, b in itertools.zip_longest(shapes, expected) if a != b)
            raise ValueError(f"rank {rank}'s {what} differs from rank 0's: {diff[0]} vs {diff[1]}")
        casts = [(name, dtype) for (name, dtype, _), (_, theirs, _) in zip(reference, layout, strict=True) if dtype != theirs]
        if casts and not empty:
            raise ValueError(f"rank {rank}'s {what} holds {casts[0][0]} in another dtype than rank 0's ({casts[0][1]})")
    if layouts[ctx.rank][0]:
        dtypes = {name: dtype for name, dtype, _ in reference}
        with torch.no_grad():
            for name, param in module.named_parameters():
                param.data = param.data.to(dtypes[name])
            for name, buffer in module.named_buffers():
                owner, _, leaf = name.rpartition(".")
                setattr(module.get_submodule(owner), leaf, buffer.to(dtypes[name]))


def _broadcast_in_place(tensors: Iterable[torch.Tensor]) -> None:
    with torch.no_grad():
        for tensor in tensors:
            dist.broadcast(tensor.detach(), src=0)


def shard_fsdp_from_rank0(
    module: nn.Module,
    groups: Sequence[nn.Module],
    mesh: Any,
    mp_policy: Any,
    device: torch.device,
    ctx: DistContext,
    reduce_unused_params: bool = False,
) -> nn.Module:
    """`shard_fsdp` of a module whose weights only rank 0 holds: the other ranks built it on the
    meta device. After sharding they allocate their (uninitialised) shards on `device` and every
    rank takes its shards of rank 0's state, broadcast one full tensor at a time; buffers outside
    the state dict (non-persistent) are broadcast whole. Afterwards every rank holds exactly the
    shards and buffers rank 0's module would have, sharded alone. Collective.

    Rank 0 keeps its full tensors alive until the broadcast ends (its module must be on
    `device`); the other ranks never hold more than their shards plus one full tensor."""
    from torch.distributed.checkpoint.state_dict import set_model_state_dict

    _take_rank0_layout(module, ctx, type(module).__name__)
    persistent = set(module.state_dict())
    full_state = module.state_dict() if ctx.is_main else {}  # the full tensors, before FSDP replaces them
    shard_fsdp(module, groups, mesh, mp_policy, reduce_unused_params)
    if is_meta(module):
        module.to_empty(device=device)
    set_model_state_dict(module, full_state, options=_full_options(broadcast_from_rank0=True))
    _broadcast_in_place(b for name, b in module.named_buffers() if name not in persistent)
    return module


def replicate_from_rank0(module: nn.Module, device: torch.device, ctx: DistContext) -> nn.Module:
    """Make every rank's `module` (not sharded) a copy of rank 0's, in place: ranks that built it
    on the meta device first allocate it on `device` (tied parameters stay tied). Every parameter
    and buffer is broadcast, so this also aligns replicas whose random initialisation differs.
    Collective."""
    _take_rank0_layout(module, ctx, type(module).__name__)
    if is_meta(module):
        _to_empty_keeping_ties(module, device)
    _broadcast_in_place(t for _, t in _named_tensors(module))
    return module


def _to_empty_keeping_ties(module: nn.Module, device: torch.device) -> None:
    """`module.to_empty(device=device)`, then re-tie parameters that were one tensor under several
    names (T5's shared token embedding): `to_empty` gives every name its own new tensor, which
    would leave this rank with more tensors to broadcast than rank 0."""
    names: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        names.setdefault(id(param), []).append(name)
    module.to_empty(device=device)
    for first, *tied in names.values():
        param = module.get_parameter(first)
        for name in tied:
            owner, _, leaf = name.rpartition(".")
            setattr(module.get_submodule(owner), leaf, param)


def is_sharded(module: nn.Module | None) -> bool:
    """Whether `module` was sharded with FSDP2 (`shard_fsdp`)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def clip_grad_norm(params: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """`clip_grad_norm_` that also takes FSDP's sharded (DTensor) gradients; returns the total
    norm as a plain tensor, the same on every rank.

    The norm of DTensor gradients comes out of `get_total_norm` already reduced over ranks (a
    replicated DTensor), so every rank scales its shards by the global factor; `full_tensor`
    makes it a plain tensor for the clip and the logs."""
    from torch.distributed.tensor import DTensor

    params = list(params)
    total = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    if isinstance(total, DTensor):
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return total


def _full_options(**kwargs: bool):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, **kwargs)


def full_model_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The unsharded state dict of an FSDP module, on CPU, on rank 0 ({} on the others).

    Collective: every rank calls it. Tensors are gathered one at a time and moved to CPU, so
    the GPU never holds more than one full parameter beyond its shards."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict

    return get_model_state_dict(module, options=_full_options(cpu_offload=True))


def full_optimizer_state(model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's state dict with full (unsharded) tensors, keyed by parameter names of
    `model` (which holds every optimised parameter), on CPU, on rank 0 ({} elsewhere). Collective."""
    from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

    return get_optimizer_state_dict(model, optimizer, options=_full_options(cpu_offload=True))


def load_full_optimizer_state(
    model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any], ctx: DistContext
) -> None:
    """Load a name-keyed full optimizer state (`full_optimizer_state`'s format) into a sharded
    optimizer. Only rank 0's `state` is read; its tensors are broadcast one at a time and each
    rank keeps its shards, so no other rank ever holds the full state. Collective."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    set_optimizer_state_dict(
        model, optimizer, state if ctx.is_main else {}, options=_full_options(broadcast_from_rank0=True)
    )


def torchrun_command(
    nproc: int, module: str, argv: list[str], nnodes: int = 1, node_rank: int = 0,
    rdzv_endpoint: str | None = None, rdzv_id: str = "worldreel-train",
) -> list[str]:
    """The torchrun command of one node: `--standalone` on one node, a c10d rendezvous on several.

    With `nnodes` > 1 every node runs the same command but its own `node_rank`; the c10d store
    is served at `rdzv_endpoint` (host:port of node 0, reachable from all) and torchrun assigns
    global ranks as the nodes join.
    """
    if nproc < 1 or nnodes < 1:
        raise ValueError(f"nproc and nnodes must be >= 1, got {nproc} and {nnodes}")
    if nnodes == 1:
        launch = ["--standalone"]
    else:
        if not rdzv_endpoint:
            raise ValueError("several nodes need a rendezvous endpoint (host:port of node 0)")
        if not 0 <= node_rank < nnodes:
            raise ValueError(f"node_rank must be in [0, {nnodes}), got {node_rank}")
        launch = [f"--nnodes={nnodes}", f"--node-rank={node_rank}", "--rdzv-backend=c10d",
                  f"--rdzv-endpoint={rdzv_endpoint}", f"--rdzv-id={rdzv_id}"]
    return [sys.executable, "-m", "torch.distributed.run", *launch, f"--nproc-per-node={nproc}", "-m", module, *argv]


def relaunch_with_torchrun(nproc: int, module: str, argv: list[str], **rendezvous) -> int:
    """Run `module` with `argv` in `nproc` processes of this node under torchrun; returns its exit code."""
    return subprocess.run(torchrun_command(nproc, module, argv, **rendezvous), check=False).returncode
