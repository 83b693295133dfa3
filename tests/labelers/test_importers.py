"""SpatialVID and ViPE importers against analytic ground truth written as each upstream writer does.

Ground truth: a camera moving inside a box-shaped room (static walls) that holds a box (the
"dynamic" object); depth is ray cast exactly. The label grids are chosen so that every label
pixel centre maps onto an annotation pixel centre, so nearest-neighbour resampling has an
exact answer: the rendered depth at the label pixel with the label intrinsics.

SpatialVID's depth lives on its tracker's grid (a 332x591 resize of any 16:9 source, cropped
to 328x584), so the SpatialVID depth labels sample that grid every 8th pixel and run past
its crop; its masks live on the source grid and get a label grid of their own.
"""

from __future__ import annotations

import functools
import io
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import OpenEXR
import pytest
from annotation_writers import (
    encode_exr,
    spatialvid_tracker,
    spatialvid_tracker_K,
    write_spatialvid,
    write_vipe,
    write_zip,
)
from scipy.spatial.transform import Rotation

from labelers.importers import (
    AnnotationError,
    AnnotationSet,
    import_spatialvid,
    import_vipe,
    read_spatialvid,
    to_label_frames,
)
from labelers.importers.common import decode_exr_depth

ROOM_HALF = np.array([4.0, 2.0, 6.0])  # y points down: the ceiling is y = -2
BOX_LO, BOX_HI = np.array([-0.6, -0.4, 2.0]), np.array([0.4, 0.5, 2.8])
SURFACE_WALL, SURFACE_BOX, SURFACE_CEILING = 0, 1, 2
F16_REL = 2.0**-11  # float16 relative rounding error (10 stored mantissa bits)

# SpatialVID: clip starts at source frame 30, annotated every 3rd clip frame (like its ~5 fps);
# labels every 2nd source frame. The source principal point is the image centre, as upstream sets it.
SV_OFFSET = 30
SV_CLIP_FRAMES = 3 * np.arange(10)
SV_SOURCE = (90, 160)
SV_TRACKER, SV_CROP = spatialvid_tracker(SV_SOURCE)  # (332, 591), (328, 584)
SV_K_SOURCE = np.array([[125.0, 0, 80.0], [0, 126.0, 45.0], [0, 0, 1]])
SV_FRAME_INDEX = 31 + 2 * np.arange(13)
# ViPE: run with streams.frame_skip=3 on a 30 fps source at half resolution (processed frame i
# is source frame 3 i); masks on every 2nd processed frame; labels are consecutive source frames.
VP_SKIP, VP_SOURCE_FPS = 3, 30.0
VP_FRAMES = VP_SKIP * np.arange(25)
VP_MASK_INDS = 2 * np.arange(13)
VP_MASK_FRAMES = VP_SKIP * VP_MASK_INDS
VP_SOURCE, VP_IMAGE, VP_LABEL = (180, 240), (90, 120), (30, 36)
VP_FRAME_INDEX = 10 + np.arange(13)
VP_PHRASES = {SURFACE_BOX: "person", SURFACE_CEILING: "sky"}
VIPE_SKY_DEPTH = 1000.0  # ViPE clamps inverse depth at 1e-3


def resize_crop(scale: float, crop_left: int, crop_top: int = 0) -> np.ndarray:
    """Source -> label pixels for a resize by `scale` then a crop (pixel centres at integers)."""
    return np.array(
        [[scale, 0, 0.5 * scale - 0.5 - crop_left], [0, scale, 0.5 * scale - 0.5 - crop_top], [0, 0, 1.0]]
    )


def tracker_grid(step: int, first: int, source_size=SV_SOURCE) -> np.ndarray:
    """Source -> label pixels putting label pixel j on tracker pixel first + step j (source u = that * w0 / w1)."""
    (h1, w1), (h0, w0) = spatialvid_tracker(source_size)[0], source_size
    sx, sy = w1 / (step * w0), h1 / (step * h0)
    return np.array([[sx, 0, -first / step], [0, sy, -first / step], [0, 0, 1.0]])


def half_to_full() -> np.ndarray:
    """Pixels of a half-resolution image -> full-resolution pixels."""
    return np.array([[2.0, 0, 0.5], [0, 2.0, 0.5], [0, 0, 1]])


# Depth labels: every 8th tracker pixel from (2, 2); the last row (330) and column (586) lie in
# the tracker's frame but past its crop (328x584): upstream has no depth there.
SV_LABEL = (42, 74)
SV_TO_LABEL = tracker_grid(8, 2)
SV_MASK_LABEL = (18, 30)
SV_MASK_TO_LABEL = resize_crop(1 / 5, 1)  # 90x160 -> 18x32 -> crop 18x30
VP_TO_LABEL = resize_crop(1 / 6, 2)  # 180x240 -> 30x40 -> crop 30x36


# --------------------------------------------------------------------------- ground truth
def trajectory(frames: np.ndarray, wobble: float = 0.0) -> np.ndarray:
    """c2w (N, 4, 4) at (fractional) source frames.

    wobble = 0: constant angular and linear velocity (a screw motion), along which slerp of
    rotation and linear interpolation of the centre are exact. wobble > 0 adds smooth
    oscillations that interpolation can only approximate.
    """
    t = np.asarray(frames, np.float64) - SV_OFFSET
    rotvec = np.outer(t, [0.002, 0.005, -0.001]) + wobble * np.stack(
        [np.sin(0.21 * t), np.cos(0.17 * t), np.sin(0.13 * t + 1)], axis=1
    )
    R = (Rotation.from_rotvec([0.05, -0.1, 0.02]) * Rotation.from_rotvec(rotvec)).as_matrix()
    centre = np.array([0.2, -0.1, -2.0]) + np.outer(t, [0.01, -0.003, 0.03])
    centre += wobble * np.stack([np.sin(0.3 * t), np.cos(0.25 * t), np.sin(0.2 * t)], axis=1)
    c2w = np.tile(np.eye(4), (len(t), 1, 1))
    c2w[:, :3, :3], c2w[:, :3, 3] = R, centre
    return c2w


def render(c2w: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Exact z-depth (h, w) and the surface seen (wall, box or ceiling) at each pixel centre."""
    h, w = size
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    rays_cam = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T  # z component 1
    d = rays_cam @ c2w[:3, :3].T
    o = c2w[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        exits = np.maximum((-ROOM_HALF - o) / d, (ROOM_HALF - o) / d)  # per axis
        t_room = exits.min(axis=-1)
        ceiling = (exits.argmin(axis=-1) == 1) & (d[..., 1] < 0)
        t1, t2 = (BOX_LO - o) / d, (BOX_HI - o) / d
    t_near, t_far = np.minimum(t1, t2).max(axis=-1), np.maximum(t1, t2).min(axis=-1)
    box = (t_far >= t_near) & (t_near > 0) & (t_near < t_room)
    surface = np.where(box, SURFACE_BOX, np.where(ceiling, SURFACE_CEILING, SURFACE_WALL))
    return np.where(box, t_near, t_room), surface


def render_frames(frames: np.ndarray, K: np.ndarray, size: tuple[int, int], wobble: float = 0.0):
    """Depth (N, h, w) and surfaces (N, h, w) at source frames."""
    out = [render(c2w, K, size) for c2w in trajectory(frames, wobble)]
    return np.stack([d for d, _ in out]), np.stack([s for _, s in out])


def gt_c2w_label(frame_index: np.ndarray, wobble: float = 0.0) -> np.ndarray:
    c2w = trajectory(frame_index, wobble)
    return np.linalg.inv(c2w[0]) @ c2w


def vp_K_image(frames: np.ndarray) -> np.ndarray:
    """ViPE intrinsics (pixels of its 90x120 frames), zooming linearly over time."""
    zoom = 1 + 0.002 * np.asarray(frames, np.float64)
    K = np.tile(np.eye(3), (len(zoom), 1, 1))
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2] = 80 * zoom, 81 * zoom, 59.5, 44.5
    return K


# --------------------------------------------------------------------------- folders
@functools.lru_cache(maxsize=4)
def sv_ground_truth(wobble: float, with_depth: bool) -> tuple[np.ndarray | None, np.ndarray]:
    """Depth on the tracker's crop (its grid, its scaled intrinsics) and surfaces on the source grid."""
    frames = SV_OFFSET + SV_CLIP_FRAMES
    depth = None
    if with_depth:
        depth, _ = render_frames(frames, spatialvid_tracker_K(SV_K_SOURCE, SV_SOURCE), SV_CROP, wobble)
    _, surface = render_frames(frames, SV_K_SOURCE, SV_SOURCE, wobble)
    return depth, surface


def make_spatialvid(folder: Path, wobble: float = 0.0, with_depth: bool = True, **kwargs) -> Path:
    frames = SV_OFFSET + SV_CLIP_FRAMES
    depth, surface = sv_ground_truth(wobble, with_depth)
    write_spatialvid(
        folder,
        clip_frames=SV_CLIP_FRAMES,
        c2w=trajectory(frames, wobble),
        K=np.tile(SV_K_SOURCE, (len(frames), 1, 1)),
        source_size=SV_SOURCE,
        depth=depth,
        dynamic=surface == SURFACE_BOX,
        **kwargs,
    )
    return folder


def make_vipe(root: Path, name: str = "video", rgb_fps: float | None = VP_SOURCE_FPS / VP_SKIP, **kwargs) -> Path:
    """ViPE run with frame_skip=3: processed frame i is source frame 3 i; ceiling (sky) clamped at 1000 m."""
    K = vp_K_image(VP_FRAMES)
    rendered = [render(c, k, VP_IMAGE) for c, k in zip(trajectory(VP_FRAMES), K)]
    depth = np.stack([np.where(s == SURFACE_CEILING, VIPE_SKY_DEPTH, d) for d, s in rendered])
    surface = np.stack([s for _, s in rendered])[VP_MASK_INDS]
    write_vipe(
        root,
        name,
        c2w=trajectory(VP_FRAMES),
        K=K,
        depth=depth,
        mask_inds=VP_MASK_INDS,
        instance_ids=surface.astype(np.uint8),
        phrases=VP_PHRASES,
        rgb_fps=rgb_fps,
        **kwargs,
    )
    return root


def copy_folder(folder: Path, tmp_path: Path) -> Path:
    """A private copy of a fixture folder, for tests that break files."""
    return Path(shutil.copytree(folder, tmp_path / folder.name))


def sv_import(folder: Path, **kwargs):
    return import_spatialvid(folder, SV_FRAME_INDEX, SV_SOURCE, SV_LABEL, SV_TO_LABEL, frame_offset=SV_OFFSET, **kwargs)


def vp_import(root: Path, **kwargs):
    kwargs.setdefault("source_fps", VP_SOURCE_FPS)
    return import_vipe(root, "video", VP_FRAME_INDEX, VP_SOURCE, VP_LABEL, VP_TO_LABEL, **kwargs)


@pytest.fixture(scope="module")
def sv_folder(tmp_path_factory) -> Path:
    return make_spatialvid(tmp_path_factory.mktemp("sv") / "clip-0001")


@pytest.fixture(scope="module")
def vp_root(tmp_path_factory) -> Path:
    return make_vipe(tmp_path_factory.mktemp("vipe"))


# --------------------------------------------------------------------------- round trips
def test_spatialvid_round_trip(sv_folder: Path):
    out = sv_import(sv_folder)
    a, flags = out.arrays, out.frame_flags
    T, (H, W) = len(SV_FRAME_INDEX), SV_LABEL
    assert a["K"].shape == (T, 3, 3) and a["K"].dtype == np.float32
    assert a["c2w"].shape == (T, 4, 4) and a["c2w"].dtype == np.float32
    np.testing.assert_array_equal(a["c2w"][0], np.eye(4))
    # Normalised intrinsics -> label pixels: the source K (principal point at the centre, 80.0
    # px, not 79.5) through the label map.
    K_label = SV_TO_LABEL @ SV_K_SOURCE
    np.testing.assert_allclose(a["K"], np.tile(K_label, (T, 1, 1)), atol=1e-4)
    np.testing.assert_allclose(a["c2w"], gt_c2w_label(SV_FRAME_INDEX), atol=1e-5)

    exact = np.isin(SV_FRAME_INDEX - SV_OFFSET, SV_CLIP_FRAMES)
    assert exact.sum() == 4 and not exact[0]  # the first label frame is interpolated
    np.testing.assert_array_equal(flags["depth_exact"], exact)
    np.testing.assert_array_equal(flags["pose_interpolated"], ~exact)
    # Label pixels on the tracker's crop have depth; the last row and column lie past it.
    inside = np.ones(SV_LABEL, bool)
    inside[-1, :] = inside[:, -1] = False
    for t in range(T):
        if exact[t]:
            depth, _ = render(trajectory(SV_FRAME_INDEX[t : t + 1])[0], K_label, SV_LABEL)
            np.testing.assert_array_equal(a["depth_valid"][t], inside)
            # Stored disparity is float16; 1/disparity keeps its relative precision.
            np.testing.assert_allclose(a["depth"][t][inside], depth[inside], rtol=F16_REL * 1.01, atol=0)
            assert not a["depth"][t][~inside].any()
        else:
            assert not a["depth_valid"][t].any() and not a["depth"][t].any()
    assert a["depth"].shape == (T, H, W) and a["depth"].dtype == np.float32
    assert out.attrs["metric_scale"] is False
    entry = out.attrs["labelers"]["camera"]
    assert set(out.attrs["labelers"]) == {"camera", "depth", "mask"}
    assert entry["name"] == "spatialvid-import" and entry["source"] == str(sv_folder)
    assert len(entry["annotations_sha256"]) == 64 and entry["params"]["frame_offset"] == SV_OFFSET


def test_spatialvid_masks_round_trip(sv_folder: Path):
    """Masks are full frames at the source resolution (not the tracker's crop)."""
    out = import_spatialvid(
        sv_folder, SV_FRAME_INDEX, SV_SOURCE, SV_MASK_LABEL, SV_MASK_TO_LABEL, frame_offset=SV_OFFSET,
        parts=("camera", "mask"),
    )  # fmt: skip
    exact = np.isin(SV_FRAME_INDEX - SV_OFFSET, SV_CLIP_FRAMES)
    np.testing.assert_array_equal(out.frame_flags["mask_exact"], exact)
    for t in range(len(SV_FRAME_INDEX)):
        _, surface = render(trajectory(SV_FRAME_INDEX[t : t + 1])[0], SV_MASK_TO_LABEL @ SV_K_SOURCE, SV_MASK_LABEL)
        np.testing.assert_array_equal(out.arrays["dynamic_mask"][t], (surface == SURFACE_BOX) & exact[t])
        if exact[t]:
            assert 0.02 < out.arrays["dynamic_mask"][t].mean() < 0.9  # the box is in view: the check has teeth


def test_spatialvid_principal_point_is_upstream_pixel_convention(sv_folder: Path):
    """cx = cy = 0.5 is the image centre in upstream's pixels: 640.0 at 1280 wide (load_intrinsics)."""
    annotations = read_spatialvid(sv_folder, parts=("camera",), frame_offset=SV_OFFSET)
    np.testing.assert_allclose(annotations.K_normalised[:, :2, 2], 0.5)
    frames = SV_OFFSET + SV_CLIP_FRAMES[:2]
    for size in ((720, 1280), SV_SOURCE):
        K = to_label_frames(annotations, frames, size, size, np.eye(3)).arrays["K"]
        np.testing.assert_allclose(K[:, :2, 2], [[size[1] / 2, size[0] / 2]] * 2, atol=1e-4)
    K = to_label_frames(annotations, frames, SV_SOURCE, SV_SOURCE, np.eye(3)).arrays["K"]
    np.testing.assert_allclose(K[0], SV_K_SOURCE, atol=1e-4)


def test_spatialvid_depth_is_clipped_like_upstream_and_bad_disparity_is_invalid(tmp_path: Path):
    """clip(1 / disparity, 1e-3, 100) as upstream read_depth; disparity 0, < 0, NaN or inf is no depth."""
    folder = make_spatialvid(tmp_path / "clip", with_depth=False)
    disparity = np.full(SV_CROP, 0.5, np.float32)
    special = {(0, 0): 0.0, (0, 1): -0.25, (0, 2): np.nan, (0, 3): np.inf, (0, 4): 1e-3, (0, 5): 2000.0}
    for (y, x), value in special.items():
        disparity[y * 8 + 2, x * 8 + 2] = value  # tracker pixels that label pixels (y, x) sample
    members = {f"{i:05d}.exr": encode_exr(disparity) for i in range(len(SV_CLIP_FRAMES))}
    write_zip(folder / f"{folder.name}.zip", members)
    first = SV_OFFSET + SV_CLIP_FRAMES[:1]
    out = import_spatialvid(folder, first, SV_SOURCE, SV_LABEL, SV_TO_LABEL, frame_offset=SV_OFFSET)
    depth, valid = out.arrays["depth"][0], out.arrays["depth_valid"][0]
    assert np.isfinite(depth).all()
    assert not valid[0, :4].any() and not depth[0, :4].any()
    assert valid[0, 4] and depth[0, 4] == np.float32(100.0)  # 1 / 1e-3 = 1000 -> 100
    assert valid[0, 5] and depth[0, 5] == np.float32(1e-3)  # 1 / 2000 -> 1e-3
    assert valid[1, :-1].all() and np.all(depth[1, :-1] == 2.0)


def test_spatialvid_depth_that_does_not_fit_the_source_is_refused(sv_folder: Path):
    with pytest.raises(AnnotationError, match="depth maps are 328x584 but SpatialVID.s tracker makes 440x440") as info:
        first = SV_OFFSET + SV_CLIP_FRAMES[:1]
        import_spatialvid(sv_folder, first, (90, 90), SV_LABEL, SV_TO_LABEL, frame_offset=SV_OFFSET)
    assert info.value.reason == "inconsistent" and ".zip" in info.value.path


def test_spatialvid_internal_layout(tmp_path: Path, sv_folder: Path):
    """`<id>/reconstructions/` with depth_opt.zip, frame numbers from img/frame_%06d.jpg: same labels."""
    folder = make_spatialvid(tmp_path / "clip-0001", layout="internal")
    assert not (folder / "indexes.txt").exists() and not (folder / "reconstructions" / "indexes.txt").exists()
    internal, release = sv_import(folder), sv_import(sv_folder)
    for key in ("K", "c2w", "depth", "depth_valid", "dynamic_mask"):
        np.testing.assert_array_equal(internal.arrays[key], release.arrays[key])
    # cvd_opt.py without --only_depth: sgd_cvd_hr.npz `depths` = clip(float16(1 / disparity), 1e-3, 100).
    (folder / "reconstructions" / "depth_opt.zip").unlink()
    depth, _ = sv_ground_truth(0.0, True)
    np.savez(folder / "reconstructions" / "sgd_cvd_hr.npz", depths=np.clip(np.float16(depth), 1e-3, 1e2))
    packed = sv_import(folder)
    np.testing.assert_array_equal(packed.arrays["depth_valid"], release.arrays["depth_valid"])
    np.testing.assert_allclose(packed.arrays["depth"], release.arrays["depth"], rtol=2.1 * F16_REL)


def test_vipe_round_trip(vp_root: Path):
    out = vp_import(vp_root)
    a, flags = out.arrays, out.frame_flags
    T = len(VP_FRAME_INDEX)
    np.testing.assert_array_equal(a["c2w"][0], np.eye(4))
    np.testing.assert_allclose(a["c2w"], gt_c2w_label(VP_FRAME_INDEX), atol=1e-5)
    # Pixel intrinsics of ViPE's half-resolution frames, zooming linearly (so interpolation is exact).
    K_label = VP_TO_LABEL @ half_to_full() @ vp_K_image(VP_FRAME_INDEX)
    np.testing.assert_allclose(a["K"], K_label, rtol=1e-5, atol=1e-4)
    assert out.attrs["labelers"]["camera"]["params"]["frame_skip"] == VP_SKIP

    depth_exact = np.isin(VP_FRAME_INDEX, VP_FRAMES)
    mask_exact = np.isin(VP_FRAME_INDEX, VP_MASK_FRAMES)
    np.testing.assert_array_equal(flags["depth_exact"], depth_exact)
    np.testing.assert_array_equal(flags["mask_exact"], mask_exact)
    assert mask_exact.sum() == 2 and depth_exact.sum() == 4
    sky_seen = 0
    for t in range(T):
        depth, surface = render(trajectory(VP_FRAME_INDEX[t : t + 1])[0], K_label[t], VP_LABEL)
        if depth_exact[t]:
            # Clamped sky (1000 m) is not depth; everything else is, to float16 precision.
            ground = surface != SURFACE_CEILING
            sky_seen += (~ground).sum()
            np.testing.assert_array_equal(a["depth_valid"][t], ground)
            np.testing.assert_allclose(a["depth"][t][ground], depth[ground], rtol=F16_REL * 1.01, atol=0)
            assert not a["depth"][t][~ground].any()
        else:
            assert not a["depth_valid"][t].any() and not a["depth"][t].any()
        # "person" is movable, "sky" is not.
        np.testing.assert_array_equal(a["dynamic_mask"][t], (surface == SURFACE_BOX) & mask_exact[t])
    assert sky_seen > 20  # the sky check has teeth
    assert out.attrs["metric_scale"] is True
    assert out.attrs["labelers"]["depth"]["name"] == "vipe-import"

    every_instance = vp_import(vp_root, dynamic_phrases=None, parts=("camera", "mask"))
    for t in np.flatnonzero(mask_exact):
        _, surface = render(trajectory(VP_FRAME_INDEX[t : t + 1])[0], K_label[t], VP_LABEL)
        assert (surface == SURFACE_CEILING).any()
        np.testing.assert_array_equal(every_instance.arrays["dynamic_mask"][t], surface != SURFACE_WALL)
    assert "depth" not in every_instance.arrays and "depth" not in every_instance.attrs["labelers"]


def test_vipe_frame_skip_from_option_when_no_video(tmp_path: Path, vp_root: Path):
    """Without rgb/<name>.mp4 the stride is the option; a wrong stride reads other source frames."""
    root = make_vipe(tmp_path / "vipe", rgb_fps=None)
    gt = gt_c2w_label(VP_FRAME_INDEX)
    out = vp_import(root, frame_skip=VP_SKIP, parts=("camera",))
    np.testing.assert_allclose(out.arrays["c2w"], gt, atol=1e-5)
    assert out.attrs["labelers"]["camera"]["params"]["frame_skip_from"] == "option"
    unstrided = vp_import(root, parts=("camera",))  # ViPE's default stride 1: the wrong times
    assert np.abs(unstrided.arrays["c2w"] - gt).max() > 0.05
    # The video says 3; an option saying otherwise is a contradiction, not a choice.
    with pytest.raises(AnnotationError, match="frame_skip 3") as info:
        vp_import(vp_root, frame_skip=2, parts=("camera",))
    assert info.value.reason == "inconsistent"
    np.testing.assert_allclose(vp_import(vp_root, frame_skip=3, parts=("camera",)).arrays["c2w"], gt, atol=1e-5)
    # A video at 12 fps from a 30 fps source is no whole stride: not this run, or not this source.
    odd = make_vipe(tmp_path / "odd", rgb_fps=12.0)
    with pytest.raises(AnnotationError, match="not the source's 30.000 fps divided by a whole frame_skip") as info:
        vp_import(odd, parts=("camera",))
    assert info.value.reason == "inconsistent" and info.value.path.endswith("video.mp4")


def test_vipe_depth_range_is_an_option(vp_root: Path):
    near = vp_import(vp_root, parts=("camera", "depth"), depth_range=(0.0, 4.0))
    wide = vp_import(vp_root, parts=("camera", "depth"), depth_range=(0.0, 2000.0))
    t = int(np.flatnonzero(near.frame_flags["depth_exact"])[0])
    assert np.all(near.arrays["depth"][t][near.arrays["depth_valid"][t]] <= 4.0)
    assert (wide.arrays["depth"][t] == VIPE_SKY_DEPTH).any()  # the clamp, kept when asked for
    with pytest.raises(ValueError, match="depth_range"):
        vp_import(vp_root, depth_range=(5.0, 1.0))


def test_vipe_run_py_default_frame_end_is_named(tmp_path: Path):
    """run.py annotates source frames below 1000 by default; later label frames get that cause."""
    n = 1000
    frames = np.arange(n)
    K = np.tile(vp_K_image(frames[:1]), (n, 1, 1))
    write_vipe(tmp_path, "video", c2w=trajectory(frames), K=K)
    frame_index = np.arange(990, 1010)
    args = ("video", VP_SOURCE, VP_LABEL, VP_TO_LABEL)
    with pytest.raises(AnnotationError, match="streams.frame_end=1000") as info:
        import_vipe(tmp_path, args[0], frame_index, *args[1:], parts=("camera",), image_size=VP_IMAGE)
    assert info.value.reason == "out_of_range" and "999" in str(info.value)
    out = import_vipe(tmp_path, args[0], frame_index[:10], *args[1:], parts=("camera",), image_size=VP_IMAGE)
    assert out.arrays["c2w"].shape == (10, 4, 4)


def test_depth_is_resampled_without_blending(sv_folder: Path):
    """Every label depth is one of the annotation's depths: nothing is averaged across the box's edge."""
    out = sv_import(sv_folder)
    t = int(np.flatnonzero(out.frame_flags["depth_exact"])[0])
    frame = SV_FRAME_INDEX[t] - SV_OFFSET
    with zipfile.ZipFile(sv_folder / f"{sv_folder.name}.zip") as z:
        disparity = decode_exr_depth(z.read(f"{int(np.flatnonzero(SV_CLIP_FRAMES == frame)[0]):05d}.exr"), "test")
    valid = out.arrays["depth_valid"][t]
    assert valid.mean() > 0.9
    assert np.isin(out.arrays["depth"][t][valid], (1.0 / disparity).astype(np.float32)).all()


def test_interpolated_poses_follow_a_smooth_trajectory(tmp_path: Path):
    wobble = 0.01
    folder = make_spatialvid(tmp_path / "wobbly", wobble=wobble, with_depth=False)
    out = sv_import(folder, parts=("camera",))
    assert set(out.arrays) == {"K", "c2w"}
    gt = gt_c2w_label(SV_FRAME_INDEX, wobble)

    def errors(c2w):
        rot = Rotation.from_matrix(np.swapaxes(gt[:, :3, :3], 1, 2) @ c2w[:, :3, :3].astype(np.float64))
        return np.degrees(rot.magnitude()).max(), np.linalg.norm(c2w[:, :3, 3] - gt[:, :3, 3], axis=1).max()

    rot_deg, trans = errors(out.arrays["c2w"])
    # Nearest annotated pose instead of interpolation, for scale.
    nearest = SV_OFFSET + SV_CLIP_FRAMES[np.abs(SV_FRAME_INDEX[:, None] - SV_OFFSET - SV_CLIP_FRAMES).argmin(axis=1)]
    c2w_nearest = trajectory(nearest, wobble)
    rot_near, trans_near = errors(np.linalg.inv(c2w_nearest[0]) @ c2w_nearest)
    # Interpolating A sin(w t) over gaps of h = 3 frames errs by at most A w^2 h^2 / 8, twice
    # over since the first label frame (the new origin) is interpolated too: 0.057 deg for the
    # rotation (w = 0.21), 2e-3 m for the centre (w = 0.3) plus the origin's rotation error
    # carried over the ~1 m the camera travels.
    assert rot_deg < 0.06 and trans < 3e-3
    assert rot_deg < rot_near / 10 and trans < trans_near / 10


# --------------------------------------------------------------------------- conventions
def test_wrong_pose_conventions_are_caught(tmp_path: Path, sv_folder: Path, vp_root: Path):
    """The round-trip checks distinguish w2c from c2w in both formats."""
    right_sv = sv_import(sv_folder, parts=("camera",)).arrays["c2w"]
    wrong_sv = sv_import(make_spatialvid(tmp_path / "c2w_written", pose_convention="c2w"), parts=("camera",))
    right_vp = vp_import(vp_root, parts=("camera",)).arrays["c2w"]
    wrong_vp = vp_import(make_vipe(tmp_path / "vipe_w2c", pose_convention="w2c"), parts=("camera",))
    for right, wrong, gt in ((right_sv, wrong_sv, SV_FRAME_INDEX), (right_vp, wrong_vp, VP_FRAME_INDEX)):
        gt_c2w = gt_c2w_label(gt)
        assert np.abs(right - gt_c2w).max() < 1e-5
        assert np.abs(wrong.arrays["c2w"] - gt_c2w).max() > 0.05


def test_depth_written_as_depth_not_disparity_is_caught(tmp_path: Path, sv_folder: Path):
    right = sv_import(sv_folder)
    wrong = sv_import(make_spatialvid(tmp_path / "clip", depth_encoding="depth"))
    valid = right.arrays["depth_valid"]
    ratio = wrong.arrays["depth"][valid] / right.arrays["depth"][valid]
    assert valid.sum() > 1000 and np.abs(ratio - 1).max() > 0.5


def test_pixel_intrinsics_in_spatialvid_are_rejected(tmp_path: Path):
    folder = make_spatialvid(tmp_path / "clip", normalise_intrinsics=False)
    with pytest.raises(AnnotationError, match="normalised") as info:
        sv_import(folder)
    assert info.value.reason == "bad_format" and "intrinsics.npy" in str(info.value)


def test_release_layout_finds_the_depth_archive(tmp_path: Path):
    clip_id = "abc-123"
    folder = tmp_path / "annotations" / "group_0007" / clip_id
    make_spatialvid(folder, depth_zip=tmp_path / "depths" / "group_0007" / f"{clip_id}.zip")
    out = sv_import(folder)
    assert out.arrays["depth_valid"][out.frame_flags["depth_exact"]][:, :-1, :-1].all()


# --------------------------------------------------------------------------- errors
def _rewrite_npy(name: str, change):
    def mutate(folder: Path) -> None:
        np.save(folder / name, change(np.load(folder / name)))

    return mutate


def _rewrite_zip(folder: Path, change) -> None:
    archive = folder / f"{folder.name}.zip"
    with zipfile.ZipFile(archive) as z:
        members = {m: z.read(m) for m in z.namelist()}
    archive.unlink()
    write_zip(archive, change(members))


def _bad_quaternion(poses: np.ndarray) -> np.ndarray:
    poses[4, 3:] *= 2
    return poses


def _nan_translation(poses: np.ndarray) -> np.ndarray:
    poses[2, 0] = np.nan
    return poses


def _two_channel_exr(members: dict) -> dict:
    buffer = io.BytesIO()
    planes = {"R": np.ones((4, 4), np.float16), "G": np.ones((4, 4), np.float16)}
    OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}, planes).write(buffer)
    return {m: buffer.getvalue() if i == 3 else data for i, (m, data) in enumerate(sorted(members.items()))}


SPATIALVID_BREAKAGES = {
    "missing poses": (lambda f: (f / "poses.npy").unlink(), "missing_file", "poses.npy"),
    "poses (N, 6)": (_rewrite_npy("poses.npy", lambda p: p[:, :6]), "bad_format", "poses.npy"),
    "poses NaN": (_rewrite_npy("poses.npy", _nan_translation), "bad_format", "poses.npy"),
    "quaternion not unit": (_rewrite_npy("poses.npy", _bad_quaternion), "bad_rotation", "poses.npy"),
    "intrinsics rows": (_rewrite_npy("intrinsics.npy", lambda k: k[:-1]), "inconsistent", "intrinsics.npy"),
    "index line": (lambda f: (f / "indexes.txt").write_text("0 0\n1\n"), "bad_format", "indexes.txt"),
    "index order": (lambda f: (f / "indexes.txt").write_text("0 3\n1 0\n"), "bad_format", "indexes.txt"),
    "depth missing": (lambda f: (f / f"{f.name}.zip").unlink(), "missing_file", "depth archive"),
    "depth count": (lambda f: _rewrite_zip(f, lambda m: dict(sorted(m.items())[1:])), "inconsistent", ".zip"),
    "depth channels": (lambda f: _rewrite_zip(f, _two_channel_exr), "bad_format", "00003.exr"),
    "depth corrupt": (
        lambda f: _rewrite_zip(f, lambda m: {k: (b"junk" if k == "00003.exr" else v) for k, v in m.items()}),
        "bad_format",
        "00003.exr",
    ),
    "mask keys": (
        lambda f: np.savez(f / "dyn_masks.npz", shape=np.array([2, 2]), f_0_data=np.ones(1)),
        "bad_format",
        "dyn_masks.npz",
    ),
}


@pytest.mark.parametrize("breakage", list(SPATIALVID_BREAKAGES))
def test_malformed_spatialvid_folders_name_file_and_cause(tmp_path: Path, sv_folder: Path, breakage: str):
    mutate, reason, where = SPATIALVID_BREAKAGES[breakage]
    folder = copy_folder(sv_folder, tmp_path)
    mutate(folder)
    # Label frames at exact annotation frames, so corrupt depth frames get decoded.
    frame_index = SV_OFFSET + np.array([0, 3, 6, 9, 12])
    with pytest.raises(AnnotationError) as info:
        import_spatialvid(folder, frame_index, SV_SOURCE, SV_LABEL, SV_TO_LABEL, frame_offset=SV_OFFSET)
    assert info.value.reason == reason, str(info.value)
    assert where in str(info.value)


def _vipe_npz(sub: str, change):
    def mutate(root: Path) -> None:
        path = root / sub / "video.npz"
        npz = dict(np.load(path))
        change(npz)
        np.savez(path, **npz)

    return mutate


def _scale_rotation(npz: dict) -> None:
    npz["data"][2, :3, :3] *= 1.1


def _bad_last_row(npz: dict) -> None:
    npz["data"][0, 3, 0] = 0.5


VIPE_BREAKAGES = {
    "not a rotation": (_vipe_npz("pose", _scale_rotation), "bad_rotation", "video.npz"),
    "last row": (_vipe_npz("pose", _bad_last_row), "bad_format", "0 0 0 1"),
    "inds count": (_vipe_npz("pose", lambda n: n.update(inds=n["inds"][:-1])), "inconsistent", "pose"),
    "non-pinhole": (
        _vipe_npz("intrinsics", lambda n: n.update(data=np.concatenate([n["data"], n["data"][:, :2]], 1))),
        "bad_format",
        "non-pinhole",
    ),
    "camera type": (
        lambda r: (r / "intrinsics" / "video_camera.txt").write_text("0: PANORAMA\n"),
        "bad_format",
        "PINHOLE",
    ),
    "depth member name": (
        lambda r: write_zip(r / "depth" / "video.zip", {"frame.exr": encode_exr(np.ones((4, 4)))}),
        "bad_format",
        "frame.exr",
    ),
    "phrases missing": (lambda r: (r / "mask" / "video.txt").unlink(), "missing_file", "video.txt"),
    "phrase line": (lambda r: (r / "mask" / "video.txt").write_text("person\n"), "bad_format", "id: phrase"),
}


@pytest.mark.parametrize("breakage", list(VIPE_BREAKAGES))
def test_malformed_vipe_folders_name_file_and_cause(tmp_path: Path, vp_root: Path, breakage: str):
    mutate, reason, where = VIPE_BREAKAGES[breakage]
    root = copy_folder(vp_root, tmp_path)
    mutate(root)
    with pytest.raises(AnnotationError) as info:
        vp_import(root)
    assert info.value.reason == reason, str(info.value)
    assert where in str(info.value)


def test_label_frames_outside_the_annotated_span_are_an_error(sv_folder: Path):
    last = SV_OFFSET + SV_CLIP_FRAMES[-1]
    for frame_index in (np.array([SV_OFFSET - 1, SV_OFFSET + 3]), np.array([last - 1, last + 1])):
        with pytest.raises(AnnotationError, match="outside the annotated poses span") as info:
            import_spatialvid(sv_folder, frame_index, SV_SOURCE, SV_LABEL, SV_TO_LABEL, frame_offset=SV_OFFSET)
        assert info.value.reason == "out_of_range"
    # Without the offset every label frame is past the clip's annotations.
    with pytest.raises(AnnotationError, match="out_of_range"):
        import_spatialvid(sv_folder, SV_FRAME_INDEX + 100, SV_SOURCE, SV_LABEL, SV_TO_LABEL)


def test_bad_arguments(sv_folder: Path):
    sheared = SV_TO_LABEL.copy()
    sheared[0, 1] = 0.1
    with pytest.raises(ValueError, match="axis-aligned"):
        import_spatialvid(sv_folder, SV_FRAME_INDEX, SV_SOURCE, SV_LABEL, sheared, frame_offset=SV_OFFSET)
    with pytest.raises(TypeError, match="integers"):
        import_spatialvid(sv_folder, SV_FRAME_INDEX.astype(float), SV_SOURCE, SV_LABEL, SV_TO_LABEL)
    with pytest.raises(ValueError, match="non-decreasing"):
        import_spatialvid(sv_folder, SV_FRAME_INDEX[::-1], SV_SOURCE, SV_LABEL, SV_TO_LABEL)
    with pytest.raises(ValueError, match="camera"):
        read_spatialvid(sv_folder, parts=("depth",))
    with pytest.raises(AnnotationError, match="folder not found"):
        read_spatialvid(sv_folder.parent / "nowhere")


def test_error_pickles_and_checksum_tracks_files(tmp_path: Path, sv_folder: Path):
    error = AnnotationError("/a/b", "inconsistent", "3 rows but 4 frames")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.path, copy.reason, copy.detail, str(copy)) == (error.path, error.reason, error.detail, str(error))

    folder = copy_folder(sv_folder, tmp_path)
    first = read_spatialvid(folder).files_sha256
    assert read_spatialvid(folder).files_sha256 == first
    (folder / "indexes.txt").write_text((folder / "indexes.txt").read_text() + "\n")
    assert read_spatialvid(folder).files_sha256 != first


def test_depth_pixels_come_from_the_nearest_annotation_pixel():
    """At a non-integer scale, each label pixel takes the annotation pixel nearest to its centre.

    The depth map encodes its own pixel coordinates, so a half-pixel slip in the mapping shows.
    """
    source, image, label = (180, 240), (90, 120), (40, 60)
    source_to_label = resize_crop(1 / 3, -2, 1)  # 60x80 -> window shifted 2 px past the left edge
    h, w = image
    v, u = np.mgrid[0:h, 0:w]
    coded = (1 + u + 1000 * v).astype(np.float32)
    annotations = AnnotationSet(
        kind="vipe",
        source="synthetic",
        metric_scale=True,
        pose_frames=np.array([0, 10]),
        c2w=np.tile(np.eye(4), (2, 1, 1)),
        intrinsics_frames=np.array([0, 10]),
        K_normalised=np.tile(np.diag([1.0, 1.3, 1.0]) + np.array([[0, 0, 0.5], [0, 0, 0.5], [0, 0, 0]]), (2, 1, 1)),
        files_sha256="0" * 64,
        depth_frames=np.array([0]),
        depth_loader=lambda frame: coded,
    )
    out = to_label_frames(annotations, np.array([0, 5]), source, label, source_to_label)
    # Label pixel -> source pixel -> annotation pixel, each with pixel centres at integers.
    vl, ul = np.mgrid[0 : label[0], 0 : label[1]].astype(np.float64)
    us = (ul - source_to_label[0, 2]) / source_to_label[0, 0]
    vs = (vl - source_to_label[1, 2]) / source_to_label[1, 1]
    ua = np.round((us + 0.5) * w / source[1] - 0.5).astype(int)
    va = np.round((vs + 0.5) * h / source[0] - 0.5).astype(int)
    inside = (ua >= 0) & (ua < w) & (va >= 0) & (va < h)
    assert 0 < (~inside).sum() < inside.sum()
    np.testing.assert_array_equal(out.arrays["depth_valid"][0], inside)
    np.testing.assert_array_equal(out.arrays["depth"][0][inside], (1 + ua + 1000 * va)[inside])
    assert not out.arrays["depth_valid"][1].any()
    assert out.frame_flags["pose_interpolated"].tolist() == [False, True]


def test_vipe_camera_only_needs_the_intrinsics_resolution(tmp_path: Path):
    root = make_vipe(tmp_path / "vipe")
    (root / "depth" / "video.zip").unlink()
    with pytest.raises(AnnotationError, match="image_size") as info:
        vp_import(root, parts=("camera",))
    assert info.value.reason == "missing_file"
    out = vp_import(root, parts=("camera",), image_size=VP_IMAGE)
    np.testing.assert_allclose(out.arrays["K"], VP_TO_LABEL @ half_to_full() @ vp_K_image(VP_FRAME_INDEX), atol=1e-4)
    assert set(out.attrs["labelers"]) == {"camera"}
