"""Parts of the quality report: honest plots, missing-field causes, manifest errors, and the report's address."""

import re
import urllib.error
import urllib.request

import numpy as np
import pytest

from pipelines.report import (
    field_gaps,
    flow_to_rgb,
    histogram_png,
    histogram_svg,
    load_manifest_errors,
    save_manifest_errors,
)
from pipelines.manifests import RowError
from storage import LabelStore


def _ticks(svg: str) -> list[str]:
    """The x-axis labels (font size 9, below the axis) of a histogram."""
    return re.findall(r'<text [^>]*class="tick">([^<]+)</text>', svg)


def test_one_value_is_one_bar_at_that_value_with_no_invented_range():
    svg = histogram_svg(np.array([3.0, 3.0, 3.0]), np.array([]), None, "anomalies")
    assert svg.count("<rect") == 1 and _ticks(svg) == ["3"]  # the old plot labelled an axis 3 .. 4
    assert ">3</text>" in svg  # the count above the bar


def test_two_values_are_two_bars_in_order_with_the_gate_between_them():
    svg = histogram_svg(np.array([0.0, 0.0, 1.0]), np.array([5.0]), ("max", 3.0), "anomalies")
    assert _ticks(svg) == ["0", "1", "5"]
    bars = sorted(float(x) for x in re.findall(r'<rect x="([0-9.]+)"', svg))
    gate_x = float(re.search(r'<line x1="([0-9.]+)"[^>]*class="gate"/>', svg).group(1))
    assert bars[1] < gate_x < bars[2]  # gate 3 between the bars of 1 and 5
    assert "max 3" in svg


def test_many_values_span_data_and_gates_and_label_both_ends():
    values = np.linspace(0.6, 0.9, 40)
    svg = histogram_svg(values, np.array([np.nan]), [("min", 0.5), ("min", 0.7)], "fb")
    assert _ticks(svg) == ["0.5", "0.9"]  # the range is the data's and the gates', nothing else
    assert svg.count('class="gate"/>') == 2 and "min 0.5" in svg and "min 0.7" in svg
    assert "1 clip without a value" in svg and "clips" in svg


def test_artifact_png_has_axes_and_the_gate_line_where_the_gate_is():
    image = histogram_png(np.linspace(0.0, 1.0, 30), ("max", 1.0), title="fb")
    gate = (np.abs(image.astype(int) - [31, 78, 156]).sum(axis=-1) < 60)  # RGB of the gates
    columns = np.flatnonzero(gate[60:130].sum(axis=0) > 10)  # a dashed vertical line, inside the plot
    assert columns.size and columns.min() > image.shape[1] - 20  # at the top of the range: the right end
    assert gate[:40].any()  # its value, written above the plot
    axis = (image[:, :, 0] == 85) & (image[:, :, 1] == 85)
    assert axis.sum(axis=1).max() > 250 and axis.sum(axis=0).max() > 80  # x and y axes
    no_bound = histogram_png(np.linspace(0.0, 1.0, 30), None, title="fb")
    assert not (np.abs(no_bound.astype(int) - [31, 78, 156]).sum(axis=-1) < 60).any()


def _clip(depth_on_movers: bool, scene_flow: bool, movers: bool = True) -> dict:
    S, stride, H, W = 3, 2, 8, 8
    T = (S - 1) * stride + 1
    dynamic = np.zeros((S, H, W), bool)
    if movers:
        dynamic[:, 2:5, 2:5] = True
    depth_valid = np.ones((T, H, W), bool)
    if not depth_on_movers:
        depth_valid[:, 2:5, 2:5] = False
    return {
        "depth_valid": depth_valid,
        "key_flow_valid": np.ones((S - 1, H, W), bool),
        "dynamic_mask": dynamic,
        "scene_flow_valid": dynamic[:-1] & scene_flow,
    }


ATTRS = {"stride": 2, "config": {"depth": "mvs"}, "labelers": {"depth": {"name": "multiview_flow_triangulation"}}}


@pytest.mark.parametrize(
    "clip, cause, phrase",
    [
        (_clip(depth_on_movers=False, scene_flow=False), "no_depth_on_movers", "--depth mvs"),
        (_clip(depth_on_movers=True, scene_flow=False), "scene_flow_tests", "scene-flow tests"),
        (_clip(depth_on_movers=True, scene_flow=False, movers=False), "no_movers", "nothing moves"),
        (_clip(depth_on_movers=True, scene_flow=True), None, None),
    ],
)
def test_field_gaps_names_the_cause_of_missing_scene_flow(clip, cause, phrase):
    gaps = field_gaps(clip, ATTRS)
    assert gaps.scene_flow_cause == cause
    if phrase:
        assert any(phrase in note for note in gaps.notes)
    else:
        assert gaps.notes == () and gaps.scene_flow_on_movers == 1.0
    assert gaps.moving_px == (0 if cause == "no_movers" else 2 * 9)


def test_manifest_errors_replace_their_manifests_record_and_keep_the_others(tmp_path):
    store = LabelStore.create(tmp_path / "store")
    assert load_manifest_errors(store) == []
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    save_manifest_errors(store, a, [RowError(str(a), 3, "bad time"), RowError(str(a), 5, "no video", entry=1)])
    save_manifest_errors(store, b, [RowError(str(b), 2, "bad fps")])
    save_manifest_errors(store, a, [RowError(str(a), 4, "fixed 3, broke 4")])  # a rerun of a
    errors = load_manifest_errors(store)
    assert [(e["row"], e["entry"], e["message"]) for e in errors] == [(2, None, "bad fps"), (4, None, "fixed 3, broke 4")]


def test_flow_colour_wheel_direction_and_invalid_black():
    flow = np.zeros((2, 2, 2), np.float32)
    flow[0, 0] = [5, 0]  # right
    flow[0, 1] = [-5, 0]  # left
    valid = np.array([[True, True], [True, False]])
    rgb = flow_to_rgb(flow, valid)
    assert not np.array_equal(rgb[0, 0], rgb[0, 1])
    assert (rgb[1, 1] == 0).all()
    assert (rgb[1, 0] == 255).all()  # zero flow: white


@pytest.fixture
def report_dirs(tmp_path, monkeypatch):
    from flows.report import REPORT_ROOT_ENV, REPORT_URL_ENV

    for name in (REPORT_URL_ENV, REPORT_ROOT_ENV):  # restored after the test: serve_reports exports them
        monkeypatch.delenv(name, raising=False)
    report = tmp_path / "runs" / "labels_report"
    report.mkdir(parents=True)
    (report / "index.html").write_text("<html>quality</html>")
    (report / "summary.json").write_text("{}")
    (tmp_path / "secret.txt").write_text("not a report")
    return tmp_path, report


def test_reports_are_served_over_http_and_nothing_else(report_dirs):
    from flows.report import report_reference, report_url, serve_reports

    root, report = report_dirs
    page = report / "index.html"
    assert report_url(page) is None  # no server: the artifact names the file instead of a dead link
    assert "file://" not in report_reference(page) and str(page) in report_reference(page)
    server = serve_reports(root, port=0)
    try:
        url = report_url(page)
        assert re.fullmatch(rf"http://127\.0\.0\.1:{server.server_address[1]}/runs/labels_report/index\.html", url)
        assert report_reference(page) == f"Report: [{url}]({url})"
        assert urllib.request.urlopen(url, timeout=10).read() == b"<html>quality</html>"
        assert urllib.request.urlopen(url.removesuffix("index.html"), timeout=10).read() == b"<html>quality</html>"
        for path in ("secret.txt", "runs/labels_report/../../secret.txt", ""):
            with pytest.raises(urllib.error.HTTPError, match="404"):
                urllib.request.urlopen(url.split("/runs/")[0] + "/" + path, timeout=10)
        assert report_url(root.parent / "elsewhere" / "index.html") is None
    finally:
        server.shutdown()
        server.server_close()


def test_artifact_markdown_has_summary_plots_gates_and_no_file_link(tmp_path):
    from flows.report import _markdown

    summary = {
        "clips": 3, "accepted": 2, "rejected": 1, "rejected_by_reason": {"qa: fb_consistent_fraction": 1},
        "metric_medians": {"fb_consistent_fraction": 0.8}, "gates": {"fb_consistent_fraction": [["min", 0.6]]},
        "gate_sets": 1, "scene_flow_missing": {"no_depth_on_movers": 2, "scene_flow_tests": 0, "no_movers": 0},
    }
    rows = [{"status": s, "qa_fb_consistent_fraction": v} for s, v in (("accepted", 0.8), ("accepted", 0.9),
                                                                        ("rejected", 0.4))]
    errors = [{"manifest": "m.csv", "row": 7, "entry": None, "message": "bad time"}]
    text = _markdown(summary, rows, errors, tmp_path / "report" / "index.html")
    assert "| fb_consistent_fraction | 0.8 | min 0.6 | ![fb_consistent_fraction](data:image/png;base64," in text
    assert "| m.csv | 7 | bad time |" in text and "1 manifest row errors" in text
    assert "2 clips for lack of depth there" in text
    assert "file://" not in text and str(tmp_path / "report" / "index.html") in text
