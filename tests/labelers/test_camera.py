"""Camera labeler: protocol, evaluation functions and the weight-free SfM backend on synthetic clips.

Targets on synthetic ground truth (the issue's): mean relative rotation error between
consecutive frames < 0.1 deg and Sim(3)-aligned camera-centre RMSE < 1 % of the path length,
with and without given intrinsics; without them, an accepted clip's focal length is within
5 % and a clip whose tracks do not determine it is rejected (`intrinsics_unobservable`).
"""

from __future__ import annotations

import functools
import json
import pickle
from dataclasses import replace

import numpy as np
import pytest

from labelers.camera import (
    CameraEstimator,
    CameraFailure,
    CameraResult,
    ate_sim3,
    check_camera_inputs,
    relative_rotation_errors_deg,
    relative_translation_angles_deg,
    trajectory_errors,
    umeyama_sim3,
)
from labelers.sfm import FocalUncertainty, SfmCamera, SfmConfig
from pipelines.labeling import LabelConfig, build_backends, pair_flows
from pipelines.regression_footage import absurd_numbers
from pipelines.synthetic import SceneConfig, render_clip

RRE_TARGET_DEG = 0.1
ATE_TARGET_PERCENT = 1.0
FOCAL_BOUND = 0.05  # accepted without intrinsics => focal within 5 %


def _key_flows(frames: np.ndarray):
    """The pipeline's key-pair flows (stride 4) of (T, 120, 180, 3) frames."""
    cfg = LabelConfig(height=120, width=180, num_frames=len(frames))
    return pair_flows(frames, cfg, build_backends(cfg))[1]


@functools.lru_cache(maxsize=None)
def _clip(camera: str, seed: int = 0, num_frames: int = 17):
    cfg = SceneConfig(seed=seed, height=120, width=180, num_frames=num_frames, stride=4, camera=camera, num_moving=1)
    return render_clip(cfg)


@pytest.fixture(scope="module")
def estimator() -> SfmCamera:
    return SfmCamera()


@pytest.fixture(scope="module")
def dolly():
    return _clip("dolly", 0, 17)


@pytest.fixture(scope="module")
def orbit():
    return _clip("orbit", 0, 17)


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    K = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def _trajectory(num_frames: int = 10) -> np.ndarray:
    c2w = np.tile(np.eye(4), (num_frames, 1, 1))
    for t in range(num_frames):
        c2w[t, :3, :3] = _rotation([0.2, 1.0, 0.1], 0.05 * t)
        c2w[t, :3, 3] = [0.1 * t, 0.02 * t**2, 0.3 * np.sin(t)]
    return c2w


def _check_frame_conventions(result: CameraResult, num_frames: int) -> None:
    assert result.c2w.shape == (num_frames, 4, 4) and result.c2w.dtype == np.float64
    assert result.K.shape == (num_frames, 3, 3)
    np.testing.assert_array_equal(result.c2w[0], np.eye(4))
    R = result.c2w[:, :3, :3]
    np.testing.assert_allclose(R @ np.swapaxes(R, 1, 2), np.tile(np.eye(3), (num_frames, 1, 1)), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-9)
    np.testing.assert_array_equal(result.c2w[:, 3], np.tile([0.0, 0.0, 0.0, 1.0], (num_frames, 1)))
    assert result.metric_scale is False
    json.dumps(result.diagnostics)
    json.dumps(result.reproj_px)


# --------------------------------------------------------------------------- evaluation
def test_umeyama_recovers_a_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(20, 3))
    R = _rotation([1.0, -2.0, 0.5], 0.7)
    dst = 2.5 * src @ R.T + np.array([1.0, -3.0, 0.2])
    s, R_est, t_est = umeyama_sim3(src, dst)
    assert s == pytest.approx(2.5)
    np.testing.assert_allclose(R_est, R, atol=1e-12)
    np.testing.assert_allclose(t_est, [1.0, -3.0, 0.2], atol=1e-12)


def test_ate_is_zero_for_a_similar_trajectory_and_measures_noise():
    gt = _trajectory()
    est = gt.copy()
    est[:, :3, 3] = 0.1 * gt[:, :3, 3] @ _rotation([0, 0, 1], 1.0).T + 5.0  # another world frame and scale
    ate = ate_sim3(est, gt)
    assert ate["rmse"] < 1e-12 and ate["scale"] == pytest.approx(10.0)
    path = np.linalg.norm(np.diff(gt[:, :3, 3], axis=0), axis=1).sum()
    assert ate["path_length"] == pytest.approx(path)
    noisy = gt.copy()
    noisy[::2, 0, 3] += 0.01  # alternate centres shifted by 1 cm: the alignment cannot absorb it
    assert 0.3 < ate_sim3(noisy, gt)["rmse"] / 0.005 <= 1.0
    with pytest.raises(ValueError, match="do not move"):
        ate_sim3(gt, np.tile(np.eye(4), (10, 1, 1)))


def test_relative_rotation_error_sees_a_rotation_between_frames_not_a_global_one():
    gt = _trajectory()
    rotated = gt.copy()
    rotated[:, :3, :3] = _rotation([1, 1, 0], 0.3) @ gt[:, :3, :3]  # same relative poses
    np.testing.assert_allclose(relative_rotation_errors_deg(rotated, gt), 0.0, atol=1e-6)
    perturbed = gt.copy()
    perturbed[5, :3, :3] = gt[5, :3, :3] @ _rotation([0, 1, 0], np.radians(0.5))
    errors = relative_rotation_errors_deg(perturbed, gt)
    np.testing.assert_allclose(errors[[4, 5]], 0.5, atol=1e-6)  # pairs (4, 5) and (5, 6)
    np.testing.assert_allclose(np.delete(errors, [4, 5]), 0.0, atol=1e-6)
    stats = trajectory_errors(perturbed, gt)
    assert stats["rre_max_deg"] == pytest.approx(0.5) and stats["ate_rmse"] < 1e-12


def test_translation_angle_sees_cameras_turned_against_their_own_path():
    gt = _trajectory()
    similar = gt.copy()
    turn = _rotation([0.3, 1.0, -0.2], 0.5)
    similar[:, :3, :3] = turn @ gt[:, :3, :3]
    similar[:, :3, 3] = 3.0 * gt[:, :3, 3] @ turn.T + 1.0  # another world frame and scale: no error
    np.testing.assert_allclose(relative_translation_angles_deg(similar, gt), 0.0, atol=1e-6)
    # every camera turned by 2 deg about its own vertical axis, centres kept: RRE and ATE see nothing
    # (the path's own turns are about that axis too, so the relative rotations stay the same, and the
    # path is level, so every direction of travel lies across the axis and turns by the full 2 deg)
    for t in range(len(gt)):
        gt[t, :3, :3] = _rotation([0, 1, 0], 0.05 * t)
    gt[:, 1, 3] = 0.0
    turned = gt.copy()
    turned[:, :3, :3] = gt[:, :3, :3] @ _rotation([0, 1, 0], np.radians(2.0))
    angles = relative_translation_angles_deg(turned, gt)
    stats = trajectory_errors(turned, gt)
    assert stats["rre_max_deg"] < 1e-6 and stats["ate_rmse"] < 1e-12
    np.testing.assert_allclose(angles, 2.0, atol=1e-9)
    assert len(angles) > 20  # the pairs with at least a quarter of the longest baseline
    assert stats["rta_max_deg"] == pytest.approx(angles.max())
    assert relative_translation_angles_deg(np.tile(np.eye(4), (5, 1, 1)), np.tile(np.eye(4), (5, 1, 1))).size == 0


def test_camera_failure_carries_its_reason_across_processes():
    failure = pickle.loads(pickle.dumps(CameraFailure("too_little_texture", "3 corners")))
    assert failure.reason == "too_little_texture" and failure.message == "3 corners"
    with pytest.raises(ValueError, match="reason must be one of"):
        CameraFailure("bad reason", "")


def test_inputs_are_checked():
    frames = np.zeros((3, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        check_camera_inputs(frames.astype(np.float32), None)
    with pytest.raises(ValueError, match="at least 2 frames"):
        check_camera_inputs(frames[:1], None)
    with pytest.raises(ValueError, match=r"\(T, 3, 3\)"):
        check_camera_inputs(frames, np.eye(3)[None].repeat(2, 0))
    with pytest.raises(ValueError, match="positive focal"):
        check_camera_inputs(frames, np.diag([-1.0, 1.0, 1.0]))
    assert check_camera_inputs(frames, np.eye(3)).shape == (3, 3, 3)
    with pytest.raises(ValueError, match="prior_fov_x_deg"):
        SfmConfig(prior_fov_x_deg=200)


# --------------------------------------------------------------------------- SfM backend
def test_sfm_is_a_camera_estimator_with_serialisable_params(estimator):
    assert isinstance(estimator, CameraEstimator)
    assert json.loads(json.dumps(estimator.params))["prior_fov_x_deg"] == SfmConfig().prior_fov_x_deg


def _check_targets(result: CameraResult, clip) -> None:
    """Moving camera: every frame registered, the RRE and ATE targets, the scale convention."""
    _check_frame_conventions(result, len(clip.frames))
    assert result.motion == "general" and result.registered.all()
    errors = trajectory_errors(result.c2w, clip.labels["c2w"])
    assert errors["rre_mean_deg"] < RRE_TARGET_DEG, errors
    assert errors["ate_percent_of_path"] < ATE_TARGET_PERCENT, errors
    assert result.reproj_px["median"] < 0.2
    # Scale convention: the median z-depth of the points seen in frame 0 is 1, so the
    # ground-truth unit per estimate unit is close to the scene's median depth in frame 0.
    scale = ate_sim3(result.c2w, clip.labels["c2w"])["scale"]
    assert 0.75 < scale / np.median(clip.labels["depth"][0]) < 1.33


@pytest.mark.parametrize("camera", ["dolly", "orbit"])
def test_sfm_meets_the_targets_with_given_intrinsics(camera, estimator, request):
    clip = request.getfixturevalue(camera)
    result = estimator.estimate(clip.frames, clip.labels["K"])
    _check_targets(result, clip)
    assert result.intrinsics_source == "given"
    np.testing.assert_allclose(result.K, np.broadcast_to(clip.labels["K"], result.K.shape), rtol=1e-6)


@pytest.mark.parametrize(
    "camera, seed, num_frames, accepted",
    [
        ("dolly", 0, 17, False),  # 2 deg of rotation: the focal trades against depth and translation
        ("dolly", 6, 17, False),  # the same; accepted 21 % off when the std assumed independent errors
        ("orbit", 6, 17, False),  # 13 deg of rotation, but a moving object pulls the focal (jackknife); without
        # dense flows no uncertain estimate is kept (test_an_uncertain_focal_is_kept_...)
        ("orbit", 0, 25, True),  # 19 deg of rotation
    ],
)
def test_an_estimated_focal_is_accepted_only_within_the_bound(camera, seed, num_frames, accepted, estimator):
    clip = _clip(camera, seed, num_frames)
    if not accepted:
        with pytest.raises(CameraFailure, match="do not determine the focal length") as info:
            estimator.estimate(clip.frames, None)
        assert info.value.reason == "intrinsics_unobservable"
        return
    result = estimator.estimate(clip.frames, None)
    _check_targets(result, clip)
    assert result.intrinsics_source == "estimated"
    np.testing.assert_allclose(result.K[:, :2, 2], np.tile([89.5, 59.5], (num_frames, 1)))
    focal_error = abs(result.K[0, 0, 0] / clip.labels["K"][0, 0, 0] - 1)
    assert focal_error <= FOCAL_BOUND
    assert result.diagnostics["focal_rel_std"] <= SfmConfig().max_focal_rel_std
    assert result.diagnostics["focal_jackknife_rel_std"] > 0  # computed for every accepted focal
    assert focal_error <= 2.5 * result.diagnostics["focal_rel_std"]  # the reported std is honest


@pytest.mark.parametrize("seed, focal_error_bound", [(1, 0.03), (3, 0.02), (6, 0.05)])
def test_an_uncertain_focal_is_kept_only_where_it_cannot_bend_the_rotations(seed, focal_error_bound):
    """Orbits of 17 frames (0.8 deg per frame) with a moving object: their focal std (region
    jackknife included) is 0.026 / 0.034 / 0.026, over the 0.02 gate, at errors of -1.9 / +0.8 /
    +4.4 %. Given the dense key-pair flows, the cameras explain the background's flow (epipolar
    ratio 0.37-0.67) and three
    stds of focal error leave at most 0.1 deg of rotation error, so the estimate is kept with the
    RRE and ATE targets met. A tighter rotation budget, no tier, or no flows reject it as before."""
    clip = _clip("orbit", seed, 17)
    flows = _key_flows(clip.frames)
    result = SfmCamera().estimate(clip.frames, None, flows)
    _check_targets(result, clip)
    diagnostics, cfg = result.diagnostics, SfmConfig()
    assert result.intrinsics_source == "estimated" and len(result.focal_alternatives) == 2
    assert cfg.max_focal_rel_std < diagnostics["focal_rel_std"] <= cfg.uncertain_focal_max_rel_std
    assert diagnostics["focal_uncertain_rotation_error_deg"] <= cfg.uncertain_focal_max_rotation_error_deg
    assert diagnostics["focal_uncertain_epipolar_ratio"] < 1.0  # measured 0.34-0.68
    assert abs(result.K[0, 0, 0] / clip.labels["K"][0, 0, 0] - 1) <= focal_error_bound
    for tighter in (dict(uncertain_focal_max_rel_std=0.0), dict(uncertain_focal_max_rotation_error_deg=0.01)):
        with pytest.raises(CameraFailure, match="do not determine the focal length"):
            SfmCamera(SfmConfig(**tighter)).estimate(clip.frames, None, flows)
    with pytest.raises(CameraFailure, match="do not determine the focal length"):
        SfmCamera().estimate(clip.frames, None)


def test_an_uncertain_focal_is_held_to_the_region_jackknife(tmp_path, monkeypatch):
    """A 55 deg orbit whose mover pulls the focal, decoded from its MP4 as the camera sweep reads
    it: the cost profile's std alone (0.025) kept a focal 24 % off with 0.21 deg of RRE; the
    region jackknife's spread (0.125) rejects it."""
    from labelers.sfm import general
    from pipelines.video_io import decode_sequential, write_video

    scene = SceneConfig(seed=6, height=120, width=180, num_frames=49, stride=4, camera="orbit", num_moving=1,
                        fov_x_deg=55.0)
    clip = render_clip(scene)
    video = write_video(tmp_path / "clip.mp4", clip.frames, scene.fps)
    frames = decode_sequential(video, np.arange(scene.num_frames))[:17]
    flows = _key_flows(frames)
    with pytest.raises(CameraFailure, match=r"not kept as an uncertain estimate: std 0\.1\d\d > 0.04"):
        SfmCamera().estimate(frames, None, flows)
    monkeypatch.setattr(general, "_bundle_focal_jackknife", lambda model, cfg: float("nan"))
    fooled = SfmCamera().estimate(frames, None, flows)  # the tier without the jackknife
    assert abs(fooled.K[0, 0, 0] / clip.labels["K"][0, 0, 0] - 1) > 0.2
    assert fooled.diagnostics["focal_rel_std"] < 0.03


def test_an_uncertain_focal_needs_a_background_to_check_the_cameras_on():
    clip = _clip("orbit", 7, 17)
    flows = _key_flows(clip.frames)
    blind = replace(flows, valid_fwd=np.zeros_like(flows.valid_fwd), valid_bwd=np.zeros_like(flows.valid_bwd))
    with pytest.raises(CameraFailure, match="no key pair's dense flow has a background") as info:
        SfmCamera().estimate(clip.frames, None, blind)
    assert not absurd_numbers(info.value.message)


def test_uncertain_focal_settings_are_checked():
    for bad in (dict(uncertain_focal_max_rel_std=-0.1), dict(uncertain_focal_sigmas=0.0),
                dict(uncertain_focal_max_epipolar_ratio=0.5)):
        with pytest.raises(ValueError, match="uncertain_focal"):
            SfmConfig(**bad)


def test_focal_uncertainty_counts_spread_and_systematic_error():
    step = np.log(1.05)
    independent = FocalUncertainty(signal_px=0.01, random_px=0.0005, bias_px=0.001)
    assert independent.rel_std == pytest.approx(step * np.hypot(0.0005, 0.001) / 0.01)
    # the jackknife replaces the independent-error spread when larger, never when smaller
    assert replace(independent, jackknife_rel_std=0.03).rel_std == pytest.approx(np.hypot(0.03, step * 0.1))
    assert replace(independent, jackknife_rel_std=1e-4).rel_std == pytest.approx(independent.rel_std)
    # half the signal, twice the uncertainty; no signal, no focal
    assert replace(independent, signal_px=0.005).rel_std == pytest.approx(2 * independent.rel_std)
    assert replace(independent, signal_px=0.0).rel_std == np.inf


def test_focal_problem_never_reports_an_infinite_spread():
    """cup_hand's rejection read 'a relative standard deviation of at least inf'."""
    from labelers.sfm.focal import focal_problem

    no_signal = FocalUncertainty(signal_px=0.0, random_px=0.01, bias_px=0.001)
    message = focal_problem(625.8, 32.0, no_signal, SfmConfig())
    assert "have no measurable effect on the tracks" in message and not absurd_numbers(message), message
    weak = focal_problem(625.8, 32.0, replace(no_signal, signal_px=0.01), SfmConfig())
    assert "relative standard deviation of at least" in weak and not absurd_numbers(weak), weak


def test_focal_is_rejected_when_the_motion_does_not_determine_it(estimator, dolly):
    # Five frames of a dolly: translation with 0.6 deg of rotation. The focal length trades
    # against depth, so without intrinsics the clip is rejected; with them it is labelled.
    frames = dolly.frames[:5]
    with pytest.raises(CameraFailure, match="focal length") as info:
        estimator.estimate(frames, None)
    assert info.value.reason == "intrinsics_unobservable"
    result = estimator.estimate(frames, dolly.labels["K"][0])
    assert result.motion == "general"
    assert trajectory_errors(result.c2w, dolly.labels["c2w"][:5])["rre_mean_deg"] < RRE_TARGET_DEG


def test_sfm_is_deterministic(estimator, orbit):
    first = estimator.estimate(orbit.frames[:9], orbit.labels["K"][0])
    second = estimator.estimate(orbit.frames[:9], orbit.labels["K"][0])
    np.testing.assert_array_equal(first.c2w, second.c2w)


def test_static_camera_is_reported_as_static(estimator):
    clip = _clip("static")
    result = estimator.estimate(clip.frames, None)
    _check_frame_conventions(result, len(clip.frames))
    assert result.motion == "static" and result.diagnostics["nearly_static"]
    np.testing.assert_array_equal(result.c2w, np.tile(np.eye(4), (len(clip.frames), 1, 1)))
    assert result.intrinsics_source == "prior" and "static" in result.scale_note
    assert result.reproj_px["median"] < 0.1


def test_pure_rotation_gives_rotations_and_no_translation(estimator):
    clip = _clip("pan")
    result = estimator.estimate(clip.frames, None)
    _check_frame_conventions(result, len(clip.frames))
    assert result.motion == "rotation" and result.diagnostics["pure_rotation"]
    np.testing.assert_array_equal(result.c2w[:, :3, 3], 0.0)
    assert relative_rotation_errors_deg(result.c2w, clip.labels["c2w"]).mean() < RRE_TARGET_DEG
    assert result.K[0, 0, 0] == pytest.approx(clip.labels["K"][0, 0, 0], rel=0.02)


def test_untextured_clip_is_rejected_with_its_reason(estimator):
    frames = np.full((9, 120, 180, 3), 128, np.uint8)
    with pytest.raises(CameraFailure, match="trackable corners") as info:
        estimator.estimate(frames, None)
    assert info.value.reason == "too_little_texture"
    noise = np.random.default_rng(0).normal(128, 2, frames.shape).clip(0, 255).astype(np.uint8)
    with pytest.raises(CameraFailure) as info:  # sensor noise on a blank wall is not texture
        estimator.estimate(noise, None)
    assert info.value.reason == "too_little_texture"


def test_lost_tracks_reject_the_clip(estimator, orbit):
    frames = orbit.frames[:9].copy()
    frames[5:] = np.random.default_rng(1).integers(0, 256, frames[5:].shape, dtype=np.uint8)  # a cut to noise
    with pytest.raises(CameraFailure) as info:
        estimator.estimate(frames, orbit.labels["K"][0])
    assert info.value.reason == "too_few_tracks"


def test_a_mover_along_its_epipolar_lines_does_not_turn_the_cameras(estimator):
    """A sphere approaching a camera that dollies forward in front of a flat wall: its tracks stay
    within the inlier threshold (it looks like a static point 20 % nearer). With the least-squares
    loss (Cauchy scale 1 px) its 11 % of the tracks turned the cameras 3.9 deg against their path at
    RRE 0.03 deg and ATE 0.12 %; the loss scale from the tracks' accuracy keeps them at 0.08 deg."""
    from pipelines.synthetic_set import class_configs  # the held-out room clip the defect was found on

    cfg = replace(class_configs("room", 1, 240, 360, 16, 17, 8.0)[0], fov_x_deg=55.0)
    assert cfg.camera == "dolly" and cfg.num_moving == 1
    clip = render_clip(cfg)
    result = estimator.estimate(clip.frames, clip.labels["K"])
    errors = trajectory_errors(result.c2w, clip.labels["c2w"])
    assert errors["rta_max_deg"] < 0.5, errors  # measured 0.079 (3.9 before)
    assert errors["rre_mean_deg"] < 0.01 and errors["ate_percent_of_path"] < 0.1, errors
    with pytest.raises(ValueError, match="loss_scale_factor"):
        SfmConfig(loss_scale_factor=0)


def test_far_points_fix_the_rotation_of_an_orbit_under_an_open_sky():
    """Held-out open orbit 51 with its intrinsics: the sky, 80 m away, is seen under less than half
    a degree of parallax. Dropping such points (the default min_tri_angle_deg 0.5) lets the
    rotation drift 0.03 deg per frame, 0.5 deg over the clip, still within the 0.1 deg RRE target;
    kept (0.1), they hold it (RRE 0.0277 -> 0.0037 deg, RTA 1.33 -> 0.46 deg). The default stays
    0.5: `test_points_near_the_focus_of_expansion_do_not_turn_a_repeated_texture_dolly`."""
    from pipelines.synthetic_set import class_configs

    cfg = replace(class_configs("open_sky", 3, 240, 360, 50, 17, 8.0)[1], fov_x_deg=70.0)
    assert cfg.camera == "orbit"
    clip = render_clip(cfg)
    result = SfmCamera(SfmConfig(min_tri_angle_deg=0.1)).estimate(clip.frames, clip.labels["K"])
    errors = trajectory_errors(result.c2w, clip.labels["c2w"])
    assert errors["rre_mean_deg"] < 0.01 and errors["rta_max_deg"] < 0.8, errors
    with pytest.raises(ValueError, match="robust_function_tolerance in \\(0, 1\\), got 3.0, 0.03, 0.0"):
        SfmConfig(robust_function_tolerance=0.0)
    with pytest.raises(ValueError, match="prior_depth_min_tri_angle_deg >= 0, got 0.5, -1"):
        SfmConfig(prior_depth_min_tri_angle_deg=-1)


def test_points_near_the_focus_of_expansion_do_not_turn_a_repeated_texture_dolly(estimator, tmp_path):
    """Held-out repeated-texture room dolly 40 with its intrinsics, decoded from its MP4 as the
    pipeline reads it. Points seen under less than 0.5 deg of parallax are kept at
    min_tri_angle_deg 0.1: near the focus of expansion they include mismatches on the repeated
    texture that no parallax exposes, and the cameras went 31.8 deg off their path (0.23 deg at
    the default 0.5; on the rendered frames, without the codec, 0.13 and 0.07)."""
    from pipelines.decode import DecodeConfig, decode_clip
    from pipelines.manifests import read_manifest
    from pipelines.synthetic_set import class_configs, write_synthetic_set

    cfg = replace(class_configs("repeated", 3, 240, 360, 40, 17, 8.0)[0], fov_x_deg=50.0)
    assert cfg.camera == "dolly"
    truth = {}
    write_synthetic_set(tmp_path, [cfg], with_intrinsics=True, on_render=lambda row, clip: truth.update(clip=clip))
    spec = read_manifest(tmp_path / "manifest.csv", fps_target=None).specs[0]
    frames = decode_clip(spec, DecodeConfig(17, 240, 360, 1)).frames
    labels = truth["clip"].labels
    result = estimator.estimate(frames, labels["K"])
    errors = trajectory_errors(result.c2w, labels["c2w"])
    assert errors["rta_max_deg"] < 1.0, errors  # measured 0.23 (31.8 at min_tri_angle_deg 0.1)
