"""Peak host memory (RSS) per rank of FSDP training start-up and checkpointing.

A 2-process gloo job on CPU (`torch.distributed.run --nproc-per-node 2`) runs
`model.train.Trainer` with `--strategy fsdp` on a mid-size DiT: the tiny configuration's
code path widened to hidden 1024 (16 heads x 64) and `--layers` blocks (8: ~390 MB of fp32
DiT + DPT head weights; nothing is downloaded). Each phase is a fresh job, so a process's
peak RSS (`ru_maxrss`) is that phase's:

- fresh:     start-up with random initial weights (the stand-in for a pretrained load);
- resume:    start-up that resumes a 1-step checkpoint (weights + AdamW state), then a save;
- init-from: start-up of a new run from that checkpoint's weights (`--init-from`).

Reported per rank: the growth of peak RSS over the process's RSS before the Trainer builds
its models (imports, process group, a first clip read), in MB, medians over `--repeats`
jobs, and that growth as a multiple of the model's fp32 weight bytes ("x model").
Before rank-0-only loading every rank grew by >= 1 x model at start-up; with it, ranks > 0
grow by about their shard (0.5 x model on 2 ranks; on resume plus their AdamW moment shards
and zero gradient shards, 1.5 x model more), and rank 0 by its full copy plus its shards.

    .venv/bin/python bench/bench_fsdp_memory.py [--quick] [--layers 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HIDDEN = dict(num_attention_heads=16, attention_head_dim=64)
H, W, T = 32, 64, 9
PHASES = ("fresh", "resume", "init-from")


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _model_bytes(trainer) -> int:
    """fp32 bytes of the DiT and head weights and buffers (global sizes, also when sharded)."""
    modules = [trainer.models.dit, trainer.models.head]
    return sum(t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()])


def worker(phase: str, config: dict, layers: int, out: Path) -> None:
    """One rank of a job: build the Trainer for `phase`, record peak RSS before it builds the
    models, after start-up and (resume) after one more checkpoint save."""
    import torch
    import torch.distributed.checkpoint.state_dict  # noqa: F401  (imported lazily by the trainer)
    import torch.distributed.fsdp  # noqa: F401
    from diffusers import AutoencoderKLCogVideoX  # noqa: F401

    import model.train as train
    from model.data import LabelClipDataset
    from model.distributed import init_distributed

    torch.set_num_threads(1)
    tiny = train.tiny_transformer_config
    # the tiny code path at mid size: every rank builds it exactly as the trainer does
    train.tiny_transformer_config = lambda **kw: tiny(**kw, **HIDDEN, num_layers=layers)
    init_distributed("cpu")
    LabelClipDataset(config["data"])[0]  # the trainer reads a first clip before building models
    baseline = _max_rss_mb()  # imports, process group, data readers: everything but the model
    trainer = train.Trainer(train.TrainConfig(**config))
    record = {"baseline_mb": baseline, "startup_mb": _max_rss_mb(), "model_bytes": _model_bytes(trainer)}
    if phase == "fresh":
        trainer.run()  # one step and its checkpoint: what resume and init-from start from
    elif phase == "resume":
        record["resumed_step"] = trainer.step
        trainer.save()
        record["save_mb"] = _max_rss_mb()
    (out / f"rank{trainer.dist.rank}.json").write_text(json.dumps(record))
    torch.distributed.destroy_process_group()


def _job(phase: str, config: dict, layers: int, out: Path) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", __file__]
    command += ["--worker", phase, "--layers", str(layers), "--out", str(out), "--config", json.dumps(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"{phase} job failed:\n{result.stderr[-3000:]}")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def _write_store(root: Path) -> str:
    from pipelines.synthetic_set import scene_configs, write_synthetic_set
    from storage import LabelStore

    store = LabelStore.create(root / "store", precision="float32")
    write_synthetic_set(root / "set", scene_configs(2, H, W, seed=5, num_frames=T), store)
    return str(root / "store")


def bench(layers: int, repeats: int) -> dict[str, list[list[dict]]]:
    """Per phase, `repeats` jobs of two rank records each."""
    results: dict[str, list[list[dict]]] = {phase: [] for phase in PHASES}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        common = dict(model="tiny", stage="2", data=[_write_store(root)], device="cpu", strategy="fsdp", seed=3,
                      gradient_checkpointing=False, keep_checkpoints=1)  # fmt: skip
        for i in range(repeats):
            run = root / f"run{i}"
            results["fresh"].append(_job("fresh", {**common, "output_dir": str(run), "steps": 1}, layers, root / f"f{i}"))
            resume = {**common, "output_dir": str(run), "steps": 2}
            results["resume"].append(_job("resume", resume, layers, root / f"r{i}"))
            init = {**common, "output_dir": str(root / f"init{i}"), "steps": 1,
                    "init_from": str(run / "checkpoints" / "step_00000001")}  # fmt: skip
            results["init-from"].append(_job("init-from", init, layers, root / f"i{i}"))
    return results


def _report(results: dict[str, list[list[dict]]]) -> None:
    model_mb = results["fresh"][0][0]["model_bytes"] / 2**20
    print(f"model (DiT + head, fp32): {model_mb:.0f} MB; 2 ranks, gloo, CPU; peak RSS growth over the pre-model RSS")
    print(f"{'phase':<10} {'rank':>4} {'start-up MB':>12} {'x model':>8} {'save MB':>9} {'x model':>8}")
    for phase, jobs in results.items():
        for rank in range(2):
            growth = statistics.median(job[rank]["startup_mb"] - job[rank]["baseline_mb"] for job in jobs)
            line = f"{phase:<10} {rank:>4} {growth:>12.0f} {growth / model_mb:>8.2f}"
            if "save_mb" in jobs[0][rank]:
                save = statistics.median(job[rank]["save_mb"] - job[rank]["baseline_mb"] for job in jobs)
                line += f" {save:>9.0f} {save / model_mb:>8.2f}"
            print(line)
    for phase, jobs in results.items():
        ranks = [statistics.median(job[r]["startup_mb"] - job[r]["baseline_mb"] for job in jobs) for r in range(2)]
        print(f"{phase}: rank 1 / rank 0 start-up growth = {ranks[1] / ranks[0]:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4 blocks, 1 repeat")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--worker", choices=PHASES, help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, json.loads(args.config), args.layers, Path(args.out))
        return
    layers, repeats = (4, 1) if args.quick else (args.layers, args.repeats)
    _report(bench(layers, repeats))


if __name__ == "__main__":
    main()
