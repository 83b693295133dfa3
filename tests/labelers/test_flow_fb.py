"""Forward-backward check, flow_valid and the pair driver of labelers.flow, on flows with known answers."""

import json

import numpy as np
import pytest

from labelers.flow import (
    FlowEstimator,
    FlowResult,
    compute_pair_flows,
    consecutive_pairs,
    flow_valid_mask,
    forward_backward_check,
    key_frame_pairs,
    warp_flow_to_source,
)

H, W = 24, 32


def constant_flow(dx: float, dy: float) -> np.ndarray:
    flow = np.empty((H, W, 2), np.float32)
    flow[..., 0], flow[..., 1] = dx, dy
    return flow


def test_translation_is_consistent_where_the_target_is_inside():
    fb = forward_backward_check(constant_flow(3.0, -2.0), constant_flow(-3.0, 2.0))
    v, u = np.mgrid[0:H, 0:W]
    expected_inside = (u + 3 <= W - 1) & (v - 2 >= 0)
    np.testing.assert_array_equal(fb.target_inside, expected_inside)
    np.testing.assert_array_equal(fb.consistent, expected_inside)  # never clamped to the border
    np.testing.assert_allclose(fb.fb_error_px[expected_inside], 0.0, atol=1e-6)
    assert np.isnan(fb.fb_error_px[~expected_inside]).all()


def test_threshold_is_one_percent_of_the_norms_plus_half_a_pixel():
    # F = (4, 0), B = (-4 + d, 0): error d, tolerance 0.01 * (4 + (4 - d)) + 0.5.
    for d, expected in ((0.57, True), (0.58, False)):
        fb = forward_backward_check(constant_flow(4.0, 0.0), constant_flow(-4.0 + d, 0.0))
        assert fb.consistent[5, 5] == expected, d
        assert fb.fb_error_px[5, 5] == pytest.approx(d, abs=1e-6)


def test_magnitude_term_uses_the_backward_flow_at_the_source_pixel():
    # B is large (-20 px) at the source columns 5..9 but -5 + 0.7 at their targets 10..14.
    # Rule of the reference: tol = 0.01 (|F| + |B(x)|) + 0.5 = 0.75 > 0.7 -> consistent;
    # with |B(x + F)| instead it would be 0.593 < 0.7 -> inconsistent.
    flow_fwd = constant_flow(5.0, 0.0)
    flow_bwd = constant_flow(-4.3, 0.0)
    flow_bwd[:, 5:10, 0] = -20.0
    fb = forward_backward_check(flow_fwd, flow_bwd)
    assert fb.consistent[:, 5:10].all()
    np.testing.assert_allclose(fb.fb_error_px[:, 5:10], 0.7, atol=1e-6)


def test_occluded_background_is_inconsistent():
    # A 10x10 square moves 6 px right over a static background.
    flow_fwd = np.zeros((H, W, 2), np.float32)
    flow_fwd[8:18, 6:16, 0] = 6.0
    flow_bwd = np.zeros((H, W, 2), np.float32)
    flow_bwd[8:18, 12:22, 0] = -6.0
    occluded = np.zeros((H, W), bool)
    occluded[8:18, 16:22] = True  # background covered by the square in frame 2
    fb = forward_backward_check(flow_fwd, flow_bwd)
    np.testing.assert_array_equal(~fb.consistent, occluded)
    np.testing.assert_allclose(fb.fb_error_px[occluded], 6.0)
    # In the other direction the disoccluded background of frame 2 is the inconsistent part.
    disoccluded = np.zeros((H, W), bool)
    disoccluded[8:18, 6:12] = True
    np.testing.assert_array_equal(~forward_backward_check(flow_bwd, flow_fwd).consistent, disoccluded)


def test_warp_samples_bilinearly_and_returns_nan_off_image():
    flow_fwd = constant_flow(0.5, 0.0)
    flow_bwd = np.zeros((H, W, 2), np.float32)
    flow_bwd[..., 0] = np.arange(W, dtype=np.float32)[None, :]
    warped = warp_flow_to_source(flow_fwd, flow_bwd)
    np.testing.assert_allclose(warped[:, : W - 1, 0], np.broadcast_to(np.arange(W - 1) + 0.5, (H, W - 1)))
    assert np.isnan(warped[:, W - 1]).all()


def test_flow_valid_excludes_uncertain_and_non_finite_uncertainty():
    flow_fwd, flow_bwd = constant_flow(1.0, 1.0), constant_flow(-1.0, -1.0)
    uncertainty = np.full((H, W), 0.2, np.float32)
    uncertainty[0:5, 0:5] = 4.0
    uncertainty[6, 6] = np.nan
    valid = flow_valid_mask(flow_fwd, flow_bwd, uncertainty, max_uncertainty_px=3.0)
    inside = forward_backward_check(flow_fwd, flow_bwd).target_inside
    expected = inside.copy()
    expected[0:5, 0:5] = False
    expected[6, 6] = False
    np.testing.assert_array_equal(valid, expected)
    np.testing.assert_array_equal(flow_valid_mask(flow_fwd, flow_bwd), inside)


def test_inputs_are_checked():
    with pytest.raises(ValueError, match="flow_fwd_px"):
        forward_backward_check(np.zeros((H, W, 3), np.float32), constant_flow(0, 0))
    with pytest.raises(ValueError, match="differ in shape"):
        forward_backward_check(constant_flow(0, 0), np.zeros((H + 1, W, 2), np.float32))
    with pytest.raises(ValueError, match="uncertainty_px"):
        flow_valid_mask(constant_flow(0, 0), constant_flow(0, 0), np.zeros((H, W + 1), np.float32))
    with pytest.raises(TypeError, match="float32"):
        FlowResult(np.zeros((1, H, W, 2)), np.zeros((1, H, W), np.float32))


class FrameIndexFlow:
    """Test estimator: frame t is filled with value 10 t; flow = (dst - src) / 10 * (1, 0.5) px."""

    name = "frame_index_flow"
    version = "0"

    def __init__(self) -> None:
        self.calls = []

    @property
    def params(self) -> dict:
        return {"velocity": [1.0, 0.5]}

    def estimate(self, images_src: np.ndarray, images_dst: np.ndarray) -> FlowResult:
        steps = (images_dst[:, 0, 0, 0].astype(np.float32) - images_src[:, 0, 0, 0]) / 10
        n, h, w = images_src.shape[:3]
        flow = np.broadcast_to(steps[:, None, None, None] * np.array([1.0, 0.5], np.float32), (n, h, w, 2))
        uncertainty = np.broadcast_to(np.abs(steps)[:, None, None], (n, h, w))  # 1 px per frame apart
        return FlowResult(flow.astype(np.float32), uncertainty.astype(np.float32))

    def estimate_bidirectional(self, images_src, images_dst):
        self.calls.append(images_src.shape[0])
        return self.estimate(images_src, images_dst), self.estimate(images_dst, images_src)


def test_pair_driver_runs_both_directions_in_batches():
    num_frames = 9
    frames = np.zeros((num_frames, H, W, 3), np.uint8)
    frames += (10 * np.arange(num_frames, dtype=np.uint8))[:, None, None, None]
    estimator = FrameIndexFlow()
    assert isinstance(estimator, FlowEstimator)
    json.dumps(estimator.params)

    pairs = consecutive_pairs(num_frames) + key_frame_pairs(num_frames, 4)
    assert pairs[-2:] == [(0, 4), (4, 8)]
    out = compute_pair_flows(estimator, frames, pairs, max_uncertainty_px=2.0, batch_size=3)
    assert estimator.calls == [3, 3, 3, 1]
    assert out.pairs.tolist() == [list(p) for p in pairs]
    assert out.flow_fwd_px.shape == (10, H, W, 2) and out.flow_fwd_px.dtype == np.float32
    np.testing.assert_allclose(out.flow_fwd_px[8, 0, 0], [4.0, 2.0])
    np.testing.assert_allclose(out.flow_bwd_px[8, 0, 0], [-4.0, -2.0])

    v, u = np.mgrid[0:H, 0:W]
    # Consecutive pairs: 1 px uncertainty, valid where (u + 1, v + 0.5) is inside.
    np.testing.assert_array_equal(out.valid_fwd[0], (u + 1 <= W - 1) & (v + 0.5 <= H - 1))
    np.testing.assert_array_equal(out.valid_bwd[0], (u - 1 >= 0) & (v - 0.5 >= 0))
    # Key pairs are 4 frames apart: 4 px uncertainty > 2 px, so nothing is valid.
    assert not out.valid_fwd[8:].any() and not out.valid_bwd[8:].any()
    np.testing.assert_allclose(out.fb_error_fwd_px[0][out.valid_fwd[0]], 0.0, atol=1e-6)


def test_pair_driver_checks_its_inputs():
    frames = np.zeros((3, H, W, 3), np.uint8)
    with pytest.raises(ValueError, match="range"):
        compute_pair_flows(FrameIndexFlow(), frames, [(0, 3)])
    with pytest.raises(ValueError, match=r"\(i, i\)"):
        compute_pair_flows(FrameIndexFlow(), frames, [(1, 1)])
    with pytest.raises(ValueError, match="uint8"):
        compute_pair_flows(FrameIndexFlow(), frames.astype(np.float32), [(0, 1)])
    with pytest.raises(ValueError, match="empty"):
        compute_pair_flows(FrameIndexFlow(), frames, [])
