import json
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.distributed as dist

import model.train as train
from model.data import LabelClipDataset, MixtureSampler
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
    argv = ["--data", "somewhere", "--gpus", "4", "--steps", "3"]
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
