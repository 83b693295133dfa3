"""Training flows: launch `worldreel train` as a separate process, stream its logs, publish checkpoints.

`train_flow` is the deployment ML engineers start from the Prefect UI (typed form of
`TrainRunParams`, generated from `model.train.TrainConfig`: the same names, defaults, bounds and
help as `worldreel train`). The job runs in its own process (torchrun when several GPUs are asked
for), so a crash of the trainer never takes the flow with it; the task retries, and the
retry resumes from the last complete checkpoint (the trainer resumes by default).
The whole DAG (label, report, train, evaluate) is `flows.pipeline.worldreel_pipeline_flow`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact

from model.train import TrainConfig, check_stores_fit
from pipelines.jobconfig import JobConfig

__all__ = ["TRAIN_JOB", "TrainRunParams", "train_command", "train_config", "train_flow"]


TRAIN_JOB = JobConfig(TrainConfig)
"""The training job's options: `worldreel train` and the form `TrainRunParams` are generated from them."""

TrainRunParams = TRAIN_JOB.form_model(
    "TrainRunParams", "Train the geometry-motion augmented DiT and/or the DPT head on label stores.", __name__
)


def train_config(params: TrainRunParams) -> TrainConfig:
    """The trainer's configuration of a run (ValueError names an inconsistent option)."""
    (cfg,) = TRAIN_JOB.build(params.model_dump())
    return cfg


def train_command(params: TrainRunParams) -> list[str]:
    """The `worldreel train` command line of a run: every option, so the log shows the whole run."""
    return [sys.executable, "-m", "worldreel_cli", "train", *TRAIN_JOB.to_argv(params.model_dump())]


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
    cfg = train_config(params)  # an inconsistent configuration fails here, once, not in a retried process
    if not params.stores:
        raise ValueError("stores: give at least one label store to train on")
    check_stores_fit(cfg)  # a store the model cannot train on, too
    metrics = run_training(params)
    checkpoints = _publish_checkpoints(Path(params.output_dir), metrics)
    return {"metrics": metrics, "checkpoints": checkpoints}
