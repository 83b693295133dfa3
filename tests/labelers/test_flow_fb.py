"""Forward-backward check, flow_valid and the pair driver of labelers.flow, on flows with known answers."""

import json

import numpy as np
import pytest

from labelers.dis_flow import DisFlow
from labelers.flow import (
    FlowEstimator,
    FlowResult,
    PairFlows,
    compute_pair_flows,
    consecutive_pairs,
    fill_from_chains,
    flow_valid_mask,
    forward_backward_check,
    key_frame_pairs,
    prefer_valid,
    warp_flow_to_source,
)
from pipelines.synthetic import SceneConfig, render_clip

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
    # Uniform frames have no texture: the checks beyond forward-backward are off here.
    out = compute_pair_flows(estimator, frames, pairs, max_uncertainty_px=2.0, batch_size=3, checks=None)
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


def _translations(pairs: list[tuple[int, int]], step_px: tuple[float, float], uncertainty_px: float) -> PairFlows:
    """Flows of a scene translating by step_px per frame, valid where the target stays inside."""
    v, u = np.mgrid[0:H, 0:W]
    fields = {name: [] for name in ("flow_fwd_px", "flow_bwd_px", "valid_fwd", "valid_bwd")}
    for i, j in pairs:
        for name, sign in (("fwd", 1), ("bwd", -1)):
            dx, dy = (sign * (j - i) * c for c in step_px)
            fields[f"flow_{name}_px"].append(constant_flow(dx, dy))
            fields[f"valid_{name}"].append((u + dx >= 0) & (u + dx <= W - 1) & (v + dy >= 0) & (v + dy <= H - 1))
    stacked = {name: np.stack(values) for name, values in fields.items()}
    unc = np.full((len(pairs), H, W), uncertainty_px, np.float32)
    zeros = np.zeros((len(pairs), H, W), np.float32)
    return PairFlows(np.asarray(pairs), **stacked, uncertainty_fwd_px=unc, uncertainty_bwd_px=unc.copy(),
                     fb_error_fwd_px=zeros, fb_error_bwd_px=zeros.copy())


def test_chains_fill_only_where_the_direct_flow_is_invalid():
    links = _translations(consecutive_pairs(9), (1.0, 0.5), uncertainty_px=0.3)
    direct = _translations(key_frame_pairs(9, 4), (1.0, 0.5), uncertainty_px=0.1)
    lost = np.zeros((H, W), bool)
    lost[5:15, 8:20] = True  # a region the direct estimate lost: wrong flow, invalid
    for name in ("valid_fwd", "valid_bwd"):
        getattr(direct, name)[0][lost] = False
    direct.flow_fwd_px[0][lost] = 40.0
    direct.flow_bwd_px[0][lost] = -40.0
    filled = fill_from_chains(direct, links, max_uncertainty_px=1.0)
    assert filled.valid_fwd[0][lost].all() and filled.valid_bwd[0][lost].all()
    np.testing.assert_allclose(filled.flow_fwd_px[0][lost], [[4.0, 2.0]] * lost.sum(), atol=1e-5)
    np.testing.assert_allclose(filled.flow_bwd_px[0][lost], [[-4.0, -2.0]] * lost.sum(), atol=1e-5)
    np.testing.assert_allclose(filled.uncertainty_fwd_px[0][lost], 0.6, rtol=1e-5)  # sqrt(4) * 0.3
    np.testing.assert_allclose(filled.uncertainty_fwd_px[0][~lost], 0.1)  # direct pixels keep theirs
    np.testing.assert_array_equal(filled.valid_fwd[1], direct.valid_fwd[1])
    assert not direct.valid_fwd[0][lost].any()  # the input is not modified
    # invalid but not lost (within min_correction_px of the chain): the chain is no better, left invalid
    doubtful = np.zeros((H, W), bool)
    doubtful[16:20, 2:6] = True
    direct.valid_fwd[0][doubtful] = False
    direct.flow_fwd_px[0][doubtful] += 0.5
    assert not fill_from_chains(direct, links, max_uncertainty_px=1.0).valid_fwd[0][doubtful].any()
    assert fill_from_chains(direct, links, 1.0, min_correction_px=0.4).valid_fwd[0][doubtful].all()
    # valid but grossly wrong (a repeated-texture match both directions agree on): replaced
    wrong, slightly_off = np.zeros((H, W), bool), np.zeros((H, W), bool)
    wrong[2:6, 20:26] = True
    slightly_off[16:20, 16:22] = True
    direct.flow_fwd_px[0][wrong] += 20.0
    direct.flow_fwd_px[0][slightly_off] += (5.0, 0.0)
    direct.flow_bwd_px[0][np.roll(slightly_off, (2, 9), axis=(0, 1))] = (-9.0, -2.0)  # its twin agrees
    repaired = fill_from_chains(direct, links, max_uncertainty_px=1.0)
    np.testing.assert_allclose(repaired.flow_fwd_px[0][wrong], [[4.0, 2.0]] * wrong.sum(), atol=1e-5)
    np.testing.assert_allclose(repaired.uncertainty_fwd_px[0][wrong], 0.6, rtol=1e-5)
    assert repaired.valid_fwd[0][wrong].all()
    # valid and within replace_gap_px of the chain: one estimate beats accumulated hops, kept
    np.testing.assert_array_equal(repaired.flow_fwd_px[0][slightly_off], direct.flow_fwd_px[0][slightly_off])
    # ... yet 5 px from a confident chain (more than disagree_gap_px = 3): neither is trusted
    trusting = fill_from_chains(direct, links, 1.0, disagree_gap_px=None)
    assert not repaired.valid_fwd[0][slightly_off].any() and trusting.valid_fwd[0][slightly_off].all()
    np.testing.assert_array_equal(repaired.valid_fwd[0] ^ trusting.valid_fwd[0], slightly_off)
    assert fill_from_chains(direct, links, 1.0, replace_gap_px=4.0).flow_fwd_px[0][slightly_off][0, 0] == 4.0
    kept = fill_from_chains(direct, links, 1.0, replace_gap_px=None)
    np.testing.assert_array_equal(kept.flow_fwd_px[0][wrong], direct.flow_fwd_px[0][wrong])
    # a chain whose composed uncertainty is too large fills nothing
    assert not fill_from_chains(direct, links, max_uncertainty_px=0.5).valid_fwd[0][lost].any()
    # a chain leaving the image fills nothing: the last 4 columns have no target inside
    edge = np.zeros((H, W), bool)
    edge[:, W - 4 :] = True
    direct.valid_fwd[0][edge] = False
    assert not fill_from_chains(direct, links, max_uncertainty_px=1.0).valid_fwd[0][edge].any()
    with pytest.raises(ValueError, match=r"no link flow \(2, 3\)"):
        fill_from_chains(direct, _translations([(0, 1), (1, 2), (3, 4)], (1.0, 0.5), 0.3))


def test_a_direct_flow_whose_twin_the_chain_replaced_is_checked_again():
    """Both directions of a direct pair agree on a wrong match; the forward chain leaves the view
    there (it cannot replace the forward flow) while the backward chain replaces the twin. The
    forward flow then fails the forward-backward check against the flow kept for the other
    direction and must not stay valid (the sky of an orbiting camera, 20 px off)."""
    links = _translations(consecutive_pairs(5), (1.0, 0.5), uncertainty_px=0.3)
    direct = _translations(key_frame_pairs(5, 4), (1.0, 0.5), uncertainty_px=0.1)
    wrong_src = np.zeros((H, W), bool)
    wrong_src[4:10, 12:18] = True
    wrong_dst = np.roll(wrong_src, (3, -6), axis=(0, 1))  # targets of the wrong flow (-6, +3)
    direct.flow_fwd_px[0][wrong_src] = (-6.0, 3.0)
    direct.flow_bwd_px[0][wrong_dst] = (6.0, -3.0)  # the twin agrees: the direct check passes
    links.valid_fwd[0][wrong_src] = False  # the forward chain breaks: no replacement there
    filled = fill_from_chains(direct, links, max_uncertainty_px=1.0)
    np.testing.assert_allclose(filled.flow_bwd_px[0][wrong_dst], [[-4.0, -2.0]] * wrong_dst.sum(), atol=1e-5)
    np.testing.assert_array_equal(filled.flow_fwd_px[0][wrong_src], direct.flow_fwd_px[0][wrong_src])
    assert not filled.valid_fwd[0][wrong_src].any()
    np.testing.assert_allclose(filled.fb_error_fwd_px[0][wrong_src], np.hypot(10.0, 1.0), rtol=1e-5)
    others = direct.valid_fwd[0] & ~wrong_src
    assert filled.valid_fwd[0][others].all()  # the consistent rest keeps its validity


def test_chains_recover_a_fast_mover_that_direct_dis_loses():
    """Orbit seed 6 at 240x360: the big object moves ~32 px per key interval."""
    cfg = SceneConfig(seed=6, height=240, width=360, num_frames=5, stride=4, camera="orbit", num_moving=2)
    clip = render_clip(cfg)
    direct = compute_pair_flows(DisFlow(), clip.frames, key_frame_pairs(5, 4))
    filled = fill_from_chains(direct, compute_pair_flows(DisFlow(), clip.frames, consecutive_pairs(5)))
    truth, truth_valid = clip.labels["key_flow"][0], clip.labels["key_flow_valid"][0]
    mover = clip.labels["dynamic_mask"][0] & truth_valid
    error = np.linalg.norm(filled.flow_fwd_px[0] - truth, axis=-1)
    # measured: direct covers 0.28 of the mover (36 px error where it is wrong), chains 0.90;
    # added pixels: median error 0.20 px, 0.6 % over 3 px; static median 0.04 px
    assert direct.valid_fwd[0][mover].mean() < 0.4
    assert filled.valid_fwd[0][mover].mean() > 0.85
    added = filled.valid_fwd[0] & ~direct.valid_fwd[0] & truth_valid
    assert np.median(error[added]) < 0.5 and np.mean(error[added] > 3) < 0.05
    # direct pixels that pass the check yet are grossly wrong are replaced by the chain
    direct_error = np.linalg.norm(direct.flow_fwd_px[0] - truth, axis=-1)
    # measured: 2113 valid direct pixels over 8 px off (on the mover), 38 after
    wrong_before = (direct.valid_fwd[0] & truth_valid & (direct_error > 8)).sum()
    wrong_after = (filled.valid_fwd[0] & truth_valid & (error > 8)).sum()
    assert wrong_before > 1500 and wrong_after < 0.05 * wrong_before
    assert np.median(error[filled.valid_fwd[0] & truth_valid & ~mover]) < 0.15


def test_select_returns_pairs_in_the_asked_orientation():
    flows = _translations([(0, 1), (1, 2), (0, 4)], (1.0, 0.5), uncertainty_px=0.3)
    flows.uncertainty_bwd_px[2] = 0.7
    picked = flows.select([(4, 0), (1, 2)])
    assert picked.pairs.tolist() == [[4, 0], [1, 2]]
    # (4, 0) is held as (0, 4): its forward flow is the stored backward one, and so on per field
    np.testing.assert_array_equal(picked.flow_fwd_px[0], flows.flow_bwd_px[2])
    np.testing.assert_array_equal(picked.flow_bwd_px[0], flows.flow_fwd_px[2])
    np.testing.assert_array_equal(picked.valid_fwd[0], flows.valid_bwd[2])
    np.testing.assert_allclose(picked.uncertainty_fwd_px[0], 0.7)
    np.testing.assert_array_equal(picked.flow_fwd_px[1], flows.flow_fwd_px[1])
    with pytest.raises(KeyError):
        flows.select([(0, 2)])


def test_prefer_valid_takes_the_second_only_where_the_first_is_invalid():
    first = _translations(key_frame_pairs(9, 4), (1.0, 0.5), uncertainty_px=0.1)
    second = _translations(key_frame_pairs(9, 4), (2.0, 0.0), uncertainty_px=0.2)
    hole = np.zeros((H, W), bool)
    hole[3:9, 4:12] = True
    first.valid_fwd[1][hole] = False
    first.valid_bwd[0][:] = False
    out = prefer_valid(first, second)
    kept = first.valid_fwd[1]
    assert kept.sum() > 300 and (hole & ~kept).sum() == hole.sum()
    np.testing.assert_array_equal(out.flow_fwd_px[1][~kept], second.flow_fwd_px[1][~kept])
    np.testing.assert_array_equal(out.flow_fwd_px[1][kept], first.flow_fwd_px[1][kept])
    np.testing.assert_array_equal(out.valid_fwd[1], kept | second.valid_fwd[1])
    np.testing.assert_allclose(out.uncertainty_fwd_px[1][hole], 0.2)
    np.testing.assert_array_equal(out.flow_bwd_px[0], second.flow_bwd_px[0])  # a whole direction invalid
    np.testing.assert_array_equal(out.flow_fwd_px[0][first.valid_fwd[0]], first.flow_fwd_px[0][first.valid_fwd[0]])
    with pytest.raises(ValueError, match="pair flows differ"):
        prefer_valid(first, _translations([(0, 4)], (1.0, 0.5), uncertainty_px=0.1))


def test_prefer_valid_within_masks_takes_the_first_only_inside_them():
    first = _translations(key_frame_pairs(9, 4), (1.0, 0.5), uncertainty_px=0.1)
    second = _translations(key_frame_pairs(9, 4), (2.0, 0.0), uncertainty_px=0.2)
    inside_fwd = np.zeros(first.valid_fwd.shape, bool)
    inside_fwd[0, 5:15, 5:20] = True
    first.valid_fwd[0, 5:8] = False  # inside but invalid: the second's
    out = prefer_valid(first, second, within=(inside_fwd, np.zeros_like(inside_fwd)))
    taken = inside_fwd & first.valid_fwd
    np.testing.assert_array_equal(out.flow_fwd_px[taken], first.flow_fwd_px[taken])
    np.testing.assert_array_equal(out.flow_fwd_px[~taken], second.flow_fwd_px[~taken])
    np.testing.assert_array_equal(out.flow_bwd_px, second.flow_bwd_px)  # an empty mask: the second everywhere
    with pytest.raises(ValueError, match="within must be two masks"):
        prefer_valid(first, second, within=(inside_fwd[:1], inside_fwd))
