"""The HTML quality report of a labelled store: what an auditor needs is on the page, and it renders.

One store, labelled by the pipeline in two runs with changed gates: run 1 labels a good clip and
three broken ones (missing video, undecodable video, too short), run 2 labels the second good clip
with a stricter depth gate, which rejects it after its metrics were measured. The manifest also
has one malformed row.
"""

import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.labeling import LabelConfig, label_clips
from pipelines.manifests import read_manifest
from pipelines.quality import QualityThresholds
from pipelines.report import build_report, clip_anchor, report_summary, save_manifest_errors
from storage import LabelStore
from tests.flows.synthetic_manifest import FRAMES, SIZE, write_manifest

RUN1_GATES = QualityThresholds(min_depth_valid_fraction=0.25, max_rigid_flow_residual_px=4.0)
RUN2_GATES = QualityThresholds(min_depth_valid_fraction=0.99, max_rigid_flow_residual_px=4.0)


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    manifest_path, good, bad = write_manifest(root / "synth", num_good=2)
    manifest = read_manifest(str(manifest_path), "auto", fps_target=8.0)
    store = LabelStore.create(root / "labels.zarr")
    size = dict(height=SIZE[0], width=SIZE[1], num_frames=FRAMES, stride=4)
    run2 = [s for s in manifest.specs if s.clip_id == good[1]]
    label_clips([s for s in manifest.specs if s not in run2], LabelConfig(**size, thresholds=RUN1_GATES), store)
    label_clips(run2, LabelConfig(**size, thresholds=RUN2_GATES), store)
    store.compact_index()
    save_manifest_errors(store, manifest_path, manifest.errors)
    path = build_report(store.root, root / "report")
    return store, path, good, bad


@pytest.fixture(scope="module")
def page(labelled):
    return labelled[1].read_text()


def _section(page: str, anchor: str) -> str:
    match = re.search(rf'<section [^>]*id="{re.escape(anchor)}">(.*?)</section>', page, re.S)
    assert match, f"no section #{anchor}"
    return match.group(1)


def test_totals_reasons_and_manifest_row_errors(labelled, page):
    store, path, good, bad = labelled
    assert "5 clips" in page and "1 accepted" in page and "4 rejected" in page and "1 manifest row errors" in page
    for code in ("missing_file: 1", "unreadable: 1", "too_short: 1", "qa: depth_valid_fraction: 1"):
        assert code in page
    errors = re.search(r'<table id="manifest-errors".*?</table>', page, re.S).group(0)
    assert "not-a-number" in errors and "<td>7</td>" in errors  # the malformed row, by spreadsheet row
    summary = json.loads((path.parent / "summary.json").read_text())
    assert summary["manifest_row_errors"] == 1 and summary == {**summary, **report_summary(store)}


def test_every_clip_link_resolves_and_rejected_clips_are_inspectable(labelled, page):
    _, _, good, bad = labelled
    links = re.findall(r'<a href="#([^"]+)">', page)
    ids = set(re.findall(r' id="([^"]+)"', page))
    assert len(links) == 5 and set(links) <= ids
    gated = _section(page, clip_anchor(good[1]))  # rejected by run 2's depth gate, after labelling
    assert "depth_valid_fraction=" in gated and "&lt; min 0.99" in gated
    assert gated.count("data:image/png;base64,") == 1  # its first frame, decoded from the source at its start
    fails = re.findall(r'<tr class="fail"><td>([a-z_0-9]+)</td><td>([0-9.e+-]+)</td><td>(min|max) ([0-9.]+)</td>', gated)
    assert [(m, k, b) for m, _, k, b in fails] == [("depth_valid_fraction", "min", "0.99")]
    assert len(re.findall(r"<tr(?: class=\"fail\")?><td>[a-z_]+</td><td>[0-9.e+-]+</td>", gated)) >= 15  # all metrics
    missing = _section(page, clip_anchor("missing-video"))
    assert "No first frame: video not found" in missing and "missing_file" in missing
    assert "No quality metric was measured" in missing
    assert "No first frame: cannot decode" in _section(page, clip_anchor("garbage-video"))
    assert _section(page, clip_anchor("short-clip")).count("data:image/png;base64,") == 1


def test_missing_scene_flow_is_explained_and_counted(labelled, page):
    store, path, good, _ = labelled
    labels = store.read(good[0], fields=["depth_valid", "dynamic_mask", "scene_flow_valid"])
    movers = labels["dynamic_mask"][:-1]
    depth_on_movers = labels["depth_valid"][::4][: len(movers)][movers].mean() if movers.any() else 0.0
    assert not labels["scene_flow_valid"].any()  # the weight-free depth: no scene flow at all
    gallery = _section(page, clip_anchor(good[0]))
    summary = json.loads((path.parent / "summary.json").read_text())
    if movers.any():
        assert depth_on_movers < 0.05  # the cause the page gives must be the measured one
        assert "--depth mvs" in gallery and "needs depth there" in gallery
        assert summary["scene_flow_missing"]["no_depth_on_movers"] == 1
        assert re.search(r'id="n-sf-no-depth">1 of 1 clips', page)
    else:
        assert "nothing moves" in gallery and summary["scene_flow_missing"]["no_movers"] == 1


def test_gate_lines_are_the_runs_gates(labelled, page):
    _, path, _, _ = labelled
    hists = dict(re.findall(r'<svg class="hist"[^>]*aria-label="([^"]+)">(.*?)</svg>', page, re.S))
    gate_labels = {m: re.findall(r'class="gate">([^<]+)</text>', svg) for m, svg in hists.items()}
    assert gate_labels["rigid_flow_residual_px"] == ["max 4"]  # both runs moved it from the default 2
    assert sorted(gate_labels["depth_valid_fraction"]) == ["min 0.25", "min 0.99"]  # the runs differ: both drawn
    assert gate_labels["fb_consistent_fraction"] == ["min 0.5"]
    assert "2 different gate sets" in page
    summary = json.loads((path.parent / "summary.json").read_text())
    assert summary["gates"]["rigid_flow_residual_px"] == [["max", 4.0]] and summary["gate_sets"] == 2


def test_report_renders_when_the_videos_moved_away(labelled, tmp_path):
    store, _, good, _ = labelled
    videos = Path(store.attrs(good[0])["source"]["uri"]).parent
    moved = videos.with_name("videos_moved")
    videos.rename(moved)
    try:
        page = build_report(store.root, tmp_path / "report").read_text()
    finally:
        moved.rename(videos)
    assert "RGB: no video" in _section(page, clip_anchor(good[0]))
    assert "No first frame: video not found" in _section(page, clip_anchor(good[1]))


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PROBE = """<pre id="probe"></pre><script>
var links = Array.from(document.querySelectorAll('a[href^="#"]'));
document.getElementById('probe').textContent = JSON.stringify({
  viewport: document.documentElement.clientWidth,
  page: document.documentElement.scrollWidth,
  table: document.getElementById('clips').getBoundingClientRect().width,
  table_box: document.getElementById('clips').parentElement.getBoundingClientRect().width,
  links: links.length,
  broken: links.filter(function(a) { return !document.getElementById(a.getAttribute('href').slice(1)); })
               .map(function(a) { return a.getAttribute('href'); })
});
</script></body>"""


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0"]
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (.ci/run installs it from Debian)")
def test_page_fits_1400px_and_its_anchors_resolve_in_chromium(labelled, tmp_path):
    _, path, _, _ = labelled
    probed = tmp_path / "probed.html"
    probed.write_text(path.read_text().replace("</body>", PROBE))
    proc = _chromium(tmp_path, "--window-size=1400,1000", "--dump-dom", probed.as_uri())
    match = re.search(r'<pre id="probe">(\{.*?\})</pre>', proc.stdout)
    assert match, proc.stderr[-2000:]
    probe = json.loads(match.group(1))
    assert probe["viewport"] <= 1400 and probe["page"] <= probe["viewport"]  # no horizontal scroll
    assert probe["table"] <= probe["table_box"] <= probe["viewport"]
    assert probe["links"] == 5 and probe["broken"] == []
    assert "Uncaught" not in proc.stderr, proc.stderr[-2000:]


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (.ci/run installs it from Debian)")
def test_page_renders_in_headless_chromium(labelled, tmp_path):
    _, path, _, _ = labelled
    shot = tmp_path / "shot.png"
    proc = _chromium(tmp_path, "--window-size=1400,2000", f"--screenshot={shot}", path.as_uri())
    assert shot.exists(), proc.stderr[-2000:]
    assert "Uncaught" not in proc.stderr, proc.stderr[-2000:]
    image = cv2.imread(str(shot))
    assert image.std() > 10  # not a blank page
    assert (image < 200).mean() > 0.02  # text, plots and pictures are drawn
    gate_blue = np.abs(image.astype(int) - [156, 78, 31]).sum(axis=-1) < 40  # BGR of the dashed gate lines
    assert gate_blue.sum() > 50
