"""Neural depth backend (labelers.neural_depth): wiring on a tiny random Depth Anything, alignment on ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from depth_anything_writer import save_depth_anything
from labelers.depth import DepthEstimator, DepthResult
from labelers.dynamic_mask import label_depth_and_masks
from labelers.dis_flow import DisFlow
from labelers.flow import compute_pair_flows, consecutive_pairs, key_frame_pairs
from labelers.neural_depth import NeuralDepth, NeuralDepthConfig, fit_scale_shift, load_depth_model
from pipelines.synthetic import SceneConfig, render_clip

SCALE = 0.37  # the unknown per-clip scale of the cameras


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    return save_depth_anything(tmp_path_factory.mktemp("depth_anything_tiny"))


@pytest.fixture(scope="module")
def clip():
    return render_clip(SceneConfig(seed=0, height=96, width=144, num_frames=9, stride=4, camera="orbit", num_moving=2))


@pytest.fixture(scope="module")
def dis_flows(clip):
    T = clip.frames.shape[0]
    pairs = consecutive_pairs(T) + key_frame_pairs(T, clip.config.stride)
    return compute_pair_flows(DisFlow(), clip.frames, pairs)


def oracle_backend(folder, clip):
    """The backend with a stand-in network that predicts the true inverse depth up to an affine map."""

    class OracleNetwork(NeuralDepth):
        def predict_inverse_depth(self, frames):
            return _affine_prediction(clip)

    return OracleNetwork(folder)


def scaled_c2w(clip) -> np.ndarray:
    c2w = clip.labels["c2w"].astype(np.float64).copy()
    c2w[:, :3, 3] *= SCALE
    return c2w


def test_fit_scale_shift_recovers_the_affine_map_despite_outliers():
    rng = np.random.default_rng(0)
    true_inv = 1.0 / rng.uniform(1.0, 10.0, 5000)
    scale, shift = 2.5, 0.03
    prediction = (true_inv - shift) / scale
    reference = true_inv * (1 + rng.normal(0, 0.02, true_inv.size))
    outlier = rng.random(true_inv.size) < 0.3
    reference[outlier] *= rng.uniform(0.3, 3.0, outlier.sum())
    fit = fit_scale_shift(prediction, reference)
    assert fit.scale == pytest.approx(scale, rel=0.01)
    assert fit.shift == pytest.approx(shift, abs=0.002)
    assert fit.inliers[~outlier].mean() > 0.99
    assert fit.inliers[outlier].mean() < 0.35  # only outliers that happen to fall near the line


def test_fit_scale_shift_rejects_degenerate_input():
    with pytest.raises(ValueError, match="constant"):
        fit_scale_shift(np.ones(10), np.linspace(0.1, 1, 10))
    with pytest.raises(ValueError, match="> 0"):
        fit_scale_shift(np.linspace(0, 1, 10), -np.ones(10))
    with pytest.raises(ValueError, match="size"):
        fit_scale_shift(np.ones(3), np.ones(4))


def test_missing_or_wrong_folder_gives_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_depth_model(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="not a hub id"):
        NeuralDepth("depth-anything/Depth-Anything-V2-Small-hf")
    with pytest.raises(ValueError, match="config.json"):
        load_depth_model(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "preprocessor_config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="cannot load"):
        load_depth_model(tmp_path)


def test_tiny_network_wiring_and_resize_back(tiny_model_dir):
    backend = NeuralDepth.from_pretrained(tiny_model_dir, device="cpu")
    assert isinstance(backend, DepthEstimator)
    seen = []
    backend.model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["pixel_values"].shape), with_kwargs=True
    )
    frames = np.random.default_rng(0).integers(0, 256, (3, 60, 90, 3), dtype=np.uint8)
    prediction = backend.predict_inverse_depth(frames)
    assert prediction.shape == (3, 60, 90) and prediction.dtype == np.float32
    assert np.isfinite(prediction).all() and (prediction >= 0).all()
    # The processor resized to multiples of 14 keeping the aspect ratio; the output came back to 60 x 90.
    assert all(shape[-2] % 14 == 0 and shape[-1] % 14 == 0 for shape in seen)
    assert seen[0][-2:] == (56, 84)
    assert len(backend.weights_sha256) == 64
    assert backend.params["model_type"] == "depth_anything" and backend.params["depth_estimation_type"] == "relative"


def test_metric_models_are_inverted(tmp_path):
    backend = NeuralDepth(save_depth_anything(tmp_path, depth_estimation_type="metric"))
    frames = np.random.default_rng(1).integers(0, 256, (2, 56, 84, 3), dtype=np.uint8)
    with torch.inference_mode():
        pixels = backend.processor(images=list(frames), return_tensors="pt")["pixel_values"]
        metric = backend.model(pixel_values=pixels).predicted_depth.numpy()
    np.testing.assert_allclose(backend.predict_inverse_depth(frames), 1.0 / metric, rtol=1e-4)


def _affine_prediction(clip, scale=3.0, shift=-0.05, noise=0.01, seed=0):
    """What a perfect relative network would output: an affine map of the true inverse depth, with noise."""
    rng = np.random.default_rng(seed)
    inv = 1.0 / (clip.labels["depth"] * SCALE)
    return ((inv * (1 + rng.normal(0, noise, inv.shape)) - shift) / scale).astype(np.float32)


def _sparse_reference(clip, fraction=0.3, outliers=0.05, seed=0):
    """A multi-view-like reference: true depth on a random share of static pixels, some of it wrong."""
    rng = np.random.default_rng(seed)
    static = clip.object_ids < 6 + clip.config.num_static
    valid = static & (rng.random(static.shape) < fraction)
    depth = clip.labels["depth"] * SCALE
    wrong = valid & (rng.random(static.shape) < outliers)
    depth = np.where(wrong, depth * 1.6, depth)
    rel_sigma = np.where(valid, 0.05, np.inf).astype(np.float32)
    return DepthResult(np.where(valid, depth, 0).astype(np.float32), valid, rel_sigma)


@pytest.mark.parametrize("per_frame", [False, True])
def test_alignment_recovers_metric_depth_in_camera_scale(tiny_model_dir, clip, per_frame):
    backend = NeuralDepth(tiny_model_dir, NeuralDepthConfig(per_frame=per_frame))
    prediction = _affine_prediction(clip)
    prediction[2, 20:50, 30:70] *= 1.8  # the network is wrong on a region the reference sees
    result = backend.align(prediction, _sparse_reference(clip))
    truth = clip.labels["depth"] * SCALE
    ratio = result.depth[result.depth_valid] / truth[result.depth_valid]
    assert np.mean(np.maximum(ratio, 1 / ratio) < 1.05) > 0.99  # no rescaling: aligned to the cameras
    moving = clip.object_ids >= 6 + clip.config.num_static
    assert result.depth_valid[moving].mean() > 0.95  # dense: moving objects get depth too
    assert result.depth_valid[2, 25:45, 35:65].mean() < 0.05  # disagreement with the geometry is invalid
    assert result.depth_valid.mean() > 0.9


def test_alignment_invalidates_beyond_infinity_and_unreferenced_frames(tiny_model_dir, clip):
    backend = NeuralDepth(tiny_model_dir, NeuralDepthConfig(per_frame=True))
    prediction = _affine_prediction(clip)
    prediction[1, :, :20] = -1.0  # aligned inverse depth <= 0: at or beyond infinity
    reference = _sparse_reference(clip)
    no_ref = reference.depth_valid.copy()
    no_ref[4] = False  # frame 4 has no reference pixel: its depth cannot be aligned
    reference = DepthResult(np.where(no_ref, reference.depth, 0).astype(np.float32), no_ref, reference.rel_sigma)
    result = backend.align(prediction, reference)
    assert not result.depth_valid[1, :, :20].any()
    assert not result.depth_valid[4].any() and np.all(result.depth[4] == 0)
    assert result.depth_valid[3].mean() > 0.9


def test_estimate_end_to_end_with_multiview_reference(tiny_model_dir, clip, dis_flows):
    """Flow -> multi-view reference -> alignment: depth in the cameras' scale, also on moving objects."""
    moving = clip.object_ids >= 6 + clip.config.num_static
    backend = oracle_backend(tiny_model_dir, clip)
    result = backend.estimate(clip.frames, dis_flows, scaled_c2w(clip), clip.labels["K"], moving)
    truth = clip.labels["depth"] * SCALE
    ratio = result.depth[result.depth_valid] / truth[result.depth_valid]
    assert np.mean(np.maximum(ratio, 1 / ratio) < 1.25) > 0.97
    assert abs(np.median(ratio) - 1) < 0.05  # the camera's scale, not the network's
    assert result.depth_valid[moving].mean() > 0.8


def test_dense_depth_in_the_mask_chain_keeps_moving_objects(tiny_model_dir, clip, dis_flows):
    """A dense backend's depth on moving objects survives step 4 of the mask/depth order."""
    backend = oracle_backend(tiny_model_dir, clip)
    result = label_depth_and_masks(clip.frames, dis_flows, scaled_c2w(clip), clip.labels["K"], [0, 4, 8], backend)
    truth_mask = clip.labels["dynamic_mask"]
    iou = (result.dynamic_mask & truth_mask).sum() / (result.dynamic_mask | truth_mask).sum()
    assert iou > 0.7  # measured 0.81
    moving = clip.object_ids >= 6 + clip.config.num_static
    assert result.depth.depth_valid[moving].mean() > 0.6  # measured 0.71 (multi-view depth: 0.11)
    valid = result.depth.depth_valid
    ratio = result.depth.depth[valid] / (clip.labels["depth"] * SCALE)[valid]
    assert np.mean(np.maximum(ratio, 1 / ratio) < 1.25) > 0.97
