"""Point maps and scene-flow pseudo-labels against synthetic ground truth."""

import numpy as np
import pytest

from pipelines.geometry import point_maps, scene_flow
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
    out, out_valid = scene_flow(points, depth, valid, flow, np.ones((S - 1, H, W), bool), dynamic)
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
    out, out_valid = scene_flow(points, depth, valid, flow, np.ones((S - 1, H, W), bool), np.ones((S, H, W), bool))
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
