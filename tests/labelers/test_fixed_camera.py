"""Fixed cameras recognised from the still background, also behind a large mover, and fixed or
rotating cameras labelled with a depth that needs no parallax (labelers.sfm step 0, labelers.neural_depth.own_scale,
pipelines.labeling._cameras).

Real footage: OpenCV's sample videos (Debian opencv-doc), decoded with cv2.VideoCapture at
120x180; the tests skip, naming the file, when it is absent.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from depth_anything_writer import save_depth_anything
from labelers.camera import relative_rotation_errors_deg, rotation_angle_deg
from labelers.neural_depth import NeuralDepth, has_parallax
from labelers.sfm import SfmCamera, SfmConfig, fixed_camera_evidence
from labelers.sfm.fixed import photometric_still_regions
from pipelines.clips import ClipRejected, ClipSpec
from pipelines.labeling import LabelConfig, build_backends, label_clip
from pipelines.regression_footage import REGRESSION_CLIPS, capture_frames, locate
from pipelines.synthetic import SceneConfig, render_clip
from pipelines.video_io import write_video

SIZE = (120, 180)


@pytest.fixture(scope="module")
def static_clip():
    cfg = SceneConfig(seed=0, height=SIZE[0], width=SIZE[1], num_frames=9, stride=4, camera="static", large_mover=True)
    return render_clip(cfg)


@pytest.fixture(scope="module")
def depth_dir(tmp_path_factory) -> Path:
    return save_depth_anything(tmp_path_factory.mktemp("depth_anything_tiny"))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_fixed_camera_behind_a_large_mover_is_static(static_clip):
    moving = static_clip.labels["dynamic_mask"].mean()
    assert moving > 0.2  # the mover covers a fifth of the frame or more
    result = SfmCamera().estimate(static_clip.frames, None)
    assert result.motion == "static" and result.diagnostics["fixed_camera"]
    np.testing.assert_array_equal(result.c2w, np.tile(np.eye(4), (9, 1, 1)))
    assert result.intrinsics_source == "prior"
    # the still share is reported, and the mover keeps it below what an empty scene gives
    assert 0.3 < result.diagnostics["static_fraction_min"] < 0.9


def test_a_dolly_under_a_far_sky_shows_no_still_background():
    """Under a textured sky 80 m away, far points hardly move: the bottom border must."""
    cfg = SceneConfig(seed=1, height=SIZE[0], width=SIZE[1], num_frames=9, stride=4, camera="dolly", scene="open")
    evidence = fixed_camera_evidence(render_clip(cfg).frames, SfmConfig())
    assert not evidence.fixed
    assert evidence.pair_fixed.mean() < 0.5, evidence.diagnostics()


@pytest.mark.parametrize("seed", [0, 1])
def test_fixed_camera_in_front_of_a_textureless_wall_is_static(seed):
    """Faint wall texture (1/10 amplitude), a large mover: the probes sit on the mover, the wall
    is still photometrically (old probe-only test: pairs with still borders 0.00 and 0.35)."""
    cfg = SceneConfig(seed=seed, height=SIZE[0], width=SIZE[1], num_frames=9, stride=4, camera="static",
                      texture="low", large_mover=True)
    clip = render_clip(cfg)
    assert clip.labels["dynamic_mask"].mean() > 0.2
    evidence = fixed_camera_evidence(clip.frames, SfmConfig())
    assert evidence.fixed and evidence.pair_fixed.mean() > 0.9, evidence.diagnostics()
    result = SfmCamera().estimate(clip.frames, None)
    assert result.motion == "static"
    np.testing.assert_array_equal(result.c2w, np.tile(np.eye(4), (9, 1, 1)))


@pytest.mark.parametrize("camera, speed", [("pan", 0.1), ("dolly", 0.25), ("orbit", 0.1)])
def test_slow_moving_camera_in_front_of_a_textureless_wall_is_not_fixed(camera, speed):
    """The same wall, the camera moving by 0.05 deg (pan) per frame or less: over the clip the
    wall moves by more than static_motion_px, which the photometric test must see."""
    cfg = SceneConfig(seed=0, height=SIZE[0], width=SIZE[1], num_frames=9, stride=4, camera=camera,
                      camera_speed=speed, texture="low", large_mover=True)
    evidence = fixed_camera_evidence(render_clip(cfg).frames, SfmConfig())
    assert not evidence.fixed, evidence.diagnostics()


def test_photometric_stillness_bounds_the_displacement():
    """A faint texture shifted by known sub-pixel amounts: never still at static_motion_px or more."""
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.normal(0, 1, (160, 220)).astype(np.float32), (0, 0), 1.5)
    texture = 128 + 4.0 * texture / texture.std()  # RMS 4 grey levels
    cfg = SfmConfig()

    def shifted(dx: float) -> np.ndarray:
        return cv2.warpAffine(texture, np.float32([[1, 0, dx], [0, 1, 0]]), (220, 160))[20:140, 20:200]

    still = [photometric_still_regions(np.round(shifted(0.0)), np.round(shifted(dx)), 12**-0.5, cfg).all()
             for dx in (0.0, 0.2, 0.5, 0.7, 1.5)]
    # conservative: 8-bit rounding adds to the change energy (measured: still up to 0.3 px)
    assert still == [True, True, False, False, False]
    flat = np.full((120, 180), 128.0, np.float32)
    assert not photometric_still_regions(flat, flat, 12**-0.5, cfg).any()  # a blank wall says nothing


def _opencv_frames(path: Path, start: int, num_frames: int = 17) -> np.ndarray:
    frames = capture_frames(path, start, num_frames, SIZE)
    assert len(frames) == num_frames, f"{path} ended after {len(frames)} frames"
    return frames


def _footage(name: str, tmp_path: Path) -> Path:
    clip = next(c for c in REGRESSION_CLIPS if c.name == name)
    path = locate(clip, tmp_path)
    if path is None:
        pytest.skip(f"{clip.relative_path} not installed (package {clip.package})")
    return path


@pytest.mark.parametrize(
    "name, start",
    [
        ("vtest_pedestrians", 40),  # pedestrians crossing a car park
        ("box_hand", 60),  # a hand moves a box over the upper third
        ("box_hand", 150),  # was "intrinsics_unobservable" (focal 334 px, std 0.053)
    ],
)
def test_real_fixed_cameras_are_static(name, start, tmp_path):
    frames = _opencv_frames(_footage(name, tmp_path), start)
    result = SfmCamera().estimate(frames, None)
    assert result.motion == "static", result.diagnostics
    assert float(rotation_angle_deg(result.c2w[:, :3, :3]).max()) <= 1.0


def test_own_scale_without_parallax(depth_dir):
    relative = NeuralDepth(depth_dir)
    inv = np.array([[[0.5, 1.0], [2.0, 4.0]], [[1.0, 1.0], [0.0, 2.0]]], np.float32)
    result = relative.own_scale(inv)
    # relative network: inverse depth over its clip median (1.0 here), one scale for the clip
    np.testing.assert_allclose(result.depth[0], [[2.0, 1.0], [0.5, 0.25]])
    assert not result.depth_valid[1, 1, 0] and result.depth[1, 1, 0] == 0  # at infinity: invalid
    assert result.prior_depth is None
    metric = NeuralDepth(save_depth_anything(depth_dir.parent / "metric", depth_estimation_type="metric"))
    assert metric.metric_scale and not relative.metric_scale
    np.testing.assert_allclose(metric.own_scale(2 * inv).depth[0], [[1.0, 0.5], [0.25, 0.125]])
    c2w = np.tile(np.eye(4), (3, 1, 1))
    assert not has_parallax(c2w)
    c2w[2, 0, 3] = 1e-3
    assert has_parallax(c2w)


def test_fixed_camera_rejected_with_mvs_and_labelled_with_network_depth(static_clip, depth_dir, tmp_path):
    video = write_video(tmp_path / "static.mp4", static_clip.frames, static_clip.config.fps)
    spec = ClipSpec("static_large_mover", str(video), 0.0, 60.0, fps_target=None)
    common = dict(height=SIZE[0], width=SIZE[1], num_frames=9, stride=4)
    mvs = LabelConfig(**common)
    with pytest.raises(ClipRejected) as info:
        label_clip(spec, mvs, build_backends(mvs))
    assert info.value.reason == "camera_static"
    assert "--depth neural --depth-weights" in info.value.message and "import" in info.value.message

    neural = LabelConfig(**common, depth="neural", depth_weights=str(depth_dir))
    backends = build_backends(neural)
    backends.depth = _exact_relative_network(depth_dir, static_clip)
    arrays, attrs, reasons = label_clip(spec, neural, backends)
    assert reasons == []
    np.testing.assert_array_equal(arrays["c2w"], np.tile(np.eye(4, dtype=np.float32), (9, 1, 1)))
    assert attrs["metric_scale"] is False
    # masks come from the flow against a still background (measured 0.89-0.94)
    truth = static_clip.labels["dynamic_mask"]
    assert min(_iou(arrays["dynamic_mask"][k], truth[k]) for k in range(len(truth))) > 0.75
    valid = arrays["depth_valid"]
    ratio = arrays["depth"][valid] / static_clip.labels["depth"][valid]
    ratio /= np.median(ratio)
    assert valid.mean() > 0.9 and np.mean(np.maximum(ratio, 1 / ratio) < 1.25) > 0.95
    assert arrays["scene_flow_valid"][truth[:-1]].mean() > 0.3  # measured 0.71
    assert not arrays["scene_flow"][~truth[:-1]].any()


def _exact_relative_network(folder: Path, clip) -> NeuralDepth:
    """The tiny checkpoint's wiring, predicting a multiple of the clip's true inverse depth."""

    class ExactRelativeNetwork(NeuralDepth):
        def predict_inverse_depth(self, frames):
            return (3.0 / clip.labels["depth"]).astype(np.float32)

    return ExactRelativeNetwork(folder)


def test_rotating_camera_labelled_with_network_depth(depth_dir, tmp_path):
    cfg = SceneConfig(seed=1, height=SIZE[0], width=SIZE[1], num_frames=9, stride=4, camera="pan", large_mover=True)
    clip = render_clip(cfg)
    video = write_video(tmp_path / "pan.mp4", clip.frames, cfg.fps)
    spec = ClipSpec("pan_large_mover", str(video), 0.0, 60.0, fps_target=None)
    neural = LabelConfig(
        height=SIZE[0], width=SIZE[1], num_frames=9, stride=4, depth="neural", depth_weights=str(depth_dir)
    )
    backends = build_backends(neural)
    backends.depth = _exact_relative_network(depth_dir, clip)
    arrays, _, reasons = label_clip(spec, neural, backends)
    assert reasons == []
    c2w = arrays["c2w"].astype(np.float64)
    np.testing.assert_array_equal(c2w[:, :3, 3], 0.0)
    assert relative_rotation_errors_deg(c2w, clip.labels["c2w"]).mean() < 0.1  # measured 0.01
    truth = clip.labels["dynamic_mask"]
    assert min(_iou(arrays["dynamic_mask"][k], truth[k]) for k in range(len(truth))) > 0.75  # measured 0.90
