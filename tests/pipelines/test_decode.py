"""Clip decoding: frame selection on the label timeline, resize + crop with exact K, rejections.

Fixtures are small mp4 files written with cv2 ('mp4v') on the fly. Each frame carries its
own frame number as a 10-bit pattern of black and white blocks in the central part of the
image, so a test can read back which source frame was decoded.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from pipelines.clips import ClipRejected, ClipSpec, make_clip_id
from pipelines.decode import DecodeConfig, ResizeCrop, decode_clip, select_frames
from pipelines.manifests import read_manifest

SRC_H, SRC_W = 96, 160
BITS = 10  # frame numbers up to 1023
GRID_ROWS, GRID_COLS = 2, 5


def _block_boxes(height: int, width: int) -> list[tuple[int, int, int, int]]:
    """(top, bottom, left, right) of each bit block, inside the central 60% of the frame."""
    top0, left0 = int(0.2 * height), int(0.2 * width)
    bh, bw = int(0.6 * height) // GRID_ROWS, int(0.6 * width) // GRID_COLS
    return [
        (top0 + r * bh, top0 + (r + 1) * bh, left0 + c * bw, left0 + (c + 1) * bw)
        for r in range(GRID_ROWS)
        for c in range(GRID_COLS)
    ]


def coded_frame(number: int, height: int = SRC_H, width: int = SRC_W) -> np.ndarray:
    frame = np.full((height, width, 3), 40, np.uint8)
    for bit, (t, b, l, r) in enumerate(_block_boxes(height, width)):
        frame[t:b, l:r] = 235 if (number >> bit) & 1 else 0
    return frame


def read_code(frame: np.ndarray, transform: ResizeCrop) -> int:
    """Frame number from a decoded label frame, sampling each block's centre mapped to label pixels."""
    number = 0
    for bit, (t, b, l, r) in enumerate(_block_boxes(transform.src_height, transform.src_width)):
        u, v = transform.apply_points(np.array([(l + r - 1) / 2, (t + b - 1) / 2]))
        if frame[int(round(v)), int(round(u))].mean() > 128:
            number |= 1 << bit
    return number


def write_video(path: Path, frames, fps: float) -> Path:
    frames = list(frames)
    height, width = frames[0].shape[:2] if frames else (SRC_H, SRC_W)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[..., ::-1]))  # RGB -> BGR
    writer.release()
    return path


def coded_video(path: Path, num_frames: int, fps: float, height: int = SRC_H, width: int = SRC_W) -> Path:
    return write_video(path, (coded_frame(i, height, width) for i in range(num_frames)), fps)


@pytest.fixture(scope="module")
def ntsc_video(tmp_path_factory) -> Path:
    """100 coded frames at 29.97 fps (3.34 s)."""
    return coded_video(tmp_path_factory.mktemp("v") / "ntsc.mp4", 100, 30000 / 1001)


def spec_for(path: Path, start: float, end: float, **kwargs) -> ClipSpec:
    return ClipSpec(make_clip_id(path.name, start, end), str(path), start, end, **kwargs)


def expected_nearest(label_times: np.ndarray, fps: float) -> np.ndarray:
    """Nearest frame of a constant-rate source; an exact tie goes to the earlier frame."""
    return np.ceil(label_times * fps - 0.5 - 1e-9).astype(np.int64)


# ---------------------------------------------------------------- frame selection


def test_fixture_is_read_back_by_decord(ntsc_video):
    import decord

    reader = decord.VideoReader(str(ntsc_video))
    assert len(reader) == 100 and reader.get_avg_fps() == pytest.approx(29.97, abs=1e-3)
    identity = ResizeCrop.from_sizes(SRC_H, SRC_W, SRC_H, SRC_W)
    assert [read_code(reader[i].asnumpy(), identity) for i in (0, 37, 99)] == [0, 37, 99]


def test_non_integer_fps_picks_nearest_frames(ntsc_video):
    spec = spec_for(ntsc_video, 0.5, 3.1, fps_target=8.0)
    clip = decode_clip(spec, DecodeConfig(num_frames=21, height=SRC_H, width=SRC_W))
    label_times = 0.5 + np.arange(21) / 8.0
    expected = expected_nearest(label_times, 30000 / 1001)
    np.testing.assert_array_equal(clip.frame_index, expected)
    assert clip.frame_index.dtype == np.int64 and clip.timestamps.dtype == np.float64
    np.testing.assert_allclose(clip.timestamps, expected * 1001 / 30000, atol=1e-5)
    assert np.all(np.abs(clip.timestamps - label_times) <= 0.5 * 1001 / 30000 + 1e-6)
    assert [read_code(f, clip.transform) for f in clip.frames] == expected.tolist()
    assert clip.fps == 8.0 and clip.source_fps == pytest.approx(29.97, abs=1e-3)
    assert clip.source_size == (SRC_H, SRC_W) and clip.source_num_frames == 100
    assert clip.K is None


def test_native_fps_keeps_consecutive_frames(ntsc_video):
    spec = spec_for(ntsc_video, 1.0, 2.5, fps_target=None)
    clip = decode_clip(spec, DecodeConfig(num_frames=13, height=48, width=80))
    first = 30  # 1.0 s * 29.97 fps = 29.97 -> frame 30
    np.testing.assert_array_equal(clip.frame_index, np.arange(first, first + 13))
    assert [read_code(f, clip.transform) for f in clip.frames] == list(range(first, first + 13))
    assert clip.fps == pytest.approx(29.97, abs=1e-3)


def test_select_frames_ties_go_to_the_earlier_frame():
    times = np.arange(100, dtype=np.float32) / np.float32(30.0)  # decord timestamps are float32
    index = select_frames(times, 0.0, 3.0, 17, 8.0).index
    # t = k/8 lies exactly between two 30 fps frames when 3.75 k ends in .5 (k = 2, 6, 10, ...).
    np.testing.assert_array_equal(index, expected_nearest(np.arange(17) / 8.0, 30.0))
    assert index[2] == 7 and index[6] == 22


def test_select_frames_rejections():
    times = np.arange(60) / 30.0  # 2 s of video
    with pytest.raises(ClipRejected) as info:
        select_frames(times, 0.0, 1.0, 49, 8.0, "c")
    assert info.value.reason == "too_short"
    with pytest.raises(ClipRejected) as info:
        select_frames(times, 0.5, 5.0, 17, 8.0, "c")  # span fine, video ends at 1.97 s
    assert info.value.reason == "out_of_range"
    with pytest.raises(ClipRejected) as info:
        select_frames(times, 3.0, 9.0, 5, 8.0, "c")
    assert info.value.reason == "out_of_range"
    with pytest.raises(ClipRejected) as info:
        select_frames(times, 1.5, 9.0, 31, None, "c")
    assert info.value.reason == "out_of_range"
    with pytest.raises(ClipRejected) as info:
        select_frames(np.arange(40) / 5.0, 0.0, 7.0, 9, 8.0, "c")  # 5 fps source, 8 fps target
    assert info.value.reason == "low_fps"
    with pytest.raises(ClipRejected) as info:
        select_frames(np.zeros(0), 0.0, 1.0, 1, 8.0, "c")
    assert info.value.reason == "no_frames"
    np.testing.assert_array_equal(select_frames(times, 0.0, 1.0, 9, 8.0).index, expected_nearest(np.arange(9) / 8.0, 30.0))


# ---------------------------------------------------------------- geometry


def test_odd_label_resolution_and_non_mod16_source(tmp_path):
    # cv2's writer keeps even sizes; 122x182 is not a multiple of 16 and the label size is odd.
    video = coded_video(tmp_path / "odd.mp4", 30, 25.0, height=122, width=182)
    clip = decode_clip(spec_for(video, 0.0, 1.1, fps_target=8.0), DecodeConfig(num_frames=9, height=121, width=181))
    assert clip.frames.shape == (9, 121, 181, 3) and clip.frames.dtype == np.uint8
    assert clip.source_size == (122, 182)
    t = clip.transform
    assert (t.resized_height, t.resized_width) == (121, 181)
    expected = expected_nearest(np.arange(9) / 8.0, 25.0)  # t = 0.5 s is a tie: frames 12 and 13
    assert expected[4] == 12
    assert [read_code(f, t) for f in clip.frames] == expected.tolist()


@pytest.mark.parametrize(
    "height, width",
    [(60, 72), (200, 240), (40, 160)],  # shrink + horizontal crop, enlarge + crop, vertical crop
)
def test_resize_crop_maps_a_known_point_and_K_exactly(tmp_path, height, width):
    u0, v0, sigma = 97.3, 41.6, 2.5  # blob centre in source pixels (pixel centres at integers)
    vv, uu = np.mgrid[0:SRC_H, 0:SRC_W]
    blob = 255.0 * np.exp(-((uu - u0) ** 2 + (vv - v0) ** 2) / (2 * sigma**2))
    frame = np.repeat(blob[..., None], 3, axis=2).round().astype(np.uint8)
    video = write_video(tmp_path / "blob.mp4", [frame] * 10, 10.0)
    fx, fy, cx, cy = 150.0, 140.0, 79.0, 48.5
    spec = spec_for(video, 0.0, 1.0, fps_target=5.0, intrinsics=(fx, fy, cx, cy))
    clip = decode_clip(spec, DecodeConfig(num_frames=3, height=height, width=width))
    t = clip.transform
    assert clip.frames.shape == (3, height, width, 3)

    # The geometry: cover the target, keep the aspect, crop the centre.
    assert t.resized_height >= height and t.resized_width >= width
    assert (t.resized_height == height) or (t.resized_width == width)
    assert abs(t.scale_x - t.scale_y) < 0.02
    sx, sy = t.scale_x, t.scale_y
    expected_K = np.array(
        [[sx * fx, 0, sx * (cx + 0.5) - 0.5 - t.crop_left], [0, sy * fy, sy * (cy + 0.5) - 0.5 - t.crop_top], [0, 0, 1]]
    )
    assert clip.K is not None and clip.K.shape == (3, 3, 3) and clip.K.dtype == np.float32
    np.testing.assert_allclose(clip.K[1], expected_K, rtol=1e-6, atol=1e-4)

    # The blob's measured centre lands where the map (and K) say.
    image = clip.frames[1].astype(np.float64).mean(axis=2)
    weight = np.clip(image - 20.0, 0, None)
    gv, gu = np.mgrid[0:height, 0:width]
    measured = np.array([(weight * gu).sum(), (weight * gv).sum()]) / weight.sum()
    predicted = t.apply_points(np.array([u0, v0]))
    np.testing.assert_allclose(measured, predicted, atol=0.1)  # measured residuals are ~0.02 px
    ray = np.linalg.solve(np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]]), [u0, v0, 1.0])
    point = ray * 3.7  # any depth
    projected = clip.K[0].astype(np.float64) @ point
    np.testing.assert_allclose(projected[:2] / projected[2], predicted, atol=1e-3)


def test_resize_crop_identity_and_checks():
    t = ResizeCrop.from_sizes(96, 160, 96, 160)
    np.testing.assert_allclose(t.matrix(), np.eye(3))
    frames = np.random.default_rng(0).integers(0, 255, (2, 96, 160, 3), dtype=np.uint8)
    np.testing.assert_array_equal(t.apply_frames(frames), frames)
    t2 = ResizeCrop.from_sizes(96, 160, 48, 48)  # halve, crop 16 px each side
    assert (t2.resized_height, t2.resized_width, t2.crop_left, t2.crop_top) == (48, 80, 16, 0)
    np.testing.assert_allclose(t2.apply_points(np.array([[0.5, 0.5], [33.5, 1.5]])), [[-16.0, 0.0], [0.5, 0.5]])
    with pytest.raises(ValueError):
        t2.apply_frames(frames[:, :10])


# ---------------------------------------------------------------- rejections


def _reason(spec: ClipSpec, config: DecodeConfig = DecodeConfig(num_frames=9, height=48, width=80)) -> ClipRejected:
    with pytest.raises(ClipRejected) as info:
        decode_clip(spec, config)
    assert spec.clip_id in str(info.value)
    return info.value


def test_short_clip_and_short_video_are_rejected(ntsc_video):
    full = DecodeConfig(num_frames=49, height=48, width=80)
    error = _reason(spec_for(ntsc_video, 0.0, 3.3), full)  # 49 frames at 8 fps need 6 s
    assert error.reason == "too_short"
    assert "needs 49 frames = 6.000 s" in error.message and "clip length 3.300 s holds 27 frames" in error.message
    error = _reason(spec_for(ntsc_video, 1.0, 9.0), full)
    assert error.reason == "out_of_range" and "label frames run until 7.000 s, after the video's last frame at 3.303 s" in error.message


def test_missing_file(tmp_path):
    error = _reason(spec_for(tmp_path / "nope.mp4", 0.0, 6.0))
    assert error.reason == "missing_file" and "nope.mp4" in error.message


def test_folder_given_as_video_says_so(tmp_path):
    (tmp_path / "clip.mp4").mkdir()
    error = _reason(spec_for(tmp_path / "clip.mp4", 0.0, 6.0))
    assert error.reason == "not_a_file" and "clip.mp4 is a folder, not a video file" in error.message


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "corrupt_middle"])
def test_damaged_files_are_unreadable(tmp_path, ntsc_video, damage):
    data = ntsc_video.read_bytes()
    rng = np.random.default_rng(7)
    path = tmp_path / f"{damage}.mp4"
    if damage == "garbage":
        path.write_bytes(rng.integers(0, 256, 20_000, dtype=np.uint8).tobytes())
    elif damage == "truncated":
        path.write_bytes(data[: len(data) // 2])  # an interrupted download
    elif damage == "empty":
        path.write_bytes(b"")
    else:  # stream damaged in the middle; the container index is intact
        mid = len(data) // 3
        path.write_bytes(data[:mid] + rng.integers(0, 256, 3000, dtype=np.uint8).tobytes() + data[mid + 3000 :])
    error = _reason(spec_for(path, 0.0, 3.3, fps_target=8.0), DecodeConfig(num_frames=25, height=48, width=80))
    assert error.reason == "unreadable"


def test_video_without_frames(tmp_path):
    path = write_video(tmp_path / "zero.mp4", [], 30.0)
    assert _reason(spec_for(path, 0.0, 6.0)).reason == "no_frames"


def test_slow_source_is_low_fps(tmp_path):
    path = coded_video(tmp_path / "slow.mp4", 40, 5.0)
    assert _reason(spec_for(path, 0.0, 7.0)).reason == "low_fps"


# ---------------------------------------------------------------- from a manifest


def test_manifest_to_decoded_clip(tmp_path, ntsc_video):
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "ntsc.mp4").write_bytes(ntsc_video.read_bytes())
    manifest = tmp_path / "clips.csv"
    manifest.write_text("clip_id,video_path,start_sec,end_sec,caption\n,videos/ntsc.mp4,0:00:00.250,0:00:03.300,c\n")
    (spec,) = read_manifest(manifest).specs
    clip = decode_clip(spec, DecodeConfig(num_frames=25, height=SRC_H, width=SRC_W))
    expected = expected_nearest(0.25 + np.arange(25) / 8.0, 30000 / 1001)
    assert clip.clip_id == spec.clip_id
    assert [read_code(f, clip.transform) for f in clip.frames] == expected.tolist()
