"""The report flow: write a store's HTML quality report and publish it as Prefect artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, Field

from pipelines.quality import QualityThresholds
from pipelines.report import ReportOptions, build_report, histogram_png, png_data_uri, report_summary
from storage import LabelStore

__all__ = ["ReportParams", "report_flow"]


class ReportParams(BaseModel):
    """Write the label-quality report of a store."""

    store: str = Field(description="Label store directory")
    out: str = Field(description="Folder for index.html and summary.json")
    gallery: int = Field(40, ge=0, le=10000, description="Clips with a picture gallery")


@flow(name="label-report", log_prints=True)
def report_flow(params: ReportParams) -> str:
    """Build the HTML report and publish a markdown summary (with inline plots), a clip table and a link."""
    logger = get_run_logger()
    path = build_report(params.store, params.out, ReportOptions(max_gallery_clips=params.gallery))
    store = LabelStore.open(params.store)
    summary = report_summary(store)
    rows = store.index().to_pylist()
    create_markdown_artifact(_markdown(summary, rows), key="label-quality", description=f"Label quality of {params.store}")
    table = [
        {"clip": r["clip_id"], "status": r["status"], "reasons": "; ".join(r.get("reasons") or [])}
        | {k[3:]: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k.startswith("qa_")}
        for r in rows[:5000]
    ]
    create_table_artifact(table, key="label-quality-clips", description="Clips and their quality metrics")
    create_link_artifact(Path(path).resolve().as_uri(), link_text="label-quality report (HTML)", key="label-quality-report")
    logger.info("report written to %s (%d clips, %d accepted)", path, summary["clips"], summary["accepted"])
    return str(path)


def _markdown(summary: dict, rows: list[dict]) -> str:
    bounds = QualityThresholds().bounds()
    lines = [
        f"# Label quality: {summary['clips']} clips, {summary['accepted']} accepted, {summary['rejected']} rejected",
        "",
        "| rejection reason | clips |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {v} |" for k, v in summary["rejected_by_reason"].items()] or ["| none | 0 |"]
    lines += ["", "| metric | median | distribution |", "| --- | --- | --- |"]
    for metric, median in summary["metric_medians"].items():
        values = np.array([r.get(f"qa_{metric}") for r in rows if r.get(f"qa_{metric}") is not None], np.float64)
        plot = png_data_uri(histogram_png(values, bounds.get(metric)))
        shown = "–" if median is None else f"{median:.4g}"
        lines.append(f"| {metric} | {shown} | ![{metric}]({plot}) |")
    return "\n".join(lines)
