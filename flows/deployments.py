"""Deployments of the flows for the Prefect UI: `worldreel serve` registers and serves them.

Each deployment exposes its flow's typed parameters as a form in the UI: pydantic models generated
from the jobs' dataclasses (`pipelines.jobconfig`), so a form field has the name, default, bounds
and help of the command-line option.
Runs execute in subprocesses of the serving process (Prefect's `serve`); stopping `serve`
pauses the deployments' schedules until it runs again.
"""

from __future__ import annotations

from typing import Any

from prefect import serve

from flows.importing import import_flow
from flows.labeling import label_clips_flow
from flows.report import report_flow
from flows.pipeline import worldreel_pipeline_flow
from flows.training import train_flow
from flows.video_eval import evaluate_video_flow, train_then_evaluate_flow

__all__ = ["build_deployments", "serve_deployments"]


def build_deployments(label_cron: str | None = None, label_defaults: dict[str, Any] | None = None) -> list:
    """The deployments: labeling (optionally on a cron schedule with default parameters), import, report, training,
    pipeline, video evaluation, training followed by video evaluation."""
    label_kwargs: dict[str, Any] = {"name": "label", "tags": ["labeling"],
                                    "description": "Label the clips of a manifest into a label store"}
    if label_cron:
        label_kwargs["cron"] = label_cron
    if label_defaults:
        label_kwargs["parameters"] = {"params": label_defaults}
    return [
        label_clips_flow.to_deployment(**label_kwargs),
        import_flow.to_deployment(
            name="import", tags=["import"], description="Import a data set with exact labels into a label store"
        ),
        report_flow.to_deployment(name="report", tags=["audit"], description="Write a store's label-quality report"),
        train_flow.to_deployment(name="train", tags=["training"], description="Train one stage of the WorldReel model"),
        worldreel_pipeline_flow.to_deployment(
            name="pipeline", tags=["labeling", "training"], description="Label, report, train on the accepted clips, then optionally evaluate the checkpoint"
        ),
        evaluate_video_flow.to_deployment(
            name="evaluate", tags=["evaluation"],
            description="Generate from held-out clips with a checkpoint and a baseline: paper metrics, 4D consistency",
        ),
        train_then_evaluate_flow.to_deployment(
            name="train-evaluate", tags=["training", "evaluation"],
            description="Train one stage, then evaluate its latest checkpoint on held-out clips",
        ),
    ]


def serve_deployments(label_cron: str | None = None, label_defaults: dict[str, Any] | None = None) -> None:
    """Register the deployments on the Prefect API in `PREFECT_API_URL` and serve their runs (blocks)."""
    serve(*build_deployments(label_cron, label_defaults))
