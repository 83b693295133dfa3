"""The labeling flow: manifest -> plan -> Ray fan-out -> label store, with progress and a summary.

`label_clips_flow` runs ephemerally (no server; what `worldreel label` does) or as a
deployment started from the Prefect UI with the typed form of `LabelRunParams`.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact
from pydantic import BaseModel, Field

from flows.ray_fanout import init_ray, run_on_ray
from flows.report import ReportParams, report_flow
from pipelines.labeling import ClipOutcome, LabelConfig, plan, summarise
from pipelines.manifests import read_manifest
from pipelines.quality import QualityThresholds
from storage import LabelStore

__all__ = ["LabelRunParams", "label_clips_flow", "label_config"]


class LabelRunParams(BaseModel):
    """Label the clips of a manifest into a label store."""

    manifest: str = Field(description="Manifest CSV: SpatialVID clips_info.csv, Panda-70M CSV or plain CSV")
    store: str = Field(description="Label store directory (created if missing)")
    format: Literal["auto", "plain", "spatialvid", "panda70m"] = Field("auto", description="Manifest format")
    video_root: str | None = Field(None, description="Folder that relative video paths resolve against")
    annotation_root: str | None = Field(None, description="SpatialVID annotation folders (one per clip id)")
    flow: Literal["dis", "sea-raft"] = Field("dis", description="Optical-flow backend")
    flow_weights: str | None = Field(None, description="Local SEA-RAFT checkpoint (.pth or .safetensors)")
    camera: Literal["sfm", "import"] = Field("sfm", description="Camera backend")
    depth: Literal["mvs", "neural", "import"] = Field("mvs", description="Depth backend")
    depth_weights: str | None = Field(None, description="Local folder of a transformers depth model")
    height: int = Field(480, ge=16, le=4320, description="Label height in pixels")
    width: int = Field(720, ge=16, le=7680, description="Label width in pixels")
    fps: float | None = Field(8.0, gt=0, description="Label frame rate; empty keeps the source rate")
    frames: int = Field(49, ge=2, description="Frames per clip (T)")
    stride: int = Field(4, ge=1, description="Key-frame stride")
    limit: int | None = Field(None, ge=1, description="Label at most this many clips of the manifest")
    batch_size: int = Field(4, ge=1, le=1024, description="Clips per Ray task")
    workers: int | None = Field(None, ge=1, description="CPUs of the local Ray (ignored with ray_address)")
    ray_address: str | None = Field(None, description="Address of an existing Ray cluster; empty starts a local one")
    gpu_fraction: float = Field(0.25, gt=0, le=1, description="GPU share of each neural labeler actor")
    device: Literal["cpu", "cuda"] = Field("cpu", description="Device of neural labelers")
    redo_failed: bool = Field(False, description="Label clips rejected by an earlier run again")
    store_rounding: Literal["none", "compact"] = Field(
        "none",
        description="Mantissa rounding of a new store: 'compact' keeps 7 bits of flows and scene flow, 4 of flow "
        "uncertainty (about a third smaller; an existing store keeps its setting)",
    )
    report_dir: str | None = Field(
        None, description="Where to write the quality report at the end (default: <store>_report next to the store)"
    )
    write_report: bool = Field(True, description="Write and publish the label-quality report at the end")
    gates: dict[str, float | None] = Field(
        default_factory=dict,
        description="Quality gates to override, e.g. {\"min_depth_valid_fraction\": 0.2}; null removes a gate",
    )


def label_config(params: LabelRunParams) -> LabelConfig:
    """The pipeline configuration of a run (raises ValueError on an unknown gate name)."""
    known = {f.name for f in dataclasses.fields(QualityThresholds)} - {"extra"}
    unknown = sorted(set(params.gates) - known)
    if unknown:
        raise ValueError(f"unknown quality gate(s) {unknown}; known: {sorted(known)}")
    return LabelConfig(
        height=params.height,
        width=params.width,
        num_frames=params.frames,
        stride=params.stride,
        flow=params.flow,
        flow_weights=params.flow_weights,
        camera=params.camera,
        depth=params.depth,
        depth_weights=params.depth_weights,
        device=params.device,
        # SEA-RAFT's uncertainty is an expected error >= 1.6 px: its flow validity is the gate.
        scene_flow_max_uncertainty_px=None if params.flow == "sea-raft" else 0.5,
        thresholds=dataclasses.replace(QualityThresholds(), **params.gates),
    )


@flow(name="label-clips", log_prints=True)
def label_clips_flow(params: LabelRunParams) -> dict:
    """Label a manifest into a store: skip committed clips, fan the rest out over Ray, publish a summary."""
    logger = get_run_logger()
    cfg = label_config(params)
    manifest = read_manifest(
        params.manifest, params.format, fps_target=params.fps, video_root=params.video_root,
        annotation_root=params.annotation_root,
    )
    for error in manifest.errors:
        logger.warning("manifest row rejected: %s", error)
    specs = manifest.specs[: params.limit] if params.limit else manifest.specs
    store = LabelStore.create(params.store, rounding=params.store_rounding)
    repaired = store.repair_index()
    if repaired:
        logger.info("index repaired: %d committed clips had no index row", len(repaired))
    todo, skipped = plan(specs, store, params.redo_failed)
    logger.info("%d clips in manifest (%s): %d to label, %d already committed", len(specs), manifest.format, len(todo), len(skipped))

    outcomes: list[ClipOutcome] = list(skipped)
    progress_id = create_progress_artifact(0.0, key="label-progress", description=f"labeling {params.manifest}")
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
        init_ray(params.ray_address, params.workers)
        run_on_ray(todo, cfg, str(store.root), params.batch_size, params.gpu_fraction,
                   redo_failed=params.redo_failed, on_outcomes=on_outcomes)
    update_progress_artifact(progress_id, 100.0)
    store.compact_index()
    summary = summarise(outcomes, manifest.errors)
    summary["store"] = str(Path(params.store).resolve())
    summary["seconds"] = time.perf_counter() - start
    if params.write_report:
        # absolute, so the artifact's link works from the UI whatever the working directory
        store_path = Path(params.store).resolve()
        report_dir = str(Path(params.report_dir).resolve()) if params.report_dir else str(
            store_path.parent / f"{store_path.name}_report"
        )
        summary["report"] = report_flow(ReportParams(store=params.store, out=report_dir))
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
        f"Report: [{summary.get('report', 'not written')}]({Path(summary['report']).resolve().as_uri() if 'report' in summary else ''})",
        "",
        "| clip | status | reasons |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {o.clip_id} | {o.status} | {'; '.join(o.reasons)} |" for o in outcomes if o.status != "skipped"][:200]
    lines += [f"| (manifest) | row error | {e} |" for e in row_errors][:50]
    create_markdown_artifact("\n".join(lines), key="label-run", description="Labeling run summary")
