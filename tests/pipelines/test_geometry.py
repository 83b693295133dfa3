"""Point maps and scene-flow pseudo-labels against synthetic ground truth."""

import cv2
import numpy as np
import pytest

from scipy.spatial.transform import Rotation

from labelers.flow import PairFlows
from pipelines.geometry import SceneFlowTolerance, key_flow_error_px, point_maps, rigid_motion_residual, scene_flow
from pipelines.synthetic import SceneConfig, render_clip


@pytest.fixture(scope="module", params=["orbit", "dolly"])
def clip(request):
    return render_clip(SceneConfig(seed=2, height=120, width=180, num_frames=9, camera=request.param, num_moving=2))


def _key(labels, name, stride=4):
    return labels[name][::stride]


def test_point_maps_match_ground_truth(clip):
    L = clip.labels
    points = point_maps(_key(L, "depth"), _key(L, "depth_valid"), _key(L, "K"), _key(L, "c2w"))
    np.testing.assert_allclose(points, L["points"], atol=1e-5)


def test_point_maps_zero_and_finite_where_depth_invalid():
    depth = np.full((1, 4, 5), 2.0)
    depth[0, 1, 1] = np.nan
    depth[0, 2, 2] = -1.0
    valid = np.ones((1, 4, 5), bool)
    valid[0, 3, 3] = False
    K = np.array([[[10.0, 0, 2], [0, 10.0, 1.5], [0, 0, 1]]])
    points = point_maps(depth, valid, K, np.eye(4)[None])
    assert np.isfinite(points).all()
    for v, u in ((1, 1), (2, 2), (3, 3)):
        assert (points[0, v, u] == 0).all()
    np.testing.assert_allclose(points[0, 0, 0], [2 * (0 - 2) / 10, 2 * (0 - 1.5) / 10, 2.0])


def test_scene_flow_from_ground_truth_inputs_is_exact_up_to_bilinear_sampling(clip):
    L = clip.labels
    depth, valid = _key(L, "depth"), _key(L, "depth_valid")
    points = point_maps(depth, valid, _key(L, "K"), _key(L, "c2w"))
    flow3d, flow3d_valid = scene_flow(points, depth, valid, L["key_flow"], L["key_flow_valid"], L["dynamic_mask"])
    assert flow3d_valid.sum() > 0.6 * L["scene_flow_valid"].sum()
    assert not (flow3d_valid & ~L["scene_flow_valid"]).any()  # never valid where the truth is not observable
    err = np.linalg.norm(flow3d - L["scene_flow"], axis=-1)[flow3d_valid]
    motion = np.linalg.norm(L["scene_flow"], axis=-1)[flow3d_valid]
    # Bilinear sampling of P_{k+1} is exact for locally affine point maps; what remains is
    # curvature within one pixel (box creases, sphere rims).
    assert np.median(err) < 1e-3
    assert np.mean(err < 0.05 * motion + 0.01) > 0.97
    assert (flow3d[~flow3d_valid] == 0).all()


def test_scene_flow_zero_off_dynamic_pixels_and_border_targets_invalid():
    S, H, W = 2, 6, 8
    depth = np.full((S, H, W), 4.0)
    valid = np.ones((S, H, W), bool)
    K = np.tile(np.array([[8.0, 0, 3.5], [0, 8.0, 2.5], [0, 0, 1]]), (S, 1, 1))
    c2w = np.tile(np.eye(4), (S, 1, 1))
    points = point_maps(depth, valid, K, c2w)
    flow = np.zeros((S - 1, H, W, 2))
    flow[..., 0] = 2.0  # everything moves 2 px right = 1 m at depth 4 with f = 8
    dynamic = np.zeros((S, H, W), bool)
    dynamic[:, :, 4:] = True
    # 12 valid pixels are too few for a rigid fit: the rigidity test would reject them all.
    out, out_valid = scene_flow(points, depth, valid, flow, np.ones((S - 1, H, W), bool), dynamic, max_rigid_residual=None)
    assert (out[0][~dynamic[0]] == 0).all() and not out_valid[0][~dynamic[0]].any()
    # targets u + 2 > W - 1 leave the image: invalid, never clamped
    assert not out_valid[0][:, W - 2 :].any()
    inner = out_valid[0][:, 4 : W - 2]
    assert inner.all()
    np.testing.assert_allclose(out[0][:, 4 : W - 2], np.broadcast_to([1.0, 0, 0], (H, W - 6, 3)), atol=1e-12)


def test_scene_flow_rejects_non_finite_flow_and_invalid_target_depth():
    S, H, W = 2, 5, 5
    depth = np.full((S, H, W), 2.0)
    valid = np.ones((S, H, W), bool)
    valid[1, 2, 3] = False  # hole in the target's depth
    K = np.tile(np.array([[5.0, 0, 2], [0, 5.0, 2], [0, 0, 1]]), (S, 1, 1))
    points = point_maps(depth, valid, K, np.tile(np.eye(4), (S, 1, 1)))
    flow = np.zeros((S - 1, H, W, 2))
    flow[0, 0, 0] = np.nan
    flow[0, 2, 2] = [0.5, 0.0]  # footprint touches the hole at (2, 3)
    out, out_valid = scene_flow(
        points, depth, valid, flow, np.ones((S - 1, H, W), bool), np.ones((S, H, W), bool), max_rigid_residual=None
    )
    assert np.isfinite(out).all()
    assert not out_valid[0, 0, 0] and not out_valid[0, 2, 2]
    assert out_valid[0, 4, 0]


def test_scene_flow_shape_mismatch_raises():
    with pytest.raises(ValueError, match="key_flow"):
        scene_flow(
            np.zeros((3, 4, 4, 3)),
            np.ones((3, 4, 4)),
            np.ones((3, 4, 4), bool),
            np.zeros((3, 4, 4, 2)),
            np.ones((2, 4, 4), bool),
            np.ones((3, 4, 4), bool),
        )


def _rigid_scene(height=40, width=60, depth_m=3.0, f=50.0):
    """A fronto-parallel plane at `depth_m` and a rigid motion of its middle, with the exact flow."""
    K = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]])
    depth = np.full((2, height, width), depth_m)
    valid = np.ones((2, height, width), bool)
    points = point_maps(depth, valid, np.stack([K, K]), np.tile(np.eye(4), (2, 1, 1)))
    dynamic = np.zeros((2, height, width), bool)
    dynamic[:, 10:30, 15:45] = True
    R = Rotation.from_rotvec([0.0, 0.0, 0.02]).as_matrix()  # in-plane: the plane maps to itself
    shift = np.array([0.05, -0.02, 0.0])
    centre = points[0][20, 30]
    moved = (points[0] - centre) @ R.T + centre + shift
    flow = np.zeros((1, height, width, 2))
    flow[0] = moved[..., :2] / depth_m * f + K[:2, 2] - np.stack(np.meshgrid(np.arange(width), np.arange(height)), -1)
    return points, depth, valid, flow, dynamic, moved - points[0]


def test_rigid_motion_residual_flags_a_blob_that_disagrees_with_its_object():
    points, _, valid, _, dynamic, motion = _rigid_scene()
    wrong = motion.copy()
    wrong[14:18, 20:24] += [0.02, 0.0, 0.0]  # 2 cm off: twice the 1 cm tolerance
    tol = SceneFlowTolerance().of(wrong)
    residual = rigid_motion_residual(points[0], wrong, dynamic[0], dynamic[0], tol)
    assert (residual[14:18, 20:24] > 1.5).all()
    inlier = dynamic[0].copy()
    inlier[14:18, 20:24] = False
    assert residual[inlier].max() < 0.1
    assert np.isinf(residual[~dynamic[0]]).all()
    # A region with fewer valid pixels than a rigid fit needs gets no residual at all.
    few = np.zeros_like(dynamic[0])
    few[20, 20:30] = True
    assert np.isinf(rigid_motion_residual(points[0], motion, few, few, tol)).all()


def test_rigid_motion_residual_fits_each_region_and_a_second_part_separately():
    points, _, valid, _, dynamic, motion = _rigid_scene()
    two = motion.copy()
    two[10:30, 30:45] = [0.0, 0.03, 0.0]  # right half of the region moves differently (an articulated part)
    tol = SceneFlowTolerance().of(two)
    residual = rigid_motion_residual(points[0], two, dynamic[0], dynamic[0], tol)
    assert residual[dynamic[0]].max() < 0.1


def test_scene_flow_flow_error_is_held_to_the_tolerance_in_metres():
    points, depth, valid, flow, dynamic, motion = _rigid_scene(depth_m=3.0, f=50.0)
    # One pixel of flow error moves the target 3 / 50 = 6 cm on this plane: far beyond 1 cm.
    error_px = np.full((1, *depth.shape[1:]), 0.05)
    error_px[0, 12:16, 20:40] = 1.0
    out, out_valid = scene_flow(points, depth, valid, flow, np.ones_like(error_px, bool), dynamic, flow_error_px=error_px)
    inner = np.zeros_like(dynamic[0])
    inner[11:29, 16:44] = True  # away from the border, where targets may leave the moving region's support
    assert not out_valid[0, 12:16, 20:40].any()
    ok = inner.copy()
    ok[12:16, 20:40] = False
    assert out_valid[0][ok].mean() > 0.95
    np.testing.assert_allclose(out[0][out_valid[0]], motion[out_valid[0]], atol=1e-3)
    assert (out[0][~out_valid[0]] == 0).all()
    # 0.05 px is 3 mm, 0.3 of the tolerance: a fraction of 0.2 rejects it too.
    _, strict = scene_flow(points, depth, valid, flow, np.ones_like(error_px, bool), dynamic, flow_error_px=error_px,
                           max_error_fraction=0.2)
    assert not strict.any()


def _pair_flows(pairs, fwd, unc, valid):
    bwd = -fwd  # only the forward direction matters to key_flow_error_px
    return PairFlows(np.asarray(pairs), fwd, bwd, unc, unc, valid, valid, unc, unc)


def test_key_flow_error_is_the_uncertainty_or_the_gap_to_the_chain():
    H, W = 12, 16
    links_fwd = np.zeros((2, H, W, 2), np.float32)
    links_fwd[..., 0] = 1.0  # 1 px right per frame
    links_valid = np.ones((2, H, W), bool)
    links_valid[1, 0, 3] = False  # breaks the chain of pixel (0, 2) (its first hop lands on u = 3)
    links = _pair_flows([(0, 1), (1, 2)], links_fwd, np.zeros((2, H, W), np.float32), links_valid)
    key_fwd = np.zeros((1, H, W, 2), np.float32)
    key_fwd[..., 0] = 2.0
    key_fwd[0, 5, 5] = [2.0, 1.5]  # 1.5 px off the chain
    unc = np.full((1, H, W), 0.2, np.float32)
    error = key_flow_error_px(_pair_flows([(0, 2)], key_fwd, unc, np.ones((1, H, W), bool)), links)
    assert error[0, 5, 5] == pytest.approx(1.5)
    assert np.isinf(error[0, 0, 2])
    assert error[0, 8, 4] == pytest.approx(0.2)
    with pytest.raises(ValueError, match="chain"):
        key_flow_error_px(_pair_flows([(0, 3)], key_fwd, unc, np.ones((1, H, W), bool)), links)


def test_key_flow_error_sees_a_flow_the_images_contradict():
    """Direct and chained flow agree (both 0.6 px short), but the images ask for the missing 0.6 px."""
    H, W = 40, 60
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (H, W + 8)).astype(np.float32), (0, 0), 1.5)
    frames = np.stack([np.repeat(np.clip(texture[:, s : s + W] * 2 - 128, 0, 255)[..., None], 3, -1) for s in (2, 1, 0)])
    frames = frames.astype(np.uint8)  # the scene moves 1 px right per frame
    links_fwd = np.zeros((2, H, W, 2), np.float32)
    links_fwd[..., 0] = 0.7
    links = _pair_flows([(0, 1), (1, 2)], links_fwd, np.zeros((2, H, W), np.float32), np.ones((2, H, W), bool))
    key_fwd = np.zeros((1, H, W, 2), np.float32)
    key_fwd[..., 0] = 1.4
    key = _pair_flows([(0, 2)], key_fwd, np.zeros((1, H, W), np.float32), np.ones((1, H, W), bool))
    assert np.median(key_flow_error_px(key, links)) < 1e-3
    error = key_flow_error_px(key, links, frames)[0, 8:-8, 8:-8]
    assert 0.3 < np.median(error) < 0.9
    key_fwd[..., 0] = 2.0  # the true flow, and the chain of true hops: the images are content
    links_fwd[..., 0] = 1.0
    assert np.median(key_flow_error_px(key, links, frames)[0, 8:-8, 8:-8]) < 0.15
