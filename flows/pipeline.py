"""The whole DAG as one flow: label a manifest, publish the quality report, train on the accepted
clips, then (optionally) evaluate the trained checkpoint on held-out clips."""

from __future__ import annotations

from pathlib import Path

from prefect import flow

from flows.labeling import LabelRunParams, label_clips_flow
from flows.training import TrainRunParams, train_flow
from flows.video_eval import VideoEvalParams, evaluate_video_flow

__all__ = ["worldreel_pipeline_flow"]


@flow(name="worldreel-pipeline", log_prints=True)
def worldreel_pipeline_flow(
    label: LabelRunParams, train: TrainRunParams, report_dir: str, evaluate: VideoEvalParams | None = None
) -> dict:
    """Label a manifest, publish the quality report, train on the accepted clips; with `evaluate`, generate
    from its held-out clips with the run's latest checkpoint (its `checkpoint` is replaced by the run)."""
    summary = label_clips_flow(label.model_copy(update={"report_dir": report_dir, "write_report": True}))
    report = summary["report"]
    stores = train.stores if label.store in train.stores else [*train.stores, label.store]
    weights = train.store_weights + [1.0] if train.store_weights and label.store not in train.stores else train.store_weights
    trained = train_flow(train.model_copy(update={"stores": stores, "store_weights": weights}))
    result = {"labeling": summary, "report": report, "training": trained}
    if evaluate is not None:
        result["evaluation"] = evaluate_video_flow(evaluate.model_copy(update={"checkpoint": str(Path(train.output_dir))}))
    return result
