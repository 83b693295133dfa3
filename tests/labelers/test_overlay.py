"""Static overlays (captions, logos) on rendered clips: found on moving cameras, kept out of every label."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from labelers.flow import PairFlows
from labelers.overlay import StaticOverlayConfig, static_overlay
from labelers.sfm.config import SfmConfig
from labelers.sfm.tracks import track_klt
from pipelines.synthetic import render_clip
from pipelines.synthetic_set import class_configs

CAPTIONS = ((0.58, 0.94, "WorldNews 24", 0.55), (0.02, 0.09, "LOGO", 0.8))  # x, y (share of the frame), text, scale


def with_captions(frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frames with two white captions outlined in black burned in, and the (H, W) pixels they change."""
    out = frames.copy()
    height, width = frames.shape[1:3]
    for frame in out:
        for x, y, text, scale in CAPTIONS:
            origin = (int(x * width), int(y * height))
            cv2.putText(frame, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 4, cv2.LINE_AA)
            cv2.putText(frame, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out, np.any(out != frames, axis=(0, 3))


def _frames(name: str, index: int, num_frames: int = 49) -> np.ndarray:
    return render_clip(class_configs(name, index + 1, 240, 360, 600, num_frames, 8.0)[index]).frames


def _near(mask: np.ndarray, radius_px: int) -> np.ndarray:
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius_px + 1, 2 * radius_px + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


@pytest.mark.parametrize("name, index", [("room", 0), ("open_sky", 1)])
def test_captions_on_a_moving_camera_are_found_and_nothing_else(name: str, index: int) -> None:
    frames = _frames(name, index)
    assert not static_overlay(frames).any()
    captioned, truth = with_captions(frames)
    overlay = static_overlay(captioned)
    assert overlay[truth].mean() >= 0.99
    assert not (overlay & ~_near(truth, StaticOverlayConfig().grow_px + 4)).any()


def test_overlay_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="min_still_share"):
        StaticOverlayConfig(min_still_share=0.0)
    with pytest.raises(ValueError, match="ring_px"):
        StaticOverlayConfig(ring_px=0)
    with pytest.raises(ValueError, match="uint8"):
        static_overlay(np.zeros((4, 8, 8, 3), np.float32))


def test_tracks_stay_off_the_excluded_pixels() -> None:
    captioned, truth = with_captions(_frames("room", 0, 9))
    exclude = _near(truth, 2)
    free = track_klt(captioned, SfmConfig(), exclude)
    on_captions = track_klt(captioned, SfmConfig())
    u, v = np.round(free.xy[..., 0]), np.round(free.xy[..., 1])
    seen = np.isfinite(u)
    assert not exclude[v[seen].astype(int), u[seen].astype(int)].any()
    u, v = np.round(on_captions.xy[..., 0]), np.round(on_captions.xy[..., 1])
    seen = np.isfinite(u)
    assert exclude[v[seen].astype(int), u[seen].astype(int)].mean() > 0.03  # what it takes away: measured 0.046


def test_flows_are_made_invalid_on_a_mask() -> None:
    shape = (2, 4, 5)
    flows = PairFlows(np.array([[0, 1], [1, 2]]), *(np.zeros((*shape, 2), np.float32),) * 2,
                      *(np.zeros(shape, np.float32),) * 2, *(np.ones(shape, bool),) * 2,
                      *(np.zeros(shape, np.float32),) * 2)
    mask = np.zeros(shape[1:], bool)
    assert flows.invalid_where(mask) is flows
    mask[1, 2] = True
    masked = flows.invalid_where(mask)
    assert not masked.valid_fwd[:, 1, 2].any() and not masked.valid_bwd[:, 1, 2].any()
    assert masked.valid_fwd.sum() == flows.valid_fwd.sum() - 2
    with pytest.raises(ValueError, match="mask must be"):
        flows.invalid_where(np.zeros((3, 3), bool))
