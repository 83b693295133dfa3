"""Video evaluation as Prefect flows: `evaluate-video` (a deployment with a typed form) and
`train-then-evaluate-video` (train a stage, then evaluate its latest checkpoint).

The form `VideoEvalParams` is generated from `model.video_eval.EvaluateVideoConfig` (the same names,
defaults, bounds and help as `worldreel evaluate-video`). The run publishes the results table as a
markdown artifact (with the report's address, `flows.report.report_reference`), the same rows as a
table artifact, and a link artifact to the HTML report when a report server covers its folder.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact

from flows.report import report_reference, report_url
from flows.training import TrainRunParams, train_flow
from model.video_eval import EvaluateVideoConfig, VideoEvalResult, evaluate_video, markdown_table
from pipelines.jobconfig import JobConfig

__all__ = ["VIDEO_EVAL_JOB", "VideoEvalParams", "evaluate_video_flow", "publish_results", "train_then_evaluate_flow"]

VIDEO_EVAL_JOB = JobConfig(EvaluateVideoConfig)
"""The evaluation job's options: `worldreel evaluate-video` and the form `VideoEvalParams` come from them."""

VideoEvalParams = VIDEO_EVAL_JOB.form_model(
    "VideoEvalParams", "Generate videos from held-out clips with a checkpoint (and a baseline) and score them: "
    "the paper's table and 4D consistency.", __name__
)


@task
def run_evaluation(cfg: EvaluateVideoConfig) -> VideoEvalResult:
    logger = get_run_logger()
    return evaluate_video(cfg, log=logger.info)


def publish_results(result: VideoEvalResult) -> None:
    """Markdown (table, protocol, report address), table and link artifacts of one evaluation."""
    skipped = f"\n\n{len(result.skipped)} held-out clips left out, e.g. {result.skipped[0]}" if result.skipped else ""
    models = ", ".join(f"{name} `{path}`" for name, path in result.models.items())
    protocol = result.protocol
    create_markdown_artifact(
        f"# Video evaluation: {models}\n\n{protocol['clips']} held-out clips, {protocol['frames']}x{protocol['height']}x"
        f"{protocol['width']}, {protocol['steps']} steps, guidance {protocol['guidance']}\n\n"
        f"{report_reference(result.report)}\n\n{markdown_table(result)}{skipped}\n",
        key="video-eval", description="Paper metrics and 4D consistency, checkpoint beside baseline")
    names = list(result.models)
    create_table_artifact(
        [{"metric": row["metric"], "group": row["group"]}
         | {name: ("not computed" if row[name] is None else round(row[name], 6)) for name in names}
         | {f"{name} note": row.get(f"{name}_note", "") for name in names} for row in result.rows],
        key="video-eval-table", description="One row per metric")
    url = report_url(result.report)
    if url:
        create_link_artifact(url, link_text="video evaluation report (HTML)", key="video-eval-report")


@flow(name="evaluate-video", log_prints=True)
def evaluate_video_flow(params: VideoEvalParams) -> dict:
    """Evaluate a checkpoint (and a baseline) on held-out clips; publish the table and the report."""
    (cfg,) = VIDEO_EVAL_JOB.build(params.model_dump())  # an inconsistent form fails here, once
    result = run_evaluation(cfg)
    publish_results(result)
    return {"report": result.report, "rows": result.rows, "skipped": result.skipped}


@flow(name="train-then-evaluate-video", log_prints=True)
def train_then_evaluate_flow(train: TrainRunParams, evaluate: VideoEvalParams) -> dict:
    """Train one stage, then evaluate the run's latest checkpoint (evaluate.checkpoint is replaced by the run)."""
    trained = train_flow(train)
    evaluation = evaluate_video_flow(evaluate.model_copy(update={"checkpoint": str(Path(train.output_dir))}))
    return {"training": trained, "evaluation": evaluation}
