"""Training on several machines: two `worldreel train --nnodes 2` commands meet at a c10d rendezvous.

Two CPU processes with gloo stand for the two nodes (each runs torchrun with one process), share
one output folder as nodes share a network path, and read one label store on a real S3 server; a
single process then resumes the run under world size 1, its data loaded by a spawned worker
process with prefetch.
"""

import json
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist

from pipelines.synthetic_set import scene_configs, write_synthetic_set
from storage import LabelStore

H, W, T = 32, 64, 9


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(store, out, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "worldreel_cli", "train", "--config", "tiny", "--stage", "2", "--store", str(store),
            "--output-dir", str(out), "--steps", str(steps), "--save-every", "1", "--warmup-steps", "1",
            "--device", "cpu", "--seed", "3", *extra]


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs torch.distributed with gloo")
def test_two_nodes_train_then_one_resumes(tmp_path, s3_url):
    store = LabelStore.create(s3_url, precision="float32")  # the AWS_* variables reach the subprocesses
    write_synthetic_set(tmp_path / "set", scene_configs(2, H, W, seed=5, num_frames=T), store)
    out = tmp_path / "run"
    endpoint = f"127.0.0.1:{_free_port()}"
    nodes = [
        subprocess.Popen(_train(store.location, out, 2, "--nnodes", "2", "--node-rank", str(rank), "--rdzv-endpoint", endpoint,
                                "--rdzv-id", "test-two-nodes"),
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
        for rank in (0, 1)
    ]
    logs = [node.communicate(timeout=300)[0] for node in nodes]
    for node, log in zip(nodes, logs):
        assert node.returncode == 0, log[-3000:]
    state = torch.load(out / "checkpoints" / "step_00000002" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 2 and len(state["rank_rngs"]) == 2  # one job of world size 2
    assert state["samples_consumed"] == 4  # 2 steps x 1 clip x 2 ranks
    assert sum(line.startswith("step=") for log in logs for line in log.splitlines()) == 2  # rank 0 alone logs

    resumed = subprocess.run(_train(store.location, out, 3, "--num-workers", "1"), capture_output=True, text=True,
                             cwd=tmp_path, timeout=300)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    state = torch.load(out / "checkpoints" / "step_00000003" / "trainer_state.pt", weights_only=False)
    assert state["step"] == 3 and state["samples_consumed"] == 5  # the stream continues under world size 1


def test_several_nodes_need_a_rendezvous_endpoint(capsys):
    from model.train import main

    assert main(["--store", "somewhere", "--nnodes", "2"]) == 2
    assert "--rdzv-endpoint" in capsys.readouterr().out
