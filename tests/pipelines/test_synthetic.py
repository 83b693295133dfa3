"""The synthetic generator's ground truth is right: checked against independent geometry."""

import numpy as np
import pytest

from labelers.geometry import bilinear_sample, pixel_grid, rigid_flow, unproject_depth, transform_points
from pipelines.synthetic import CAMERA_MOTIONS, SceneConfig, render_clip

H, W = 72, 108


@pytest.fixture(scope="module", params=CAMERA_MOTIONS)
def clip(request):
    return render_clip(SceneConfig(seed=5, height=H, width=W, num_frames=9, camera=request.param, num_moving=2))


def _same_object_at_target(object_ids: np.ndarray, obj_src: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Pixels whose bilinear target footprint (2x2 neighbours) all show the source's object."""
    u0 = np.clip(np.floor(uv[..., 0]).astype(int), 0, W - 2)
    v0 = np.clip(np.floor(uv[..., 1]).astype(int), 0, H - 2)
    same = np.ones(obj_src.shape, bool)
    for dv in (0, 1):
        for du in (0, 1):
            same &= object_ids[v0 + dv, u0 + du] == obj_src
    return same


def test_first_camera_is_identity_and_rotations_orthonormal(clip):
    c2w = clip.labels["c2w"].astype(np.float64)
    np.testing.assert_array_equal(c2w[0], np.eye(4))
    R = c2w[:, :3, :3]
    np.testing.assert_allclose(np.einsum("tji,tjk->tik", R, R), np.broadcast_to(np.eye(3), R.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(R), 1.0, atol=1e-5)


def test_warping_next_frame_by_flow_reproduces_frame(clip):
    frames = clip.frames.astype(np.float64)
    for k in range(len(frames) - 1):
        valid = clip.labels["flow_valid"][k]
        assert valid.mean() > 0.8
        warped = bilinear_sample(frames[k + 1], pixel_grid(H, W) + clip.labels["flow"][k])
        err = np.abs(warped - frames[k])[valid].mean()
        no_motion_err = np.abs(frames[k + 1] - frames[k])[valid].mean()
        assert err < 3.0, f"frame {k}: warp error {err:.2f} grey levels"
        if clip.config.camera != "static":
            assert err < 0.5 * no_motion_err


def test_static_pixels_flow_equals_reprojected_depth(clip):
    L = clip.labels
    n_static_ids = 6 + clip.config.num_static  # room faces, then static objects
    for k in range(len(clip.frames) - 1):
        static = L["flow_valid"][k] & (clip.object_ids[k] < n_static_ids)
        flow_rigid, _ = rigid_flow(L["depth"][k].astype(np.float64), L["K"][k], L["c2w"][k], L["K"][k + 1], L["c2w"][k + 1])
        np.testing.assert_allclose(flow_rigid[static], L["flow"][k][static], atol=1e-3)
    # Moving objects do not follow the rigid flow: the check above is not vacuous.
    moving = L["flow_valid"][0] & (clip.object_ids[0] >= n_static_ids)
    flow_rigid, _ = rigid_flow(L["depth"][0].astype(np.float64), L["K"][0], L["c2w"][0], L["K"][1], L["c2w"][1])
    assert np.abs(flow_rigid[moving] - L["flow"][0][moving]).max() > 0.05


def test_points_are_unprojected_depth_in_first_frame_coordinates(clip):
    L = clip.labels
    stride = clip.config.stride
    for n, k in enumerate(range(0, len(clip.frames), stride)):
        expected = unproject_depth(L["depth"][k].astype(np.float64), L["K"][k], L["c2w"][k])
        np.testing.assert_allclose(L["points"][n], expected, atol=1e-4)


def test_scene_flow_is_point_difference_on_dynamic_pixels_and_zero_elsewhere(clip):
    L = clip.labels
    stride = clip.config.stride
    for n in range(len(L["scene_flow"])):
        k = n * stride
        dynamic = L["dynamic_mask"][n]
        assert dynamic.any()
        np.testing.assert_array_equal(L["scene_flow"][n][~dynamic], 0.0)
        assert not (L["scene_flow_valid"][n] & ~dynamic).any()
        target = pixel_grid(H, W) + L["key_flow"][n]
        valid = L["scene_flow_valid"][n] & _same_object_at_target(clip.object_ids[k + stride], clip.object_ids[k], target)
        assert valid.sum() > 50
        # P_{k+1}(u + F(u)) - P_k(u), bilinear on the point map: exact up to the point map's
        # curvature within one pixel.
        difference = bilinear_sample(L["points"][n + 1], target) - L["points"][n]
        err = np.linalg.norm(difference - L["scene_flow"][n], axis=-1)[valid]
        motion = np.linalg.norm(L["scene_flow"][n], axis=-1)[valid]
        assert np.median(err) < 5e-3
        assert np.mean(err < 0.05 * motion + 0.01) > 0.97


def test_occluded_targets_are_behind_something(clip):
    """Where flow is invalid but the target is inside the image, a nearer surface hides the point."""
    L = clip.labels
    k = 0
    target = pixel_grid(H, W) + L["flow"][k]
    inside = (target[..., 0] >= 0) & (target[..., 0] <= W - 1) & (target[..., 1] >= 0) & (target[..., 1] <= H - 1)
    occluded = inside & ~L["flow_valid"][k]
    if not occluded.any():
        pytest.skip("no occlusion in this clip")
    points = unproject_depth(L["depth"][k].astype(np.float64), L["K"][k], L["c2w"][k])
    rigid_z = transform_points(np.linalg.inv(L["c2w"][k + 1].astype(np.float64)), points)[..., 2]
    static = occluded & (clip.object_ids[k] < 6 + clip.config.num_static)
    if static.any():
        depth_at_target = bilinear_sample(L["depth"][k + 1].astype(np.float64), target)
        assert np.mean(depth_at_target[static] < rigid_z[static] - 1e-3) > 0.9


def test_same_seed_same_clip_and_different_seed_different_clip():
    cfg = SceneConfig(seed=11, height=24, width=32, num_frames=5)
    a, b = render_clip(cfg), render_clip(cfg)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.labels["depth"], b.labels["depth"])
    c = render_clip(SceneConfig(seed=12, height=24, width=32, num_frames=5))
    assert not np.array_equal(a.frames, c.frames)


@pytest.mark.parametrize("kwargs", [{"num_frames": 10, "stride": 4}, {"camera": "zoom"}, {"height": 4}])
def test_invalid_config_raises(kwargs):
    with pytest.raises(ValueError):
        SceneConfig(**kwargs)


def test_camera_leaving_the_room_is_refused():
    with pytest.raises(ValueError, match="leaves the room"):
        render_clip(SceneConfig(height=8, width=8, num_frames=49, camera="orbit", camera_speed=3.0))
