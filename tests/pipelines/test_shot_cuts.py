"""Shot cuts among the label frames: found at their source frame, skipped, rejected or ignored.

The fixture video is two rendered synthetic shots back to back at 30 fps: a room dolly (source
frames 0-29) and an open-yard orbit (30-59), so the cut sits before frame 30, at 1 s.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipelines.clips import ClipRejected
from pipelines.decode import DecodeConfig, decode_clip
from pipelines.labeling import LabelConfig
from pipelines.shot_cuts import DEFAULT_CUT_THRESHOLD, content_changes
from pipelines.synthetic import render_clip
from pipelines.synthetic_set import SCENE_CLASSES, class_configs
from tests.pipelines.test_decode import spec_for, write_video

FPS = 30.0
CUT_FRAME = 30
SIZE = (96, 160)


def _shot(name: str, seed: int) -> np.ndarray:
    return render_clip(replace(SCENE_CLASSES[name](seed, *SIZE, 33), fps=FPS)).frames[:CUT_FRAME]


@pytest.fixture(scope="module")
def two_shots(tmp_path_factory) -> tuple[Path, np.ndarray]:
    frames = np.concatenate([_shot("room", 3), _shot("open_sky", 4)])
    return write_video(tmp_path_factory.mktemp("cuts") / "two_shots.mp4", frames, FPS), frames


def _config(num_frames: int, **kwargs) -> DecodeConfig:
    return DecodeConfig(num_frames=num_frames, height=SIZE[0], width=SIZE[1], num_threads=1, **kwargs)


def test_content_change_of_a_cut_is_far_above_the_motion_within_a_shot(two_shots):
    _, frames = two_shots
    changes = content_changes(frames)
    assert changes.shape == (len(frames) - 1,)
    assert changes[CUT_FRAME - 1] >= 2 * DEFAULT_CUT_THRESHOLD
    assert np.delete(changes, CUT_FRAME - 1).max() < 0.5 * DEFAULT_CUT_THRESHOLD
    with pytest.raises(ValueError, match="uint8 RGB"):
        content_changes(frames[..., 0])


def test_native_clip_across_a_cut_starts_again_at_the_new_shot(two_shots):
    path, _ = two_shots
    decoded = decode_clip(spec_for(path, 0.5, 2.0, fps_target=None), _config(20))
    np.testing.assert_array_equal(decoded.frame_index, np.arange(CUT_FRAME, CUT_FRAME + 20))
    (cut,) = decoded.shot_cuts_skipped
    assert cut.source_frame == CUT_FRAME and cut.time_s == pytest.approx(1.0, abs=1e-3)
    assert cut.change >= DEFAULT_CUT_THRESHOLD


def test_a_cut_between_label_frames_is_found_at_its_source_frame(two_shots):
    """At 8 fps from 30 the label frames skip 3-4 source frames; the cut is confirmed on the frames between."""
    path, _ = two_shots
    decoded = decode_clip(spec_for(path, 0.6, 2.0, fps_target=8.0), _config(5))
    (cut,) = decoded.shot_cuts_skipped
    assert cut.source_frame == CUT_FRAME
    assert decoded.frame_index[0] == CUT_FRAME and decoded.fps == 8.0
    within = decode_clip(spec_for(path, 0.0, 2.0, fps_target=8.0), _config(5))  # frames 0..15: one shot
    assert within.shot_cuts_skipped == () and within.frame_index[0] == 0


def test_reject_names_the_cut_and_ignore_keeps_the_frames(two_shots):
    path, _ = two_shots
    spec = spec_for(path, 0.5, 2.0, fps_target=None)
    with pytest.raises(ClipRejected) as info:
        decode_clip(spec, _config(20, shot_cuts="reject"))
    assert info.value.reason == "shot_cut"
    assert "1.000 s" in info.value.message and f"source frame {CUT_FRAME}" in info.value.message
    assert "\n" not in str(info.value)
    ignored = decode_clip(spec, _config(20, shot_cuts="ignore"))
    assert ignored.frame_index[0] == 15 and ignored.shot_cuts_skipped == ()


def test_no_shot_long_enough_after_the_cut_is_rejected_with_both_causes(two_shots):
    path, _ = two_shots
    with pytest.raises(ClipRejected) as info:
        decode_clip(spec_for(path, 0.0, 2.0, fps_target=None), _config(40))
    message = info.value.message
    assert info.value.reason == "shot_cut"
    assert message.startswith("shot cut at 1.000 s") and "40 consecutive frames" in message, message


def test_shot_cut_settings_are_checked_and_reach_the_decoder():
    with pytest.raises(ValueError, match="shot_cuts"):
        DecodeConfig(shot_cuts="split")
    with pytest.raises(ValueError, match="shot_cut_threshold"):
        DecodeConfig(shot_cut_threshold=0.0)
    decode = LabelConfig(shot_cuts="reject", shot_cut_threshold=40.0).decode
    assert (decode.shot_cuts, decode.shot_cut_threshold) == ("reject", 40.0)


@pytest.mark.parametrize("name", sorted(SCENE_CLASSES))
def test_rendered_scene_classes_hold_no_candidate_cut(name: str):
    """Every class's motion at 8 fps stays under half the threshold (measured at most 11.6 of 27 at 120x180)."""
    (config,) = class_configs(name, 1, *SIZE, 500, 25, 8.0)
    assert content_changes(render_clip(config).frames).max() < 0.5 * DEFAULT_CUT_THRESHOLD
