"""Label-quality report as a Prefect flow, and the report's address in the Prefect UI.

A browser does not open `file://` links from a web page, so the UI gets an `http://` link when a
report server runs: `worldreel serve` serves the report folders under `--report-root` over HTTP
(`serve_reports`, a thread bound to 127.0.0.1 by default) and exports its address in
`WORLDREEL_REPORT_URL` / `WORLDREEL_REPORT_ROOT`, which the flow runs it starts inherit. Set both
yourself to publish links to another web server that serves that folder. Without a server (an
ephemeral `worldreel label`), or for a report outside the served folder, the markdown artifact
carries the summary and plots inline and names the page's local path as text.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote

import numpy as np
from prefect import flow, get_run_logger
from prefect.artifacts import create_link_artifact, create_markdown_artifact, create_table_artifact
from pydantic import BaseModel, Field

from pipelines.report import ReportOptions, build_report, histogram_png, load_manifest_errors, png_data_uri
from storage import LabelStore

__all__ = ["REPORT_ROOT_ENV", "REPORT_URL_ENV", "ReportParams", "report_flow", "report_reference", "report_url",
           "serve_reports"]

REPORT_URL_ENV = "WORLDREEL_REPORT_URL"
"""Base URL (ending in /) at which the folder in `REPORT_ROOT_ENV` is served."""
REPORT_ROOT_ENV = "WORLDREEL_REPORT_ROOT"
"""Local folder served at `REPORT_URL_ENV`: reports inside it get http:// links."""


class ReportParams(BaseModel):
    """Write the label-quality report of a store."""

    store: str = Field(description="Label store directory")
    out: str = Field(description="Folder for index.html and summary.json")
    gallery: int = Field(40, ge=0, le=10000, description="Clips with a picture gallery")


class _ReportHandler(SimpleHTTPRequestHandler):
    """Serves report pages only: files of folders holding a report's index.html and summary.json."""

    def send_head(self):
        path = Path(self.translate_path(self.path))  # normalised inside the served folder ('..' dropped)
        folder = path if path.is_dir() else path.parent
        if not ((folder / "index.html").is_file() and (folder / "summary.json").is_file()):
            self.send_error(404, "not a label-quality report")
            return None
        return super().send_head()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base class's name)
        pass  # the flows' logs are the place for news, not one line per page view


def serve_reports(root: str | Path = ".", host: str = "127.0.0.1", port: int = 4210) -> ThreadingHTTPServer:
    """Serve the report folders under `root` over HTTP from a daemon thread; export their address.

    Args:
        root: folder whose report folders (index.html + summary.json) are served, at any depth.
        host: interface to bind (127.0.0.1: this machine only; 0.0.0.0: every interface).
        port: TCP port; 0 picks a free one.

    Returns the running server (`shutdown()` stops it). Raises OSError when the port is taken.
    """
    root = Path(root).resolve()
    server = ThreadingHTTPServer((host, port), partial(_ReportHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, name="worldreel-report-server", daemon=True).start()
    shown = socket.getfqdn() if host in ("", "0.0.0.0", "::") else host
    os.environ[REPORT_URL_ENV] = f"http://{shown}:{server.server_address[1]}/"
    os.environ[REPORT_ROOT_ENV] = str(root)
    return server


def report_url(page: str | Path) -> str | None:
    """http:// URL of a report page when a report server covers its folder, else None."""
    base, root = os.environ.get(REPORT_URL_ENV), os.environ.get(REPORT_ROOT_ENV)
    if not base or not root:
        return None
    try:
        relative = Path(page).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return None
    return base.rstrip("/") + "/" + quote(relative.as_posix())


def report_reference(page: str | Path) -> str:
    """Markdown that leads to a report page: a link when it is served over HTTP, else its path as text."""
    url = report_url(page)
    if url:
        return f"Report: [{url}]({url})"
    return (f"Report (a local file; browsers do not open file links from the Prefect UI, `worldreel serve` serves it "
            f"over HTTP): `{Path(page).resolve()}`")


@flow(name="label-report", log_prints=True)
def report_flow(params: ReportParams) -> str:
    """Build the HTML report; publish a markdown summary (plots with axes and gates), a clip table and a link."""
    logger = get_run_logger()
    path = build_report(params.store, params.out, ReportOptions(max_gallery_clips=params.gallery))
    summary = json.loads((path.parent / "summary.json").read_text())
    store = LabelStore.open(params.store)
    rows = store.index().to_pylist()
    errors = load_manifest_errors(store)
    create_markdown_artifact(_markdown(summary, rows, errors, path), key="label-quality",
                             description=f"Label quality of {params.store}")
    table = [
        {"clip": r["clip_id"], "status": r["status"], "reasons": "; ".join(r.get("reasons") or [])}
        | {k[3:]: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items() if k.startswith("qa_")}
        for r in rows[:5000]
    ]
    create_table_artifact(table, key="label-quality-clips", description="Clips and their quality metrics")
    url = report_url(path)
    if url:
        create_link_artifact(url, link_text="label-quality report (HTML)", key="label-quality-report")
    logger.info("report written to %s (%d clips, %d accepted)%s", path, summary["clips"], summary["accepted"],
                f", served at {url}" if url else "")
    return str(path)


def _markdown(summary: dict, rows: list[dict], errors: list[dict], page: Path) -> str:
    missing = summary.get("scene_flow_missing", {})
    lines = [
        f"# Label quality: {summary['clips']} clips, {summary['accepted']} accepted, {summary['rejected']} rejected, "
        f"{len(errors)} manifest row errors",
        "",
        report_reference(page),
        "",
        f"Scene flow missing on moving pixels: {missing.get('no_depth_on_movers', 0)} clips for lack of depth there "
        f"(multi-view depth leaves movers invalid: use neural or imported depth), {missing.get('scene_flow_tests', 0)} "
        f"for the scene-flow tests; {missing.get('no_movers', 0)} clips have nothing moving.",
        "",
        "| rejection reason | clips |",
        "| --- | --- |",
    ]
    lines += [f"| {k} | {v} |" for k, v in summary["rejected_by_reason"].items()] or ["| none | 0 |"]
    if errors:
        lines += ["", "| manifest | row | cause |", "| --- | --- | --- |"]
        lines += [f"| {e['manifest']} | {e['row']} | {e['message']} |" for e in errors[:50]]
    gates = {m: [tuple(b) for b in bs] for m, bs in summary.get("gates", {}).items()}
    if summary.get("gate_sets", 0) > 1:
        lines += ["", f"The clips were labelled with {summary['gate_sets']} different gate sets: every value is drawn."]
    lines += ["", "| metric | median | gate | distribution (accepted green, rejected red) |",
              "| --- | --- | --- | --- |"]
    for metric, median in summary["metric_medians"].items():
        by_status = {status: np.array([r.get(f"qa_{metric}") for r in rows if r["status"] == status], np.float64)
                     for status in ("accepted", "rejected")}
        plot = png_data_uri(histogram_png(by_status["accepted"], gates.get(metric), title=metric,
                                          values_rejected=by_status["rejected"]))
        shown = "–" if median is None else f"{median:.4g}"
        gate = ", ".join(f"{kind} {value:.3g}" for kind, value in gates.get(metric, [])) or "none"
        lines.append(f"| {metric} | {shown} | {gate} | ![{metric}]({plot}) |")
    return "\n".join(lines)
