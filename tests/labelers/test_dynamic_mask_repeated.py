"""Dynamic masks on repeated texture (labelers.dynamic_mask, `min_isotropy`) against synthetic ground truth.

On a striped ground the flow is measured across the stripes only; along them it slides, by
the same amount in both directions, and the masks flagged the static ground as moving.
"""

from __future__ import annotations

import numpy as np
import pytest

from labelers.depth import MultiViewDepth, MultiViewDepthConfig
from labelers.dis_flow import DisFlow
from labelers.dynamic_mask import (
    DynamicMaskConfig,
    FlowRigidityMasks,
    SourceTexture,
    label_depth_and_masks,
    label_masks_given_depth,
    rigidity_residual,
    stripe_normals,
)
from labelers.flow import (
    ValidityChecks,
    compute_pair_flows,
    consecutive_pairs,
    fill_from_chains,
    key_frame_pairs,
    texture_periods,
)
from pipelines.synthetic import SceneConfig, render_clip

KEYS = [0, 4, 8]


@pytest.fixture(scope="module")
def striped_orbit():
    """An open yard with a striped ground (one 8-12 px period) under an orbit, one mover, and its
    flows as `pipelines.labeling` computes them (key pairs repaired from the consecutive chains)."""
    clip = render_clip(SceneConfig(seed=3, height=120, width=180, num_frames=9, stride=4, camera="orbit",
                                   scene="open", texture="repeated", num_moving=1))
    consecutive = compute_pair_flows(DisFlow(), clip.frames, consecutive_pairs(9))
    key = fill_from_chains(compute_pair_flows(DisFlow(), clip.frames, key_frame_pairs(9, 4)), consecutive)
    return clip, consecutive.merged(key)


def false_alarm_rate(mask: np.ndarray, truth: np.ndarray) -> float:
    return float((mask & ~truth).sum() / (~truth).sum())


def iou(mask: np.ndarray, truth: np.ndarray) -> float:
    return float((mask & truth).sum() / (mask | truth).sum())


def _masks(clip, flows, config: DynamicMaskConfig) -> np.ndarray:
    labels = clip.labels
    c2w, K = labels["c2w"].astype(np.float64), labels["K"].astype(np.float64)
    result = label_depth_and_masks(clip.frames, flows, c2w, K, KEYS, MultiViewDepth(), FlowRigidityMasks(config))
    return result.dynamic_mask


def test_striped_ground_is_not_flagged_and_the_mover_is(striped_orbit):
    clip, flows = striped_orbit
    truth = clip.labels["dynamic_mask"]
    after = _masks(clip, flows, DynamicMaskConfig())
    # without the rule (the previous labeler) the ground's sliding flow is read as motion
    before = _masks(clip, flows, DynamicMaskConfig(min_isotropy=0.0))
    assert false_alarm_rate(before, truth) > 0.045  # measured 10.0 %
    assert false_alarm_rate(after, truth) < 0.03, false_alarm_rate(after, truth)  # measured 2.4 %
    # measured 0.80 and 0.60
    assert iou(after, truth) > max(0.75, iou(before, truth)), (iou(after, truth), iou(before, truth))


def test_given_depth_masks_ignore_stripes_when_given_the_frames(striped_orbit):
    clip, flows = striped_orbit
    labels = clip.labels
    c2w, K = labels["c2w"].astype(np.float64), labels["K"].astype(np.float64)
    depth = np.where(labels["depth_valid"], labels["depth"], 0.0)
    truth = labels["dynamic_mask"]
    with_frames = false_alarm_rate(label_masks_given_depth(flows, c2w, K, KEYS, depth, frames=clip.frames), truth)
    without = false_alarm_rate(label_masks_given_depth(flows, c2w, K, KEYS, depth), truth)
    assert with_frames < 0.7 * without, (with_frames, without)  # measured 4.9 % and 9.9 %


def test_stripe_normals_mark_the_striped_ground_only(striped_orbit):
    clip, _ = striped_orbit
    normals = stripe_normals(clip.frames, DynamicMaskConfig())
    assert normals.shape == (*clip.frames.shape[:3], 2)
    stripes = np.isfinite(normals).all(axis=-1)
    np.testing.assert_allclose(np.linalg.norm(normals[stripes], axis=-1), 1.0, atol=1e-5)
    assert stripes[clip.object_ids == 0].mean() > 0.2  # the striped ground; measured 0.46
    assert stripes[clip.object_ids >= 6].mean() < 0.1  # objects keep their own texture; measured 0.04
    assert stripes[clip.object_ids == 1].mean() < 0.01  # the cloudy sky
    assert stripe_normals(clip.frames, DynamicMaskConfig(min_isotropy=0.0)) is None


def test_residual_across_stripes_known_answers():
    # camera translating along x by 1 (K = I-like pinhole, f = 100): static points move along
    # the rows, so every epipolar line is horizontal and a static point's flow is (-f / z, 0)
    height, width = 20, 30
    K = np.array([[100.0, 0, 15], [0, 100, 10], [0, 0, 1]])
    c2w_src, c2w_dst = np.eye(4), np.eye(4)
    c2w_dst[0, 3] = 1.0
    depth = np.full((height, width), 50.0)  # static flow (-2, 0)
    valid = np.ones((height, width), bool)
    vertical_stripes = np.zeros((height, width, 2), np.float32)
    vertical_stripes[..., 0] = 1.0  # measured across: x
    horizontal_stripes = np.zeros((height, width, 2), np.float32)
    horizontal_stripes[..., 1] = 1.0  # measured across: y
    flow = np.zeros((height, width, 2), np.float32)
    flow[...] = (-2.0, 3.0)  # slid 3 px along vertical stripes
    plain = rigidity_residual(flow, valid, K, c2w_src, K, c2w_dst, depth)
    np.testing.assert_allclose(plain, 3.0, atol=1e-6)
    along = rigidity_residual(flow, valid, K, c2w_src, K, c2w_dst, depth, stripe_normal_src=vertical_stripes)
    np.testing.assert_allclose(along, 0.0, atol=1e-6)  # the slide is along the stripes: no evidence
    across = rigidity_residual(flow, valid, K, c2w_src, K, c2w_dst, depth, stripe_normal_src=horizontal_stripes)
    np.testing.assert_allclose(across, 3.0, atol=1e-6)  # across horizontal stripes it is measured
    # without depth: the target must reach the epipolar line (the row) across the stripes;
    # horizontal stripes see the 3 px across it, vertical ones cross every row
    free = rigidity_residual(flow, valid, K, c2w_src, K, c2w_dst, stripe_normal_src=horizontal_stripes)
    np.testing.assert_allclose(free, 3.0, atol=1e-6)
    free = rigidity_residual(flow, valid, K, c2w_src, K, c2w_dst, stripe_normal_src=vertical_stripes)
    np.testing.assert_allclose(free, 0.0, atol=1e-6)
    nan_normals = np.full((height, width, 2), np.nan, np.float32)  # no stripes: the plain residual
    np.testing.assert_allclose(
        rigidity_residual(flow, valid, K, c2w_src, K, c2w_dst, depth, stripe_normal_src=nan_normals), plain
    )
    with pytest.raises(ValueError, match="stripe_normal_src"):
        rigidity_residual(flow, valid, K, c2w_src, K, c2w_dst, depth, stripe_normal_src=nan_normals[:5])


def test_mask_inputs_and_config_are_checked(striped_orbit):
    clip, flows = striped_orbit
    c2w, K = clip.labels["c2w"].astype(np.float64), clip.labels["K"].astype(np.float64)
    with pytest.raises(ValueError, match="stripe_normals"):
        FlowRigidityMasks().frame_masks(flows, c2w, K, texture=SourceTexture(stripe_normals=np.zeros((9, 120, 180))))
    with pytest.raises(ValueError, match="max_period_px"):
        DynamicMaskConfig(max_period_px=2)
    with pytest.raises(ValueError, match="periods"):
        FlowRigidityMasks().frame_masks(flows, c2w, K, texture=SourceTexture(periods=np.zeros((9, 120, 180, 2))))
    with pytest.raises(ValueError, match="min_isotropy"):
        DynamicMaskConfig(min_isotropy=1.0)
    with pytest.raises(ValueError, match="frames"):
        stripe_normals(clip.frames[..., 0], DynamicMaskConfig())


def test_flow_depth_and_masks_see_the_same_stripes():
    """Flow validity passes some stripe pixels across the stripes only; depth leaves them out and
    the masks read them across the stripes only, which is safe only if all three find the same stripes."""
    checks = ValidityChecks()
    depth = MultiViewDepthConfig()
    masks = DynamicMaskConfig()
    assert checks.stripe_max_isotropy == depth.min_isotropy == masks.min_isotropy > 0
    assert checks.stripe_window_px == depth.isotropy_window_px == masks.isotropy_window_px


def plaid(height: int, width: int, period_x: float, period_y: float) -> np.ndarray:
    """A tartan of two sinusoids: its texture repeats every `period_x` along x and `period_y` along y."""
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    image = 128 + 50 * np.sin(2 * np.pi * u / period_x) + 40 * np.sin(2 * np.pi * v / period_y + 0.4)
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def test_texture_periods_of_a_tartan_and_of_smooth_texture():
    periods = texture_periods(plaid(60, 80, 6.0, 8.0), 15, 12, 0.7, 0.3)
    inner = periods[10:-10, 10:-10]
    found = {tuple(v) for v in inner.reshape(-1, 2).round(3).tolist()}
    assert found <= {(6.0, 0.0), (0.0, 8.0), (-6.0, 8.0), (6.0, 8.0)}, found
    # the two vectors span the lattice of repeats: (6, 0) and (0, 8) are both reachable
    first, second = inner[..., 0, :], inner[..., 1, :]
    lattice = np.abs(first[..., 0] * second[..., 1] - first[..., 1] * second[..., 0])
    assert np.mean(lattice == 48.0) > 0.95
    # band-limited random texture (the scene classes' "rich" texture) decorrelates without repeating
    rng = np.random.default_rng(0)
    v, u = np.mgrid[0:60, 0:80].astype(np.float64)
    smooth = np.full((60, 80), 128.0)
    for _ in range(12):
        wavelength, angle, phase = rng.uniform(6, 40), rng.uniform(0, np.pi), rng.uniform(0, 2 * np.pi)
        smooth += rng.uniform(-18, 18) * np.sin(2 * np.pi * (u * np.cos(angle) + v * np.sin(angle)) / wavelength + phase)
    periods = texture_periods(np.clip(smooth, 0, 255).astype(np.uint8), 15, 12, 0.7, 0.3)
    assert np.mean(np.any(periods[10:-10, 10:-10, 0] != 0, axis=-1)) < 0.05
    # the masks compute them on the key frames they are asked for
    frames = np.repeat(np.repeat(plaid(60, 80, 6.0, 8.0)[None, ..., None], 3, axis=0), 3, axis=-1)
    texture = SourceTexture.of(frames, DynamicMaskConfig(min_isotropy=0.0), period_frames=[1])
    assert texture.stripe_normals is None and texture.periods.shape == (3, 60, 80, 2, 2)
    assert texture.periods[1].any() and not texture.periods[[0, 2]].any()
    assert texture.without_periods().periods is None
    assert SourceTexture.of(frames, DynamicMaskConfig(max_period_px=0)).periods is None


def test_residual_on_repeated_texture_is_taken_up_to_its_periods():
    # camera translating along x (as above): a static point's flow is (-2, 0) at depth 50
    height, width = 20, 30
    K = np.array([[100.0, 0, 15], [0, 100, 10], [0, 0, 1]])
    c2w_src, c2w_dst = np.eye(4), np.eye(4)
    c2w_dst[0, 3] = 1.0
    depth = np.full((height, width), 50.0)
    valid = np.ones((height, width), bool)
    periods = np.zeros((height, width, 2, 2), np.float32)
    periods[..., 0, :] = (0.0, 7.0)
    periods[..., 1, :] = (6.0, 7.0)  # with the first: (6, 0) is a repeat too
    # locked one period off: along x (with depth: 6 px from the rigid flow), along y (without
    # depth: 7 px off the epipolar line, the row; along the row a static point could lie at any depth)
    for with_depth, lock in ((depth, (-6.0, 0.0)), (depth, (0.0, 7.0)), (None, (0.0, -7.0))):
        locked = np.zeros((height, width, 2), np.float32)
        locked[...] = (-2.0 + lock[0], lock[1])
        plain = rigidity_residual(locked, valid, K, c2w_src, K, c2w_dst, with_depth)
        np.testing.assert_allclose(plain, np.hypot(*lock), atol=1e-6)
        aliased = rigidity_residual(locked, valid, K, c2w_src, K, c2w_dst, with_depth, period_src=periods)
        np.testing.assert_allclose(aliased, 0.0, atol=1e-6)
    # a motion of 2.5 px across the rows is not a repeat: no alias comes nearer a static point
    moving = np.zeros((height, width, 2), np.float32)
    moving[...] = (-2.0, 2.5)
    np.testing.assert_allclose(
        rigidity_residual(moving, valid, K, c2w_src, K, c2w_dst, depth, period_src=periods), 2.5, atol=1e-6)
    # no periods, no change
    np.testing.assert_array_equal(
        rigidity_residual(moving, valid, K, c2w_src, K, c2w_dst, depth, period_src=np.zeros_like(periods)),
        rigidity_residual(moving, valid, K, c2w_src, K, c2w_dst, depth))
    with pytest.raises(ValueError, match="period_src"):
        rigidity_residual(moving, valid, K, c2w_src, K, c2w_dst, depth, period_src=periods[:5] + 1)


def test_checkered_room_orbit_has_fewer_false_alarms_with_periods():
    """End to end (`label_depth_and_masks`, DIS flow as the pipeline computes it, true cameras): a
    room with repeated texture under an orbit, whose flow locks a period off on its checkered walls.
    The colour cut (`grabcut_ring_px`) is off to isolate the rule: with it, false alarms are 0.05 %
    without periods and 0.24 % with them on this clip, while on 49-frame replays of repeated clips
    the rule still lowers them under the cut (docs/benchmarks.md, "Session 34")."""
    clip = render_clip(SceneConfig(seed=3, height=120, width=180, num_frames=17, stride=4, camera="orbit",
                                   num_moving=2, texture="repeated"))
    consecutive = compute_pair_flows(DisFlow(), clip.frames, consecutive_pairs(17))
    flows = consecutive.merged(fill_from_chains(compute_pair_flows(DisFlow(), clip.frames, key_frame_pairs(17, 4)),
                                                consecutive))
    truth = clip.labels["dynamic_mask"]
    scores = {}
    for max_period_px in (0, 12):
        config = DynamicMaskConfig(max_period_px=max_period_px, grabcut_ring_px=0)
        mask = label_depth_and_masks(clip.frames, flows, clip.labels["c2w"], clip.labels["K"], [0, 4, 8, 12, 16],
                                     MultiViewDepth(), FlowRigidityMasks(config))
        scores[max_period_px] = (false_alarm_rate(mask.dynamic_mask, truth), iou(mask.dynamic_mask, truth))
    # measured: false alarms 0.78 % -> 0.58 %, IoU 0.762 -> 0.769
    assert scores[12][0] < 0.85 * scores[0][0], scores
    assert scores[12][1] >= scores[0][1] - 0.005, scores
