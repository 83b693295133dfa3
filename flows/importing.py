"""The import flow: data set -> windows -> Ray fan-out -> label store, with progress and a summary.

`import_flow` runs ephemerally (what `worldreel import` does) or as a deployment started from
the Prefect UI with the typed form `ImportRunParams`. Both are generated from one job
configuration, `IMPORT_JOB`: the pipeline's `ImportConfig` and the run options (`ImportRun`).
The machinery is the labeling flow's: `flows.ray_fanout.init_ray` and `batches`, resume
(committed clips are skipped; rejected ones again with `redo_failed`), per-clip reasons, the
label-quality report and Prefect artifacts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import pydantic
import ray
from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from flows.ray_fanout import batches, gather_batches, init_ray, node_label
from flows.report import ReportParams, report_flow, report_reference
from pipelines.dataset_import import ImportConfig, ImportTask, import_tasks, plan_imports
from pipelines.jobconfig import JobConfig, Pair
from pipelines.labeling import ClipOutcome, plan, summarise
from pipelines.report import default_report_dir
from storage import LabelStore

__all__ = ["IMPORT_JOB", "ImportRun", "ImportRunParams", "import_flow", "import_job", "run_imports_on_ray"]


@dataclass(frozen=True)
class ImportRun:
    """How an import run fans out and reports (what it imports is `ImportConfig`)."""

    limit: int | None = field(default=None, metadata={"ge": 1, "help": "import at most this many clips"})
    batch_size: int = field(default=4, metadata={"ge": 1, "le": 1024, "help": "clips per Ray task"})
    workers: int | None = field(default=None, metadata={
        "ge": 1, "help": "CPUs of the local Ray (default all; ignored with a Ray address)"})
    ray_address: str | None = field(default=None, metadata={
        "help": "address of an existing Ray cluster (default: start a local one)"})
    redo_failed: bool = field(default=False, metadata={"help": "import clips rejected by an earlier run again"})
    store_rounding: Literal["none", "compact"] = field(default="none", metadata={
        "help": "mantissa rounding of a new store (an existing store keeps its setting)"})
    report_dir: str | None = field(default=None, metadata={
        "help": "quality report folder (default: <store>_report next to the store)"})
    write_report: bool = field(default=True, metadata={
        "aliases": ("--report",), "help": "write and publish the label-quality report at the end"})


IMPORT_JOB = JobConfig(ImportConfig, ImportRun, pairs=[Pair("--size", ("height", "width"), "label resolution HxW")])
"""The import job's options: `worldreel import` and the form `ImportRunParams` are generated from them."""

ImportRunParams = IMPORT_JOB.form_model(
    "ImportRunParams", "Import the sequences of a data set with exact labels into a label store.", __name__)


def import_job(params: ImportRunParams | dict) -> tuple[ImportConfig, ImportRun]:
    """The pipeline configuration and run options (ValueError names an inconsistent option)."""
    values = dict(params.model_dump() if isinstance(params, pydantic.BaseModel) else params)
    return IMPORT_JOB.build(values)


@ray.remote(max_retries=3)
def _import_batch(tasks: list[ImportTask], cfg: ImportConfig, redo_failed: bool) -> list[ClipOutcome]:
    import cv2

    cv2.setNumThreads(1)  # one CPU per task, as requested from Ray
    store = LabelStore.open(cfg.store)
    node = node_label()
    # a retried batch skips what was committed
    return [o if o.status == "skipped" else replace(o, node=node) for o in import_tasks(tasks, cfg, store, redo_failed)]


def run_imports_on_ray(
    tasks: Sequence[ImportTask], cfg: ImportConfig, batch_size: int = 4, redo_failed: bool = False,
    on_outcomes: Callable[[list[ClipOutcome]], None] | None = None,
) -> list[ClipOutcome]:
    """Import `tasks` with Ray tasks over batches (call `init_ray` first); a batch whose worker keeps
    dying is reported as failed clips, nothing committed, so a re-run tries them again."""
    pending: dict[Any, list[ImportTask]] = {
        _import_batch.remote(batch, cfg, redo_failed): batch for batch in batches(list(tasks), batch_size)
    }
    return gather_batches(pending, on_outcomes)


@flow(name="import-dataset", log_prints=True)
def import_flow(params: ImportRunParams) -> dict:
    """Import a data set into a store: skip committed clips, fan the rest out over Ray, publish a summary."""
    logger = get_run_logger()
    cfg, run = import_job(params)
    tasks = plan_imports(cfg)
    tasks = tasks[: run.limit] if run.limit else tasks
    store = LabelStore.create(cfg.store, rounding=run.store_rounding)
    repaired = store.repair_index()
    if repaired:
        logger.info("index repaired: %d committed clips had no index row", len(repaired))
    removed = store.clean_staging()
    if removed:
        logger.info("removed %d staging leftovers of crashed writers", removed)
    todo, skipped = plan(tasks, store, run.redo_failed)
    sequences = len({t.sequence for t in tasks})
    logger.info("%d clips from %d %s sequences: %d to import, %d already committed",
                len(tasks), sequences, cfg.format, len(todo), len(skipped))
    outcomes: list[ClipOutcome] = list(skipped)
    progress_id = create_progress_artifact(0.0, key="import-progress", description=f"importing {cfg.root}")
    start = time.perf_counter()

    def on_outcomes(batch: list[ClipOutcome]) -> None:
        outcomes.extend(batch)
        done = len(outcomes) - len(skipped)
        rate = done / max(time.perf_counter() - start, 1e-9) * 60
        update_progress_artifact(progress_id, 100.0 * done / max(len(todo), 1))
        logger.info("%d/%d clips imported, %.1f clips/min", done, len(todo), rate)
        for o in batch:
            if o.status == "rejected":
                logger.warning("clip %s rejected: %s", o.clip_id, "; ".join(o.reasons))

    if todo:
        init_ray(run.ray_address, run.workers)
        run_imports_on_ray(todo, cfg, run.batch_size, run.redo_failed, on_outcomes)
    update_progress_artifact(progress_id, 100.0)
    store.compact_index()
    summary = summarise(outcomes)
    summary["store"] = store.location
    summary["seconds"] = time.perf_counter() - start
    summary["provenance"] = _provenance_counts(store, [o.clip_id for o in outcomes if o.status == "accepted"])
    if run.write_report:
        report_dir = str(Path(run.report_dir or default_report_dir(store.location)).resolve())
        summary["report"] = report_flow(ReportParams(store=cfg.store, out=report_dir))
    _publish_summary(summary, outcomes, cfg)
    return summary


def _provenance_counts(store: LabelStore, clip_ids: list[str]) -> dict[str, dict[str, int]]:
    """Label part -> provenance -> clips, over the clips this run committed."""
    counts: dict[str, dict[str, int]] = {}
    for clip_id in clip_ids:
        for part, value in store.attrs(clip_id).get("provenance", {}).items():
            counts.setdefault(part, {}).setdefault(value, 0)
            counts[part][value] += 1
    return counts


def _publish_summary(summary: dict, outcomes: list[ClipOutcome], cfg: ImportConfig) -> None:
    rows = [{"status": k, "clips": summary[k]} for k in ("accepted", "rejected", "skipped")]
    rows += [{"status": f"rejected: {reason}", "clips": n} for reason, n in summary["rejected_by_reason"].items()]
    create_table_artifact(rows, key="import-summary", description="Clips by outcome and rejection reason")
    lines = [
        f"# Import of {cfg.format} `{cfg.root}`: {summary['accepted']} accepted, {summary['rejected']} rejected, "
        f"{summary['skipped']} skipped",
        "",
        f"Store: `{summary['store']}`  ",
        report_reference(summary["report"]) if "report" in summary else "Report: not written",
        "",
        "| label part | provenance (clips) |",
        "| --- | --- |",
    ]
    lines += [f"| {part} | {', '.join(f'{k}: {n}' for k, n in sorted(v.items()))} |"
              for part, v in summary["provenance"].items()]
    lines += ["", "| clip | status | reasons |", "| --- | --- | --- |"]
    lines += [f"| {o.clip_id} | {o.status} | {'; '.join(o.reasons)} |" for o in outcomes if o.status != "skipped"][:200]
    create_markdown_artifact("\n".join(lines), key="import-run", description="Import run summary")
