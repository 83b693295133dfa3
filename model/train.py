"""WorldReel training: stages 1a (DiT), 1b (DPT head on a frozen DiT) and 2 (joint).

    python -m model.train --config tiny --stage 1a --store STORE [--store STORE2 --store-weights 1 3] \
        --output-dir runs/tiny --steps 100

Stages (paper): 1a fine-tunes the geometry-motion augmented DiT with L_diff; 1b trains the
temporal DPT head from scratch with L_dpt on a frozen DiT; 2 trains both with
L_diff + lambda_dpt L_dpt + lambda_reg L_reg. A later stage starts from an earlier one's
checkpoint with `--init-from`; `--resume` (default) continues a run from the latest
checkpoint in the output folder with its optimiser, LR schedule, data position and RNGs.

Models: "tiny" builds a random 2-block DiT, tiny VAE and hash text encoder sized to the data
(CPU tests, smoke runs); "cogvideox-5b-i2v" loads CogVideoX-5B-I2V from the local diffusers
folder `--weights` (transformer/, vae/, scheduler/, text_encoder/, tokenizer/; the T5
tokenizer needs `sentencepiece`) and needs clips of the size its positional embeddings fix
(49 x 480 x 720).

Multi-GPU: `--gpus N` (N > 1) re-launches the command under `torch.distributed.run
--standalone --nproc-per-node N`; several machines run the same command with `--nnodes M
--node-rank R --rdzv-endpoint HOST:PORT` (a c10d rendezvous) and must share `--output-dir`; each process trains on its own GPU (or CPU with gloo) with
its share of the data stream (`model.distributed`). `--batch-size` is per process; rank 0
alone writes logs and checkpoints. `--strategy ddp` (default) replicates the trained modules
(DistributedDataParallel); `--strategy fsdp` shards them with FSDP2: every DiT transformer
block is one shard group, the DiT root and the DPT head one each, so weights, gradients and
AdamW moments take 1/N of the memory per GPU (the 5B full fine-tune needs it: ~90 GB per
rank replicated). Under FSDP on CUDA with `--mixed-precision bf16`, blocks compute with bf16
copies of fp32 sharded weights and reduce gradients in fp32. Stage 1b's frozen DiT stays a
replica under both strategies (it has no gradients or optimizer state to shard).

Start-up: a run that resumes, or starts `--init-from` a checkpoint, builds its DiT and head
straight from that checkpoint's files (diffusers' low-memory loading; the head's tensors are
assigned into an empty one) instead of building the initial weights and copying the
checkpoint's over them, so no process holds both copies. Under FSDP rank 0 alone builds the DiT
and head with real weights (`--pretrained`, `--init-from`, a resumed checkpoint); the other
ranks build them on the meta device (no storage, no weight files read) and, once sharded,
receive their shards from rank 0, one tensor at a time (`model.distributed.shard_fsdp_from_rank0`;
stage 1b's frozen DiT is broadcast whole into each replica). In every multi-process run (DDP or
FSDP) rank 0 alone reads the frozen VAE and T5 encoder too: the other ranks build them on the
meta device from their config files (and read the small tokenizer files) and receive rank 0's
whole, directly on their device (`replicate_from_rank0`; the tiny model's random VAE likewise).
So a node reads these weight files once and its host memory holds one copy of them, rank 0's,
not one per rank: the 5B DiT is 22.6 GB in fp32, the T5-XXL encoder ~9.5 GB in bf16. (Under
DDP every rank still builds the trained DiT and head, each from the same files.)

Checkpoints (`OUTPUT_DIR/checkpoints/step_N/`, format in `model.checkpoints`) have one format
for every strategy and world size; the AdamW state is saved with full (unsharded) tensors keyed
by parameter name. Under FSDP the shards are gathered to rank 0's CPU to write them, one tensor
at a time (the other ranks hold one full tensor at most); on resume rank 0 alone reads the
weights and the optimizer state and broadcasts them, each rank keeping its shards. So a run may
resume under another strategy or number of GPUs (exactly, only with the same number of
processes and strategy). Models are built by `model.builders`.

Logging: every `--log-every` steps rank 0 appends all metrics to `OUTPUT_DIR/metrics.jsonl`
and prints one compact `key=value` line (step, stage, loss, the stage's main terms, grad
norm, learning rates, step time) to stdout, flushed, for whoever streams the process's output.

`--latent-cache DIR` encodes every clip's RGB and gm videos once (posterior moments,
`model.latent_cache`) and draws a fresh posterior sample from them every step; the data
loader then decodes only frame 0 (for the image condition).

The DPT head reads features of the noisy forward pass. Geometry is ill-posed at high noise,
so by default (`--dpt-weighting alpha_bar`) each sample's DPT and regulariser terms are
weighted by abar_t (1 at t = 0, 0 at t = 999 under zero-terminal SNR).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import DataLoader

from model.builders import BuildPlan, build_full_models, build_tiny_models, check_clip_size
from model.checkpoints import dit_from_state, list_checkpoints, load_trainer_state, write_checkpoint
from model.data import LabelClipDataset, MixtureSampler, collate_samples, targets_from_batch
from model.distributed import (
    STRATEGIES,
    DistContext,
    all_gather_objects,
    barrier,
    cleanup,
    clip_grad_norm,
    device_mesh,
    fsdp_mixed_precision,
    full_model_state,
    full_optimizer_state,
    init_distributed,
    is_meta,
    is_sharded,
    launched_world_size,
    load_full_optimizer_state,
    mean_over_ranks,
    relaunch_with_torchrun,
    replicate_from_rank0,
    shard_fsdp_from_rank0,
    shard_stream,
    wrap_ddp,
)
from model.latent_cache import LatentCache, cache_fingerprint, fill_latent_cache
from model.losses import (
    GM_PARTS,
    LossWeights,
    ProvenanceWeights,
    diffusion_loss,
    dpt_losses,
    noisy_latents_and_target,
    sample_timesteps,
    stage2_regularisers,
)
from storage.store import is_object_url

__all__ = ["TrainConfig", "Trainer", "main"]

STAGES = ("1a", "1b", "2")
MODELS = ("tiny", "cogvideox-5b-i2v")


@dataclass
class TrainConfig:
    """Everything a run needs; saved with every checkpoint.

    Each field's metadata (help, bounds, public name) generates `worldreel train`'s options and
    the Prefect form `flows.training.TrainRunParams` (`pipelines.jobconfig`), under the attribute's
    own name, except `provenance_weights`, which is `provenance_weight` (one `--provenance-weight
    NAME=VALUE` per weight). Checkpoints written before the names were aligned (`model`, `data`,
    `data_weights`, `pretrained`) are read by `model.checkpoints.read_train_config`.
    """

    config: Literal["tiny", "cogvideox-5b-i2v"] = field(default="tiny", metadata={
        "aliases": ("--model",),
        "help": "model configuration: tiny (random, sized to the data) or cogvideox-5b-i2v (needs --weights)"})
    stage: Literal["1a", "1b", "2"] = field(default="1a", metadata={
        "help": "1a DiT fine-tune, 1b DPT head on a frozen DiT, 2 joint"})
    stores: list[str] = field(default_factory=list, metadata={
        "flag": "--store", "aliases": ("--data",), "repeat": True,
        "help": "label store to train on (synthetic or pseudo-labelled)"})
    store_weights: list[float] | None = field(default=None, metadata={
        "aliases": ("--data-weights",), "ge": 0,
        "help": "mixing weight per store, in --store order (default equal)"})
    output_dir: str = field(default="train_out", metadata={
        "help": "run folder: checkpoints/, metrics.jsonl, train_config.json"})
    weights: str | None = field(default=None, metadata={
        "aliases": ("--pretrained",),
        "help": "local diffusers folder of CogVideoX-5B-I2V (not for tiny)"})
    init_from: str | None = field(default=None, metadata={
        "help": "checkpoint folder to start from, e.g. stage 1a's step_N for stage 2"})
    latent_cache: str | None = field(default=None, metadata={
        "help": "folder of cached VAE posteriors: encode every clip once, draw a fresh sample each step"})
    resume: bool = field(default=True, metadata={
        "help": "continue from the latest checkpoint in the output folder (optimiser, schedule, data, RNGs)"})
    steps: int = field(default=1000, metadata={"ge": 1, "help": "total optimiser steps"})
    batch_size: int = field(default=1, metadata={"ge": 1, "help": "clips per step on each process"})
    num_frames: int | None = field(default=None, metadata={
        "ge": 2, "help": "frames per training clip (default: the stores' T)"})
    lr: float = field(default=2e-5, metadata={"gt": 0, "help": "AdamW learning rate of the DiT"})
    head_lr: float = field(default=1e-4, metadata={"gt": 0, "help": "AdamW learning rate of the DPT head"})
    beta1: float = field(default=0.9, metadata={"ge": 0, "lt": 1, "help": "AdamW beta1"})
    beta2: float = field(default=0.95, metadata={"ge": 0, "lt": 1, "help": "AdamW beta2"})
    weight_decay: float = field(default=1e-4, metadata={"ge": 0, "help": "AdamW weight decay"})
    warmup_steps: int = field(default=100, metadata={"ge": 0, "help": "linear learning-rate warm-up steps"})
    grad_clip: float = field(default=1.0, metadata={"gt": 0, "help": "clip the gradient norm to this value"})
    lambda_flow: float = field(default=5.0, metadata={"ge": 0, "help": "weight of the scene-flow term in L_dpt"})
    lambda_dpt: float = field(default=0.1, metadata={"ge": 0, "help": "weight of L_dpt in stage 2"})
    lambda_reg: float = field(default=0.5, metadata={"ge": 0, "help": "weight of the regularisers L_reg in stage 2"})
    reprojection_max_gap: int | None = field(default=None, metadata={
        "ge": 1, "help": "depth reprojection regulariser over frame pairs at most this far apart (default all)"})
    dpt_weighting: Literal["alpha_bar", "none"] = field(default="alpha_bar", metadata={
        "help": "weight each sample's DPT and regulariser terms by abar_t (geometry is ill-posed at high noise)"})
    provenance_weights: ProvenanceWeights = field(default_factory=ProvenanceWeights, metadata={
        "name": "provenance_weight", "flag": "--provenance-weight",
        "help": "weight of each DPT term per sample by the provenance of the labels it reads, each in [0, 1] "
        "(absent labels weigh 0), e.g. estimated=0.5 to halve pseudo-label supervision"})
    provenance_weight_gm: bool = field(default=False, metadata={
        "help": "also weight the geometry-motion diffusion loss by the smaller of the depth and flow "
        "provenance weights"})
    mixed_precision: Literal["bf16", "no"] = field(default="bf16", metadata={
        "help": "bf16 autocast on CUDA (weights stay fp32)"})
    gradient_checkpointing: bool = field(default=True, metadata={
        "help": "recompute DiT block activations in the backward pass (less memory, slower steps)"})
    seed: int = field(default=0, metadata={"help": "seed of weights, data order and noise"})
    log_every: int = field(default=1, metadata={"ge": 1, "help": "log metrics every this many steps"})
    save_every: int = field(default=500, metadata={"ge": 1, "help": "checkpoint every this many steps"})
    keep_checkpoints: int = field(default=2, metadata={
        "ge": 0, "help": "keep this many latest checkpoints (0 keeps all)"})
    num_workers: int = field(default=0, metadata={
        "ge": 0, "le": 64, "help": "data-loader processes (2+ on GPU runs, so loading overlaps steps)"})
    device: str = field(default="auto", metadata={"help": "torch device: auto (cuda if available), cpu, cuda"})
    gpus: int = field(default=1, metadata={
        "ge": 1, "le": 64, "help": "processes (GPUs) on this node; more than 1 re-launches under torchrun"})
    nnodes: int = field(default=1, metadata={
        "ge": 1, "le": 1024, "help": "machines in the job; each runs the same command with its own --node-rank"})
    node_rank: int = field(default=0, metadata={"ge": 0, "help": "this machine's index in [0, nnodes)"})
    rdzv_endpoint: str | None = field(default=None, metadata={
        "help": "host:port where the nodes meet (node 0, reachable from all); needed with --nnodes > 1"})
    rdzv_id: str = field(default="worldreel-train", metadata={
        "help": "job id of the rendezvous: the same on every node, different for concurrent jobs"})
    strategy: Literal["ddp", "fsdp"] = field(default="ddp", metadata={
        "help": "data parallelism with --gpus > 1: ddp replicates the model, fsdp shards weights, gradients and "
        "optimizer state (needed for the full cogvideox-5b-i2v fine-tune on 80 GB GPUs)"})

    def __post_init__(self) -> None:
        if self.config not in MODELS:
            raise ValueError(f"config must be one of {MODELS}, got {self.config!r}")
        if self.stage not in STAGES:
            raise ValueError(f"stage must be one of {STAGES}, got {self.stage!r}")
        if self.config != "tiny" and not self.weights:
            raise ValueError(f"config {self.config} needs --weights LOCAL_DIFFUSERS_FOLDER")
        if self.steps < 1 or self.batch_size < 1 or self.save_every < 1 or self.log_every < 1 or self.gpus < 1:
            raise ValueError("steps, batch_size, save_every, log_every and gpus must be >= 1")
        if self.nnodes > 1 and not self.rdzv_endpoint:
            raise ValueError(f"--nnodes {self.nnodes} needs --rdzv-endpoint HOST:PORT (node 0, reachable from all)")
        if not 0 <= self.node_rank < self.nnodes:
            raise ValueError(f"--node-rank must be in [0, {self.nnodes}), got {self.node_rank}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {self.strategy!r}")
        if self.store_weights is not None and len(self.store_weights) != len(self.stores):
            raise ValueError(f"{len(self.store_weights)} store weights for {len(self.stores)} stores")

    def loss_weights(self) -> LossWeights:
        return LossWeights(
            lambda_flow=self.lambda_flow,
            lambda_dpt=self.lambda_dpt,
            lambda_reg=self.lambda_reg,
            reprojection_max_gap=self.reprojection_max_gap,
            provenance=self.provenance_weights,
        )


FULL_MODEL_CLIP = (49, 480, 720)  # T x H x W fixed by CogVideoX-5B-I2V's positional embeddings


def check_stores_fit(cfg: TrainConfig) -> None:
    """Raise ValueError, naming the store and the sizes, unless every store has accepted clips of
    one size that `cfg.config` can train on (checked before any model is built or process launched).

    The tiny model needs H and W multiples of 16 and T = 1 + 4k (VAE downsampling 8, patch 2,
    temporal compression 4); the full model exactly 49 x 480 x 720.
    """
    from storage import LabelStore

    for path in cfg.stores:
        rows = [r for r in LabelStore.open(path).index().to_pylist() if r["status"] == "accepted"]
        if not rows:
            raise ValueError(f"store {path} has no accepted clip to train on")
        sizes = {(r.get("T"), r.get("height"), r.get("width")) for r in rows}
        if len(sizes) > 1:
            raise ValueError(f"store {path} mixes clip sizes {sorted(sizes)}: training takes one size (T x H x W)")
        T, height, width = sizes.pop()
        frames = cfg.num_frames or T
        if frames > T:
            raise ValueError(f"store {path}: --num-frames {frames} but its clips have T = {T}")
        if cfg.config == "tiny" and (height % 16 or width % 16 or (frames - 1) % 4):
            raise ValueError(
                f"store {path} has {frames}x{height}x{width} clips (T x H x W); the tiny model needs H and W "
                "multiples of 16 and T = 1 + 4k (label with e.g. --size 240x368, or pick --num-frames)"
            )
        if cfg.config != "tiny" and (frames, height, width) != FULL_MODEL_CLIP:
            raise ValueError(
                f"store {path} has {frames}x{height}x{width} clips (T x H x W); {cfg.config} trains on "
                f"{'x'.join(map(str, FULL_MODEL_CLIP))} clips"
            )


# ============================================================================ trainer
class Trainer:
    """One process and device, or one rank of a torchrun job (DDP). `run()` trains `cfg.steps`
    optimiser steps in total."""

    def __init__(self, cfg: TrainConfig) -> None:
        if not cfg.stores:
            raise ValueError("no label store given (--data)")
        self.cfg = cfg
        self.out = Path(cfg.output_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device)
        self.dist: DistContext = init_distributed(self.device.type)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.autocast = cfg.mixed_precision == "bf16" and self.device.type == "cuda"
        self.weights = cfg.loss_weights()

        full_videos = LabelClipDataset(cfg.stores, num_frames=cfg.num_frames)
        self.dataset = (
            full_videos if not cfg.latent_cache else LabelClipDataset(cfg.stores, num_frames=cfg.num_frames, load_videos=False)
        )
        self.sampler = MixtureSampler(self.dataset, cfg.store_weights, seed=cfg.seed)
        first = full_videos[0]
        T, _, H, W = first["rgb"].shape
        self.label_size = (H, W)
        # a resumed run starts from its latest checkpoint's weights, a new one from --init-from's
        # if given: the DiT and head are built from that checkpoint's files, not loaded over others
        latest = list_checkpoints(self.out)
        resume_from = latest[-1] if cfg.resume and latest else None
        resume_state = load_trainer_state(resume_from, cfg.stage) if resume_from is not None else None
        start_from = resume_from or (Path(cfg.init_from) if cfg.init_from else None)
        # ranks > 0 read no weights: under FSDP they build the DiT and head on the meta device and
        # receive rank 0's when `_parallel_modules` shards them; under either strategy they build the
        # frozen VAE and text encoder on the meta device and receive rank 0's whole, below
        self.fsdp = self.dist.enabled and cfg.strategy == "fsdp"
        follower = self.dist.enabled and not self.dist.is_main
        empty = self.fsdp and follower
        build = BuildPlan(checkpoint=None if empty else start_from, empty=empty, empty_frozen=follower)
        if cfg.config == "tiny":
            self.models = build_tiny_models(cfg.stage, cfg.seed, T, H, W, build)
        else:
            dtype = torch.bfloat16 if cfg.mixed_precision == "bf16" else torch.float32
            self.models = build_full_models(cfg.stage, cfg.weights, dtype, build)
            check_clip_size(self.models, T, H, W)
        for module in (self.models.dit, self.models.vae, self.models.text, self.models.head):
            if module is not None and not is_meta(module):
                module.to(self.device)
        if self.dist.enabled:
            for frozen in (self.models.vae, self.models.text):
                replicate_from_rank0(frozen, self.device, self.dist)
        self.cache = None
        if cfg.latent_cache:
            self.cache = LatentCache(cfg.latent_cache, cache_fingerprint(self.models.vae, T, H, W))
            if self.dist.is_main:  # one writer; the others wait for the complete cache
                fill_latent_cache(full_videos, self.models.vae, self.cache, self.device)
            barrier(self.dist)
        self._set_trainable()
        if cfg.gradient_checkpointing and cfg.stage != "1b":
            self.models.dit.enable_gradient_checkpointing()
        self.step = 0
        self.samples_consumed = 0
        self.generator = torch.Generator().manual_seed(cfg.seed + 1 + self.dist.rank)  # own noise per rank
        # FSDP swaps the whole modules' parameters for shards, so the optimiser is built on what
        # wrapping leaves
        self._dit, self._head = self._parallel_modules()
        self._optimised = torch.nn.ModuleDict({"dit": self.models.dit})  # names of the optimiser's state
        if self.models.head is not None:
            self._optimised["head"] = self.models.head
        self.optimizer = torch.optim.AdamW(self._param_groups(), betas=(cfg.beta1, cfg.beta2), weight_decay=cfg.weight_decay)
        warmup = max(cfg.warmup_steps, 0)
        self.lr_schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0
        )
        if resume_state is not None:
            self._restore(resume_state)
        self.sampler.fast_forward(self.samples_consumed)

    # ----------------------------------------------------------------- setup
    def _set_trainable(self) -> None:
        dit_trainable = self.cfg.stage in ("1a", "2")
        self.models.dit.requires_grad_(dit_trainable)
        self.models.dit.train(dit_trainable)
        if self.models.head is not None:
            self.models.head.requires_grad_(True).train()

    def _parallel_modules(self) -> tuple[torch.nn.Module, torch.nn.Module | None]:
        """The modules forward passes go through: DDP wrappers of the trained ones, or the same
        modules sharded in place by FSDP, when distributed."""
        dit, head = self.models.dit, self.models.head
        if not self.dist.enabled:
            return dit, head
        if self.fsdp:
            # the DiT and the head return channel slices (views); FSDP2 warns on every such output
            # because an in-place op on one would skip its backward hook, and nothing here does one
            warnings.filterwarnings("ignore", message=r"FSDP2-wrapped module .* returned a view tensor")
            mesh = device_mesh(self.device, self.dist)
            policy = fsdp_mixed_precision(self.device, self.cfg.mixed_precision)
            # ranks > 0 hold empty modules until here: each takes its shards of rank 0's weights
            if self.cfg.stage != "1b":
                blocks = list(dit.transformer.transformer_blocks)
                shard_fsdp_from_rank0(dit, blocks, mesh, policy, self.device, self.dist)
            else:
                replicate_from_rank0(dit, self.device, self.dist)  # frozen: a replica of rank 0's
            if head is not None:
                # one group: the head is ~1% of the 5B model's parameters, and its high-resolution
                # trunk runs once per frame chunk, which would repeat a trunk group's collectives
                shard_fsdp_from_rank0(head, [], mesh, policy, self.device, self.dist, reduce_unused_params=True)
            return dit, head
        if self.cfg.stage != "1b":
            dit = wrap_ddp(dit, self.device)
        if head is not None:
            # a task head gets no gradient on a rank whose batch lacks that label
            head = wrap_ddp(head, self.device, find_unused_parameters=True)
        return dit, head

    def _param_groups(self) -> list[dict[str, Any]]:
        groups = []
        if self.cfg.stage in ("1a", "2"):
            groups.append(
                {"params": [p for p in self.models.dit.parameters() if p.requires_grad], "lr": self.cfg.lr, "name": "dit"}
            )
        if self.models.head is not None:
            groups.append({"params": list(self.models.head.parameters()), "lr": self.cfg.head_lr, "name": "dpt_head"})
        return groups

    # ----------------------------------------------------------------- checkpointing
    def _rng_state(self) -> dict[str, Any]:
        return {
            "generator": self.generator.get_state(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
        }

    def _optimizer_names(self) -> list[str]:
        """Names ("dit.…", "head.…") of the optimised parameters, in torch's state-dict numbering."""
        names = {id(p): name for name, p in self._optimised.named_parameters()}
        return [names[id(p)] for group in self.optimizer.param_groups for p in group["params"]]

    def _optimizer_state(self) -> dict[str, Any]:
        """The optimiser state with full tensors keyed by parameter name (rank 0; collective under FSDP)."""
        if any(is_sharded(m) for m in self._optimised.values()):
            return full_optimizer_state(self._optimised, self.optimizer)
        return _state_by_name(self.optimizer.state_dict(), self._optimizer_names())

    def _full_weights(self) -> tuple[dict[str, torch.Tensor] | None, dict[str, torch.Tensor] | None]:
        """(gathered DiT state or None when the DiT is not sharded, head state or None without a
        head); complete on rank 0. Collective under FSDP."""
        dit_state = full_model_state(self.models.dit) if is_sharded(self.models.dit) else None
        head = self.models.head
        head_state = None if head is None else full_model_state(head) if is_sharded(head) else head.state_dict()
        return dit_state, head_state

    def save(self) -> Path:
        """Write a checkpoint (every rank calls this; rank 0 writes, with every rank's RNG state)."""
        final = self.out / "checkpoints" / f"step_{self.step:08d}"
        rngs = all_gather_objects(self._rng_state(), self.dist)
        dit_state, head_state = self._full_weights()
        optimizer = self._optimizer_state()
        barrier(self.dist)
        if self.dist.is_main:
            dit = self.models.dit if dit_state is None else dit_from_state(self.models.dit, dit_state)
            trainer_state = {
                "step": self.step,
                "samples_consumed": self.samples_consumed,
                "optimizer": optimizer,
                "lr_schedule": self.lr_schedule.state_dict(),
                **rngs[0],
                "rank_rngs": rngs,
                "config": asdict(self.cfg),
            }
            write_checkpoint(final, dit, self.models.head, head_state, trainer_state, asdict(self.cfg),
                             self.cfg.keep_checkpoints)
        barrier(self.dist)  # nobody reads or prunes checkpoints while rank 0 writes
        return final

    def _restore(self, state: dict[str, Any]) -> None:
        """Optimiser, LR schedule, step, data position and RNGs from a loaded trainer state."""
        if any(is_sharded(m) for m in self._optimised.values()):
            load_full_optimizer_state(self._optimised, self.optimizer, state["optimizer"], self.dist)
        else:
            self.optimizer.load_state_dict(_state_by_index(state["optimizer"], self._optimizer_names()))
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        self.step = int(state["step"])
        self.samples_consumed = int(state["samples_consumed"])
        rngs = state.get("rank_rngs", [state])
        # same world size: each rank continues its own streams; otherwise they restart from rank 0's
        rng = rngs[self.dist.rank] if len(rngs) == self.dist.world_size else rngs[0]
        self.generator.set_state(rng["generator"])
        torch.set_rng_state(rng["torch_rng"])
        if rng["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda_rng"])
        np.random.set_state(rng["numpy_rng"])
        random.setstate(rng["python_rng"])

    # ----------------------------------------------------------------- one step
    def compute_losses(self, batch: dict[str, Any], timesteps: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Encode, noise, run the DiT (and head), return every loss term and "loss".

        Args:
            timesteps: optional (B,) diffusion timesteps to use instead of uniform draws (evaluation).
        """
        m, cfg, dev, g = self.models, self.cfg, self.device, self.generator
        rgb = batch["rgb"].to(dev)
        gm_video = batch["gm"].to(dev)  # (B, 1, 3, H, W) placeholder when latents are cached
        B = rgb.shape[0]
        if self.cache is not None:
            moments = self.cache.load_batch(batch["clip_id"], dev)
            rgb_lat = m.vae.sample_from_moments(moments["rgb_mean"], moments["rgb_std"], g)
            gm_lat = m.vae.sample_from_moments(moments["gm_mean"], moments["gm_std"], g)
        else:
            rgb_lat = m.vae.sample(rgb, g)
            gm_lat = m.vae.sample(gm_video, g)
        image_lat = m.vae.image_condition(rgb[:, 0], rgb_lat.shape[1], generator=g)
        text = m.text(list(batch["caption"])).to(dev)
        t = sample_timesteps(m.scheduler, B, dev, g) if timesteps is None else timesteps.to(dev)
        if t.shape != (B,):
            raise ValueError(f"timesteps must be ({B},), got {tuple(t.shape)}")
        noise_rgb = torch.randn(rgb_lat.shape, generator=g).to(dev, rgb_lat.dtype)
        noise_gm = torch.randn(gm_lat.shape, generator=g).to(dev, gm_lat.dtype)
        noisy_rgb, v_rgb = noisy_latents_and_target(m.scheduler, rgb_lat, noise_rgb, t)
        noisy_gm, v_gm = noisy_latents_and_target(m.scheduler, gm_lat, noise_gm, t)
        has_gm = batch["has_gm"].to(dev)
        # an absent gm video is all zeros; keep the model input a plain noisy latent of it
        need_hidden = m.head is not None
        dtype = next(m.dit.parameters()).dtype
        with (
            torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.autocast),
            torch.set_grad_enabled(cfg.stage != "1b" and torch.is_grad_enabled()),
        ):
            out = self._dit(
                noisy_rgb.to(dtype),
                noisy_gm.to(dtype),
                text.to(dtype),
                t,
                image_latents=image_lat.to(dtype),
                return_hidden_states=need_hidden,
            )
        losses: dict[str, torch.Tensor] = {}
        total = torch.zeros((), device=dev)
        if cfg.stage in ("1a", "2"):
            losses["diff_rgb"] = diffusion_loss(out.rgb, v_rgb)
            gm_weight = None
            if cfg.provenance_weight_gm and "provenance" in batch:
                gm_weight = self.weights.provenance.sample_weights(batch["provenance"].to(dev), GM_PARTS)
            losses["diff_gm"] = diffusion_loss(out.gm, v_gm, keep=has_gm, sample_weight=gm_weight)
            total = total + losses["diff_rgb"] + losses["diff_gm"]
        if m.head is not None:
            hidden = out.hidden_states if cfg.stage != "1b" else [h.detach() for h in out.hidden_states]
            frames, grid = rgb_lat.shape[1], (rgb_lat.shape[3] // 2, rgb_lat.shape[4] // 2)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.autocast):
                pred = self._head([h.to(next(m.head.parameters()).dtype) for h in hidden], frames, grid, self.label_size)
            targets = targets_from_batch(batch, dev)
            weight = None
            if cfg.dpt_weighting == "alpha_bar":
                weight = m.scheduler.alphas_cumprod.to(dev)[t.to(dev)].float()
            d = dpt_losses(pred, targets, self.weights, sample_weight=weight)
            losses.update(d)
            scale = 1.0 if cfg.stage == "1b" else self.weights.lambda_dpt
            total = total + scale * d["dpt"]
            if not total.requires_grad and torch.is_grad_enabled():
                # no term supervises any sample of this batch (e.g. only pseudo-labels at estimated=0):
                # a zero loss still tied to the head, so backward and DDP's reduction run as usual
                total = total + 0.0 * sum(x.float().mean() for x in pred.__dict__.values())
            if cfg.stage == "2":
                reg = stage2_regularisers(pred, targets, self.label_size, self.weights)
                w = 1.0 if weight is None else weight.mean()
                losses.update(reg)
                total = total + self.weights.lambda_reg * w * reg["reg"]
        losses["loss"] = total
        return losses

    def train_step(self, batch: dict[str, Any]) -> dict[str, float]:
        self.optimizer.zero_grad(set_to_none=True)
        losses = self.compute_losses(batch)
        if not torch.isfinite(losses["loss"]):
            raise FloatingPointError(f"non-finite loss at step {self.step}: { {k: float(v) for k, v in losses.items()} }")
        losses["loss"].backward()
        params = [p for group in self.optimizer.param_groups for p in group["params"]]
        grad_norm = clip_grad_norm(params, self.cfg.grad_clip)
        lrs = {f"lr_{g['name']}": g["lr"] for g in self.optimizer.param_groups}  # the LR this step used
        self.optimizer.step()
        self.lr_schedule.step()
        self.step += 1
        self.samples_consumed += len(batch["clip_id"]) * self.dist.world_size  # draws of the global stream
        metrics = {k: float(v.detach()) for k, v in losses.items()}
        metrics["grad_norm"] = float(grad_norm)
        metrics.update(lrs)
        return metrics

    @torch.no_grad()
    def evaluate_losses(
        self, batch: dict[str, Any], seeds: Sequence[int] = tuple(range(8)), timesteps: Sequence[int] | None = None
    ) -> dict[str, float]:
        """Every loss term of `compute_losses`, averaged over fixed random draws, without training.

        Each seed fixes all of a step's randomness (posterior samples, image-condition noise and
        dropout, diffusion noise and, unless `timesteps` is given, the timesteps), so the same
        batch and seeds give the same draws before and after training: a paired comparison, free
        of the per-step noise of the logged losses. With `timesteps`, every seed is evaluated at
        each of them (the whole batch at one timestep). The training generator is left
        untouched, so evaluating never changes what training does next.
        """
        if not seeds:
            raise ValueError("need at least one seed")
        B = len(batch["clip_id"])
        fixed = [None] if timesteps is None else [torch.full((B,), int(t), dtype=torch.long) for t in timesteps]
        if not fixed:
            raise ValueError("timesteps must not be empty (None draws them)")
        training_generator = self.generator
        totals: dict[str, float] = {}
        try:
            for seed in seeds:
                for t in fixed:
                    self.generator = torch.Generator().manual_seed(int(seed))
                    for name, value in self.compute_losses(batch, t).items():
                        totals[name] = totals.get(name, 0.0) + float(value)
        finally:
            self.generator = training_generator
        return {name: total / (len(seeds) * len(fixed)) for name, total in totals.items()}

    def _batches(self):
        batch_sampler = _Batches(shard_stream(iter(self.sampler), self.dist), self.cfg.batch_size)
        # obstore's client does not survive a fork: loader processes reading object storage are spawned
        remote = any(is_object_url(store) for store in self.cfg.stores)
        context = "spawn" if remote and self.cfg.num_workers > 0 else None
        loader = DataLoader(self.dataset, batch_sampler=batch_sampler, collate_fn=collate_samples,
                            num_workers=self.cfg.num_workers, multiprocessing_context=context,
                            prefetch_factor=2 if self.cfg.num_workers > 0 else None)
        return iter(loader)

    def run(self) -> dict[str, float]:
        """Train until `cfg.steps`; log metrics (averaged over ranks) every `log_every` steps to
        `metrics.jsonl` and as one line to stdout (rank 0); checkpoint every `save_every` and at the end."""
        metrics: dict[str, float] = {}
        batches = self._batches()
        log_path = self.out / "metrics.jsonl"
        while self.step < self.cfg.steps:
            start = time.perf_counter()
            batch = next(batches)
            metrics = self.train_step(batch)
            metrics.update(step_time_s=time.perf_counter() - start)
            if self.device.type == "cuda":
                metrics["peak_mem_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
            metrics = mean_over_ranks(metrics, self.dist, self.device)
            metrics["step"] = self.step
            if self.dist.is_main and (self.step % self.cfg.log_every == 0 or self.step == self.cfg.steps):
                with open(log_path, "a") as fh:
                    fh.write(json.dumps({"stage": self.cfg.stage, **metrics}) + "\n")
                # flushed: a flow streaming this process's piped stdout shows each step as it ends
                print(_console_line(metrics, self.cfg.stage, self.cfg.steps), flush=True)
            if self.step % self.cfg.save_every == 0 or self.step == self.cfg.steps:
                self.save()
        return metrics


# the terms a console line shows per stage (the JSONL log keeps them all)
_CONSOLE_TERMS = {
    "1a": ("diff_rgb", "diff_gm"),
    "1b": ("depth", "points", "camera", "mask", "flow"),
    "2": ("diff_rgb", "diff_gm", "dpt", "reg"),
}


def _console_line(metrics: dict[str, float], stage: str, total_steps: int) -> str:
    """One compact `key=value` line of a logged step, e.g.
    `step=3/100 stage=1a loss=2.407 diff_rgb=1.392 diff_gm=1.015 grad_norm=0.9419 lr_dit=1.00e-03 step_s=0.126`."""
    fields = [f"step={metrics['step']}/{total_steps}", f"stage={stage}", f"loss={metrics['loss']:.4g}"]
    fields += [f"{name}={metrics[name]:.4g}" for name in (*_CONSOLE_TERMS[stage], "grad_norm") if name in metrics]
    fields += [f"{name}={value:.2e}" for name, value in metrics.items() if name.startswith("lr_")]
    fields.append(f"step_s={metrics['step_time_s']:.3f}")
    if "peak_mem_gib" in metrics:
        fields.append(f"peak_mem_gib={metrics['peak_mem_gib']:.1f}")
    return " ".join(fields)


def _state_by_name(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """torch's optimizer state dict (parameters numbered 0.. over the param groups) keyed by `names`
    instead: the format `torch.distributed.checkpoint`'s full optimizer state dict uses."""
    return {
        "state": {names[i]: value for i, value in state["state"].items()},
        "param_groups": [{**group, "params": [names[i] for i in group["params"]]} for group in state["param_groups"]],
    }


def _state_by_index(state: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """Inverse of `_state_by_name` for this optimizer's parameter `names`."""
    index = {name: i for i, name in enumerate(names)}
    return {
        "state": {index[name]: value for name, value in state["state"].items()},
        "param_groups": [{**group, "params": [index[n] for n in group["params"]]} for group in state["param_groups"]],
    }


class _Batches:
    """Groups an endless index stream into batches (a DataLoader batch_sampler)."""

    def __init__(self, indices, batch_size: int) -> None:
        self.indices, self.batch_size = indices, batch_size

    def __iter__(self):
        while True:
            yield [next(self.indices) for _ in range(self.batch_size)]


# ============================================================================ CLI
def _job():
    from pipelines.jobconfig import JobConfig  # options, help and bounds from TrainConfig's fields

    return JobConfig(TrainConfig)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="worldreel train", description="Train the WorldReel DiT and DPT head on label "
                                "stores, one stage per run; resumes from the run folder's latest checkpoint.")
    _job().add_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    """`worldreel train`: parse arguments, train, print the last metrics. Returns 0 on success.

    With `--gpus N` > 1 outside a torchrun job, runs itself under torchrun with N processes
    and returns the launcher's exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    job = _job()
    try:
        (cfg,) = job.build(job.from_args(_parser().parse_args(argv)))
        if launched_world_size() == 1:
            check_stores_fit(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}")
        return 2
    if (cfg.gpus > 1 or cfg.nnodes > 1) and launched_world_size() == 1:
        visible = torch.cuda.device_count()
        if cfg.device != "cpu" and visible and visible < cfg.gpus:
            print(f"error: --gpus {cfg.gpus} but only {visible} CUDA devices are visible")
            return 2
        return relaunch_with_torchrun(cfg.gpus, "model.train", argv, nnodes=cfg.nnodes, node_rank=cfg.node_rank,
                                      rdzv_endpoint=cfg.rdzv_endpoint, rdzv_id=cfg.rdzv_id)
    try:
        trainer = Trainer(cfg)
        metrics = trainer.run()
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}")
        return 2
    finally:
        cleanup()
    if trainer.dist.is_main:
        print(json.dumps(metrics))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
