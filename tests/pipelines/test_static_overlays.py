"""Static overlays end to end (`--static-overlays`, the default): a captioned rendered dolly keeps every
label off its captions."""

from __future__ import annotations

import numpy as np

from pipelines.clips import ClipSpec
from labelers.overlay import STATIC_OVERLAY_VERSION, StaticOverlayConfig
from pipelines.labeling import LabelConfig, build_backends, label_clip
from pipelines.synthetic import burn_captions, render_clip
from pipelines.synthetic_set import class_configs
from tests.pipelines.test_decode import write_video

SIZE, FRAMES = (240, 360), 17


def test_captions_are_kept_out_of_the_labels(tmp_path) -> None:
    config = class_configs("room", 1, *SIZE, 600, FRAMES, 8.0)[0]
    captioned, captions = burn_captions(render_clip(config).frames)
    path = write_video(tmp_path / "captioned.mp4", captioned, 8.0)
    spec = ClipSpec("captioned", str(path), 0.0, 10.0, fps_target=None)
    cfg = LabelConfig(height=SIZE[0], width=SIZE[1], num_frames=FRAMES)
    backends = build_backends(cfg)
    arrays, attrs, _ = label_clip(spec, cfg, backends)
    overlay_share = attrs["qa"]["static_overlay_fraction"]
    recorded = attrs["labelers"]["flow"]["params"]["static_overlays"]  # a label made under other rules is told apart
    assert recorded["version"] == STATIC_OVERLAY_VERSION
    assert recorded["max_shift_px"] == StaticOverlayConfig().max_shift_px and recorded["grow_px"] == StaticOverlayConfig().grow_px
    assert captions.mean() < overlay_share < 4 * captions.mean()
    for name in ("flow_valid", "key_flow_valid", "depth_valid", "dynamic_mask", "scene_flow_valid"):
        assert not np.asarray(arrays[name])[:, captions].any(), name
