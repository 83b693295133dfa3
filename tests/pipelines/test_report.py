"""The HTML quality report: what an auditor needs is on the page, and it renders in a browser."""

import re
import shutil
import subprocess

import numpy as np
import pytest

from pipelines.report import build_report, flow_to_rgb, histogram_svg, report_summary
from pipelines.synthetic_set import scene_configs, write_synthetic_set
from storage import LabelStore


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    store = LabelStore.create(root / "labels.zarr", precision="float32")
    rows = write_synthetic_set(root / "synth", scene_configs(2, 48, 64, seed=3, num_frames=9), store=store)
    attrs = store.attrs(rows[0].clip_id)
    store.commit_rejected("bad-clip", {"source": attrs["source"], "qa": {"dynamic_ratio": 0.9}}, ["too_short: 3 frames"])
    store.commit_rejected("worse-clip", {"source": attrs["source"]}, ["qa: fb_consistent_fraction=0.2 < min 0.5"])
    path = build_report(store.root, root / "report")
    return store, path, path.read_text()


def test_page_has_totals_reasons_distributions_table_and_galleries(report):
    store, path, page = report
    assert "4 clips" in page and "2 accepted" in page and "2 rejected" in page
    assert "too_short: 1" in page and "qa: fb_consistent_fraction: 1" in page
    metrics = {k for row in store.index().to_pylist() for k in row if k.startswith("qa_")}
    assert page.count('<svg class="hist"') == len(metrics)
    assert len(re.findall(r"<tr class=\"(accepted|rejected)\">", page)) == 4
    assert page.count('<section class="clip"') == 2  # galleries for accepted clips
    assert page.count("data:image/png;base64,") == 2 * 2 * 6  # 2 clips x key frames {0, 1} (S = 3) x 6 panels
    assert (path.parent / "summary.json").exists()


def test_summary_counts(report):
    store, _, _ = report
    summary = report_summary(store)
    assert summary["clips"] == 4 and summary["accepted"] == 2 and summary["rejected"] == 2
    assert summary["rejected_by_reason"] == {"too_short": 1, "qa: fb_consistent_fraction": 1}


def test_flow_colour_wheel_direction_and_invalid_black():
    flow = np.zeros((2, 2, 2), np.float32)
    flow[0, 0] = [5, 0]  # right
    flow[0, 1] = [-5, 0]  # left
    valid = np.array([[True, True], [True, False]])
    rgb = flow_to_rgb(flow, valid)
    assert not np.array_equal(rgb[0, 0], rgb[0, 1])
    assert (rgb[1, 1] == 0).all()
    assert (rgb[1, 0] == 255).all()  # zero flow: white


def test_histogram_draws_bound_line():
    svg = histogram_svg(np.array([0.1, 0.2, 0.9]), np.array([0.05]), ("min", 0.5), "fb")
    assert svg.count("<rect") >= 3 and 'stroke-dasharray="4 2"' in svg and "min 0.5" in svg


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (make report-check installs it)")
def test_page_renders_in_headless_chromium_without_script_errors(report, tmp_path):
    _, path, _ = report
    shot = tmp_path / "shot.png"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
             "--window-size=1280,2000", f"--screenshot={shot}"]
    proc = subprocess.run([CHROMIUM, *flags, path.as_uri()], capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr[-2000:]
    assert "Uncaught" not in proc.stderr, proc.stderr[-2000:]
    import cv2

    image = cv2.imread(str(shot))
    assert image.std() > 10  # not a blank page
    assert (image < 200).mean() > 0.02  # text, plots and pictures are drawn
