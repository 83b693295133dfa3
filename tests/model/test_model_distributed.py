import json
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist

import model.train as train
from model.data import LabelClipDataset, MixtureSampler, collate_samples
from model.dit import GeoMotionDiT
from model.distributed import DistContext, mean_over_ranks, shard_stream, torchrun_command
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
    monkeypatch.setattr(train, "relaunch_with_torchrun", lambda n, module, argv: calls.append((n, module, argv)) or 0)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    argv = ["--data", "somewhere", "--gpus", "4", "--steps", "3", "--strategy", "fsdp"]
    assert train.main(argv) == 0
    assert calls == [(4, "model.train", argv)]
    command = torchrun_command(4, "model.train", argv)
    assert command[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node=4", "-m"]
    assert command[6:] == ["model.train", *argv]


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
def test_two_process_ddp_run(tmp_path):
    store = LabelStore.create(tmp_path / "store", precision="float32")
    write_synthetic_set(tmp_path / "set", scene_configs(2, H, W, seed=5, num_frames=T), store)
    out = tmp_path / "run"
    config = dict(
        model="tiny", stage="2", data=[str(tmp_path / "store")], output_dir=str(out), steps=2, save_every=1,
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
# and what FSDP did to the modules.
FSDP_WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    from model.train import TrainConfig, Trainer

    torch.set_num_threads(1)
    config = json.loads(sys.argv[1])
    out = config.pop("output_dir")
    full = Trainer(TrainConfig(**config, output_dir=f"{out}/full", steps=3))
    full.run()
    Trainer(TrainConfig(**config, output_dir=f"{out}/split", steps=2)).run()
    resumed = Trainer(TrainConfig(**config, output_dir=f"{out}/split", steps=3))
    start = resumed.step
    resumed.run()
    head_only = Trainer(TrainConfig(**{**config, "stage": "1b"}, output_dir=f"{out}/s1b", steps=1,
                                    init_from=f"{out}/full/checkpoints/step_00000003"))
    head_only.run()
    weight = full.models.dit.transformer.transformer_blocks[0].attn1.to_q.weight
    head_weight = full.models.head.depth_head[2].weight
    facts = dict(resumed_from=start, block_weight=[type(weight).__name__, list(weight.shape), list(weight.to_local().shape)],
                 moment_shard=list(full.optimizer.state[weight]["exp_avg"].to_local().shape),
                 head_weight=type(head_weight).__name__,
                 frozen_dit=type(head_only.models.dit.transformer.proj_out.weight).__name__)
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
    """A checkpoint's weights read the way sampling reads them (diffusers folder + safetensors)."""
    from safetensors.torch import load_file

    return _weights(GeoMotionDiT.from_pretrained(ckpt / "dit"), load_file(str(ckpt / "dpt_head.safetensors")))


def _assert_same(a: dict, b: dict, **tolerance) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key, **tolerance)


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
def test_two_process_fsdp_matches_single_process_and_resumes_exactly(tmp_path):
    store = LabelStore.create(tmp_path / "store", precision="float32")
    write_synthetic_set(tmp_path / "set", scene_configs(2, H, W, seed=5, num_frames=T), store)
    out = tmp_path / "run"
    # stage 2 trains the DiT (with gradient checkpointing, the default) and the head; clipping is active
    config = dict(
        model="tiny", stage="2", data=[str(tmp_path / "store")], output_dir=str(out), save_every=1, warmup_steps=2,
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
    logged = _emulate_data_parallel(reference, generators, 2)
    for fsdp, single in zip(logs[0], logged):
        assert fsdp["loss"] == pytest.approx(single["loss"], rel=1e-5)
        assert fsdp["grad_norm"] == pytest.approx(single["grad_norm"], rel=1e-4)
    # weights to float tolerance; atol: the key bias of attention has a zero true gradient, and AdamW
    # turns its rounding noise g into steps of lr * g / (|g| + eps), up to ~1e-5 here (one step is ~lr = 1e-3)
    tolerance = dict(rtol=1e-4, atol=5e-5)
    at_step_2 = _weights(reference.models.dit, reference.models.head.state_dict())
    _assert_same(_checkpoint_weights(full / "step_00000002"), at_step_2, **tolerance)
    _emulate_data_parallel(reference, generators, 1)
    _assert_same(_checkpoint_weights(full / "step_00000003"), _weights(reference.models.dit, reference.models.head.state_dict()),
                 **tolerance)  # fmt: skip

    # the FSDP checkpoint resumes in a single process (another strategy and world size) onto the same path
    shutil.copytree(full / "step_00000002", tmp_path / "cross" / "checkpoints" / "step_00000002")
    cross = train.Trainer(train.TrainConfig(**{**config, "output_dir": str(tmp_path / "cross"), "strategy": "ddp", "steps": 3}))
    assert cross.step == 2 and cross.samples_consumed == 4
    rngs = torch.load(full / "step_00000002" / "trainer_state.pt", weights_only=False)["rank_rngs"]
    ranks = [torch.Generator().set_state(rng["generator"]) for rng in rngs]  # both ranks' noise as at step 2
    _emulate_data_parallel(cross, ranks, 1)
    _assert_same(_checkpoint_weights(full / "step_00000003"), _weights(cross.models.dit, cross.models.head.state_dict()),
                 **tolerance)  # fmt: skip
