"""bench/bench_scene_classes.py's reading of saved sweeps: targets missed, tables, clip-by-clip comparison."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_scene_classes.py"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH.parent))  # the bench imports its sibling `common`
    spec = importlib.util.spec_from_file_location("bench_scene_classes", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def record(clip_id: str, status: str, reasons: list[str] | None = None, **metrics: float) -> dict:
    return {"clip_id": clip_id, "class": "room", "status": status, "reasons": reasons or [], "metrics": metrics}


BEFORE = [
    record("a", "accepted", dynamic_iou=0.5, false_alarm_static=0.02, depth_delta125=0.97),
    record("b", "accepted", dynamic_iou=0.9, false_alarm_static=0.001),
    record("c", "rejected", ["camera_static: the camera does not move"]),
]
AFTER = [
    record("a", "accepted", dynamic_iou=0.7, false_alarm_static=0.005, depth_delta125=0.97),
    record("b", "rejected", ["qa: camera_epipolar_ratio=3.1 > max 2.5"], dynamic_iou=0.85, false_alarm_static=0.001),
    record("c", "rejected", ["camera_static: the camera does not move"]),
]


def test_missed_targets_count_accepted_clips_only(bench):
    missed = bench.missed_targets(BEFORE + [record("d", "rejected", dynamic_iou=0.1)])
    assert missed == {"dynamic_iou": (1, 0.5), "false_alarm_static": (1, 0.02)}
    assert bench.missed_targets(AFTER) == {}


def test_comparison_names_what_moved_clip_by_clip(bench, capsys):
    bench.print_comparison(BEFORE, AFTER + [record("new", "accepted", dynamic_iou=0.1)])
    out = capsys.readouterr().out
    assert "3 clips in both" in out
    assert "a (room): accepted: dynamic_iou 0.5 -> 0.7, false_alarm_static 0.02 -> 0.005" in out
    assert "b (room): accepted -> rejected (qa): dynamic_iou 0.9 -> 0.85" in out
    assert "c (room): rejected\n" in out
    # a better on IoU and false alarms; b worse on IoU (0.05 > a hundredth of 0.6); d1.25 did not move
    assert "better / worse: dynamic_iou 1/1, false_alarm_static 1/0" in out


def test_tables_from_a_saved_sweep(bench, tmp_path, monkeypatch, capsys):
    after, before = tmp_path / "after.json", tmp_path / "before.json"
    after.write_text(json.dumps({"args": {}, "clips": AFTER}))
    before.write_text(json.dumps({"args": {}, "clips": BEFORE}))
    monkeypatch.setattr(sys, "argv", ["bench", "--tables-from", str(after), "--compare", str(before)])
    bench.main()
    out = capsys.readouterr().out
    assert "### room: 1/3 accepted, 2 with labels" in out
    # over the clips with labels: IoU median of 0.7 and 0.85 and the worst, false alarms the same way
    assert "| 0.77 (min 0.70) | 0.30% (max 0.50%) | - |" in out
    assert "rejection reasons: qa x1, camera_static x1" in out
    assert "### compared with the earlier sweep: 3 clips in both" in out


@pytest.mark.parametrize("num_moving", [0, 1])
def test_clip_metrics_score_the_truth_itself_perfectly(bench, num_moving):
    """The truth's own labels: no false alarm, full depth coverage off the sky, zero flow error; IoU and
    scene-flow coverage only where a key frame sees a mover (NaN without one, 1 with one)."""
    from pipelines.synthetic import SceneConfig, render_clip

    clip = render_clip(SceneConfig(seed=5, height=60, width=90, num_frames=9, stride=4, scene="open",
                                   num_moving=num_moving))
    metrics = bench.clip_metrics(clip.labels, clip, clip.frames)
    assert metrics["false_alarm_static"] == 0 and metrics["false_alarm_sky"] == 0
    # the truth holds the sky's depth (80 m away), which labels leave invalid
    assert metrics["depth_coverage_static"] == 1 and metrics["depth_valid_sky"] == 1
    assert metrics["flow_coverage"] == 1 and metrics["flow_epe_ours"] == 0 and metrics["key_flow_epe_ratio"] == 0
    assert metrics["depth_delta125"] == 1
    if num_moving:
        assert clip.labels["dynamic_mask"].any() and metrics["dynamic_iou"] == 1 and metrics["scene_flow_coverage"] == 1
    else:
        assert np.isnan(metrics["dynamic_iou"]) and np.isnan(metrics["scene_flow_coverage"])
