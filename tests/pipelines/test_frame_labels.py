"""Labeling in-memory frames runs the labeling pipeline's stages: the same labels as `label_clip` on the same frames."""

import numpy as np
import pytest

from pipelines.clips import ClipRejected
from pipelines.decode import decode_clip
from pipelines.frame_labels import label_frames
from pipelines.labeling import LabelConfig, build_backends, label_clip
from pipelines.manifests import read_manifest
from pipelines.synthetic import SceneConfig
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
