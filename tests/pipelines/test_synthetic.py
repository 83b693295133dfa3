"""The synthetic generator's ground truth is right: checked against independent geometry."""

import numpy as np
import pytest

from labelers.geometry import bilinear_sample, pixel_grid, rigid_flow, unproject_depth, transform_points
from pipelines.synthetic import CAMERA_MOTIONS, GROUND_ID, SKY_ID, SceneConfig, render_clip, scene_caption

H, W = 72, 108


# Every camera motion in the room, plus the open yard (far sky), the large mover and the
# texture classes: the exact labels must stay consistent whatever the scene.
SCENES = [(camera, {}) for camera in CAMERA_MOTIONS] + [
    ("pan", {"scene": "open"}),
    ("static", {"scene": "open", "large_mover": True}),
    ("orbit", {"scene": "open", "texture": "repeated"}),
    ("dolly", {"texture": "low", "large_mover": True}),
]


@pytest.fixture(scope="module", params=SCENES, ids=lambda p: "-".join([p[0], *map(str, p[1].values())]))
def clip(request):
    camera, extra = request.param
    return render_clip(SceneConfig(seed=5, height=H, width=W, num_frames=9, camera=camera, num_moving=2, **extra))


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
        if clip.config.camera != "static" and clip.config.texture == "rich":
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


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_frames": 10, "stride": 4},
        {"camera": "zoom"},
        {"height": 4},
        {"scene": "cave"},
        {"texture": "striped"},
        {"large_mover": True, "num_moving": 0},
        {"motion_blur": 1.5},
        {"noise_std": -1.0},
        {"sky_distance_m": 5.0},
        {"mover_speed": -1.0},
    ],
)
def test_invalid_config_raises(kwargs):
    with pytest.raises(ValueError):
        SceneConfig(**kwargs)


def test_camera_leaving_the_room_is_refused():
    with pytest.raises(ValueError, match="leaves the room"):
        render_clip(SceneConfig(height=8, width=8, num_frames=49, camera="orbit", camera_speed=3.0))


# --------------------------------------------------------------------------- new scene classes
def _to_world(clip, points_first: np.ndarray) -> np.ndarray:
    return transform_points(np.array(clip.metadata["first_c2w_world"]), points_first)


def _rotation_homography_flow(L, k: int) -> np.ndarray:
    """Flow of points at infinity from frame k to k + 1: the rotation alone, x' ~ K R K^-1 x."""
    K = L["K"][k].astype(np.float64)
    R = L["c2w"][k + 1, :3, :3].astype(np.float64).T @ L["c2w"][k, :3, :3].astype(np.float64)
    uv = pixel_grid(H, W)
    x = np.concatenate([uv, np.ones((H, W, 1))], axis=-1) @ (K @ R @ np.linalg.inv(K)).T
    return x[..., :2] / x[..., 2:] - uv


def test_open_sky_depth_is_the_sphere_distance_and_the_sky_is_static():
    cfg = SceneConfig(seed=2, height=H, width=W, num_frames=5, scene="open", camera="orbit", sky_distance_m=60.0)
    clip = render_clip(cfg)
    L = clip.labels
    for k in range(len(clip.frames)):
        sky = clip.object_ids[k] == SKY_ID
        assert 0.1 < sky.mean() < 0.7, f"frame {k}: sky covers {sky.mean():.0%}"
        world = _to_world(clip, unproject_depth(L["depth"][k].astype(np.float64), L["K"][k], L["c2w"][k]))
        np.testing.assert_allclose(np.linalg.norm(world[sky], axis=-1), 60.0, rtol=1e-5)
        ground = clip.object_ids[k] == GROUND_ID
        np.testing.assert_allclose(world[ground][:, 1], 1.6, atol=1e-4)
    assert L["depth_valid"].all()
    assert not (L["dynamic_mask"] & (clip.object_ids[::4] == SKY_ID)).any()


def test_panning_camera_moves_the_sky_like_the_rotation_alone():
    clip = render_clip(SceneConfig(seed=3, height=H, width=W, num_frames=5, scene="open", camera="pan"))
    L = clip.labels
    for k in range(len(clip.frames) - 1):
        sky = (clip.object_ids[k] == SKY_ID) & L["flow_valid"][k]
        assert sky.sum() > 200
        expected = _rotation_homography_flow(L, k)
        assert np.abs(expected[sky]).max() > 0.3  # the camera does turn
        np.testing.assert_allclose(L["flow"][k][sky], expected[sky], atol=1e-3)
    # A translating camera: the far sky still moves like the rotation, up to its tiny parallax.
    dolly = render_clip(SceneConfig(seed=3, height=H, width=W, num_frames=5, scene="open", camera="dolly"))
    sky = (dolly.object_ids[0] == SKY_ID) & dolly.labels["flow_valid"][0]
    fx = dolly.labels["K"][0, 0, 0]
    step = np.linalg.norm(dolly.labels["c2w"][1, :3, 3])
    error = np.abs(dolly.labels["flow"][0][sky] - _rotation_homography_flow(dolly.labels, 0)[sky]).max()
    assert error < 1.5 * fx * step / 60.0  # the sky is at least ~60 m away in z


@pytest.mark.parametrize("scene", ["room", "open"])
def test_large_mover_covers_a_fifth_to_two_fifths_and_moves_several_pixels(scene):
    for seed in (0, 1):
        cfg = SceneConfig(seed=seed, height=H, width=W, num_frames=9, camera="static", scene=scene, large_mover=True,
                          num_static=3, num_moving=2)
        clip = render_clip(cfg)
        large = clip.object_ids == 6 + cfg.num_static
        coverage = large.mean(axis=(1, 2))
        assert 0.2 <= np.median(coverage) <= 0.4 and coverage.min() > 0.15 and coverage.max() < 0.45, coverage
        background = clip.object_ids < 6
        assert background.mean(axis=(1, 2)).min() >= 0.4
        speed = np.linalg.norm(clip.labels["flow"][large[:-1]], axis=-1)
        assert np.median(speed) > 0.015 * W  # 2 % of the width per frame at most, so a few pixels
        assert clip.labels["dynamic_mask"][large[::4]].all()


def _face_luma_std(clip, ids) -> float:
    luma = clip.frames[0].astype(np.float64).mean(axis=-1)
    return float(np.mean([luma[clip.object_ids[0] == i].std() for i in ids if (clip.object_ids[0] == i).sum() > 50]))


@pytest.mark.parametrize("scene", ["room", "open"])
def test_low_texture_background_is_nearly_uniform_and_objects_keep_texture(scene):
    kwargs = dict(seed=4, height=H, width=W, num_frames=5, camera="static", scene=scene)
    rich, low = render_clip(SceneConfig(**kwargs)), render_clip(SceneConfig(**kwargs, texture="low"))
    faces = range(6)
    assert _face_luma_std(low, faces) < 0.2 * _face_luma_std(rich, faces)
    objects = range(6, 6 + 5)
    assert _face_luma_std(low, objects) > 0.8 * _face_luma_std(rich, objects)
    np.testing.assert_array_equal(low.labels["flow"], rich.labels["flow"])  # same geometry


def _first_autocorrelation_peak(rows: np.ndarray) -> tuple[int, float] | None:
    """The first local maximum (lag, normalised autocorrelation) of image rows (N, L), lags 2-30."""
    signal = rows - rows.mean(axis=1, keepdims=True)
    lags = np.arange(1, 32)
    corr = np.array([np.mean(signal[:, :-lag] * signal[:, lag:]) for lag in lags]) / np.mean(signal**2)
    for i in range(1, len(lags) - 1):
        if corr[i] > corr[i - 1] and corr[i] >= corr[i + 1]:
            return int(lags[i]), float(corr[i])
    return None


def test_repeated_texture_has_one_dominant_period_of_8_to_12_pixels():
    h, w = 96, 144
    far_wall = 5  # z = +6, facing the static camera
    for seed in (0, 1):
        kwargs = dict(seed=seed, height=h, width=w, num_frames=5, camera="static", num_static=0, num_moving=1)
        repeated = render_clip(SceneConfig(**kwargs, texture="repeated"))
        rich = render_clip(SceneConfig(**kwargs))
        rows = [v for v in range(h) if (repeated.object_ids[0][v, 30 : w - 30] == far_wall).all()]
        assert len(rows) > 10
        luma = [clip.frames[0].astype(np.float64).mean(axis=-1)[rows, 30 : w - 30] for clip in (repeated, rich)]
        peak = _first_autocorrelation_peak(luma[0])
        assert peak is not None and 8 <= peak[0] <= 12 and peak[1] > 0.5, peak
        rich_peak = _first_autocorrelation_peak(luma[1])
        assert rich_peak is None or rich_peak[1] < 0.3, rich_peak  # no dominant period in the rich texture


def test_degradations_change_the_frames_only():
    kwargs = dict(seed=6, height=48, width=72, num_frames=5, camera="static", large_mover=True)
    clean = render_clip(SceneConfig(**kwargs))
    noisy = render_clip(SceneConfig(**kwargs, noise_std=3.0))
    drift = render_clip(SceneConfig(**kwargs, exposure_drift=0.15))
    blurred = render_clip(SceneConfig(**kwargs, motion_blur=0.8))
    for other in (noisy, drift, blurred):
        for name, value in clean.labels.items():
            np.testing.assert_array_equal(other.labels[name], value, err_msg=name)
        np.testing.assert_array_equal(other.object_ids, clean.object_ids)
        assert not np.array_equal(other.frames, clean.frames)
    residual = noisy.frames.astype(np.float64) - clean.frames
    assert 2.7 < residual.std() < 3.3
    np.testing.assert_array_equal(drift.frames[0], clean.frames[0])  # the gain starts at 1
    gain = drift.frames[-1].astype(np.float64).mean() / clean.frames[-1].astype(np.float64).mean()
    assert 0.12 < abs(gain - 1) < 0.16
    # Blur smears the moving object and leaves the tripod's background nearly sharp.
    change = np.abs(blurred.frames.astype(np.float64) - clean.frames).mean(axis=-1)
    mover = clean.object_ids == 6 + 3
    assert change[mover].mean() > 4 * change[clean.object_ids < 6].mean()
    assert "motion blur" in blurred.caption and "sensor noise" in noisy.caption


def test_mover_speed_scales_the_movers_motion_and_zero_stops_them():
    kwargs = dict(seed=3, height=48, width=72, num_frames=9, camera="static", num_static=0, num_moving=1)
    clips = {speed: render_clip(SceneConfig(**kwargs, mover_speed=speed)) for speed in (0.0, 0.5, 1.0)}
    np.testing.assert_array_equal(clips[0.5].object_ids[0], clips[1.0].object_ids[0])  # same mover, same start
    assert clips[1.0].labels["dynamic_mask"].any() and not clips[0.0].labels["dynamic_mask"].any()
    assert not clips[0.0].labels["scene_flow"].any()
    both = clips[0.5].labels["dynamic_mask"][0] & clips[1.0].labels["dynamic_mask"][0]
    half, full = (np.linalg.norm(clips[s].labels["scene_flow"][0][both], axis=-1) for s in (0.5, 1.0))
    assert abs(np.median(half / full) - 0.5) < 0.05  # translation and spin halved


def test_new_options_are_deterministic_by_seed():
    kwargs = dict(height=24, width=32, num_frames=5, scene="open", large_mover=True, texture="repeated", noise_std=2.0)
    a, b = render_clip(SceneConfig(seed=8, **kwargs)), render_clip(SceneConfig(seed=8, **kwargs))
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.labels["flow"], b.labels["flow"])
    assert not np.array_equal(a.frames, render_clip(SceneConfig(seed=9, **kwargs)).frames)



def test_captions_name_the_new_options_and_keep_the_old_wording():
    assert scene_caption(SceneConfig()) == "a dolly shot of a textured room with 3 still and 2 moving objects"
    cfg = SceneConfig(scene="open", camera="static", large_mover=True, num_moving=1, exposure_drift=0.1)
    caption = scene_caption(cfg)
    assert caption == ("a static shot of an open yard under a cloudy sky with 3 still and 1 moving object, "
                       "one of them large and close, with changing exposure")


@pytest.mark.parametrize("kwargs", [dict(num_moving=2, num_static=3), dict(large_mover=True, camera="static")])
def test_the_ray_culling_keeps_every_ray_that_meets_an_object(kwargs):
    """`_cast` intersects an object only with the rays its bounding-sphere test keeps: every ray that
    meets a sphere or a box (from the cameras, and from inside an object's bounding sphere) is kept,
    and most rays from the camera are not."""
    from pipelines.synthetic import _build_scene, _bounding_radius, _intersect, _may_hit_sphere

    scene = _build_scene(SceneConfig(seed=11, height=H, width=W, num_frames=9, **kwargs))
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(20000, 3)) * rng.uniform(0.2, 3.0, (20000, 1))  # unnormalised, as `_rays` gives
    kept_share = []
    for ob in scene.objects:
        pose = ob.pose(4.0)
        origins = [scene.c2w_world[0, :3, 3], scene.c2w_world[8, :3, 3]]
        if ob.kind == "box":  # beside a face, inside the bounding sphere: every ray is kept
            origins.append(pose[:3, 3] + pose[:3, :3] @ np.array([1.1 * ob.size[0], 0.0, 0.0]))
        for origin in origins:
            hits = np.isfinite(_intersect(ob, pose, origin, dirs))
            kept = _may_hit_sphere(pose[:3, 3], _bounding_radius(ob), origin, dirs, np.einsum("ij,ij->i", dirs, dirs))
            assert hits.sum() > 20 and not (hits & ~kept).any()
            kept_share.append(kept.mean())
    assert min(kept_share) < 0.05
