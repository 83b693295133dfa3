"""Dynamic masks from flow rigidity (labelers.dynamic_mask) against synthetic ground truth."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from labelers.depth import MultiViewDepth, triangulate_flow
from labelers.dis_flow import DisFlow
from labelers.dynamic_mask import (
    DynamicMaskConfig,
    FlowRigidityMasks,
    SourceTexture,
    carried_inv_depth,
    clean_mask,
    colour_consistent,
    colour_cut,
    grown_into,
    grown_regions,
    label_depth_and_masks,
    label_masks_given_depth,
    residual_threshold,
    rigidity_residual,
    seeded_regions,
    smooth_continuation,
    snap_to_edges,
)
from labelers.flow import compute_pair_flows, consecutive_pairs, key_frame_pairs
from labelers.geometry import grow_mask, relative_pose, rigid_flow
from labelers.neural_depth import NeuralDepth, NeuralDepthConfig
from labelers.sfm.background import refit_to_background
from pair_flows_helpers import make_pair_flows, select_pairs
from pipelines.synthetic import SKY_ID, SceneConfig, render_clip
from pipelines.synthetic_set import SCENE_CLASSES

SCALE = 0.37  # the unknown per-clip scale of the cameras
KEYS = [0, 4, 8]


def moving_pixels(clip) -> np.ndarray:
    """(T, H, W) bool: pixels on objects that move (ids 6 + num_static and up)."""
    return clip.object_ids >= 6 + clip.config.num_static


def scaled_c2w(clip) -> np.ndarray:
    c2w = clip.labels["c2w"].astype(np.float64).copy()
    c2w[:, :3, 3] *= SCALE
    return c2w


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def false_positive_rate(mask: np.ndarray, truth: np.ndarray) -> float:
    return float((mask & ~truth).sum() / (~truth).sum())


@pytest.fixture(scope="module")
def clips():
    """Clips of 9 frames (key frames 0, 4, 8) with their DIS flows on consecutive and key pairs."""
    out = {}
    for camera, num_moving in (("dolly", 2), ("orbit", 2), ("pan", 2), ("static", 2), ("dolly", 0), ("orbit", 0)):
        cfg = SceneConfig(seed=0, height=120, width=180, num_frames=9, stride=4, camera=camera, num_moving=num_moving)
        clip = render_clip(cfg)
        pairs = consecutive_pairs(9) + key_frame_pairs(9, 4)
        out[(camera, num_moving)] = (clip, compute_pair_flows(DisFlow(), clip.frames, pairs))
    return out


def test_rigid_flow_residual_is_zero_on_static_and_large_on_moving_pixels(clips):
    clip, _ = clips[("orbit", 2)]
    labels = clip.labels
    c2w = scaled_c2w(clip)
    depth = labels["depth"] * SCALE
    flow, valid, K = labels["key_flow"][0], labels["key_flow_valid"][0], labels["K"]
    residual = rigidity_residual(flow, valid, K[0], c2w[0], K[4], c2w[4], depth[0])
    moving = labels["dynamic_mask"][0]
    known = np.isfinite(residual)
    assert np.nanmax(residual[~moving & known]) < 1e-3
    tau = residual_threshold(labels["key_flow"][0], 1.0, 0.05)
    assert np.mean(residual[moving & known] > tau[moving & known]) > 0.8


def test_depth_free_residual_is_the_homography_residual_for_a_panning_camera(clips):
    clip, _ = clips[("pan", 2)]
    labels = clip.labels
    flow, valid, K, c2w = labels["key_flow"][0], labels["key_flow_valid"][0], labels["K"], labels["c2w"]
    residual = rigidity_residual(flow, valid, K[0], c2w[0], K[4], c2w[4])
    moving = labels["dynamic_mask"][0]
    known = np.isfinite(residual)
    assert np.nanpercentile(residual[~moving & known], 99) < 0.05  # exact flow, pure rotation: no parallax
    assert np.mean(residual[moving & known] > 1.0) > 0.8


@pytest.mark.parametrize("camera", ["dolly", "orbit", "pan", "static"])
def test_weight_free_chain_finds_moving_objects(clips, camera):
    """Masks without depth -> multi-view depth -> key-frame masks, on DIS flow."""
    clip, flows = clips[(camera, 2)]
    result = label_depth_and_masks(clip.frames, flows, scaled_c2w(clip), clip.labels["K"], KEYS, MultiViewDepth())
    truth = clip.labels["dynamic_mask"]
    assert result.dynamic_mask.shape == truth.shape and result.dynamic_mask.dtype == bool
    # Measured IoU: dolly 0.88, orbit 0.82, pan 0.91, static 0.71; target 0.6.
    assert iou(result.dynamic_mask, truth) > {"static": 0.62}.get(camera, 0.72)
    assert iou(result.dynamic_mask[-1], truth[-1]) > 0.6  # the last key frame, from its backward flow
    assert false_positive_rate(result.dynamic_mask, truth) < 0.02
    assert not (result.depth.depth_valid[KEYS] & result.dynamic_mask).any()


@pytest.mark.parametrize("camera", ["dolly", "orbit"])
def test_no_false_alarms_without_moving_objects(clips, camera):
    clip, flows = clips[(camera, 0)]
    result = label_depth_and_masks(clip.frames, flows, scaled_c2w(clip), clip.labels["K"], KEYS, MultiViewDepth())
    assert result.dynamic_mask.mean() < 0.02  # measured 0.0
    assert result.frame_masks.mean() < 0.02


@pytest.mark.parametrize("camera", ["dolly", "orbit", "static"])
def test_masks_with_dense_depth(clips, camera):
    """Given depth on every pixel (as a network gives), the rigid-flow residual decides."""
    clip, flows = clips[(camera, 2)]
    masks = FlowRigidityMasks()
    c2w = scaled_c2w(clip)
    frame_masks = masks.frame_masks(flows, c2w, clip.labels["K"])
    dynamic = masks.key_masks(flows, c2w, clip.labels["K"], KEYS, clip.labels["depth"] * SCALE, frame_masks)
    truth = clip.labels["dynamic_mask"]
    assert iou(dynamic, truth) > 0.7  # measured dolly 0.91, orbit 0.93, static 0.79
    assert false_positive_rate(dynamic, truth) < 0.02


def test_clean_mask_removes_specks_and_fills_holes():
    raw = np.zeros((60, 80), bool)
    cv2.circle(raw.view(np.uint8), (40, 30), 12, 1, -1)
    raw[28:33, 38:43] = False  # a hole inside the object
    raw[5, 5] = raw[50, 70] = True  # isolated false alarms
    cleaned = clean_mask(raw, DynamicMaskConfig())
    assert cleaned[30, 40] and cleaned[28:33, 38:43].all()
    assert not cleaned[5, 5] and not cleaned[50, 70]
    truth = np.zeros_like(raw)
    cv2.circle(truth.view(np.uint8), (40, 30), 12, 1, -1)
    assert iou(cleaned, truth) > 0.95


def test_regions_grow_into_neighbours_that_hint_at_motion_up_to_a_radius():
    """A flagged region takes the pixels of score >= min_score it reaches in radius_px 8-connected
    steps; a hinted region it does not touch, and pixels past the radius, stay out; a region that
    would grow past max_ratio times its flags keeps its flags alone."""
    flagged = np.zeros((40, 60), bool)
    flagged[10:14, 10:14] = True
    score = np.full(flagged.shape, 0.2)
    score[8:30, 8:16] = 0.6  # a hinted strip below the flags: 16 rows past them
    score[10:14, 30:40] = 0.9  # hinted, not touching
    score[20, 12] = np.nan  # no verdict: a gap the growth goes around
    grown = grown_into(flagged, score, 0.5, 4)
    assert grown[8:18, 8:16].all() and not grown[18:, :].any()  # 4 steps from row 13
    assert not grown[:, 16:].any() and not grown[:8].any()
    assert grown_into(flagged, score, 0.5, 40)[8:30, 8:16].sum() == 22 * 8 - 1
    two = flagged.copy()
    two[32:34, 44:46] = True  # a second region, in a sea of hints: 4 flags -> 100 pixels
    score[26:40, 36:56] = 0.6
    capped = grown_into(two, score, 0.5, 4, max_ratio=5.0)  # the first: 16 flags -> 80 pixels
    assert capped[8:18, 8:16].all() and capped[26:40, 36:56].sum() == 4
    np.testing.assert_array_equal(grown_into(two, score, 0.5, 4, max_ratio=1.5), two)
    np.testing.assert_array_equal(grown_into(flagged, score, 0.7, 4), flagged)
    np.testing.assert_array_equal(grown_into(flagged, score, 0.5, 0), flagged)
    for bad in (dict(grow_min_score=1.0), dict(grow_radius_px=-1), dict(grow_max_ratio=0.5)):
        with pytest.raises(ValueError, match="grow_min_score"):
            DynamicMaskConfig(**bad)


def ball_on_cloudy_sky(seed: int, shape: tuple[int, int], centre_xy: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 RGB of a mottled red ball of radius 15 px on a cloudy blue sky, and its (H, W) bool disc."""
    rng = np.random.default_rng(seed)
    rgb = np.clip(rng.normal((70, 110, 200), 12, (*shape, 3)), 0, 255)
    disc = np.zeros(shape, np.uint8)
    cv2.circle(disc, centre_xy, 15, 1, -1)
    disc = disc.astype(bool)
    rgb[disc] = np.clip(rng.normal((190, 60, 70), 25, (disc.sum(), 3)), 0, 255)
    return rgb.astype(np.uint8), disc


def test_what_a_region_takes_up_keeps_its_colour():
    """`colour_consistent`: of the pixels added to a red, textured region, those of its own colours
    stay and a band of the blue, textured background around it goes, whatever the noise; a region
    with too few flags to fit keeps what it adds; colour_ring_px 0 keeps everything."""
    rgb, disc = ball_on_cloudy_sky(0, (60, 80), (40, 30))
    flags = disc & (np.arange(80) < 40)[None]  # its left half
    band = grow_mask(disc, 6) & ~disc
    added = (disc & ~flags) | band
    cfg = DynamicMaskConfig()
    kept = colour_consistent(flags, added, rgb, cfg)
    assert kept[disc & ~flags].mean() > 0.97 and kept[band].mean() < 0.03
    np.testing.assert_array_equal(colour_consistent(flags, added, rgb, replace(cfg, colour_ring_px=0)), added)
    speck = np.zeros_like(flags)
    speck[30, 37:40] = True  # 3 flags, touching the disc's right half: too few for a colour model
    np.testing.assert_array_equal(colour_consistent(speck, added & ~speck, rgb, cfg), added & ~speck)
    for bad in (dict(colour_ring_px=-1), dict(colour_margin=-0.5)):
        with pytest.raises(ValueError, match="colour_ring_px"):
            DynamicMaskConfig(**bad)


def test_grabcut_cuts_a_band_of_background_off_its_region():
    """`colour_cut`: a region made of a red, mottled ball and a 6 px band of the cloudy sky beside it
    loses the band and keeps the ball; a region of the sky's own colours, which the cut would
    gut, stays whole; the same labels on every call; grabcut_ring_px 0 changes nothing."""
    rgb, disc = ball_on_cloudy_sky(1, (80, 100), (35, 40))
    band = grow_mask(disc, 6) & ~disc
    patch = np.zeros_like(disc)
    patch[30:45, 75:90] = True  # sky only
    cfg = DynamicMaskConfig()
    cut = colour_cut(disc | band | patch, rgb, cfg)
    assert cut[disc].mean() > 0.97 and cut[band].mean() < 0.1
    assert cut[patch].all()
    assert not colour_cut(patch, rgb, replace(cfg, grabcut_min_keep=0.0)).any()  # what the guard keeps
    np.testing.assert_array_equal(colour_cut(disc | band | patch, rgb, cfg), cut)
    np.testing.assert_array_equal(colour_cut(disc | band, rgb, replace(cfg, grabcut_ring_px=0)), disc | band)
    for bad in (dict(grabcut_ring_px=-1), dict(grabcut_iterations=0), dict(grabcut_min_keep=1.5)):
        with pytest.raises(ValueError, match="grabcut_ring_px"):
            DynamicMaskConfig(**bad)


def test_regions_grow_into_triangulated_depth_unless_it_floods_them():
    """Growth enters depth-valid pixels only for triangulated depth; where that floods a region past
    grow_max_ratio, the region keeps the growth it had through depth-free pixels."""
    flagged = np.zeros((40, 60), bool)
    flagged[10:20, 10:20] = True
    score = np.full(flagged.shape, 0.2)
    score[10:20, 20:22] = 0.6  # hinted, without depth: 20 pixels right of the 100 flags
    score[20:22, 10:20] = 0.6  # hinted, with depth: 20 pixels below (140 in all, under 1.5 times 100)
    depth_valid = np.zeros(flagged.shape, bool)
    depth_valid[20:, :] = True
    cfg = DynamicMaskConfig()
    free_only = flagged.copy()
    free_only[10:20, 20:22] = True
    np.testing.assert_array_equal(grown_regions(flagged, score, depth_valid, False, cfg), free_only)
    both = grown_regions(flagged, score, depth_valid, True, cfg)
    np.testing.assert_array_equal(both, free_only | (score >= 0.4) & depth_valid)
    np.testing.assert_array_equal(
        grown_regions(flagged, score, depth_valid, True, replace(cfg, grow_into_triangulated=False)), free_only)
    flood = score.copy()
    flood[20:, :] = 0.6  # a sea of hinted depth-valid pixels: growth through it passes 1.5 times the flags
    np.testing.assert_array_equal(grown_regions(flagged, flood, depth_valid, True, cfg), free_only)
    np.testing.assert_array_equal(grown_regions(flagged, score, None, True, cfg), free_only | (score >= 0.4))


def test_a_slow_movers_region_grows_where_depth_is_free_or_triangulated_and_not_where_it_is_known():
    """Movers at half the default speed (seed 7 dolly, T = 17): multi-view depth leaves part of them
    without depth and gives the rest the consistent wrong depth their motion along the lines implies;
    the threshold finds part of them, and growth the rest (measured IoU 0.553 without growth, 0.609
    growing where depth is free, 0.678 also into triangulated depth; false alarms 0.05, 0.09, 0.12 %).
    With exact depth everywhere nothing grows."""
    clip = render_clip(SceneConfig(seed=7, height=120, width=180, num_frames=17, stride=4, camera="dolly",
                                   num_moving=2, mover_speed=0.5))
    flows = compute_pair_flows(DisFlow(), clip.frames, consecutive_pairs(17) + key_frame_pairs(17, 4))
    c2w, K, keys, truth = clip.labels["c2w"], clip.labels["K"], [0, 4, 8, 12, 16], clip.labels["dynamic_mask"]
    configs = {"off": DynamicMaskConfig(grow_min_score=0.0), "free": DynamicMaskConfig(grow_into_triangulated=False),
               "on": DynamicMaskConfig()}
    found = {name: label_depth_and_masks(clip.frames, flows, c2w, K, keys, MultiViewDepth(),
                                         FlowRigidityMasks(cfg)).dynamic_mask for name, cfg in configs.items()}
    assert iou(found["free"], truth) > iou(found["off"], truth) + 0.03
    assert iou(found["on"], truth) > iou(found["free"], truth) + 0.04
    assert false_positive_rate(found["on"], truth) < 0.003
    exact = {name: label_masks_given_depth(flows, c2w, K, keys, clip.labels["depth"], FlowRigidityMasks(cfg),
                                           frames=clip.frames) for name, cfg in configs.items()}
    np.testing.assert_array_equal(exact["on"], exact["off"])


def test_static_points_are_carried_to_where_another_frames_camera_sees_them(clips):
    """Exact static inverse depth of the other frames of an orbit, carried to frame 4: where a
    point lands, the nearest is that of the surface seen there (to the cells' few pixels)."""
    clip, _ = clips[("orbit", 0)]
    c2w = scaled_c2w(clip)
    inv_depth = (1.0 / (clip.labels["depth"] * SCALE)).astype(np.float32)
    others = inv_depth.copy()
    others[4] = np.nan  # frame 4's own points do not count
    carried = carried_inv_depth(others, c2w, clip.labels["K"], 4, max_gap=4)
    landed = carried > 0
    assert landed.mean() > 0.95
    log_ratio = np.abs(np.log(carried[landed] / inv_depth[4][landed]))
    assert np.median(log_ratio) < 0.02 and np.mean(log_ratio < 0.1) > 0.95
    # frames beyond max_gap carry nothing; frames without static points neither
    only_first = np.full_like(inv_depth, np.nan)
    only_first[0] = inv_depth[0]
    assert not carried_inv_depth(only_first, c2w, clip.labels["K"], 8, max_gap=4).any()
    assert carried_inv_depth(only_first, c2w, clip.labels["K"], 4, max_gap=4).mean() > 0


def test_a_carried_point_changes_the_residual_of_its_own_pixel_only(clips):
    """Pixels without a carried point (NaN or 0) keep the frame's plausible range, near end included;
    a pixel carried its own triangulated inverse depth is left its distance from the epipolar line."""
    clip, _ = clips[("dolly", 2)]
    c2w, K = scaled_c2w(clip), clip.labels["K"]
    flow_px, valid = clip.labels["key_flow"][0], clip.labels["key_flow_valid"][0]
    plain = rigidity_residual(flow_px, valid, K[0], c2w[0], K[4], c2w[4])
    carried = np.full(plain.shape, np.nan, np.float32)
    np.testing.assert_array_equal(rigidity_residual(flow_px, valid, K[0], c2w[0], K[4], c2w[4],
                                                    carried_inv_depth_src=carried), plain)
    tri = triangulate_flow(flow_px, K[0], K[4], relative_pose(c2w[0], c2w[4]))
    carried[:, :90] = np.where(tri.inv_depth[:, :90] > 0, tri.inv_depth[:, :90], np.nan)  # left half only
    carried[0, 100] = 0.0
    mixed = rigidity_residual(flow_px, valid, K[0], c2w[0], K[4], c2w[4], carried_inv_depth_src=carried)
    np.testing.assert_array_equal(mixed[:, 90:], plain[:, 90:])
    left = np.isfinite(plain[:, :90]) & np.isfinite(carried[:, :90])
    expected = np.minimum(plain[:, :90], np.abs(tri.epipolar_px[:, :90]))
    np.testing.assert_allclose(mixed[:, :90][left], expected[left], atol=1e-6)
    assert (mixed[:, :90][left] < plain[:, :90][left] - 0.5).sum() > 50  # the movers' along-line excess is gone


def test_a_static_object_an_orbit_nears_is_carried_from_frames_that_found_it_static():
    """Room orbit 205 (T = 49): late in the clip the camera passes close to a static sphere, nearer
    than the frame's plausible range, and the frame masks flagged it; earlier frames found it static,
    near the range's end. Measured: late false alarms 1.50 -> 0.15 %, movers' recall 0.459 -> 0.447 (a
    mover that moves along its epipolar lines, unflagged in nearby frames, may match the points carried
    from there). With `carry_range_margin` 1 (points within their frame's range only): 0.48 %, 0.459;
    1.3: 0.15 %, 0.439."""
    cfg = replace(SCENE_CLASSES["room"](205, 120, 180, 49), fps=8.0)
    clip = render_clip(cfg)
    flows = compute_pair_flows(DisFlow(), clip.frames, consecutive_pairs(49))
    moving = moving_pixels(clip)
    found = {carry: FlowRigidityMasks(DynamicMaskConfig(carry_frames=carry)).frame_masks(
        flows, clip.labels["c2w"], clip.labels["K"]) for carry in (0, 48)}
    late = slice(24, 49)
    false_alarms = {carry: masks[late][~moving[late]].mean() for carry, masks in found.items()}
    assert false_alarms[0] > 0.01 and false_alarms[48] < min(0.003, false_alarms[0] / 4)
    assert found[48][moving].mean() > found[0][moving].mean() - 0.02
    for bad in (dict(carry_clear_px=-1), dict(carry_rel_tol=-0.1), dict(carry_min_parallax_px=-1.0),
                dict(carry_range_margin=0.9)):
        with pytest.raises(ValueError, match="carry_frames"):
            DynamicMaskConfig(**bad)


def test_the_part_of_a_neared_static_object_no_frame_saw_within_range_is_reached_by_its_surface():
    """Room orbit 205 at 240x360 (T = 49, the renderer's cameras): part of the sphere the camera nears
    comes into view only once nearer than the range, so no frame carries a point to it; the freed part's
    smooth surface reaches it. Measured: late false alarms 0.73 % with `carry_smooth_rel` 0, 0.15 % with
    it; movers' recall 0.629 -> 0.628."""
    cfg = replace(SCENE_CLASSES["room"](205, 240, 360, 49), fps=8.0)
    clip = render_clip(cfg)
    flows = compute_pair_flows(DisFlow(), clip.frames, consecutive_pairs(49))
    moving = moving_pixels(clip)
    masks = FlowRigidityMasks().frame_masks(flows, clip.labels["c2w"], clip.labels["K"])
    late = slice(24, 49)
    assert masks[late][~moving[late]].mean() < 0.003
    assert masks[moving].mean() > 0.6


def test_freed_pixels_extend_over_their_smooth_surface_only():
    """A sphere-like surface whose inverse depth changes 0.5 % per pixel is reached from a seed on it;
    a surface in front of it (a 20 % jump, as a mover has against the surface it passes) and pixels
    without an inverse depth are not, nor is anything beyond them."""
    height, width = 40, 60
    cols = np.arange(width)[None, :].repeat(height, axis=0)
    inv_depth = 0.2 * 1.005 ** cols  # smooth along the rows and down the columns
    inv_depth[10:20, 30:40] *= 1.2  # a nearer patch on it
    inv_depth[:, 50] = np.nan  # a column without depth cuts off the right edge
    seeds = np.zeros((height, width), bool)
    seeds[0, 0] = True
    allowed = np.ones((height, width), bool)
    reached = smooth_continuation(seeds, allowed, inv_depth, 0.01)
    expected = np.ones((height, width), bool)
    expected[10:20, 30:40] = False
    expected[:, 50:] = False
    np.testing.assert_array_equal(reached, expected)
    assert smooth_continuation(seeds, allowed, inv_depth, 0.3)[15, 35]  # the jump is within 30 %
    steep = smooth_continuation(seeds, allowed, inv_depth, 0.004)  # 0.5 % steps across columns exceed it
    np.testing.assert_array_equal(steep, cols == 0)  # down the seed's column the depth is constant
    assert not smooth_continuation(seeds, allowed, inv_depth, 0.0).any()
    only_left = allowed.copy()
    only_left[:, 20] = False  # not allowed: a barrier even where the depth is smooth
    assert not smooth_continuation(seeds, only_left, inv_depth, 0.01)[:, 21:].any()
    with pytest.raises(ValueError, match="carry_smooth_rel"):
        DynamicMaskConfig(carry_smooth_rel=-0.01)


def test_regions_of_flags_need_flags_on_texture_that_determines_the_flow():
    """A region stays when at least `seed_min_share` of its pixels, and `seed_min_px`, are flagged on
    seed texture; flags elsewhere, and seeds outside the flags, do not count."""
    cfg = DynamicMaskConfig()  # 1 % and 20 pixels
    dynamic = np.zeros((100, 200), bool)
    seeds = np.zeros_like(dynamic)
    dynamic[10:20, 10:20] = True  # 100 px, 25 on seeds: kept
    seeds[10:15, 10:15] = True
    dynamic[10:20, 40:50] = True  # 100 px, 10 on seeds: below 20 px
    seeds[10:12, 40:45] = True
    seeds[30:40, 40:50] = True  # seeds beside the region, not under its flags
    dynamic[50:100, 100:200] = True  # 5000 px, 30 on seeds: below 1 %
    seeds[50:53, 100:110] = True
    kept = seeded_regions(dynamic, seeds, cfg)
    assert kept[10:20, 10:20].all() and kept.sum() == 100
    assert seeded_regions(dynamic, seeds, replace(cfg, seed_min_share=0.005)).sum() == 5100
    assert not seeded_regions(np.zeros_like(dynamic), seeds, cfg).any()
    with pytest.raises(ValueError, match="seed_min_share"):
        DynamicMaskConfig(seed_min_share=1.5)


def test_seed_texture_is_texture_above_the_noise():
    """`SourceTexture.seeds`: the 9 px structure tensor at least `seed_min_snr` times the noise variance;
    a flat grey half under the same noise has none, the textured half is seed texture."""
    rng = np.random.default_rng(3)
    grey = np.full((80, 160), 120.0)
    grey[:, 80:] += cv2.GaussianBlur(rng.normal(0, 100, (80, 80)), (0, 0), 1.5)
    grey += rng.normal(0, 2.0, grey.shape)
    frame = np.repeat(np.clip(grey, 0, 255).astype(np.uint8)[..., None], 3, axis=2)[None]
    texture = SourceTexture.of(frame, DynamicMaskConfig())
    assert texture.seeds[0][10:-10, 95:-10].mean() > 0.95 and texture.seeds[0][10:-10, 10:65].mean() < 0.02
    assert SourceTexture.of(frame, DynamicMaskConfig(seed_min_snr=0)).seeds is None


def _disc_on_texture(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A (1, 60, 80, 3) frame: a reddish disc of radius 14 on random grey texture, and the disc's mask."""
    rng = np.random.default_rng(seed)
    grey = cv2.GaussianBlur(rng.uniform(60, 190, (60, 80)).astype(np.float32), (0, 0), 1.0)
    frame = np.repeat(grey[..., None], 3, axis=2)
    disc = np.zeros((60, 80), np.uint8)
    cv2.circle(disc, (40, 30), 14, 1, -1)
    frame[disc.astype(bool)] = [200, 60, 50] + rng.normal(0, 8, (disc.sum(), 3))
    return np.clip(frame, 0, 255).astype(np.uint8)[None], disc.astype(bool)


def test_mask_borders_move_to_the_frames_edges():
    """Flow smears a mover's motion over a band beside it: a mask 3 px too wide, or 2 px too
    narrow, is brought back to the disc's edge; radius 0 leaves it as it is."""
    frames, disc = _disc_on_texture()
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))
    wide = cv2.dilate(disc.astype(np.uint8), kernel).astype(bool)
    narrow = cv2.erode(disc.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))).astype(bool)
    cfg = DynamicMaskConfig()
    for mask in (wide, narrow):
        snapped = snap_to_edges(mask[None], frames, cfg)[0]
        assert iou(mask, disc) < 0.8 and iou(snapped, disc) > 0.93, (iou(mask, disc), iou(snapped, disc))
    assert (snap_to_edges(wide[None], frames, DynamicMaskConfig(guided_radius_px=0))[0] == wide).all()
    assert not snap_to_edges(np.zeros((1, 60, 80), bool), frames, cfg).any()


def test_key_masks_compose_missing_key_flows_and_check_inputs(clips):
    clip, flows = clips[("orbit", 2)]
    consecutive_only = select_pairs(flows, lambda i, j: abs(i - j) == 1)
    masks = FlowRigidityMasks()
    dynamic = masks.key_masks(consecutive_only, scaled_c2w(clip), clip.labels["K"], KEYS)
    assert iou(dynamic, clip.labels["dynamic_mask"]) > 0.5  # 4 composed hops per key pair
    with pytest.raises(ValueError, match="key_frames"):
        masks.key_masks(flows, scaled_c2w(clip), clip.labels["K"], [4, 0])
    with pytest.raises(ValueError, match="depth"):
        masks.key_masks(flows, scaled_c2w(clip), clip.labels["K"], KEYS, np.zeros((9, 10, 10)))
    with pytest.raises(ValueError, match="no flow"):
        masks.key_masks(select_pairs(flows, lambda i, j: (i, j) == (0, 1)), scaled_c2w(clip), clip.labels["K"], KEYS)
    with pytest.raises(ValueError, match="view_gaps"):
        DynamicMaskConfig(view_gaps=())


class _PriorOnly(NeuralDepth):
    """`NeuralDepth` alignment and validation on a given network output (no network is loaded)."""

    def __init__(self, prediction: np.ndarray) -> None:
        self.config = NeuralDepthConfig()
        self.reference = MultiViewDepth()
        self._prediction = prediction

    def predict_inverse_depth(self, frames):
        return self._prediction


def _network_like(depth: np.ndarray, rel_error: float, seed: int = 0) -> np.ndarray:
    """Affine-invariant inverse depth with a smooth relative error field (whole regions too near or far)."""
    rng = np.random.default_rng(seed)
    field = cv2.resize(rng.uniform(-1, 1, (4, 6)).astype(np.float32), depth.shape[:0:-1], interpolation=cv2.INTER_CUBIC)
    inverse = 1.0 / depth * (1.0 + rel_error * np.clip(field, -1, 1)) * (1.0 + rng.normal(0, 0.02, depth.shape))
    return (2.7 * inverse + 0.04).astype(np.float32)


@pytest.fixture(scope="module")
def sideways_mover():
    """Orbit seed 6: the big object moves sideways with the camera, along its epipolar lines."""
    cfg = SceneConfig(seed=6, height=120, width=180, num_frames=17, stride=4, camera="orbit", num_moving=2)
    clip = render_clip(cfg)
    pairs = consecutive_pairs(17) + key_frame_pairs(17, 4)
    return clip, compute_pair_flows(DisFlow(), clip.frames, pairs)


def test_a_depth_prior_shows_motion_along_epipolar_lines(sideways_mover):
    clip, _ = sideways_mover
    labels = clip.labels
    c2w, K, depth = scaled_c2w(clip), labels["K"], labels["depth"] * SCALE
    flow, valid = labels["key_flow"][0], labels["key_flow_valid"][0]
    moving, cfg = labels["dynamic_mask"][0], DynamicMaskConfig()
    tau = residual_threshold(flow, cfg.residual_abs_px, cfg.residual_rel)
    depth_free = rigidity_residual(flow, valid, K[0], c2w[0], K[4], c2w[4]) / tau
    with_prior = rigidity_residual(flow, valid, K[0], c2w[0], K[4], c2w[4], prior_depth_src=depth[0]) / tau
    known = np.isfinite(depth_free) & np.isfinite(with_prior)
    assert np.mean(depth_free[moving & known] > 1) < 0.1  # measured 0.015: a static point at another depth explains it
    assert np.mean(with_prior[moving & known] > 1) > 0.7  # measured 0.86 (pixels next to depth edges are left out)
    assert np.mean(with_prior[~moving & known] > 1) < 0.01


@pytest.mark.parametrize("num_moving", [2, 0])
def test_chain_with_a_network_prior_finds_what_geometry_alone_cannot(sideways_mover, num_moving):
    if num_moving:
        clip, flows = sideways_mover
    else:
        cfg = SceneConfig(seed=6, height=120, width=180, num_frames=17, stride=4, camera="orbit", num_moving=0)
        clip = render_clip(cfg)
        pairs = consecutive_pairs(17) + key_frame_pairs(17, 4)
        flows = compute_pair_flows(DisFlow(), clip.frames, pairs)
    c2w, K, keys, truth = scaled_c2w(clip), clip.labels["K"], [0, 4, 8, 12, 16], clip.labels["dynamic_mask"]
    # A network 5 % off in inverse depth after alignment, three draws of its error field.
    depth = clip.labels["depth"] * SCALE
    networks = [_PriorOnly(_network_like(depth, 0.05, seed)) for seed in range(3 if num_moving else 1)]
    results = [label_depth_and_masks(clip.frames, flows, c2w, K, keys, network) for network in networks]
    assert max(false_positive_rate(r.dynamic_mask, truth) for r in results) < 0.02  # measured 0.0017
    if num_moving:
        weight_free = label_depth_and_masks(clip.frames, flows, c2w, K, keys, MultiViewDepth())
        assert iou(weight_free.dynamic_mask, truth) < 0.2  # measured 0.0
        ious = [iou(r.dynamic_mask, truth) for r in results]
        assert min(ious) > 0.65, ious  # measured 0.75, 0.76, 0.76
        # Pixels found moving through the prior carry its depth, for scene flow.
        found = results[0].dynamic_mask & ~weight_free.dynamic_mask
        labelled = results[0].depth
        assert labelled.depth_valid[keys][found].mean() > 0.9
        ratio = labelled.depth[keys][found] / depth[keys][found]
        assert np.median(np.abs(ratio - 1)) < 0.1


def _turned(src_to_dst: np.ndarray, degrees: float) -> np.ndarray:
    """The relative pose with the destination camera tilted by `degrees` (about its x axis)."""
    turn = np.eye(4)
    turn[:3, :3] = cv2.Rodrigues(np.array([np.radians(degrees), 0.0, 0.0]))[0]
    return turn @ src_to_dst


@pytest.mark.parametrize("camera", ["dolly", "orbit"])
def test_refit_to_background_recovers_a_turned_pair(clips, camera):
    """Exact key flow of a clip with two movers: a pose turned by 1 deg is refitted to the truth."""
    clip, _ = clips[(camera, 2)]
    labels, c2w = clip.labels, scaled_c2w(clip)
    flow, valid, K = labels["key_flow"][0], labels["key_flow_valid"][0], labels["K"]
    true_pose = relative_pose(c2w[0], c2w[4])
    refit = refit_to_background(flow, valid, K[0], K[4], _turned(true_pose, 1.0))
    error = cv2.Rodrigues(refit.src_to_dst[:3, :3] @ true_pose[:3, :3].T)[0]
    assert np.degrees(np.linalg.norm(error)) < 0.02  # measured 0.004 (dolly) and 0.000 (orbit)
    assert refit.given_px > 1.0 and refit.refit_px < 0.02  # measured 1.85 and 2.38 px, refits under 0.002 px
    assert np.linalg.norm(refit.src_to_dst[:3, 3]) == pytest.approx(np.linalg.norm(true_pose[:3, 3]))
    right = refit_to_background(flow, valid, K[0], K[4], true_pose)
    assert right.given_px < 0.02 and right.refit_px < 0.02
    assert refit.epipolar_ratio(translating=True) > 20 and right.epipolar_ratio(translating=True) < 0.5  # floored
    assert refit_to_background(flow, np.zeros_like(valid), K[0], K[4], true_pose) is None


def test_key_masks_refit_a_pair_the_cameras_got_wrong(clips):
    """The camera of frame 8 turned by 1.5 deg: its key pairs' static flow is off the cameras'
    epipolar lines by 3 px; the masks refit those pairs to the background's flow."""
    clip, flows = clips[("dolly", 2)]
    c2w, K, truth = scaled_c2w(clip), clip.labels["K"], clip.labels["dynamic_mask"]
    wrong = c2w.copy()
    wrong[8] = c2w[0] @ np.linalg.inv(_turned(relative_pose(c2w[0], c2w[8]), 1.5))
    found = {}
    for ratio in (0.0, 2.0):
        masks = FlowRigidityMasks(DynamicMaskConfig(refit_min_ratio=ratio))
        found[ratio] = masks.key_masks(flows, wrong, K, KEYS, frame_masks=masks.frame_masks(flows, c2w, K))
    right = FlowRigidityMasks().key_masks(flows, c2w, K, KEYS)
    # Measured false alarms without the refit 0.55, with it 0.003 (right cameras 0.003); IoU 0.862 and 0.861.
    assert false_positive_rate(found[0.0], truth) > 0.3
    assert false_positive_rate(found[2.0], truth) < 0.02
    assert iou(found[2.0], truth) > iou(right, truth) - 0.05
    # a camera that does not translate keeps its pose, whatever the flow says
    fixed = np.tile(np.eye(4), (9, 1, 1))
    assert FlowRigidityMasks()._view_cameras(*flows.lookup(0, 4), 0, 4, fixed, K) is fixed
    with pytest.raises(ValueError, match="refit_min_ratio"):
        DynamicMaskConfig(refit_min_ratio=0.5)
    with pytest.raises(ValueError, match="refit_depth_stride_px"):
        DynamicMaskConfig(refit_depth_stride_px=0)


def _mover_over_the_right(clip):
    """(labels, c2w, K, depth, key flow 0 -> 4, its validity, the true relative pose) of a dolly whose
    key flow's right 70 % is one coherent motion: a surface at a quarter of the scene's depth under a
    camera turned 8 deg, as a large mover near the lens gives (rigid under no pose with the camera's
    length of travel)."""
    labels, c2w, K = clip.labels, scaled_c2w(clip), clip.labels["K"]
    depth = labels["depth"] * SCALE
    flow, valid = labels["key_flow"][0].copy(), labels["key_flow_valid"][0]
    true_pose = relative_pose(c2w[0], c2w[4])
    other = c2w.copy()
    other[4] = c2w[0] @ np.linalg.inv(_turned(true_pose, 8.0))
    right = int(0.3 * flow.shape[1])
    flow[:, right:] = rigid_flow(0.25 * depth[0], K[0], c2w[0], K[4], other[4])[0][:, right:]
    return labels, c2w, K, depth, flow, valid, true_pose


def test_a_refit_onto_a_mover_that_fills_the_frame_is_refused_where_depth_holds(clips):
    """Exact key flow of a dolly whose right 70 % is taken by one coherent motion (a surface at a
    quarter of the scene's depth under a camera turned 8 deg, as a large mover near the lens gives: rigid under
    no pose with the camera's length of travel): the background fit follows it, and only the depth
    tells the cameras were right."""
    labels, c2w, K, depth, flow, valid, true_pose = _mover_over_the_right(clips[("dolly", 2)][0])
    masks = FlowRigidityMasks()
    without_depth = masks._view_cameras(flow, valid, 0, 4, c2w, K)
    turn = cv2.Rodrigues(relative_pose(without_depth[0], without_depth[4])[:3, :3] @ true_pose[:3, :3].T)[0]
    assert np.degrees(np.linalg.norm(turn)) > 5  # the refit follows the dominant motion (measured 8.0 deg)
    assert masks._view_cameras(flow, valid, 0, 4, c2w, K, depth) is c2w
    # cameras that are wrong are still refitted with depth: the static flow is rigid under the refit
    wrong = c2w.copy()
    wrong[4] = c2w[0] @ np.linalg.inv(_turned(true_pose, 1.5))
    exact = labels["key_flow"][0]
    refitted = masks._view_cameras(exact, valid, 0, 4, wrong, K, depth)
    error = cv2.Rodrigues(relative_pose(refitted[0], refitted[4])[:3, :3] @ true_pose[:3, :3].T)[0]
    assert np.degrees(np.linalg.norm(error)) < 0.05  # measured 0.007 deg
    # too few pixels with depth: no evidence, the refit stands as without depth
    sparse = np.zeros_like(depth)
    sparse[0, :4, :4] = depth[0, :4, :4]
    assert masks._view_cameras(flow, valid, 0, 4, c2w, K, sparse) is not c2w


def test_a_refit_must_explain_the_frame_masks_static_pixels(clips):
    """The same mover over the right 70 % of a dolly's key flow, which the frame masks flag: the
    refit follows the mover and explains the static pixels worse than the cameras, so the right
    cameras stay (without depth, as for triangulated depth); cameras that are wrong are still refitted."""
    labels, c2w, K, _, flow, valid, true_pose = _mover_over_the_right(clips[("dolly", 2)][0])
    static = np.ones(labels["depth"].shape, bool)
    static[:, :, int(0.3 * flow.shape[1]):] = False
    masks = FlowRigidityMasks()
    assert masks._view_cameras(flow, valid, 0, 4, c2w, K) is not c2w  # all pixels: the refit follows the mover
    assert masks._view_cameras(flow, valid, 0, 4, c2w, K, None, static) is c2w
    wrong = c2w.copy()
    wrong[4] = c2w[0] @ np.linalg.inv(_turned(true_pose, 1.5))
    refitted = masks._view_cameras(labels["key_flow"][0], valid, 0, 4, wrong, K, None, static)
    error = cv2.Rodrigues(relative_pose(refitted[0], refitted[4])[:3, :3] @ true_pose[:3, :3].T)[0]
    assert np.degrees(np.linalg.norm(error)) < 0.05


@pytest.mark.parametrize("camera", ["dolly", "orbit"])
def test_longer_views_find_slow_movers(camera):
    """Seed 5's small movers add 0.4-1 px over one key interval (under the threshold) and
    2-5 px over four; with exact depth only the longer views find them."""
    cfg = SceneConfig(seed=5, height=120, width=180, num_frames=17, stride=4, camera=camera, num_moving=2)
    clip = render_clip(cfg)
    flows = compute_pair_flows(DisFlow(), clip.frames, consecutive_pairs(17) + key_frame_pairs(17, 4))
    c2w, K, keys, truth = scaled_c2w(clip), clip.labels["K"], [0, 4, 8, 12, 16], clip.labels["dynamic_mask"]
    depth = clip.labels["depth"] * SCALE
    found = {}
    for multiples in ((), (2, 4)):  # the last key frame as its views alone find it
        masks = FlowRigidityMasks(DynamicMaskConfig(key_view_multiples=multiples, last_from_previous=False,
                                                    from_neighbours=False))
        found[multiples] = masks.key_masks(flows, c2w, K, keys, depth, masks.frame_masks(flows, c2w, K))
    # Measured IoU without longer views: dolly 0.31, orbit 0.31; with them 0.56, 0.45 (0.55, 0.41
    # before longer views needed a hint in the key pair, `longer_view_min_score`).
    assert iou(found[()], truth) < 0.35
    assert iou(found[(2, 4)], truth) > iou(found[()], truth) + 0.08
    # every key frame gets a longer view, the last ones looking back
    assert all(iou(found[(2, 4)][n], truth[n]) > 0.28 for n in range(len(keys)))
    assert false_positive_rate(found[(2, 4)], truth) < 0.03  # measured 0.004, 0.012 (object borders)
    # the mirror views (as far back in time) see the slow movers too: with every pixel taken as
    # weak texture (`confirm_max_snr`), measured IoU dolly 0.570, orbit 0.438
    masks = FlowRigidityMasks(DynamicMaskConfig(key_view_multiples=(2, 4), last_from_previous=False,
                                                from_neighbours=False))
    weak = SourceTexture(weak=np.ones((17, 120, 180), bool))
    confirmed = masks.key_masks(flows, c2w, K, keys, depth, masks.frame_masks(flows, c2w, K), texture=weak)
    assert iou(confirmed, truth) > iou(found[(2, 4)], truth) - 0.03


def with_wrong_patch(flows, pair: tuple[int, int]):
    """The flows with a 4 px error in a 30x30 patch of `pair`'s forward flow."""
    p = [tuple(given) for given in flows.pairs.tolist()].index(pair)
    corrupted = flows.flow_fwd_px.copy()
    corrupted[p, 40:70, 60:90] += np.float32([4.0, 0.0])
    return replace(flows, flow_fwd_px=corrupted)


def test_longer_views_need_a_hint_in_the_key_pair(clips):
    """Flow that goes wrong later in the clip (a 4 px error in a 30x30 patch of pair (4, 8)) reaches
    key frame 0's mask only through its longer view 0 -> 8; the key pair (0, 4) does not hint at it."""
    clip, flows = clips[("dolly", 0)]
    c2w, K = scaled_c2w(clip), clip.labels["K"]
    flows = with_wrong_patch(flows, (4, 8))
    flagged = {}
    for min_score in (0.0, 0.5):
        masks = FlowRigidityMasks(DynamicMaskConfig(longer_view_min_score=min_score))
        flagged[min_score] = masks.key_masks(flows, c2w, K, KEYS)[0].sum()
    assert flagged[0.0] > 400 and flagged[0.5] < 60  # measured 720 and 33 pixels
    with pytest.raises(ValueError, match="longer_view_min_score"):
        DynamicMaskConfig(longer_view_min_score=1.5)


def test_weak_texture_needs_the_mirror_view(clips):
    """A 4 px error in a 30x30 patch of pair (4, 8) flags key frame 4 through its own view; where
    the texture is weak, the mirror view back to key frame 0 (right flow there) keeps it static.
    Elsewhere, and on the key frames without a mirror view in the clip, one view still decides."""
    clip, flows = clips[("dolly", 0)]
    c2w, K = scaled_c2w(clip), clip.labels["K"]
    flows = with_wrong_patch(flows, (4, 8))
    masks = FlowRigidityMasks()
    everywhere, nowhere = np.ones((9, 120, 180), bool), np.zeros((9, 120, 180), bool)
    found = {name: masks.key_masks(flows, c2w, K, KEYS, texture=SourceTexture(weak=weak))
             for name, weak in (("none", None), ("weak", everywhere), ("textured", nowhere))}
    assert found["none"][1].sum() > 600 and found["weak"][1].sum() < 60  # measured 896 and 0 pixels
    np.testing.assert_array_equal(found["textured"], found["none"])
    np.testing.assert_array_equal(found["weak"][[0, 2]], found["none"][[0, 2]])


def test_frame_mask_flags_on_weak_texture_need_the_mirror_view(clips):
    """Where the key pair's flow is invalid (a 30x30 patch of pair (4, 8)) the frame mask decides; on
    weak texture only where the mirror view back to key frame 0 (right flow there) does not find the
    pixel static: frame masks flag a faint surface near the camera from the same wrong flow."""
    clip, flows = clips[("dolly", 0)]
    c2w, K = scaled_c2w(clip), clip.labels["K"]
    valid = flows.valid_fwd.copy()
    valid[[tuple(given) for given in flows.pairs.tolist()].index((4, 8)), 40:70, 60:90] = False
    flows = replace(flows, valid_fwd=valid)
    frame_masks = np.zeros((9, 120, 180), bool)
    frame_masks[4, 40:70, 60:90] = True
    masks = FlowRigidityMasks()
    everywhere, nowhere = np.ones((9, 120, 180), bool), np.zeros((9, 120, 180), bool)
    found = {name: masks.key_masks(flows, c2w, K, KEYS, frame_masks=frame_masks, texture=SourceTexture(weak=weak))
             for name, weak in (("none", None), ("weak", everywhere), ("textured", nowhere))}
    assert found["none"][1, 40:70, 60:90].mean() > 0.9 and not found["weak"][1, 40:70, 60:90].any()
    np.testing.assert_array_equal(found["textured"], found["none"])


def test_key_masks_keep_only_regions_with_flags_on_seed_texture(clips):
    """A 4 px error in a 30x30 patch of pair (4, 8) flags a region on key frame 4 of a clip without
    movers. Where that patch has no seed texture (a faint surface), `key_masks` drops the region.
    On a clip with movers and the seed texture its frames really have, the movers' masks stay."""
    clip, flows = clips[("dolly", 0)]
    c2w, K = scaled_c2w(clip), clip.labels["K"]
    flows = with_wrong_patch(flows, (4, 8))
    masks = FlowRigidityMasks()
    seeds = np.ones((9, 120, 180), bool)
    seeds[4, 30:80, 50:100] = False  # key frame 4's patch is faint
    plain = masks.key_masks(flows, c2w, K, KEYS)
    seeded = masks.key_masks(flows, c2w, K, KEYS, texture=SourceTexture(seeds=seeds))
    assert plain[1].sum() > 600 and not seeded[1].any()  # measured 896 pixels and 0
    np.testing.assert_array_equal(seeded[[0, 2]], plain[[0, 2]])
    clip, flows = clips[("dolly", 2)]
    c2w, K = scaled_c2w(clip), clip.labels["K"]
    texture = SourceTexture.of(clip.frames, DynamicMaskConfig(), period_frames=KEYS)
    with_seeds = masks.key_masks(flows, c2w, K, KEYS, texture=texture)
    without = masks.key_masks(flows, c2w, K, KEYS, texture=replace(texture, seeds=None))
    truth = clip.labels["dynamic_mask"]
    assert texture.seeds[KEYS].mean() > 0.5 and (with_seeds & truth).sum() == (without & truth).sum() > 0


@pytest.mark.parametrize("camera", ["dolly", "orbit"])
def test_movers_in_weak_texture_are_seen_in_the_mirror_view(clips, camera):
    """Movers move over both key intervals around a key frame: the mirror view confirms them."""
    clip, flows = clips[(camera, 2)]
    c2w, K, truth = scaled_c2w(clip), clip.labels["K"], clip.labels["dynamic_mask"]
    depth = clip.labels["depth"] * SCALE
    masks = FlowRigidityMasks()
    alone = masks.key_masks(flows, c2w, K, KEYS, depth)[1]
    confirmed = masks.key_masks(flows, c2w, K, KEYS, depth, texture=SourceTexture(weak=np.ones((9, 120, 180), bool)))[1]
    # measured IoU dolly 0.871 -> 0.901, orbit 0.788 -> 0.793 (false alarms on the movers' borders go)
    assert iou(confirmed, truth[1]) > iou(alone, truth[1]) - 0.03


def left_half_blurred(frames: np.ndarray) -> np.ndarray:
    """(9, 120, 180, 3) frames whose left half is smoothed into weak texture."""
    out = frames.copy()
    out[:, :, :90] = cv2.GaussianBlur(out[:, :, :90].reshape(9 * 120, 90, 3), (0, 0), 12).reshape(9, 120, 90, 3)
    return out


class _TextureSpy(FlowRigidityMasks):
    """Records the texture that the labelling entry points hand to `key_masks`."""

    def key_masks(self, *args, **kwargs):
        self.texture = kwargs.get("texture", args[9] if len(args) > 9 else None)
        return super().key_masks(*args, **kwargs)


def test_labelling_entry_points_hand_the_key_frames_weak_texture(clips):
    """End to end: `label_depth_and_masks` (the pipeline's path) and `label_masks_given_depth` with
    frames give `key_masks` the weak-texture and seed-texture maps of the key frames, so the mirror
    views and the seed rule apply."""
    clip, flows = clips[("dolly", 2)]
    c2w, K = scaled_c2w(clip), clip.labels["K"]
    frames = left_half_blurred(clip.frames)
    expected = SourceTexture.of(frames, DynamicMaskConfig(), period_frames=KEYS).weak
    assert expected[KEYS].any()
    for run in (lambda spy: label_depth_and_masks(frames, flows, c2w, K, KEYS, MultiViewDepth(), spy),
                lambda spy: label_masks_given_depth(flows, c2w, K, KEYS, clip.labels["depth"] * SCALE, spy, frames)):
        spy = _TextureSpy()
        run(spy)
        np.testing.assert_array_equal(spy.texture.weak, expected)
        np.testing.assert_array_equal(spy.texture.seeds, SourceTexture.of(frames, DynamicMaskConfig(),
                                                                          period_frames=KEYS).seeds)


def test_last_key_frame_takes_the_regions_of_the_one_before_it_holds_part_of():
    """`_completed_from`: a region of M_{S-2} read along the flow joins the last key frame's mask where
    that mask holds part of it; a region it holds nothing of, and pixels without valid flow, stay out."""
    previous = np.zeros((40, 60), bool)
    previous[5:15, 5:15] = True  # region A
    previous[25:35, 40:50] = True  # region B
    flow = np.zeros((40, 60, 2), np.float32)
    flow[..., 0] = -3.0  # the last key frame sees everything 3 px right of where S-2 saw it
    valid = np.ones((40, 60), bool)
    valid[5:15, 16:18] = False
    own = np.zeros_like(previous)
    own[9:11, 9:11] = True  # part of A, at its new place
    out = FlowRigidityMasks._completed_from(own, previous, (flow, valid))
    expected = np.zeros_like(previous)
    expected[5:15, 8:18] = True
    expected &= valid
    np.testing.assert_array_equal(out, expected | own)


def test_key_masks_are_completed_from_their_neighbours_where_the_key_pair_allows():
    """`_completed_by_neighbours`: a region passes along the key frames that hold part of it, from the
    end back and then onwards, onto pixels whose key-pair score is unknown or at least
    `neighbour_min_score`; a region a key frame holds nothing of, and the last key frame, stay as
    they were."""
    keys, shape = [0, 4, 8, 12], (30, 40)
    pairs = list(zip(keys[:-1], keys[1:]))
    still = [np.zeros((*shape, 2))] * len(pairs)
    flows = make_pair_flows(pairs, still, [np.ones(shape, bool)] * len(pairs), still, [np.ones(shape, bool)] * len(pairs))
    region = np.zeros(shape, bool)
    region[5:15, 5:15] = True
    other = np.zeros(shape, bool)
    other[20:25, 25:35] = True
    masks = np.zeros((4, *shape), bool)
    masks[0, 5:7, 5:7] = True  # part of the region only
    masks[1, 13:15, 13:15] = True  # another part
    masks[2] = region | other
    scores = np.full((4, *shape), 0.5, np.float32)
    scores[0, 5:15, 12:15] = 0.1  # the key pair finds these still
    scores[0, 8:10, 8:10] = np.nan  # no key-pair flow: the neighbour decides
    out = FlowRigidityMasks()._completed_by_neighbours(masks, scores, flows, keys)
    np.testing.assert_array_equal(out[2], masks[2])  # it holds both
    np.testing.assert_array_equal(out[1], region)  # the other region touches nothing it holds
    np.testing.assert_array_equal(out[0], region & ~(scores[0] < 0.2))
    np.testing.assert_array_equal(out[3], masks[3])
    open_gate = FlowRigidityMasks(DynamicMaskConfig(neighbour_min_score=0.0))
    np.testing.assert_array_equal(open_gate._completed_by_neighbours(masks, scores, flows, keys)[0], region)
    with pytest.raises(ValueError, match="neighbour_min_score"):
        DynamicMaskConfig(neighbour_min_score=1.5)


def test_a_neighbours_mask_is_read_with_its_borders_on_its_own_frames_edges():
    """With the key frames' RGB, the neighbour's region is snapped to its frame's edges before it is
    read: a 3 px band past a dark object's border stays out; without the frames it comes along."""
    keys, shape = [0, 4, 8], (30, 40)
    pairs = list(zip(keys[:-1], keys[1:]))
    still = [np.zeros((*shape, 2))] * len(pairs)
    flows = make_pair_flows(pairs, still, [np.ones(shape, bool)] * len(pairs), still, [np.ones(shape, bool)] * len(pairs))
    key_rgb = np.full((3, *shape, 3), 220, np.uint8)
    key_rgb[:, 5:25, 5:20] = 30  # the object
    obj = np.zeros(shape, bool)
    obj[5:25, 5:20] = True
    masks = np.zeros((3, *shape), bool)
    masks[0, 8:12, 8:12] = True  # part of the object
    masks[1, 5:25, 5:23] = True  # the object and a band beside it
    scores = np.full((3, *shape), 0.5, np.float32)
    completer = FlowRigidityMasks()
    unsnapped = completer._completed_by_neighbours(masks, scores, flows, keys)[0]
    snapped = completer._completed_by_neighbours(masks, scores, flows, keys, key_rgb)[0]
    assert (unsnapped & ~obj).sum() == 60
    np.testing.assert_array_equal(snapped, obj)


@pytest.mark.parametrize("camera", ["dolly", "orbit"])
def test_key_masks_completed_from_their_neighbours_find_more_of_the_movers(camera):
    """End to end on seed 2 (17 frames, two movers, weight-free depth): the neighbours' regions give each
    key frame the parts of a mover that its own views miss. Measured IoU dolly 0.696 -> 0.870, orbit
    0.646 -> 0.808; false alarms 0.29 -> 0.34 %, 0.02 -> 0.04 % (borders the neighbours' flow smears)."""
    clip = render_clip(SceneConfig(seed=2, height=120, width=180, num_frames=17, stride=4, camera=camera, num_moving=2))
    flows = compute_pair_flows(DisFlow(), clip.frames, consecutive_pairs(17) + key_frame_pairs(17, 4))
    labels, truth, keys = clip.labels, clip.labels["dynamic_mask"], list(range(0, 17, 4))
    masks = {flag: label_depth_and_masks(clip.frames, flows, labels["c2w"], labels["K"], keys, MultiViewDepth(),
                                         FlowRigidityMasks(DynamicMaskConfig(from_neighbours=flag))).dynamic_mask
             for flag in (False, True)}
    assert iou(masks[True], truth) > iou(masks[False], truth) + 0.08
    assert false_positive_rate(masks[True], truth) < 0.01


def test_the_band_smeared_beside_the_movers_is_cut_off_by_colour():
    """Degraded open dolly 1102 (a seed first seen in session 33; 17 frames, true cameras, weight-free
    depth): DIS smears the movers' motion onto the blurred, noisy sky beside them; the key pairs flag
    part of that band, and growth and the neighbours' regions took more of it up. The colour steps
    (`colour_consistent` on what growth and the neighbours add, then `colour_cut` on every region)
    keep what has its region's colours rather than the ring's around it (measured: neither step IoU
    0.789, false alarms 1.34 %; the first alone 0.871, 0.54 %; both 0.895, 0.26 %)."""
    cfg = SCENE_CLASSES["degraded"](1102, 120, 180, 17)
    clip = render_clip(cfg)
    flows = compute_pair_flows(DisFlow(), clip.frames, consecutive_pairs(17) + key_frame_pairs(17, cfg.stride))
    labels, truth, keys = clip.labels, clip.labels["dynamic_mask"], list(range(0, 17, cfg.stride))
    configs = {"without": DynamicMaskConfig(colour_ring_px=0, grabcut_ring_px=0), "with": DynamicMaskConfig()}
    masks = {name: label_depth_and_masks(clip.frames, flows, labels["c2w"], labels["K"], keys, MultiViewDepth(),
                                         FlowRigidityMasks(mask_cfg)).dynamic_mask for name, mask_cfg in configs.items()}
    assert false_positive_rate(masks["without"], truth) > 0.011  # the band
    assert false_positive_rate(masks["with"], truth) < 0.004  # the colour test alone leaves 0.54 %
    assert iou(masks["with"], truth) > iou(masks["without"], truth) + 0.08


def test_last_key_frame_completed_on_a_dolly():
    """A dolly's last key frame sees its movers from one side only; with `last_from_previous` its mask
    gains what M_{S-2} shows (measured IoU 0.746 -> 0.897), the other key frames stay as they were.
    Without growth into triangulated depth, which alone takes it to 0.900 here (0.910 with both)."""
    clip = render_clip(SceneConfig(seed=0, height=120, width=180, num_frames=17, stride=4, camera="dolly", num_moving=2))
    flows = compute_pair_flows(DisFlow(), clip.frames, consecutive_pairs(17) + key_frame_pairs(17, 4))
    labels, truth, keys = clip.labels, clip.labels["dynamic_mask"], list(range(0, 17, 4))
    configs = {flag: DynamicMaskConfig(last_from_previous=flag, grow_into_triangulated=False) for flag in (False, True)}
    masks = {flag: label_depth_and_masks(clip.frames, flows, labels["c2w"], labels["K"], keys, MultiViewDepth(),
                                         FlowRigidityMasks(cfg)).dynamic_mask for flag, cfg in configs.items()}
    np.testing.assert_array_equal(masks[True][:-1], masks[False][:-1])
    assert (masks[True][-1] >= masks[False][-1]).all()
    assert iou(masks[True][-1], truth[-1]) > iou(masks[False][-1], truth[-1]) + 0.1
    assert false_positive_rate(masks[True][-1], truth[-1]) < 0.002  # measured 0.0007


def test_weak_texture_of_the_key_frames_only():
    """`SourceTexture.of` marks weak texture (smoothed away) on the key frames it is asked for."""
    clip = render_clip(SceneConfig(seed=0, height=120, width=180, num_frames=9, stride=4, camera="dolly", num_moving=0))
    frames = left_half_blurred(clip.frames)
    weak = SourceTexture.of(frames, DynamicMaskConfig(), period_frames=[0, 4]).weak
    assert weak[[0, 4], 20:100, 10:80].mean() > 0.9 and weak[[0, 4], :, 100:].mean() < 0.01
    assert not weak[[1, 2, 3, 5, 6, 7, 8]].any()
    assert SourceTexture.of(frames, DynamicMaskConfig(confirm_max_snr=0.0)).weak is None
    with pytest.raises(ValueError, match="confirm_max_snr"):
        DynamicMaskConfig(confirm_max_snr=-1.0)


def test_longer_views_stay_inside_the_clip():
    masks = FlowRigidityMasks(DynamicMaskConfig(key_view_multiples=(2, 4)))
    pairs = [(i, i + h) for i in range(9) for h in (1, 2) if i + h < 9]  # both directions: hops -2, -1, 1, 2
    flows = make_pair_flows(pairs, [np.zeros((4, 5, 2))] * len(pairs), [np.ones((4, 5), bool)] * len(pairs),
                            [np.zeros((4, 5, 2))] * len(pairs), [np.ones((4, 5), bool)] * len(pairs))
    assert sorted(masks._longer_views(flows, 0, 2, 9)) == [4, 8]
    only_neighbours = select_pairs(flows, lambda i, j: abs(j - i) == 1)
    assert sorted(masks._longer_views(only_neighbours, 0, 2, 9)) == [4]  # 8 is more than max_hops (6) away
    assert sorted(masks._longer_views(flows, 6, 8, 9)) == [2]  # 10 and 14 are past the end: 2 looks back, -2 is out
    assert sorted(masks._longer_views(flows, 8, 6, 9)) == [0, 4]
    with pytest.raises(ValueError, match="key_view_multiples"):
        DynamicMaskConfig(key_view_multiples=(1,))


@pytest.fixture(scope="module")
def open_clip():
    """Orbit over open ground under a textured sky 80 m away, two movers (120x180, 9 frames), with DIS flows."""
    cfg = SceneConfig(seed=0, height=120, width=180, num_frames=9, stride=4, camera="orbit", num_moving=2, scene="open")
    clip = render_clip(cfg)
    pairs = consecutive_pairs(9) + key_frame_pairs(9, 4)
    return clip, compute_pair_flows(DisFlow(), clip.frames, pairs)


@pytest.mark.parametrize("pair", [0, 1])
def test_far_sky_moves_like_the_rotation_and_is_not_flagged(open_clip, pair):
    """Exact key-frame flow plus 0.3 px noise, depth known everywhere but on the sky (as the
    multi-view depth leaves it): the sky lies beyond the farthest valid depth, and only the
    plausible range reaching infinity keeps it static."""
    clip, _ = open_clip
    labels, src, dst = clip.labels, KEYS[pair], KEYS[pair + 1]
    c2w, K = scaled_c2w(clip), labels["K"]
    flow = labels["key_flow"][pair] + np.random.default_rng(pair).normal(0, 0.3, labels["key_flow"][pair].shape)
    valid, moving = labels["key_flow_valid"][pair], labels["dynamic_mask"][pair]
    sky = clip.object_ids[src] == SKY_ID
    depth = np.where(sky, 0.0, labels["depth"][src] * SCALE)
    tau = residual_threshold(flow, 1.0, 0.05)
    for depth_src in (None, depth):
        score = rigidity_residual(flow, valid, K[src], c2w[src], K[dst], c2w[dst], depth_src) / tau
        known = np.isfinite(score)
        # Measured with depth: sky 0.0, static 0.0005 (0.31 and 0.12 when the range stopped at the farthest depth).
        assert np.mean(score[sky & known] > 1) < 0.01
        assert np.mean(score[~moving & known] > 1) < 0.01
        assert np.mean(score[moving & known] > 1) > 0.9  # measured 0.96-1.0


def test_weight_free_chain_under_a_far_sky(open_clip):
    clip, flows = open_clip
    result = label_depth_and_masks(clip.frames, flows, scaled_c2w(clip), clip.labels["K"], KEYS, MultiViewDepth())
    truth = clip.labels["dynamic_mask"]
    sky = clip.object_ids[KEYS] == SKY_ID
    # Measured IoU 0.79, false alarms 1.0 % of static pixels and 1.5 % of the sky, all on a
    # low-contrast sky patch where DIS is 6-16 px off yet forward-backward consistent (with
    # exact flow nothing there is flagged); before the range reached infinity 0.28, 22 %, 54 %.
    assert iou(result.dynamic_mask, truth) > 0.6
    assert false_positive_rate(result.dynamic_mask, truth) < 0.02
    assert result.dynamic_mask[sky].mean() < 0.03
