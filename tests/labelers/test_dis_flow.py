"""OpenCV DIS backend: exact sub-pixel shifts, accuracy against plain DIS-medium on the
synthetic scenes, uncertainty and validity against ground-truth occlusion."""

import json

import cv2
import numpy as np
import pytest

from labelers.dis_flow import DisFlow, DisFlowConfig, coarse_texture_mask, exposure_gain
from labelers.flow import FlowEstimator, compute_pair_flows, consecutive_pairs, key_frame_pairs


def texture(height: int, width: int, shift: tuple[float, float], seed: int = 0) -> np.ndarray:
    """Band-limited RGB texture sampled at (u - dx, v - dy): its flow is exactly `shift`."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = u - shift[0], v - shift[1]
    image = np.full((height, width, 3), 128.0)
    for _ in range(12):
        wavelength = rng.uniform(6.0, 40.0)
        angle = rng.uniform(0, np.pi)
        phase = rng.uniform(0, 2 * np.pi)
        wave = np.sin(2 * np.pi * (u * np.cos(angle) + v * np.sin(angle)) / wavelength + phase)
        image += wave[..., None] * rng.uniform(-18, 18, 3)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def test_recovers_a_subpixel_translation_in_both_directions():
    shift = (2.6, -1.3)
    src, dst = texture(96, 128, (0.0, 0.0))[None], texture(96, 128, shift)[None]
    fwd, bwd = DisFlow().estimate_bidirectional(src, dst)
    interior = (slice(8, -8), slice(8, -8))
    error_fwd = np.linalg.norm(fwd.flow_px[0][interior] - shift, axis=-1)
    error_bwd = np.linalg.norm(bwd.flow_px[0][interior] + shift, axis=-1)
    assert error_fwd.mean() < 0.05 and error_bwd.mean() < 0.05
    assert fwd.flow_px.dtype == np.float32 and fwd.uncertainty_px.shape == (1, 96, 128)
    assert np.isfinite(fwd.uncertainty_px).all() and (fwd.uncertainty_px >= 0).all()
    assert np.median(fwd.uncertainty_px[0][interior]) < 0.1
    # dx > 0 moves the right edge out of the image: those targets carry at least their overshoot.
    assert fwd.uncertainty_px[0][:, -1].min() > 1.0


def test_plain_medium_settings_reproduce_opencv_preset():
    src, dst = texture(64, 80, (0, 0), seed=1), texture(64, 80, (1.5, 0.5), seed=1)
    ours = DisFlow(DisFlowConfig.plain_medium()).estimate(src[None], dst[None]).flow_px[0]
    preset = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    expected = preset.calc(cv2.cvtColor(src, cv2.COLOR_RGB2GRAY), cv2.cvtColor(dst, cv2.COLOR_RGB2GRAY), None)
    np.testing.assert_array_equal(ours, expected)


def test_protocol_params_and_config_checks():
    flow = DisFlow()
    assert isinstance(flow, FlowEstimator)
    params = json.loads(json.dumps(flow.params))
    assert params["finest_scale"] == 0 and params["opencv"] == cv2.__version__
    with pytest.raises(ValueError, match="patch_stride"):
        DisFlowConfig(patch_size=8, patch_stride=9)
    with pytest.raises(ValueError, match="uncertainty_scale"):
        DisFlowConfig(uncertainty_scale=0.0)
    with pytest.raises(ValueError, match="same shape|differ in shape"):
        flow.estimate(np.zeros((1, 32, 32, 3), np.uint8), np.zeros((1, 32, 40, 3), np.uint8))


# ----------------------------------------------------------------------------- synthetic scenes
CAMERAS = ("dolly", "orbit", "pan", "static")
# A harder class, in the accuracy comparison on our own valid pixels only: an open yard under
# a far sky, with repeated texture, sensor noise and exposure drift.
HARD_SCENE = dict(scene="open", texture="repeated", camera="orbit", noise_std=3.0, exposure_drift=0.2)


@pytest.fixture(scope="module")
def clips():
    synthetic = pytest.importorskip("pipelines.synthetic")
    scenes = [dict(camera=camera) for camera in CAMERAS] + [HARD_SCENE]
    return [
        synthetic.render_clip(
            synthetic.SceneConfig(seed=seed, height=120, width=180, num_frames=9, stride=4, num_moving=2, **scene)
        )
        for seed, scene in enumerate(scenes)
    ]


def plain_dis_medium(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(cv2.cvtColor(src, cv2.COLOR_RGB2GRAY), cv2.cvtColor(dst, cv2.COLOR_RGB2GRAY), None)


@pytest.fixture(scope="module")
def evaluation(clips):
    """EPE on GT-valid pixels of our backend and plain DIS-medium, plus per-pixel records."""
    ours = DisFlow()
    out = {"ours": {"flow": [], "key_flow": []}, "plain": {"flow": [], "key_flow": []}, "pixels": [], "same_pixels": []}
    for index, clip in enumerate(clips):
        baseline = index < len(CAMERAS)  # the regression bounds below are for these clips
        frames, labels = clip.frames, clip.labels
        for label, pairs in (("flow", consecutive_pairs(9)), ("key_flow", key_frame_pairs(9, 4))):
            result = compute_pair_flows(ours, frames, pairs)
            gt, gt_valid = labels[label], labels[f"{label}_valid"]
            for p, (i, j) in enumerate(pairs):
                error = np.linalg.norm(result.flow_fwd_px[p] - gt[p], axis=-1)
                error_plain = np.linalg.norm(plain_dis_medium(frames[i], frames[j]) - gt[p], axis=-1)
                if baseline:
                    out["ours"][label].append(error[gt_valid[p]].mean())
                    out["plain"][label].append(error_plain[gt_valid[p]].mean())
                    out["pixels"].append((error, result.uncertainty_fwd_px[p], result.valid_fwd[p], gt_valid[p]))
                same = result.valid_fwd[p] & gt_valid[p]
                sums = (error[same].sum(), error_plain[same].sum(), same.sum(), gt_valid[p].sum())
                out["same_pixels"].append((index, label, *sums))
    return out


@pytest.mark.parametrize("label", ["flow", "key_flow"])
def test_at_least_as_accurate_as_plain_dis_medium(evaluation, label):
    ours, plain = np.mean(evaluation["ours"][label]), np.mean(evaluation["plain"][label])
    assert ours <= plain + 0.005, (ours, plain)
    # Regression bounds; measured 0.074 / 0.203 px (plain DIS-medium: 0.146 / 0.412 px).
    assert ours < {"flow": 0.10, "key_flow": 0.26}[label], ours


@pytest.mark.parametrize("label", ["flow", "key_flow"])
def test_more_accurate_than_plain_dis_medium_on_our_valid_pixels_in_every_clip(evaluation, label):
    """The labels' own pixels: the EPE of our valid flow against plain DIS-medium's there."""
    for clip in {record[0] for record in evaluation["same_pixels"]}:
        rows = [r for r in evaluation["same_pixels"] if r[0] == clip and r[1] == label]
        ours, plain, valid, visible = (sum(r[k] for r in rows) for k in (2, 3, 4, 5))
        # measured EPE ratios 0.45-0.83 (flow) and 0.35-0.83 (key_flow), the open yard the
        # highest; coverage 0.89-1.0 and 0.65-1.0, the open yard the lowest
        assert ours <= 0.95 * plain, (clip, ours / valid, plain / valid)
        assert valid / visible >= {"flow": 0.8, "key_flow": 0.55}[label], (clip, valid / visible)


def test_flow_valid_rejects_ground_truth_occlusions(evaluation):
    _, _, valid, gt_valid = (np.concatenate([p[k].ravel() for p in evaluation["pixels"]]) for k in range(4))
    assert (~gt_valid).mean() > 0.02  # the scenes do contain occlusions
    assert (~valid[~gt_valid]).mean() > 0.65  # measured 0.81 of GT-invalid pixels rejected
    assert (~gt_valid[valid]).mean() < 0.015  # measured 0.0070 of valid pixels are GT-invalid


def test_uncertainty_ranks_errors(evaluation):
    error, uncertainty, _, gt_valid = (np.concatenate([p[k].ravel() for p in evaluation["pixels"]]) for k in range(4))
    error, uncertainty = error[gt_valid], uncertainty[gt_valid]
    confident, doubtful = uncertainty < 0.1, uncertainty > 1.0
    assert error[doubtful].mean() > 10 * error[confident].mean()
    # Calibrated in the middle range: measured mean EPE / mean uncertainty 1.00.
    middle = (uncertainty > 0.2) & (uncertainty < 2.0)
    ratio = error[middle].mean() / uncertainty[middle].mean()
    assert 0.8 < ratio < 1.3, ratio


def noisy_pair(blur_px: float, contrast: float, shift: tuple[float, float], seed: int = 0) -> tuple[np.ndarray, ...]:
    """A (1, H, W, 3) pair of blurred-noise texture moved by `shift`, with 1 grey level of noise:
    blur 8 px is a smooth cloudy sky, blur 1 px a fine low-contrast texture."""
    rng = np.random.default_rng(seed)
    base = cv2.GaussianBlur(rng.normal(0, 1, (280, 400)).astype(np.float32), (0, 0), blur_px)
    base = 128 + contrast * base / base.std()
    moved = cv2.warpAffine(base, np.float32([[1, 0, shift[0]], [0, 1, shift[1]]]), (400, 280), flags=cv2.INTER_CUBIC)

    def frame(image: np.ndarray) -> np.ndarray:
        gray = np.clip(np.round(image[20:-20, 20:-20] + rng.normal(0, 1.0, (240, 360))), 0, 255).astype(np.uint8)
        return np.repeat(gray[None, ..., None], 3, axis=-1)

    return frame(base), frame(moved)


def test_coarse_noise_level_texture_takes_the_coarser_search():
    """A smooth sky: 8 px patches at full resolution see noise; the search one scale up sees texture."""
    shift = np.array([0.7, -0.4])
    src, dst = noisy_pair(8.0, 30.0, tuple(shift))
    without = DisFlow(DisFlowConfig(coarse_max_snr=0.0)).estimate(src, dst).flow_px[0]
    with_fallback = DisFlow().estimate(src, dst).flow_px[0]
    inner = (slice(30, -30), slice(30, -30))
    error = {name: np.linalg.norm(flow[inner] - shift, axis=-1).mean()
             for name, flow in (("without", without), ("with", with_fallback))}
    # measured: 0.101 px without, 0.079 with
    assert error["with"] < 0.85 * error["without"], error
    assert coarse_texture_mask(src[0, ..., 0], 8, 1.0, 0.4).mean() > 0.3  # measured: 0.46


def test_fine_low_contrast_texture_keeps_the_full_resolution_search():
    src, dst = noisy_pair(1.0, 20.0, (0.7, -0.4))
    assert coarse_texture_mask(src[0, ..., 0], 8, 1.0, 0.4).mean() < 0.01
    without = DisFlow(DisFlowConfig(coarse_max_snr=0.0)).estimate(src, dst).flow_px
    with_fallback = DisFlow().estimate(src, dst).flow_px
    assert np.mean(np.abs(with_fallback - without) > 1e-6) < 0.01


def smooth_texture(height: int, width: int, shift: tuple[float, float], gain: float) -> np.ndarray:
    """Low-contrast, long-wavelength texture (a pale wall) at (u - dx, v - dy), times an exposure gain."""
    rng = np.random.default_rng(7)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    u, v = u - shift[0], v - shift[1]
    image = np.full((height, width), 150.0)
    for _ in range(6):
        wavelength, angle, phase = rng.uniform(20.0, 60.0), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        image += rng.uniform(4, 10) * np.sin(2 * np.pi * (u * np.cos(angle) + v * np.sin(angle)) / wavelength + phase)
    image = image * gain + rng.normal(0, 1.0, image.shape)
    return np.repeat(np.clip(np.round(image), 0, 255).astype(np.uint8)[None, ..., None], 3, axis=-1)


@pytest.mark.parametrize("gain", [0.96, 1.05])
def test_exposure_change_is_matched_before_the_flow(gain):
    """A 4-5 % exposure change on a smooth surface biases brightness-constancy flow by more than
    its noise; the gain measured at the correspondences brings the error back to the noise's."""
    shift = np.array([1.6, -0.9])
    src = smooth_texture(120, 160, (0.0, 0.0), 1.0)
    assert exposure_gain(src[0, ..., 0], smooth_texture(120, 160, tuple(shift), gain)[0, ..., 0]) == pytest.approx(
        1 / gain, abs=0.004)
    inner = (slice(16, -16), slice(16, -16))

    def errors(dst: np.ndarray, match: bool) -> tuple[float, float]:
        fwd, bwd = DisFlow(DisFlowConfig(match_exposure=match)).estimate_bidirectional(src, dst)
        return (np.linalg.norm(fwd.flow_px[0][inner] - shift, axis=-1).mean(),
                np.linalg.norm(bwd.flow_px[0][inner] + shift, axis=-1).mean())

    noise_floor = errors(smooth_texture(120, 160, tuple(shift), 1.0), False)
    unmatched = errors(smooth_texture(120, 160, tuple(shift), gain), False)
    matched = errors(smooth_texture(120, 160, tuple(shift), gain), True)
    # measured: floor 0.13 px; unmatched 0.28 (gain 0.96) and 0.30 (1.05); matched 0.16 and 0.12
    for direction in range(2):
        assert unmatched[direction] > 2 * noise_floor[direction], (noise_floor, unmatched)
        assert matched[direction] < 1.3 * noise_floor[direction], (noise_floor, matched)


def test_an_unchanged_exposure_leaves_the_flow_as_it_was():
    src, dst = texture(96, 128, (0.0, 0.0))[None], texture(96, 128, (2.6, -1.3))[None]
    assert exposure_gain(src[0, ..., 0], dst[0, ..., 0]) == pytest.approx(1.0, abs=0.004)
    matched = DisFlow().estimate(src, dst).flow_px
    unmatched = DisFlow(DisFlowConfig(match_exposure=False)).estimate(src, dst).flow_px
    np.testing.assert_array_equal(matched, unmatched)
