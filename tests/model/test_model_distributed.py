import contextlib
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import model.train as train
from model.builders import BuildPlan, build_full_models, empty_dit
from model.data import LabelClipDataset, MixtureSampler, collate_samples
from model.dit import GeoMotionDiT, GMAugmentationConfig, tiny_transformer_config
from model.distributed import DistContext, is_meta, mean_over_ranks, shard_stream, torchrun_command
from pipelines.synthetic_set import scene_configs, write_synthetic_set
from storage import LabelStore

H, W, T = 32, 64, 9

# One rank of a 2-process job: train, then save what the test compares.
WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    from model.train import TrainConfig, Trainer

    torch.set_num_threads(1)
    cfg = TrainConfig(**json.loads(sys.argv[1]))
    trainer = Trainer(cfg)
    seen = []
    step = trainer.train_step
    trainer.train_step = lambda batch: seen.append(list(batch["clip_id"])) or step(batch)
    metrics = trainer.run()
    state = {f"dit.{k}": v for k, v in trainer.models.dit.state_dict().items()}
    state.update({f"head.{k}": v for k, v in trainer.models.head.state_dict().items()})
    torch.save({"rank": trainer.dist.rank, "world": trainer.dist.world_size, "seen": seen, "metrics": metrics,
                "state": state}, f"{cfg.output_dir}/rank{trainer.dist.rank}.pt")
    torch.distributed.destroy_process_group()
    """
)


def test_shard_stream_interleaves_the_global_stream():
    assert list(shard_stream(iter(range(10)), DistContext(0, 0, 3))) == [0, 3, 6, 9]
    assert list(shard_stream(iter(range(10)), DistContext(2, 2, 3))) == [2, 5, 8]
    assert list(shard_stream(iter(range(4)), DistContext())) == [0, 1, 2, 3]
    assert mean_over_ranks({"a": 1.5}, DistContext(), torch.device("cpu")) == {"a": 1.5}


def test_gpus_option_relaunches_under_torchrun(monkeypatch):
    calls = []
    monkeypatch.setattr(train, "relaunch_with_torchrun",
                        lambda n, module, argv, **rendezvous: calls.append((n, module, argv, rendezvous)) or 0)
    checked = []
    # the store check runs before the launch (tested in test_model_train.py); here there is no store
    monkeypatch.setattr(train, "check_stores_fit", lambda cfg: checked.append(cfg.stores))
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = ["--data", "somewhere", "--gpus", "4", "--steps", "3", "--strategy", "fsdp"]
    assert train.main(argv) == 0
    single_node = {"nnodes": 1, "node_rank": 0, "rdzv_endpoint": None, "rdzv_id": "worldreel-train"}
    assert calls == [(4, "model.train", argv, single_node)] and checked == [["somewhere"]]
    command = torchrun_command(4, "model.train", argv)
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "-m"]
    assert command[6:] == ["model.train", *argv]


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
def test_two_process_ddp_run(tmp_path):
    store = LabelStore.create(tmp_path / "store", precision="float32")
    write_synthetic_set(tmp_path / "set", scene_configs(2, H, W, seed=5, num_frames=T), store)
    out = tmp_path / "run"
    config = dict(
        config="tiny", stage="2", stores=[str(tmp_path / "store")], output_dir=str(out), steps=2, save_every=1,
        warmup_steps=1, lr=1e-3, head_lr=1e-3, device="cpu", seed=3,
    )  # fmt: skip
    (tmp_path / "worker.py").write_text(WORKER)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    command = [*launcher, str(tmp_path / "worker.py"), json.dumps(config)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]

    ranks = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world"] == 2 for r in ranks)
    # the two ranks share one seeded stream: draws 0, 2 go to rank 0 and 1, 3 to rank 1
    dataset = LabelClipDataset([str(tmp_path / "store")], frames_loader=lambda c, a, i, s: None)
    stream = iter(MixtureSampler(dataset, seed=3))
    draws = [dataset.entries[next(stream)].clip_id for _ in range(4)]
    assert ranks[0]["seen"] == [[draws[0]], [draws[2]]] and ranks[1]["seen"] == [[draws[1]], [draws[3]]]
    # DDP keeps the replicas identical after every step; the step did change them
    for key, value in ranks[0]["state"].items():
        assert torch.equal(value, ranks[1]["state"][key]), key
    fresh = train.Trainer(train.TrainConfig(**{**config, "output_dir": str(tmp_path / "fresh")}))
    assert not torch.equal(fresh.models.head.depth_head[2].weight, ranks[0]["state"]["head.depth_head.2.weight"])
    assert ranks[0]["metrics"] == ranks[1]["metrics"]  # averaged over ranks
    # rank 0 alone logs (one line per step, losses averaged over ranks) and checkpoints
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    console = [x for x in result.stdout.splitlines() if x.startswith("step=")]
    assert [x.split()[0] for x in console] == ["step=1/2", "step=2/2"]  # rank 0 only
    assert all(torch.isfinite(torch.tensor([x[k] for k in ("loss", "diff_rgb", "dpt", "reg")])).all() for x in lines)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_00000001", "step_00000002"]
    state = torch.load(out / "checkpoints" / "step_00000002" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 2 and state["samples_consumed"] == 4 and len(state["rank_rngs"]) == 2
    assert not torch.equal(state["rank_rngs"][0]["generator"], state["rank_rngs"][1]["generator"])


# Both ranks of a 2-process FSDP job: an uninterrupted 3-step stage-2 run, then 2 steps and a resume to 3
# (a new Trainer that reads everything from the checkpoint), one stage-1b step on the result (frozen DiT),
# and what FSDP did to the modules. The resumed and the stage-1b trainers also save, before training, every
# parameter and buffer as this rank holds it (its shard of a sharded one), and the resumed one the full
# state gathered on rank 0 and its (random, replicated) VAE; every checkpoint weight load is logged (rank 0
# alone may read weights; each builds the DiT and head from the checkpoint's files, reading each once).
FSDP_WORKER = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path
    import torch
    import model.train as train
    from model.distributed import full_model_state
    from model.train import TrainConfig, Trainer

    torch.set_num_threads(1)
    config = json.loads(sys.argv[1])
    out = config.pop("output_dir")
    from model.dit import GeoMotionDiT
    from model.dpt_head import TemporalDPTHead

    loads, dit_from_pretrained, head_from_pretrained = [], GeoMotionDiT.from_pretrained, TemporalDPTHead.from_pretrained
    GeoMotionDiT.from_pretrained = lambda path, *a, **k: loads.append(["dit", Path(path).parent.name]) or \
        dit_from_pretrained(path, *a, **k)
    TemporalDPTHead.from_pretrained = lambda path, *a, **k: loads.append(["head", Path(path).parent.name]) or \
        head_from_pretrained(path, *a, **k)

    def as_held(**modules):
        shards, whole = {}, {}
        for prefix, module in modules.items():
            for name, t in [*module.named_parameters(), *module.named_buffers()]:
                sharded = hasattr(t, "to_local")
                (shards if sharded else whole)[f"{prefix}.{name}"] = (t.to_local() if sharded else t).detach().clone()
        return {"shards": shards, "whole": whole}

    full = Trainer(TrainConfig(**config, output_dir=f"{out}/full", steps=3))
    full.run()
    Trainer(TrainConfig(**config, output_dir=f"{out}/split", steps=2)).run()
    resumed = Trainer(TrainConfig(**config, output_dir=f"{out}/split", steps=3))
    start = resumed.step
    held = as_held(dit=resumed.models.dit, head=resumed.models.head)
    held["gathered"] = {"dit": full_model_state(resumed.models.dit), "head": full_model_state(resumed.models.head)}
    held["vae"] = resumed.models.vae.state_dict()
    torch.save(held, f"{out}/resumed{resumed.dist.rank}.pt")
    resumed.run()
    head_only = Trainer(TrainConfig(**{**config, "stage": "1b"}, output_dir=f"{out}/s1b", steps=1,
                                    init_from=f"{out}/full/checkpoints/step_00000003"))
    torch.save(as_held(dit=head_only.models.dit, head=head_only.models.head), f"{out}/s1b{head_only.dist.rank}.pt")
    head_only.run()
    weight = full.models.dit.transformer.transformer_blocks[0].attn1.to_q.weight
    head_weight = full.models.head.depth_head[2].weight
    facts = dict(resumed_from=start, block_weight=[type(weight).__name__, list(weight.shape), list(weight.to_local().shape)],
                 moment_shard=list(full.optimizer.state[weight]["exp_avg"].to_local().shape),
                 head_weight=type(head_weight).__name__,
                 frozen_dit=type(head_only.models.dit.transformer.proj_out.weight).__name__, loads=loads)
    json.dump(facts, open(f"{out}/rank{full.dist.rank}.json", "w"))
    torch.distributed.destroy_process_group()
    """
)


def _emulate_data_parallel(trainer: train.Trainer, generators: list[torch.Generator], steps: int) -> list[dict]:
    """`steps` steps of a len(generators)-rank job in one process: per step, rank r's micro-batch is the
    next draw of the global stream, noised by rank r's generator; gradients are averaged over ranks.
    Returns each step's loss (mean over ranks) and gradient norm before clipping."""
    stream = iter(trainer.sampler)
    params = [p for group in trainer.optimizer.param_groups for p in group["params"]]
    logged = []
    for _ in range(steps):
        trainer.optimizer.zero_grad(set_to_none=True)
        loss = 0.0
        for generator in generators:
            trainer.generator = generator
            batch = collate_samples([trainer.dataset[next(stream)]])
            rank_loss = trainer.compute_losses(batch)["loss"] / len(generators)
            rank_loss.backward()
            loss += float(rank_loss.detach())
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, trainer.cfg.grad_clip))
        trainer.optimizer.step()
        trainer.lr_schedule.step()
        logged.append({"loss": loss, "grad_norm": grad_norm})
    return logged


def _weights(dit: GeoMotionDiT, head_state: dict) -> dict[str, torch.Tensor]:
    state = {f"dit.{k}": v.detach().clone() for k, v in dit.state_dict().items()}
    state.update({f"head.{k}": v.detach().clone() for k, v in head_state.items()})
    return state


def _checkpoint_weights(ckpt) -> dict[str, torch.Tensor]:
    """A checkpoint's weights read the way sampling reads them (diffusers folders)."""
    from model.dpt_head import TemporalDPTHead

    return _weights(GeoMotionDiT.from_pretrained(ckpt / "dit"), TemporalDPTHead.from_pretrained(ckpt / "dpt_head").state_dict())


def _assert_same(a: dict, b: dict, **tolerance) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=lambda m, key=key: f"{key}: {m}", **tolerance)


def _assert_trained_alike(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    """Weights of two runs that took the same steps, equal up to float rounding (which AdamW amplifies in
    elements with tiny gradients). The key biases of the head's attention layers are left out: softmax ignores a
    key bias (it adds one score to all keys of a query), so their true gradient is 0 and AdamW, which divides by
    the gradient's scale, moves them by up to lr per step on rounding noise alone, differently in each run."""

    def without_key_bias(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        out = dict(state)
        for name, value in state.items():
            if name.endswith("in_proj_bias"):  # [query | key | value] biases
                third = value.shape[0] // 3
                out[name] = torch.cat([value[:third], value[2 * third :]])
        return out

    _assert_same(without_key_bias(a), without_key_bias(b), rtol=1e-4, atol=5e-5)


def _loaded_tensors(ckpt) -> dict[str, torch.Tensor]:
    """Every parameter and buffer (also non-persistent ones) of a checkpoint loaded in one process."""
    from model.dpt_head import TemporalDPTHead

    dit = GeoMotionDiT.from_pretrained(ckpt / "dit")
    tensors = {f"dit.{n}": t.detach() for n, t in [*dit.named_parameters(), *dit.named_buffers()]}
    head = TemporalDPTHead.from_pretrained(ckpt / "dpt_head")
    tensors.update({f"head.{n}": t.detach() for n, t in head.named_parameters()})  # the head has no buffers
    return tensors


def _rank_shard(full: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """FSDP2's dim-0 shard of `full` on `rank` (torch.chunk; ranks past the last chunk hold none)."""
    chunks = torch.chunk(full, world_size, dim=0)
    return chunks[rank] if rank < len(chunks) else full[:0]


def _assert_held_exactly(held: list[dict], reference: dict[str, torch.Tensor]) -> None:
    """Each rank's shards are its chunks of `reference`'s tensors, its whole tensors equal them: bit for bit."""
    for rank, tensors in enumerate(held):
        assert tensors["shards"].keys() | tensors["whole"].keys() == reference.keys()
        for key, shard in tensors["shards"].items():
            expected = _rank_shard(reference[key], rank, len(held))
            assert shard.dtype == expected.dtype and torch.equal(shard, expected), (rank, key)
        for key, whole in tensors["whole"].items():
            assert whole.dtype == reference[key].dtype and torch.equal(whole, reference[key]), (rank, key)


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
def test_two_process_fsdp_matches_single_process_and_resumes_exactly(tmp_path):
    store = LabelStore.create(tmp_path / "store", precision="float32")
    write_synthetic_set(tmp_path / "set", scene_configs(2, H, W, seed=5, num_frames=T), store)
    out = tmp_path / "run"
    # stage 2 trains the DiT (with gradient checkpointing, the default) and the head; clipping is active
    config = dict(
        config="tiny", stage="2", stores=[str(tmp_path / "store")], output_dir=str(out), save_every=1, warmup_steps=2,
        lr=1e-3, head_lr=1e-3, grad_clip=0.5, device="cpu", seed=3, strategy="fsdp",
    )  # fmt: skip
    (tmp_path / "worker.py").write_text(FSDP_WORKER)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    result = subprocess.run([*launcher, str(tmp_path / "worker.py"), json.dumps(config)], cwd=tmp_path,
                            capture_output=True, text=True, timeout=180)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]

    # really sharded: each rank holds half of a block's weight rows and of its AdamW moments
    facts = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    for f in facts:
        assert f["resumed_from"] == 2
        assert f["block_weight"] == ["DTensor", [32, 32], [16, 32]] and f["moment_shard"] == [16, 32]
        assert f["head_weight"] == "DTensor" and f["frozen_dit"] == "Parameter"  # stage 1b: a frozen replica
    # start-up: rank 0 alone read the checkpoints (resume, then --init-from); rank 1 built empty modules and
    # received exactly the weights and buffers of a single-process load, as shards and as a replica
    reads = [[part, step] for step in ("step_00000002", "step_00000003") for part in ("dit", "head")]
    assert facts[0]["loads"] == reads and facts[1]["loads"] == []
    resumed = [torch.load(out / f"resumed{r}.pt", weights_only=False) for r in range(2)]
    at_step_2 = _loaded_tensors(out / "split" / "checkpoints" / "step_00000002")
    _assert_held_exactly(resumed, at_step_2)
    assert {k for r in resumed for k in r["whole"]} == {"dit.transformer.patch_embed.pos_embedding"}  # a buffer
    gathered = {f"{m}.{k}": v for m, state in resumed[0]["gathered"].items() for k, v in state.items()}
    assert gathered.keys() == at_step_2.keys() and all(torch.equal(v, at_step_2[k]) for k, v in gathered.items())
    assert all(r["gathered"] == {"dit": {}, "head": {}} for r in resumed[1:])  # gathered to rank 0 only
    s1b = [torch.load(out / f"s1b{r}.pt", weights_only=False) for r in range(2)]
    _assert_held_exactly(s1b, _loaded_tensors(out / "full" / "checkpoints" / "step_00000003"))
    assert all(k.startswith("dit.") for k in s1b[1]["whole"]) and s1b[1]["shards"]  # replicated DiT, sharded head
    # stop + resume reproduces the uninterrupted run: weights, optimizer state, logged losses
    full, split = out / "full" / "checkpoints", out / "split" / "checkpoints"
    _assert_same(_checkpoint_weights(full / "step_00000003"), _checkpoint_weights(split / "step_00000003"), rtol=0, atol=0)
    states = [torch.load(c / "step_00000003" / "trainer_state.pt", weights_only=False) for c in (full, split)]
    _assert_same(states[0]["optimizer"]["state"], states[1]["optimizer"]["state"], rtol=0, atol=0)
    logs = [[json.loads(x) for x in (c.parent / "metrics.jsonl").read_text().splitlines()] for c in (full, split)]
    assert [x["step"] for x in logs[1]] == [1, 2, 3] and logs[0][2]["loss"] == logs[1][2]["loss"]
    assert logs[0][0]["grad_norm"] > config["grad_clip"]

    # stage 1b under FSDP trains the sharded head and leaves the frozen DiT as it was
    before = _checkpoint_weights(full / "step_00000003")
    after = _checkpoint_weights(out / "s1b" / "checkpoints" / "step_00000001")
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("dit."))
    assert not torch.equal(before["head.depth_head.2.weight"], after["head.depth_head.2.weight"])

    # one process training on the same global batches (each rank's draws and noise) gets the same losses,
    # gradient norms (so FSDP averages the sharded gradients and takes their global norm) and weights
    generators = [torch.Generator().manual_seed(config["seed"] + 1 + r) for r in range(2)]
    reference = train.Trainer(train.TrainConfig(**{**config, "output_dir": str(tmp_path / "ref"), "steps": 3}))
    for held in resumed:  # rank 1 built its tiny VAE empty and took rank 0's random weights
        _assert_same(held["vae"], reference.models.vae.state_dict(), rtol=0, atol=0)
    logged = _emulate_data_parallel(reference, generators, 2)
    for fsdp, single in zip(logs[0], logged):
        assert fsdp["loss"] == pytest.approx(single["loss"], rel=1e-5)
        assert fsdp["grad_norm"] == pytest.approx(single["grad_norm"], rel=1e-4)
    at_step_2 = _weights(reference.models.dit, reference.models.head.state_dict())
    _assert_trained_alike(_checkpoint_weights(full / "step_00000002"), at_step_2)
    _emulate_data_parallel(reference, generators, 1)
    at_step_3 = _weights(reference.models.dit, reference.models.head.state_dict())
    _assert_trained_alike(_checkpoint_weights(full / "step_00000003"), at_step_3)

    # the FSDP checkpoint resumes in a single process (another strategy and world size) onto the same path
    shutil.copytree(full / "step_00000002", tmp_path / "cross" / "checkpoints" / "step_00000002")
    cross = train.Trainer(train.TrainConfig(**{**config, "output_dir": str(tmp_path / "cross"), "strategy": "ddp", "steps": 3}))
    assert cross.step == 2 and cross.samples_consumed == 4
    rngs = torch.load(full / "step_00000002" / "trainer_state.pt", weights_only=False)["rank_rngs"]
    ranks = [torch.Generator().set_state(rng["generator"]) for rng in rngs]  # both ranks' noise as at step 2
    _emulate_data_parallel(cross, ranks, 1)
    _assert_trained_alike(_checkpoint_weights(full / "step_00000003"), _weights(cross.models.dit, cross.models.head.state_dict()))


def _t2v_dit(seed: int, empty: bool = False, num_layers: int = 2) -> GeoMotionDiT:
    """A tiny DiT in CogVideoX-2B's layout: no RoPE, a sin-cos positional table as a non-persistent buffer."""
    conf = tiny_transformer_config(image_conditioned=False, use_rotary_positional_embeddings=False, num_layers=num_layers)
    torch.manual_seed(seed)
    with torch.device("meta") if empty else contextlib.nullcontext():
        return GeoMotionDiT.from_config(conf, GMAugmentationConfig(image_cond_channels=0, tap_blocks=[0, num_layers - 1]))


# Both ranks of a 2-process job: rank 0 builds the T2V DiT above (seed 0), rank 1 builds it empty in bf16
# (its dtypes must follow rank 0's); sharded from rank 0, then a replica that rank 1 first built with
# other random weights; then a module built unlike rank 0's (must fail on every rank alike).
HELPER_WORKER = textwrap.dedent(
    """
    import sys
    import torch
    from model.distributed import (device_mesh, fsdp_mixed_precision, full_model_state, init_distributed,
                                   replicate_from_rank0, shard_fsdp_from_rank0)
    sys.path.insert(0, sys.argv[2])
    from test_model_distributed import _t2v_dit

    torch.set_num_threads(1)
    ctx, cpu = init_distributed("cpu"), torch.device("cpu")
    sharded = _t2v_dit(0, empty=ctx.rank > 0)
    if ctx.rank > 0:
        sharded.to(torch.bfloat16)
    mesh = device_mesh(cpu, ctx)
    shard_fsdp_from_rank0(sharded, list(sharded.transformer.transformer_blocks), mesh, fsdp_mixed_precision(cpu, "no"), cpu, ctx)
    shards = {n: p.to_local().detach().clone() for n, p in sharded.named_parameters()}
    buffers = {n: b.clone() for n, b in sharded.named_buffers()}
    gathered = full_model_state(sharded)
    replica = replicate_from_rank0(_t2v_dit(seed=ctx.rank), cpu, ctx)
    try:
        replicate_from_rank0(_t2v_dit(0, num_layers=2 if ctx.rank == 0 else 1), cpu, ctx)
        error = None
    except ValueError as e:
        error = str(e)
    torch.save(dict(shards=shards, buffers=buffers, gathered=gathered, replica=replica.state_dict(), error=error),
               f"{sys.argv[1]}/rank{ctx.rank}.pt")
    torch.distributed.destroy_process_group()
    """
)


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
def test_rank0_broadcast_fills_empty_modules_exactly(tmp_path):
    (tmp_path / "worker.py").write_text(HELPER_WORKER)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    command = [*launcher, str(tmp_path / "worker.py"), str(tmp_path), str(Path(__file__).parent)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]

    reference = _t2v_dit(0)  # what one process builds
    table = reference.transformer.patch_embed.pos_embedding
    assert "transformer.patch_embed.pos_embedding" not in reference.state_dict() and table.abs().sum() > 0
    for rank, held in enumerate(ranks):
        for name, param in reference.named_parameters():
            expected = _rank_shard(param.detach(), rank, 2)
            assert held["shards"][name].dtype == expected.dtype and torch.equal(held["shards"][name], expected), (rank, name)
        assert held["buffers"].keys() == {"transformer.patch_embed.pos_embedding"}
        assert held["buffers"]["transformer.patch_embed.pos_embedding"].dtype == table.dtype == torch.float64
        assert torch.equal(held["buffers"]["transformer.patch_embed.pos_embedding"], table), rank  # non-persistent
        _assert_same(held["replica"], reference.state_dict(), rtol=0, atol=0)
        assert "rank 1's GeoMotionDiT differs from rank 0's" in held["error"]
    _assert_same(ranks[0]["gathered"], reference.state_dict(), rtol=0, atol=0)
    assert ranks[1]["gathered"] == {}
    assert not torch.equal(_t2v_dit(1).transformer.proj_out.weight, reference.transformer.proj_out.weight)


def test_empty_dit_has_the_layout_of_a_pretrained_load(tmp_path):
    from diffusers import CogVideoXTransformer3DModel

    CogVideoXTransformer3DModel.from_config(tiny_transformer_config()).save_pretrained(tmp_path / "transformer")
    aug = GMAugmentationConfig(tap_blocks=[0, 1])
    loaded = GeoMotionDiT.from_pretrained(tmp_path, aug, subfolder="transformer")
    empty = empty_dit(tmp_path / "transformer", aug)
    assert is_meta(empty) and not is_meta(loaded)
    layout = [(n, tuple(t.shape)) for n, t in [*loaded.named_parameters(), *loaded.named_buffers()]]
    assert [(n, tuple(t.shape)) for n, t in [*empty.named_parameters(), *empty.named_buffers()]] == layout
    assert empty.aug == aug and empty.config.in_channels == aug.in_channels == 48


def _base_model_folder(root: Path) -> Path:
    """A tiny CogVideoX-I2V diffusers folder for T x H x W clips: transformer, VAE, T5 encoder with a
    sentencepiece tokenizer (d_model = the DiT's text_embed_dim), scheduler; weights in safetensors files."""
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    from model.encoders import tiny_vae_config
    from model.losses import cogvideox_scheduler

    spm = pytest.importorskip("sentencepiece")
    base = root / "base"
    torch.manual_seed(0)
    config = tiny_transformer_config(sample_height=H // 8, sample_width=W // 8, sample_frames=T)
    CogVideoXTransformer3DModel.from_config(config).save_pretrained(base / "transformer")
    AutoencoderKLCogVideoX(**tiny_vae_config(H, W)).save_pretrained(base / "vae")
    cogvideox_scheduler().save_pretrained(base / "scheduler")
    t5 = T5Config(vocab_size=48, d_model=config["text_embed_dim"], d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    T5EncoderModel(t5).save_pretrained(base / "text_encoder")
    (base / "tokenizer").mkdir()
    (root / "corpus.txt").write_text("a dolly shot of a textured room with still and moving objects\n" * 20)
    spm.SentencePieceTrainer.train(
        input=str(root / "corpus.txt"), model_prefix=str(base / "tokenizer" / "spiece"), vocab_size=30, pad_id=0,
        eos_id=1, unk_id=2, bos_id=-1, minloglevel=2,
    )  # fmt: skip
    (base / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 0}))
    return base


# Both ranks of a 2-process job start a "cogvideox-5b-i2v" Trainer on a tiny base folder, under FSDP, then DDP. Rank 1
# gets a copy of the folder without the VAE and T5 weight files (under FSDP without any weight file), so it can only
# have its frozen encoders from rank 0. Each rank saves its encoders as it holds them (tied names included) and their
# outputs on fixed inputs.
ENCODER_WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from model.train import TrainConfig, Trainer

    torch.set_num_threads(1)
    config, root, rank = json.loads(sys.argv[1]), sys.argv[2], int(os.environ["RANK"])
    video = torch.linspace(-1, 1, 9 * 3 * 32 * 64).reshape(1, 9, 3, 32, 64)
    held = {}
    for strategy in ("fsdp", "ddp"):
        folder = f"{root}/base" if rank == 0 else f"{root}/{strategy}_rank1"
        trainer = Trainer(TrainConfig(**config, strategy=strategy, weights=folder, output_dir=f"{root}/{strategy}"))
        vae, text = trainer.models.vae.vae, trainer.models.text.model
        held[strategy] = dict(
            vae={n: t.detach().clone() for n, t in [*vae.named_parameters(), *vae.named_buffers()]},
            text={n: t.detach().clone() for n, t in [*text.named_parameters(remove_duplicate=False), *text.named_buffers()]},
            tied=text.shared.weight is text.encoder.embed_tokens.weight,
            embeddings=trainer.models.text(["a room", "moving objects"]),
            moments=trainer.models.vae.moments(video),
        )
    torch.save(held, f"{root}/rank{rank}.pt")
    torch.distributed.destroy_process_group()
    """
)


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
def test_only_rank0_reads_the_frozen_encoders(tmp_path):
    from model.encoders import T5TextEncoder, VideoLatentEncoder, load_vae

    base = _base_model_folder(tmp_path)
    no_weights = shutil.ignore_patterns("*.safetensors")
    shutil.copytree(base, tmp_path / "fsdp_rank1", ignore=no_weights)
    shutil.copytree(base, tmp_path / "ddp_rank1", ignore=no_weights)
    shutil.copytree(base / "transformer", tmp_path / "ddp_rank1" / "transformer", dirs_exist_ok=True)  # DDP: a replica
    assert not list((tmp_path / "fsdp_rank1").rglob("*.safetensors"))
    assert [p.parent.name for p in (tmp_path / "ddp_rank1").rglob("*.safetensors")] == ["transformer"]
    store = LabelStore.create(tmp_path / "store", precision="float32")
    write_synthetic_set(tmp_path / "set", scene_configs(2, H, W, seed=5, num_frames=T), store)
    # bf16: the frozen encoders' dtype; the DiT trains in fp32
    config = dict(config="cogvideox-5b-i2v", stage="2", stores=[str(tmp_path / "store")], steps=1, device="cpu",
                  mixed_precision="bf16", gradient_checkpointing=False)  # fmt: skip
    (tmp_path / "worker.py").write_text(ENCODER_WORKER)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2"]
    command = [*launcher, str(tmp_path / "worker.py"), json.dumps(config), str(tmp_path)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]

    # what one process loads from the complete folder
    vae = VideoLatentEncoder(load_vae(base, torch_dtype=torch.bfloat16))
    text = T5TextEncoder(base, max_length=4, torch_dtype=torch.bfloat16)
    reference_vae = {n: t for n, t in [*vae.vae.named_parameters(), *vae.vae.named_buffers()]}
    reference_text = dict(text.model.named_parameters(remove_duplicate=False))
    assert {"shared.weight", "encoder.embed_tokens.weight"} <= reference_text.keys()
    assert text.model.shared.weight is text.model.encoder.embed_tokens.weight  # tied: one tensor
    video = torch.linspace(-1, 1, T * 3 * H * W).reshape(1, T, 3, H, W)
    embeddings, moments = text(["a room", "moving objects"]), vae.moments(video)
    for rank, held in enumerate(ranks):
        for strategy in ("fsdp", "ddp"):
            for name, reference in (("vae", reference_vae), ("text", reference_text)):
                mine = held[strategy][name]
                assert mine.keys() == reference.keys(), (rank, strategy, name)
                for key, value in reference.items():
                    same = mine[key].dtype == value.dtype == torch.bfloat16 and torch.equal(mine[key], value)
                    assert same, (rank, strategy, name, key)
            assert held[strategy]["tied"], (rank, strategy)  # still one tensor after the broadcast
            assert torch.equal(held[strategy]["embeddings"], embeddings), (rank, strategy)
            assert all(torch.equal(a, b) for a, b in zip(held[strategy]["moments"], moments, strict=True)), (rank, strategy)


def test_full_model_starts_from_a_checkpoint_without_reading_the_base_dit(tmp_path):
    from model.dit import default_tap_blocks
    from model.dpt_head import DPTHeadConfig, TemporalDPTHead

    base = _base_model_folder(tmp_path)
    aug = GMAugmentationConfig(tap_blocks=default_tap_blocks(2))
    trained = GeoMotionDiT.from_pretrained(base, aug, subfolder="transformer")
    with torch.no_grad():  # as after training: unlike the base weights
        for p in trained.parameters():
            p.add_(torch.randn_like(p))
    ckpt = tmp_path / "step_00000001"
    trained.save_pretrained(ckpt / "dit")
    head = TemporalDPTHead.from_head_config(DPTHeadConfig(embed_dim=32))
    head.save_pretrained(ckpt / "dpt_head")
    # the base folder without the DiT's weight file: a run starting from a checkpoint never reads it
    no_dit = tmp_path / "no_dit"
    shutil.copytree(base, no_dit, ignore=lambda folder, names: [n for n in names if folder.endswith("transformer") and
                                                               n.endswith(".safetensors")])  # fmt: skip
    assert not list((no_dit / "transformer").glob("*.safetensors"))
    for stage, dtype in (("2", torch.float32), ("1b", torch.bfloat16)):  # a trained DiT in fp32, a frozen one in bf16
        models = build_full_models(stage, no_dit, torch.bfloat16, BuildPlan(checkpoint=ckpt))
        # what building the base DiT and copying the checkpoint's weights into it gave
        built = GeoMotionDiT.from_pretrained(base, aug, subfolder="transformer", torch_dtype=dtype)
        for name, param in trained.named_parameters():
            loaded = models.dit.get_parameter(name)
            assert loaded.dtype == dtype and torch.equal(loaded, param.detach().to(dtype)), (stage, name)
        for name, buffer in built.named_buffers():  # the non-persistent positional table
            assert torch.equal(models.dit.get_buffer(name), buffer) and models.dit.get_buffer(name).dtype == buffer.dtype
        for name, value in head.state_dict().items():
            assert torch.equal(models.head.state_dict()[name], value), (stage, name)
        assert not is_meta(models.dit) and not is_meta(models.head)
    # a checkpoint of another DiT than the run's: refused, not loaded under the run's config
    other = GeoMotionDiT.from_config(tiny_transformer_config(sample_height=H // 8, sample_width=W // 8, sample_frames=T,
                                                             max_text_seq_length=8), aug)  # fmt: skip
    other.save_pretrained(tmp_path / "other" / "dit")
    with pytest.raises(ValueError, match="max_text_seq_length=8, this run builds 4"):
        build_full_models("2", no_dit, torch.bfloat16, BuildPlan(checkpoint=tmp_path / "other"))
