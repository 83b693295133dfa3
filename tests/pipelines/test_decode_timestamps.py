"""Broken container timestamps (timeline fallbacks) and the short-clip sampling policy.

Broken files are made here: coded frames (test_decode's 10-bit frame-number pattern) encoded
with PyAV, packets muxed with damaged pts. What decord reads from them was checked by hand:
a jump of 1e12 ticks aborts decord (std::bad_alloc), a jump of 1e6 ticks gives a 40000 s gap
and, in mp4, avg_frame_rate 0.002 fps; repeated pts give non-increasing steps. OpenCV's
Megamind.avi / Megamind_bugy.avi (packed B-frames) give decord timestamps of -3.8e17 s, and
decord's seeks on them return wrong frames.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from test_decode import coded_frame, coded_video, expected_nearest, read_code, spec_for

import pipelines.decode as decode_module
from pipelines.clips import ClipRejected
from pipelines.decode import DecodeConfig, decode_clip, timeline_problem
from pipelines.video_io import VideoProbe

OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
FPS = 25
NUM = 80  # frames of the broken files (3.2 s at 25 fps)


def damaged_video(path: Path, pts_of_packet) -> Path:
    """NUM coded frames, MPEG-4 part 2 without B-frames, packet k muxed at pts = dts = pts_of_packet(k) / 25 s."""
    tb = Fraction(1, FPS)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = 160, 96, "yuv420p"
        stream.codec_context.options = {"bf": "0", "g": "12", "qscale": "2"}
        packets = []
        for k in range(NUM):
            frame = av.VideoFrame.from_ndarray(coded_frame(k), format="rgb24")
            frame.pts = k
            packets += stream.encode(frame)
        packets += stream.encode()
        for k, packet in enumerate(packets):
            packet.pts = packet.dts = pts_of_packet(k)
            packet.time_base = tb
            container.mux(packet)
    return path


DAMAGE = {
    # name: (pts of packet k, container, what timeline_problem must say)
    "jump_1e12": (lambda k: k if k < 40 else k + 10**12, "mkv", "timestamps lie more than 11.6 days from zero"),
    "jump_40000s": (lambda k: k if k < 40 else k + 10**6, "mp4", "gap 40000.040 s after frame 39"),
    "repeated": (lambda k: k // 3, "mkv", "53 of 79 frame steps do not increase"),
}

NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")


def assert_sane_numbers(message: str, limit: float = 1e6) -> None:
    """No absurd number in a reason: every number finite, below `limit`, at most 4 decimals."""
    assert "nan" not in message.lower() and "inf " not in message.lower(), message
    for token in NUMBER.findall(message):
        assert abs(float(token)) < limit, message
        assert len(token.split(".")[-1]) <= 4 if "." in token else len(token) <= 7, message


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_broken_timestamps_fall_back_to_frame_index_and_rate(tmp_path, damage):
    pts_of_packet, ext, problem = DAMAGE[damage]
    path = damaged_video(tmp_path / f"{damage}.{ext}", pts_of_packet)
    spec = spec_for(path, 0.3, 2.6, fps_target=8.0)  # 17 frames at 8 fps: 0.3 .. 2.3 s
    clip = decode_clip(spec, DecodeConfig(num_frames=17, height=96, width=160, num_threads=1))
    assert clip.timeline == "frame_index_rate"
    assert problem in clip.timeline_problem
    assert_sane_numbers(clip.timeline_problem)
    expected = expected_nearest(0.3 + np.arange(17) / 8.0, FPS)
    np.testing.assert_array_equal(clip.frame_index, expected)
    np.testing.assert_allclose(clip.timestamps, expected / FPS, atol=1e-9)
    assert [read_code(f, clip.transform) for f in clip.frames] == expected.tolist()
    # r_frame_rate, not avg_frame_rate (0.002 fps for the 40000 s jump in mp4)
    assert clip.source_fps == pytest.approx(FPS) and clip.fps == 8.0 and clip.source_num_frames == NUM


def test_broken_timestamps_native_rate(tmp_path):
    path = damaged_video(tmp_path / "jump.mkv", DAMAGE["jump_1e12"][0])
    clip = decode_clip(spec_for(path, 1.0, 3.0, fps_target=None), DecodeConfig(num_frames=30, height=48, width=80))
    np.testing.assert_array_equal(clip.frame_index, np.arange(25, 55))  # across the damaged pts at packet 40
    assert [read_code(f, clip.transform) for f in clip.frames] == list(range(25, 55))
    assert clip.fps == pytest.approx(FPS) and clip.source_stride == 1.0


def test_no_timestamps_and_no_rate_is_no_timeline(tmp_path, monkeypatch):
    path = coded_video(tmp_path / "v.mp4", 10, 25.0)
    # No container of ours can be written with pts absent and both rates 0, so the probe says so.
    broken = VideoProbe(10, np.full(10, np.nan), base_rate=0.0, average_rate=5000.0, size=(96, 160))
    monkeypatch.setattr(decode_module, "probe_video", lambda _: broken)
    with pytest.raises(ClipRejected) as info:
        decode_clip(spec_for(path, 0.0, 0.3), DecodeConfig(num_frames=3, height=48, width=80))
    assert info.value.reason == "no_timeline"
    assert info.value.message == (
        "container timestamps unusable (10 of 10 frames have no timestamp (limit 0)) and the stream rate "
        "(r_frame_rate 0.000, avg_frame_rate 5000.000 fps) is outside 0.1-1000 fps"
    )


@pytest.mark.parametrize("name", ["Megamind_bugy.avi", "Megamind.avi"])
def test_opencv_broken_avi_uses_pyav_timestamps(name):
    import decord

    path = OPENCV_DATA / name
    if not path.is_file():
        pytest.skip(f"{path} absent (Debian package opencv-doc)")
    reader = decord.VideoReader(str(path), num_threads=1)
    raw = np.asarray(reader.get_frame_timestamp(np.arange(len(reader))))[:, 0]
    assert np.abs(raw).max() > 1e15  # the damage this test is about: decord's timestamps
    with av.open(str(path)) as container:
        rate = float(container.streams.video[0].base_rate)
    spec = spec_for(path, 0.5, 2.5, fps_target=8.0)
    # Megamind_bugy.avi cuts to another shot at its last label frame (2.5 s); this test is about the timeline
    clip = decode_clip(spec, DecodeConfig(num_frames=17, height=96, width=128, num_threads=1, shot_cuts="ignore"))
    assert clip.timeline == "pyav" and "timestamps lie more than 11.6 days from zero" in clip.timeline_problem
    expected = expected_nearest(0.5 + np.arange(17) / 8.0, rate)
    np.testing.assert_array_equal(clip.frame_index, expected)
    np.testing.assert_allclose(clip.timestamps, expected / rate, atol=1e-6)
    # Frames: decord's sequential decode of the whole file (its seeks are wrong here).
    reference = clip.transform.apply_frames(reader.get_batch(np.arange(expected[-1] + 1)).asnumpy()[expected])
    np.testing.assert_array_equal(clip.frames, reference)
    assert clip.source_fps == pytest.approx(rate, rel=1e-6)


def test_timeline_problem_limits():
    good = np.arange(100) / 29.97 + 3.0
    assert timeline_problem(good, 29.97) == ""
    vfr = np.cumsum(np.r_[0.0, np.tile([0.33, 0.4, 0.47, 0.73], 17)[:67]])  # tree.avi-like drop frames at 15 fps
    assert timeline_problem(vfr, 15.0) == ""
    assert "1 of 100 frames have no timestamp" in timeline_problem(np.r_[good[:99], np.nan], 29.97)
    assert "shortest frame step 0.0500 ms is under 1 ms" in timeline_problem(np.r_[0.0, 5e-5, 0.1], math.nan)
    assert "span" in timeline_problem(np.arange(100) * 5.0, 29.97)  # 495 s for 3.3 s of frames
    assert timeline_problem(np.arange(100) * 5.0, math.nan) == ""  # no nominal rate: nothing to compare


# ---------------------------------------------------------------- short clips


@pytest.fixture(scope="module")
def video_30fps(tmp_path_factory) -> Path:
    return coded_video(tmp_path_factory.mktemp("short") / "v30.mp4", 90, 30.0)


def test_short_clip_policy_uses_the_slowest_rate_that_fits(video_30fps):
    # 21 frames at 8 fps need 2.5 s; the clip is 2 s: 20 / 2 = 10 fps, exactly every 3rd source frame.
    spec = spec_for(video_30fps, 0.0, 2.0, fps_target=8.0)
    clip = decode_clip(spec, DecodeConfig(num_frames=21, height=48, width=80, fps_max=15.0))
    assert clip.fps == pytest.approx(10.0) and clip.fps_target == 8.0
    np.testing.assert_array_equal(clip.frame_index, np.arange(0, 61, 3))
    assert clip.source_stride == pytest.approx(3.0)
    assert [read_code(f, clip.transform) for f in clip.frames] == list(range(0, 61, 3))
    assert clip.timeline == "container" and clip.timeline_problem == ""


def test_short_clip_policy_non_integer_stride(video_30fps):
    spec = spec_for(video_30fps, 0.4, 2.3, fps_target=8.0)  # 1.9 s: 16 / 1.9 = 8.42 fps
    clip = decode_clip(spec, DecodeConfig(num_frames=17, height=48, width=80, fps_max=30.0))
    fps = 16 / 1.9
    expected = expected_nearest(0.4 + np.arange(17) / fps, 30.0)
    assert clip.fps == pytest.approx(fps)
    np.testing.assert_array_equal(clip.frame_index, expected)
    assert clip.source_stride == pytest.approx((expected[-1] - expected[0]) / 16)
    assert [read_code(f, clip.transform) for f in clip.frames] == expected.tolist()
    # Long enough at the target: the policy leaves the rate alone.
    long = decode_clip(spec_for(video_30fps, 0.0, 2.9, fps_target=8.0), DecodeConfig(17, 48, 80, fps_max=30.0))
    assert long.fps == 8.0
    np.testing.assert_array_equal(long.frame_index, expected_nearest(np.arange(17) / 8.0, 30.0))


@pytest.mark.parametrize(
    "fps_max, needle",
    [
        (None, "clip length 2.000 s holds 17 frames at 8.000 fps, needs 21 frames = 2.500 s (fps_max allows"),
        (9.0, "or 10.000 fps to fit, above fps_max 9.000 (21 frames at 9.000 fps need 2.222 s)"),
    ],
)
def test_too_short_names_length_needed_and_limit(video_30fps, fps_max, needle):
    spec = spec_for(video_30fps, 0.0, 2.0, fps_target=8.0)
    with pytest.raises(ClipRejected) as info:
        decode_clip(spec, DecodeConfig(num_frames=21, height=48, width=80, fps_max=fps_max))
    assert info.value.reason == "too_short" and needle in info.value.message
    assert_sane_numbers(info.value.message)


def test_too_short_capped_by_the_source_rate(tmp_path):
    path = coded_video(tmp_path / "slow.mp4", 30, 5.0)  # 5 fps source
    spec = spec_for(path, 0.0, 3.0, fps_target=4.0)  # 25 frames need 6 s at 4 fps, 8 fps to fit 3 s
    with pytest.raises(ClipRejected) as info:
        decode_clip(spec, DecodeConfig(num_frames=25, height=48, width=80, fps_max=30.0))
    assert info.value.reason == "too_short"
    needle = "8.000 fps to fit, above the source rate 5.000 fps (25 frames at 5.000 fps need 4.800 s)"
    assert needle in info.value.message
    native = spec_for(path, 0.0, 3.0, fps_target=None)
    with pytest.raises(ClipRejected) as info:
        decode_clip(native, DecodeConfig(num_frames=25, height=48, width=80))
    assert info.value.message == "clip length 3.000 s holds 16 consecutive source frames, needs 25 frames = 4.800 s"
