"""The labeling flow: manifest -> plan -> Ray fan-out -> label store, with progress and a summary.

`label_clips_flow` runs ephemerally (no server; what `worldreel label` does) or as a
deployment started from the Prefect UI with the typed form of `LabelRunParams`. Both the form and
`worldreel label`'s options are generated from one job configuration, `LABEL_JOB`: the run
options (`LabelRun`) and the pipeline's `LabelConfig`, fields with their help and bounds.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pydantic
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact

from flows.ray_fanout import init_ray, run_on_ray
from flows.report import ReportParams, report_flow, report_reference
from pipelines.jobconfig import JobConfig, Pair
from pipelines.labeling import ClipOutcome, LabelConfig, plan, summarise
from pipelines.manifests import read_manifest
from pipelines.report import default_report_dir, save_manifest_errors
from storage import LabelStore

__all__ = ["LABEL_JOB", "LabelRun", "LabelRunParams", "label_clips_flow", "label_config", "label_job"]


@dataclass(frozen=True)
class LabelRun:
    """Where a labeling run reads and writes, and how it fans out (the pipeline options are `LabelConfig`)."""

    manifest: str = field(metadata={
        "help": "manifest CSV: SpatialVID clips_info.csv or SpatialVID_HQ_metadata.csv, Panda-70M CSV or plain CSV"})
    store: str = field(metadata={
        "help": "label store: a directory, or s3://bucket/prefix (gs://, az://) with credentials from the "
        "environment (created if missing)", "aliases": ("--out",)})
    format: Literal["auto", "plain", "spatialvid", "spatialvid-hq", "panda70m"] = field(default="auto", metadata={
        "help": "manifest format (auto: from its columns)"})
    video_root: str | None = field(default=None, metadata={
        "help": "folder that relative video paths resolve against; spatialvid-hq: folder of group_XXXX/ video folders "
        "(default <release>/videos)"})
    annotation_root: str | None = field(default=None, metadata={
        "help": "SpatialVID annotation folders, one per clip id (spatialvid-hq: folder of group_XXXX/, default "
        "<release>/annotations)"})
    fps: float | None = field(default=8.0, metadata={
        "gt": 0, "none": "native", "help": "label frame rate; native (empty in the form) keeps the source rate"})
    limit: int | None = field(default=None, metadata={"ge": 1, "help": "label at most this many clips of the manifest"})
    batch_size: int = field(default=4, metadata={"ge": 1, "le": 1024, "help": "clips per Ray task"})
    workers: int | None = field(default=None, metadata={
        "ge": 1, "help": "CPUs of the local Ray (default all; ignored with a Ray address)"})
    ray_address: str | None = field(default=None, metadata={
        "help": "address of an existing Ray cluster (default: start a local one)"})
    gpu_fraction: float = field(default=0.25, metadata={"gt": 0, "le": 1, "help": "GPU share of each neural labeler actor"})
    redo_failed: bool = field(default=False, metadata={"help": "label clips rejected by an earlier run again"})
    store_rounding: Literal["none", "compact"] = field(default="none", metadata={
        "help": "mantissa rounding of a new store: compact keeps 7 bits of flows and scene flow, 4 of flow "
        "uncertainty (about a third smaller; an existing store keeps its setting)"})
    report_dir: str | None = field(default=None, metadata={
        "help": "quality report folder (default: <store>_report next to the store)"})
    write_report: bool = field(default=True, metadata={
        "aliases": ("--report",), "help": "write and publish the label-quality report at the end"})


LABEL_JOB = JobConfig(LabelRun, LabelConfig, pairs=[Pair("--size", ("height", "width"), "label resolution HxW")])
"""The labeling job's options: `worldreel label` and the form `LabelRunParams` are generated from them."""

LabelRunParams = LABEL_JOB.form_model("LabelRunParams", "Label the clips of a manifest into a label store.", __name__)


def label_job(params: LabelRunParams | dict) -> tuple[LabelRun, LabelConfig]:
    """The run options and pipeline configuration of a run (ValueError names an inconsistent option)."""
    values = dict(params.model_dump() if isinstance(params, pydantic.BaseModel) else params)
    default_uncertainty = LABEL_JOB.by_name["scene_flow_max_uncertainty_px"].default
    if values.get("flow") == "sea-raft" and values.get("scene_flow_max_uncertainty_px", default_uncertainty) == default_uncertainty:
        # SEA-RAFT's uncertainty is an expected error >= 1.6 px: its flow validity is the gate.
        values["scene_flow_max_uncertainty_px"] = None
    return LABEL_JOB.build(values)


def label_config(params: LabelRunParams | dict) -> LabelConfig:
    """The pipeline configuration of a run (ValueError on an unknown gate name or inconsistent options)."""
    return label_job(params)[1]


@flow(name="label-clips", log_prints=True)
def label_clips_flow(params: LabelRunParams) -> dict:
    """Label a manifest into a store: skip committed clips, fan the rest out over Ray, publish a summary."""
    logger = get_run_logger()
    run, cfg = label_job(params)
    manifest = read_manifest(
        run.manifest, run.format, fps_target=run.fps, video_root=run.video_root, annotation_root=run.annotation_root,
    )
    for error in manifest.errors:
        logger.warning("manifest row rejected: %s", error)
    specs = manifest.specs[: run.limit] if run.limit else manifest.specs
    store = LabelStore.create(run.store, rounding=run.store_rounding)
    repaired = store.repair_index()
    if repaired:
        logger.info("index repaired: %d committed clips had no index row", len(repaired))
    removed = store.clean_staging()  # partial clips of writers killed over an hour ago
    if removed:
        logger.info("removed %d staging leftovers of crashed writers", removed)
    todo, skipped = plan(specs, store, run.redo_failed)
    logger.info("%d clips in manifest (%s): %d to label, %d already committed", len(specs), manifest.format, len(todo), len(skipped))

    outcomes: list[ClipOutcome] = list(skipped)
    progress_id = create_progress_artifact(0.0, key="label-progress", description=f"labeling {run.manifest}")
    start = time.perf_counter()

    def on_outcomes(batch: list[ClipOutcome]) -> None:
        outcomes.extend(batch)
        done = len(outcomes) - len(skipped)
        rate = done / max(time.perf_counter() - start, 1e-9) * 60
        accepted = sum(o.status == "accepted" for o in outcomes)
        update_progress_artifact(progress_id, 100.0 * done / max(len(todo), 1))
        logger.info("%d/%d clips labelled (%d accepted so far), %.1f clips/min", done, len(todo), accepted, rate)
        for o in batch:
            if o.status == "rejected":
                logger.warning("clip %s rejected: %s", o.clip_id, "; ".join(o.reasons))

    if todo:
        init_ray(run.ray_address, run.workers)
        run_on_ray(todo, cfg, store.location, run.batch_size, run.gpu_fraction,
                   redo_failed=run.redo_failed, on_outcomes=on_outcomes)
    update_progress_artifact(progress_id, 100.0)
    store.compact_index()
    summary = summarise(outcomes, manifest.errors)
    summary["store"] = store.location
    summary["seconds"] = time.perf_counter() - start
    save_manifest_errors(store, run.manifest, manifest.errors)  # the report lists them
    if run.write_report:
        # absolute, so the artifact's link works from the UI whatever the working directory
        report_dir = str(Path(run.report_dir or default_report_dir(store.location)).resolve())
        summary["report"] = report_flow(ReportParams(store=run.store, out=report_dir))
    _publish_summary(summary, outcomes, manifest.errors)
    return summary


def _publish_summary(summary: dict, outcomes: list[ClipOutcome], row_errors: list) -> None:
    rows = [{"status": k, "clips": summary[k]} for k in ("accepted", "rejected", "skipped", "manifest_row_errors")]
    rows += [{"status": f"rejected: {reason}", "clips": n} for reason, n in summary["rejected_by_reason"].items()]
    create_table_artifact(rows, key="label-summary", description="Clips by outcome and rejection reason")
    lines = [
        f"# Labeling run: {summary['accepted']} accepted, {summary['rejected']} rejected, {summary['skipped']} skipped",
        "",
        f"Store: `{summary['store']}`  ",
        report_reference(summary["report"]) if "report" in summary else "Report: not written",
        "",
        *[f"- node `{node}`: {n} clips labelled" for node, n in summary["clips_by_node"].items()],
        "",
        "| clip | status | reasons |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {o.clip_id} | {o.status} | {'; '.join(o.reasons)} |" for o in outcomes if o.status != "skipped"][:200]
    lines += [f"| (manifest) | row error | {e} |" for e in row_errors][:50]
    create_markdown_artifact("\n".join(lines), key="label-run", description="Labeling run summary")
