"""bench/bench_mask_replay.py: saved key-mask inputs replay the labelled masks exactly, and overrides act."""

from __future__ import annotations

import argparse
import importlib.util
import pickle
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_mask_replay.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_mask_replay", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def saved(bench, tmp_path_factory):
    return bench.capture([("room", 0)], 9, (120, 180), True, tmp_path_factory.mktemp("replay"))


def test_replay_without_overrides_gives_the_labelled_masks(bench, saved):
    assert [p.name for p in saved] == ["room_0.pkl"]
    (labelled, replayed) = bench.replay(saved[0], {})
    assert labelled == replayed and labelled[0] > 0.8  # IoU against the truth, measured 0.896
    with open(saved[0], "rb") as f:
        data = pickle.load(f)
    args, kwargs = data["call"]
    again = bench.FlowRigidityMasks(data["config"]).key_masks(*args, **kwargs)
    np.testing.assert_array_equal(again, data["label"])


def test_an_override_changes_the_masks(bench, saved):
    (_, fa_labelled), (_, fa_tight) = bench.replay(saved[0], {"residual_abs_px": 0.05, "residual_rel": 0.0})
    assert fa_tight > fa_labelled + 0.01  # a threshold below the flow noise flags static pixels


def test_texture_settings_are_measured_again(bench, saved):
    """The weak-texture map is computed outside `key_masks`: the replay must redo it."""
    with open(saved[0], "rb") as f:
        data = pickle.load(f)
    args, kwargs = data["call"]
    frames, keys = args[10], args[3]
    strict = bench.replace(data["config"], confirm_max_snr=1e6)
    again = bench.SourceTexture.of(frames, strict, period_frames=keys)
    assert again.weak[keys].sum() > data["call"][0][9].weak[keys].sum()  # every key pixel now weak
    # without the neighbours' regions, which give back here what the mirror views take away
    _, replayed = bench.replay(saved[0], {"confirm_max_snr": 1e6, "from_neighbours": False})
    _, without_neighbours = bench.replay(saved[0], {"from_neighbours": False})
    assert replayed != without_neighbours


def test_capture_at_another_mover_speed_names_its_file_and_renders_that_speed(bench, tmp_path):
    """`capture --mover-speed 0`: the movers stand still, so the truth holds no moving pixel."""
    (path,) = bench.capture([("room", 0)], 9, (120, 180), True, tmp_path, mover_speed=0.0)
    assert path.name == "room_0_x0.pkl"
    with open(path, "rb") as f:
        assert not pickle.load(f)["truth"].any()


def test_overrides_are_parsed_as_the_fields_types(bench):
    assert bench.config_override("residual_abs_px=1.5") == ("residual_abs_px", 1.5)
    assert bench.config_override("key_view_multiples=2,3") == ("key_view_multiples", (2, 3))
    for bad in ("no_such_field=1", "residual_abs_px", "residual_abs_px="):
        with pytest.raises(argparse.ArgumentTypeError):
            bench.config_override(bad)


def test_per_key_scores_add_up_to_the_clip(bench, saved, capsys):
    """Per key frame: the moving share, IoU, recall and false alarms against the truth; pooled over
    the key frames the intersections and the false alarms are the clip's."""
    label, mask, truth = bench.replayed_masks(saved[0], {})
    rows = bench.per_key_scores(label, truth)
    assert len(rows) == len(truth)
    for (share, iou, recall, fa), m, t in zip(rows, label, truth):
        assert share == pytest.approx(t.mean()) and 0 <= iou <= recall <= 1
        assert fa == pytest.approx((m & ~t).sum() / (~t).sum())
    _, fa_clip = bench.scores(label, truth)
    static_counts = [(~t).sum() for t in truth]
    assert fa_clip == pytest.approx(sum(r[3] * n for r, n in zip(rows, static_counts)) / sum(static_counts))
    synthetic = np.zeros((2, 4, 4), bool)
    synthetic[:, :2, :2] = True  # truth: 4 pixels per key frame
    found = synthetic.copy()
    found[1, 0, 0] = False  # key frame 1 misses one of them
    found[1, 3, 3] = True  # and flags one static pixel
    assert bench.per_key_scores(found, synthetic) == [(0.25, 1.0, 1.0, 0.0), (0.25, 0.6, 0.75, 1 / 12)]
    bench.print_replays(saved, {}, per_key=True)
    assert "per key frame" in capsys.readouterr().out
