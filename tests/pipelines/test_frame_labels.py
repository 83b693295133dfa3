"""Labeling in-memory frames runs the labeling pipeline's stages: the same labels as `label_clip` on the same frames."""

import numpy as np
import pytest

from pipelines.clips import ClipRejected
from pipelines.decode import decode_clip
from pipelines.frame_labels import label_frames
from pipelines.labeling import LabelConfig, build_backends, label_clip
from pipelines.manifests import read_manifest
from pipelines.synthetic import SceneConfig, render_clip
from pipelines.synthetic_set import write_synthetic_set


def test_label_frames_equals_label_clip_on_the_decoded_frames(tmp_path):
    write_synthetic_set(tmp_path, [SceneConfig(seed=3, height=64, width=96, num_frames=9, camera="dolly", num_moving=1)])
    (spec,) = read_manifest(tmp_path / "manifest.csv").specs
    cfg = LabelConfig(height=64, width=96, num_frames=9)
    backends = build_backends(cfg)
    arrays, _, _ = label_clip(spec, cfg, backends)
    decoded = decode_clip(spec, cfg.decode)
    seconds = {}
    labels = label_frames(decoded.frames, cfg, backends, decoded.K, spec.clip_id, seconds)
    assert set(labels) == set(arrays) - {"frame_index", "timestamps"}
    for name, value in labels.items():
        np.testing.assert_array_equal(value, arrays[name], err_msg=name)
    assert set(seconds) == {"flow", "camera", "depth_and_masks", "scene_flow"}
    assert labels["depth_valid"].mean() > 0.2  # not vacuous: the clip was labelled


def test_label_frames_rejects_with_the_stages_reason():
    cfg = LabelConfig(height=32, width=48, num_frames=9)
    flat = np.full((9, 32, 48, 3), 128, np.uint8)
    with pytest.raises(ClipRejected, match="generated_7") as caught:
        label_frames(flat, cfg, build_backends(cfg), clip_id="generated_7")
    assert caught.value.reason.startswith("camera_")
    with pytest.raises(ValueError, match="multiple of the stride"):
        label_frames(flat[:8], cfg, build_backends(cfg))
    imported = LabelConfig(height=32, width=48, num_frames=9, camera="import", depth="import")
    with pytest.raises(ValueError, match="no annotations to import"):
        label_frames(flat, imported, build_backends(cfg))


def test_key_flow_that_contradicts_the_multi_view_depth_is_invalid():
    """`LabelConfig.key_flow_geometry_px` on a striped open orbit (the flow locks one period off and
    passes its own checks): what the test drops is mostly wrong flow, the rest is more accurate, and
    nothing else changes."""
    clip = render_clip(SceneConfig(seed=7, height=120, width=180, num_frames=17, camera="orbit", scene="open",
                                   texture="repeated", num_moving=1))
    runs = {}
    for tolerance in (None, 2.0):
        cfg = LabelConfig(height=120, width=180, num_frames=17, key_flow_geometry_px=tolerance)
        runs[tolerance] = label_frames(clip.frames, cfg, build_backends(cfg), K=clip.labels["K"])
    before, after = runs[None], runs[2.0]
    error = np.linalg.norm(after["key_flow"] - clip.labels["key_flow"], axis=-1)
    truth = clip.labels["key_flow_valid"]
    np.testing.assert_array_equal(before["key_flow"], after["key_flow"])
    dropped = before["key_flow_valid"] & ~after["key_flow_valid"] & truth
    assert not (after["key_flow_valid"] & ~before["key_flow_valid"]).any()
    assert dropped.sum() > 300
    assert np.mean(error[dropped] > 3) > 0.5
    outliers = [np.mean(error[run["key_flow_valid"] & truth] > 3) for run in (before, after)]
    assert outliers[1] < 0.8 * outliers[0]
    for name in ("depth", "depth_valid", "dynamic_mask", "flow_valid", "c2w"):
        np.testing.assert_array_equal(before[name], after[name])
