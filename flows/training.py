"""Training flows: launch `worldreel train` as a separate process, stream its logs, publish checkpoints.

`train_flow` is the deployment ML engineers start from the Prefect UI (typed form of
`TrainRunParams`). The job runs in its own process (torchrun when several GPUs are asked
for), so a crash of the trainer never takes the flow with it; the task retries, and the
retry resumes from the last complete checkpoint (the trainer resumes by default).
`worldreel_pipeline_flow` chains the whole DAG: label a manifest, publish the quality
report, then train on the accepted clips.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact
from pydantic import BaseModel, Field

from flows.labeling import LabelRunParams, label_clips_flow

__all__ = ["TrainRunParams", "train_command", "train_flow", "worldreel_pipeline_flow"]


class TrainRunParams(BaseModel):
    """Train the geometry-motion augmented DiT and/or the DPT head on label stores."""

    config: Literal["tiny", "cogvideox-5b-i2v"] = Field("tiny", description="Model configuration")
    stage: Literal["1a", "1b", "2"] = Field("1a", description="1a DiT fine-tune, 1b DPT head on a frozen DiT, 2 joint")
    stores: list[str] = Field(description="Label stores to train on (synthetic and pseudo-labelled)")
    store_weights: list[float] | None = Field(None, description="Mixing weight per store (default equal)")
    output_dir: str = Field(description="Run folder: checkpoints/, metrics.jsonl")
    weights: str | None = Field(None, description="Local diffusers folder of CogVideoX-5B-I2V (not for tiny)")
    init_from: str | None = Field(None, description="Checkpoint to start from (e.g. stage 1a's for stage 2)")
    steps: int = Field(1000, ge=1, description="Total optimiser steps")
    batch_size: int = Field(1, ge=1)
    lr: float = Field(2e-5, gt=0, description="AdamW learning rate of the DiT")
    head_lr: float = Field(1e-4, gt=0, description="AdamW learning rate of the DPT head")
    save_every: int = Field(500, ge=1, description="Checkpoint every this many steps")
    gpus: int = Field(1, ge=1, le=64, description="GPUs on this node (torchrun when > 1)")
    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp", description="Data parallelism with several GPUs: ddp replicates the model, fsdp shards weights, "
        "gradients and optimizer state (needed for the full cogvideox-5b-i2v fine-tune on 80 GB GPUs)"
    )
    num_workers: int = Field(0, ge=0, le=64, description="Data-loader processes (2+ on GPU runs, so loading overlaps steps)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto")


def train_command(params: TrainRunParams) -> list[str]:
    """The `worldreel train` command line of a run."""
    command = [sys.executable, "-m", "worldreel_cli", "train", "--config", params.config, "--stage", params.stage,
               "--output-dir", params.output_dir, "--steps", str(params.steps), "--batch-size", str(params.batch_size),
               "--lr", str(params.lr), "--head-lr", str(params.head_lr), "--save-every", str(params.save_every),
               "--device", params.device, "--num-workers", str(params.num_workers), "--strategy", params.strategy]
    for store in params.stores:
        command += ["--store", store]
    if params.store_weights:
        command += ["--data-weights", *map(str, params.store_weights)]
    if params.weights:
        command += ["--weights", params.weights]
    if params.init_from:
        command += ["--init-from", params.init_from]
    if params.gpus > 1:
        command += ["--gpus", str(params.gpus)]
    return command


@task(retries=1, retry_delay_seconds=5)
def run_training(params: TrainRunParams) -> dict:
    """Run the trainer process, streaming its output into the flow's logs; raise if it fails (retry resumes)."""
    logger = get_run_logger()
    command = train_command(params)
    logger.info("launching: %s", " ".join(command))
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    for line in proc.stdout:
        logger.info(line.rstrip())
    if proc.wait() != 0:
        raise RuntimeError(f"trainer exited with code {proc.returncode}; a retry resumes from the last checkpoint")
    return _last_metrics(Path(params.output_dir) / "metrics.jsonl")


def _last_metrics(path: Path) -> dict:
    if not path.exists():
        return {}
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    return json.loads(lines[-1]) if lines else {}


def _publish_checkpoints(output_dir: Path, metrics: dict) -> list[str]:
    checkpoints = sorted((output_dir / "checkpoints").glob("step_*"))
    for checkpoint in checkpoints:
        create_link_artifact(checkpoint.resolve().as_uri(), link_text=checkpoint.name, key="train-checkpoint",
                             description=f"checkpoint {checkpoint.name} of {output_dir}")
    table = "\n".join(f"| {k} | {v:.5g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items())
    create_markdown_artifact(f"# Training run `{output_dir}`\n\n| metric | last value |\n| --- | --- |\n{table}\n",
                             key="train-metrics", description="Last logged training metrics")
    return [str(c) for c in checkpoints]


@flow(name="train-worldreel", log_prints=True)
def train_flow(params: TrainRunParams) -> dict:
    """Train one stage; publish the checkpoints as link artifacts and the last metrics as markdown."""
    metrics = run_training(params)
    checkpoints = _publish_checkpoints(Path(params.output_dir), metrics)
    return {"metrics": metrics, "checkpoints": checkpoints}


@flow(name="worldreel-pipeline", log_prints=True)
def worldreel_pipeline_flow(label: LabelRunParams, train: TrainRunParams, report_dir: str) -> dict:
    """The DAG end to end: label a manifest, publish the quality report, train on the accepted clips."""
    summary = label_clips_flow(label.model_copy(update={"report_dir": report_dir, "write_report": True}))
    report = summary["report"]
    stores = train.stores if label.store in train.stores else [*train.stores, label.store]
    weights = train.store_weights + [1.0] if train.store_weights and label.store not in train.stores else train.store_weights
    trained = train_flow(train.model_copy(update={"stores": stores, "store_weights": weights}))
    return {"labeling": summary, "report": report, "training": trained}
