"""Decode the frames of one clip: only the needed ones, at the label timeline and resolution.

Timeline (LABELS.md): label frame i sits at t_i = start_sec + i / fps for i = 0..T-1, and
shows the source frame whose timestamp is nearest to t_i (ties go to the earlier frame).
Timestamps are the source frames' presentation times measured from the first frame, the
convention of the PySceneDetect timecodes that SpatialVID and Panda-70M manifests use, so
non-integer rates such as 29.97 fps need no special case. With `fps_target=None` the clip
keeps the source rate: T consecutive source frames from the one nearest to start_sec.

Which timestamps (`DecodedClip.timeline`):
    container         the container's timestamps as decord reads them (the normal case);
                      frames come from decord `get_batch` on the T indices only.
    pyav              decord's timestamps are broken but the packet timestamps PyAV demuxes
                      are sound (OpenCV's Megamind.avi: decord reads -3.8e17 s for 100+ frames
                      of a packed-B-frame AVI whose packets carry good pts).
    frame_index_rate  no usable timestamps: frame k sits at k / rate, with the stream's nominal
                      rate (r_frame_rate, else avg_frame_rate; the average is frames / duration,
                      so it inherits timestamp damage: 0.002 fps on an mp4 whose pts jump by
                      40000 s, where r_frame_rate still reads 25).

Timestamps are judged by `timeline_problem`: finite, within 11.6 days (1e6 s) of zero,
strictly increasing, no step under 1 ms (1000 fps), no gap over max(10 s, 100 median steps),
and a span within 0.25-100 times what the frame count takes at the nominal rate. Both
fallbacks decode with PyAV from the first frame without seeking
(`pipelines.video_io.decode_sequential`), because decord seeks by the broken timestamps (on
Megamind.avi index 100 returns the content of frame 2); that costs a decode of every frame up
to the clip's last. PyAV's packet timestamps are read before decord opens the file, and a file
whose packet timestamps are broken never reaches decord, which can abort the process on absurd
values (std::bad_alloc on pts jumping by 1e12 ticks).

Short clips (`DecodeConfig.fps_max`): when T frames at the clip's target rate do not fit in
[start_sec, end_sec], the clip is sampled at the slowest rate that fits them, (T - 1) /
(end_sec - start_sec), provided it is at most `fps_max` and the source rate; the chosen rate is
`DecodedClip.fps` and the mean source-frame spacing `DecodedClip.source_stride`. With
`fps_max=None` (the default) the target rate is kept exactly and a short clip is rejected.

Shot cuts (`DecodeConfig.shot_cuts`, `pipelines.shot_cuts`): the label frames are scored as
PySceneDetect's content detector scores them; a pair of label frames whose change reaches half of
`shot_cut_threshold` is a candidate, and the consecutive source frames between them are decoded
and scored too: a step at or over the threshold there is a cut (with `fps_target=None` the
label frames are those consecutive frames already). "skip" (the default) starts the clip again at
the new shot's first frame, as often as cuts are found, and records the cuts skipped
(`DecodedClip.shot_cuts_skipped`); when the span left after a cut cannot hold T label frames the
clip is rejected as `shot_cut`, naming the cut and the length left. "reject" rejects a clip at
its first cut; "ignore" does not look.

Only the T label frames are decoded on the container timeline (decord `get_batch` on their
indices; decord still decodes the frames between a key frame and a needed frame, but never
holds them).

Geometry: aspect-preserving resize so the frame covers the label resolution, then a centre
crop (`ResizeCrop`). With pixel centres at integer coordinates, resizing by s maps
u -> s (u + 0.5) - 0.5 and cropping subtracts the crop offset; `K` is mapped with exactly
the same affine map.

Failures raise `ClipRejected` with a reason from `DECODE_REASONS`; every message names the
measured quantity, its value and the limit it missed:
    missing_file   the video file does not exist
    not_a_file     the path is a folder (or another non-file)
    unreadable     empty, corrupt or truncated file, or a frame fails to decode
    no_frames      no video stream, or zero frames
    no_timeline    broken timestamps and no usable stream rate to replace them
    out_of_range   the clip span is not inside the video
    too_short      the span holds fewer than T label frames (at any allowed rate)
    low_fps        the source is slower than the target fps (label frames would repeat)
    shot_cut       a shot cut among the label frames (`DecodeConfig.shot_cuts` "reject"), or no
                   cut-free stretch of T label frames after it ("skip")

Caveat: decord 0.6 can hang inside native code when a container over-reports its frame
count and a requested index lies past the real end (dmlc/decord#373); callers running many
clips should decode in worker processes with a timeout.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import cv2
import numpy as np

from pipelines.clips import ClipRejected, ClipSpec
from pipelines.remote_video import DEFAULT_CACHE_DIR, RemoteVideoError, VideoCache, is_remote
from pipelines.shot_cuts import DEFAULT_CUT_THRESHOLD, ShotCut, content_changes
from pipelines.video_io import VideoProbe, decode_sequential, probe_video

__all__ = [
    "DECODE_REASONS",
    "TIMELINES",
    "DecodeConfig",
    "DecodedClip",
    "FrameSelection",
    "ResizeCrop",
    "SHOT_CUT_POLICIES",
    "decode_clip",
    "frame_times",
    "select_frames",
    "timeline_problem",
]

DECODE_REASONS = (
    "missing_file", "not_a_file", "unreadable", "no_frames", "no_timeline", "out_of_range", "too_short", "low_fps",
    "shot_cut",
)
SHOT_CUT_POLICIES = ("skip", "reject", "ignore")
TIMELINES = ("container", "pyav", "frame_index_rate")
Timeline = Literal["container", "pyav", "frame_index_rate"]

_TIE_EPS_S = 1e-6  # decord timestamps are float32: differences below this count as ties
MIN_SOURCE_FPS = 0.1  # a nominal rate outside [MIN, MAX] is not a frame rate
MAX_SOURCE_FPS = 1000.0  # also: a step under 1 / MAX between two frames is not a frame step
MAX_ABS_TIME_S = 1e6  # 11.6 days; MPEG-TS pts wrap at 26.5 h, so larger values are damage
MAX_GAP_S = 10.0  # a gap is broken when over max(MAX_GAP_S, MAX_GAP_STEPS median steps) ...
MAX_GAP_STEPS = 100.0  # ... so variable-rate files with pauses of a few seconds stay valid
SPAN_RATIO_LIMITS = (0.25, 100.0)  # timestamp span / (frames at the nominal rate); tree.avi: 6.6


@dataclass(frozen=True)
class DecodeConfig:
    """How clips are decoded.

    Attributes:
        num_frames: T, label frames per clip.
        height, width: label resolution.
        num_threads: decoder threads, decord's or PyAV's (0 lets the decoder choose; use 1 in busy worker pools).
        fps_max: short-clip policy (module docstring): the fastest label rate a clip too short
            for T frames at its target rate may be sampled at; None keeps the target rate.
    """

    num_frames: int = field(default=49, metadata={"help": "T, label frames per clip"})
    height: int = field(default=480, metadata={"help": "label height in pixels"})
    width: int = field(default=720, metadata={"help": "label width in pixels"})
    num_threads: int = field(default=0, metadata={"help": "decoder threads (0: the decoder chooses)"})
    fps_max: float | None = field(
        default=None,
        metadata={
            "gt": 0,
            "help": "short clips: when T frames at the target fps do not fit the clip, sample it at the slowest "
            "rate that fits them, (T-1)/(end-start), if that is at most this many fps (and the source rate); "
            "the rate used is recorded as the clip's fps. Default: keep the target fps, reject short clips"
        },
    )
    video_cache_dir: str | None = field(default=None, metadata={
        "help": "local cache of videos from object storage (default: worldreel-video-cache in the temp folder)"})
    video_cache_gb: float = field(default=20.0, metadata={"gt": 0, "help": "size bound of the video cache"})
    shot_cuts: str = field(default="skip", metadata={
        "choices": SHOT_CUT_POLICIES, "help": "a shot cut among the label frames: skip to the shot after it, "
        "reject the clip, or ignore it"})
    shot_cut_threshold: float = field(default=DEFAULT_CUT_THRESHOLD, metadata={
        "gt": 0, "help": "content change between consecutive source frames (PySceneDetect, 0-255) that is a cut"})

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.height < 1 or self.width < 1:
            raise ValueError(f"label resolution must be positive, got {self.height}x{self.width}")
        if self.num_threads < 0:
            raise ValueError(f"num_threads must be >= 0, got {self.num_threads}")
        if self.fps_max is not None and not (math.isfinite(self.fps_max) and self.fps_max > 0):
            raise ValueError(f"fps_max must be a positive number or None, got {self.fps_max}")
        if self.shot_cuts not in SHOT_CUT_POLICIES:
            raise ValueError(f"shot_cuts must be one of {SHOT_CUT_POLICIES}, got {self.shot_cuts!r}")
        if not (math.isfinite(self.shot_cut_threshold) and self.shot_cut_threshold > 0):
            raise ValueError(f"shot_cut_threshold must be a positive number, got {self.shot_cut_threshold}")


@dataclass(frozen=True)
class ResizeCrop:
    """Aspect-preserving resize to cover (height, width), then centre crop.

    Pixel coordinates map as u' = scale_x (u + 0.5) - 0.5 - crop_left (and likewise for v),
    which is also the sampling geometry of `cv2.resize`. Use `apply_points`/`apply_K` to
    bring source-resolution annotations (ViPE intrinsics, tracks) to the label resolution.
    """

    src_height: int
    src_width: int
    resized_height: int
    resized_width: int
    crop_top: int
    crop_left: int
    height: int
    width: int

    @classmethod
    def from_sizes(cls, src_height: int, src_width: int, height: int, width: int) -> "ResizeCrop":
        if min(src_height, src_width, height, width) < 1:
            raise ValueError(f"sizes must be positive, got source {src_height}x{src_width}, target {height}x{width}")
        scale = max(height / src_height, width / src_width)
        resized_h = max(height, round(src_height * scale))
        resized_w = max(width, round(src_width * scale))
        return cls(
            src_height, src_width, resized_h, resized_w, (resized_h - height) // 2, (resized_w - width) // 2, height, width
        )

    @property
    def scale_x(self) -> float:
        return self.resized_width / self.src_width

    @property
    def scale_y(self) -> float:
        return self.resized_height / self.src_height

    def matrix(self) -> np.ndarray:
        """(3, 3) float64 affine map of homogeneous source pixels to label pixels."""
        sx, sy = self.scale_x, self.scale_y
        return np.array(
            [
                [sx, 0.0, 0.5 * sx - 0.5 - self.crop_left],
                [0.0, sy, 0.5 * sy - 0.5 - self.crop_top],
                [0.0, 0.0, 1.0],
            ]
        )

    def apply_points(self, uv: np.ndarray) -> np.ndarray:
        """Map (..., 2) source pixel coordinates (u, v) to label pixels (float64)."""
        uv = np.asarray(uv, np.float64)
        if uv.shape[-1] != 2:
            raise ValueError(f"points must be (..., 2), got {uv.shape}")
        A = self.matrix()
        return uv @ A[:2, :2].T + A[:2, 2]

    def apply_K(self, K: np.ndarray) -> np.ndarray:
        """Map (..., 3, 3) source intrinsics to label intrinsics (float64)."""
        K = np.asarray(K, np.float64)
        if K.shape[-2:] != (3, 3):
            raise ValueError(f"K must be (..., 3, 3), got {K.shape}")
        return self.matrix() @ K

    def apply_frames(self, frames: np.ndarray) -> np.ndarray:
        """Resize and crop (N, src_height, src_width, C) uint8 frames to (N, height, width, C)."""
        if frames.shape[1:3] != (self.src_height, self.src_width):
            raise ValueError(f"frames are {frames.shape[1:3]}, expected {(self.src_height, self.src_width)}")
        out = np.empty((frames.shape[0], self.height, self.width, frames.shape[3]), frames.dtype)
        identity = (self.resized_height, self.resized_width) == (self.src_height, self.src_width)
        # INTER_AREA averages the source pixels under each target pixel when shrinking (no
        # aliasing); when enlarging it is bilinear-like. Both use the pixel-centre mapping.
        interp = cv2.INTER_AREA if self.scale_x * self.scale_y < 1.0 else cv2.INTER_LINEAR
        top, left = self.crop_top, self.crop_left
        for i, frame in enumerate(frames):
            if not identity:
                frame = cv2.resize(frame, (self.resized_width, self.resized_height), interpolation=interp)
            out[i] = frame[top : top + self.height, left : left + self.width]
        return out


@dataclass
class DecodedClip:
    """Label-ready frames of one clip.

    Attributes:
        clip_id: the clip's id.
        frames: (T, H, W, 3) uint8 RGB at the label resolution.
        frame_index: (T,) int64 source frame numbers.
        timestamps: (T,) float64 seconds of those frames on the timeline used.
        K: (T, 3, 3) float32 label intrinsics when the spec gave intrinsics, else None
            (the camera labeler then estimates them).
        fps: label frame rate: the target, the rate the short-clip policy chose, or the
            source's average rate when native.
        fps_target: the rate the clip asked for (None: native).
        source_stride: mean source frames per label step, (frame_index[-1] - frame_index[0]) / (T - 1).
        source_fps: average frame rate of the source on the timeline used.
        source_size: (height, width) of the source frames.
        source_num_frames: frames in the source video.
        transform: the source -> label pixel map.
        timeline: "container", "pyav" or "frame_index_rate" (module docstring).
        timeline_problem: why the container's timestamps were not used ("" when they were).
        shot_cuts_skipped: the cuts the clip was started again after (`DecodeConfig.shot_cuts` "skip").
    """

    clip_id: str
    frames: np.ndarray
    frame_index: np.ndarray
    timestamps: np.ndarray
    K: np.ndarray | None
    fps: float
    fps_target: float | None
    source_stride: float
    source_fps: float
    source_size: tuple[int, int]
    source_num_frames: int
    transform: ResizeCrop
    timeline: Timeline = "container"
    timeline_problem: str = ""
    shot_cuts_skipped: tuple[ShotCut, ...] = ()


@dataclass(frozen=True)
class FrameSelection:
    """The source frames of the T label frames and the label rate they were taken at.

    Attributes:
        index: (T,) int64 strictly increasing source frame numbers.
        fps: label rate; None when consecutive source frames were taken (native rate).
    """

    index: np.ndarray
    fps: float | None


def select_frames(
    times: np.ndarray,
    start_sec: float,
    end_sec: float,
    num_frames: int,
    fps: float | None,
    clip_id: str = "?",
    fps_max: float | None = None,
) -> FrameSelection:
    """Source frame numbers of the T label frames.

    Args:
        times: (N,) increasing timestamps of all source frames, seconds from the first frame.
        start_sec, end_sec: clip span.
        num_frames: T.
        fps: target label fps, or None for T consecutive source frames.
        clip_id: for error messages.
        fps_max: short-clip policy (module docstring); None keeps `fps` exactly.

    Returns:
        The frame numbers and the label rate used.

    Raises:
        ClipRejected: "no_frames", "out_of_range", "too_short" or "low_fps".
    """
    times = np.asarray(times, np.float64)
    n = times.shape[0]
    if n == 0:
        raise ClipRejected(clip_id, "no_frames", "the video has no frames")
    period = float(np.median(np.diff(times))) if n > 1 else 0.0
    half = 0.5 * period + _TIE_EPS_S
    video_end = times[-1] + half
    span = end_sec - start_sec
    if start_sec > video_end:
        raise ClipRejected(
            clip_id, "out_of_range", f"clip start {_s(start_sec)} is after the video's last frame at {_s(times[-1])}"
        )
    if fps is None:
        first = int(_nearest(times, np.array([start_sec]))[0])
        index = np.arange(first, first + num_frames, dtype=np.int64)
        if index[-1] >= n:
            raise ClipRejected(
                clip_id,
                "out_of_range",
                f"{num_frames} consecutive frames from frame {first} need frames up to {index[-1]}, "
                f"the video has {n} (0..{n - 1})",
            )
        if times[index[-1]] > end_sec + half:
            held = int(np.count_nonzero((times >= times[first] - _TIE_EPS_S) & (times <= end_sec + half)))
            raise ClipRejected(
                clip_id,
                "too_short",
                f"clip length {_s(span)} holds {held} consecutive source frames, "
                f"needs {num_frames} frames = {_s(times[index[-1]] - times[first])}",
            )
        return FrameSelection(index, None)
    fps = _label_fps(span, num_frames, fps, fps_max, period, clip_id)
    label_times = start_sec + np.arange(num_frames, dtype=np.float64) / fps
    if label_times[-1] > video_end:
        raise ClipRejected(
            clip_id,
            "out_of_range",
            f"label frames run until {_s(label_times[-1])}, after the video's last frame at {_s(times[-1])}",
        )
    index = _nearest(times, label_times)
    if num_frames > 1 and np.any(np.diff(index) <= 0):
        source = f"{_num(1.0 / period)} fps" if period > 0 else "an unknown rate (median frame step 0 s)"
        raise ClipRejected(
            clip_id,
            "low_fps",
            f"source frame rate {source} is below the label rate {_num(fps)} fps: "
            "label frames would repeat source frames",
        )
    return FrameSelection(index, fps)


def _label_fps(
    span: float, num_frames: int, fps: float, fps_max: float | None, period: float, clip_id: str
) -> float:
    """The target rate when T frames fit the span at it, else the short-clip policy's rate."""
    need = (num_frames - 1) / fps
    if need <= span + 0.5 * period + _TIE_EPS_S:
        return fps
    message = (
        f"clip length {_s(span)} holds {int(math.floor(span * fps + 1e-9)) + 1} frames at {_num(fps)} fps, "
        f"needs {num_frames} frames = {_s(need)}"
    )
    if fps_max is None:
        raise ClipRejected(clip_id, "too_short", message + " (fps_max allows faster rates for short clips)")
    fit = (num_frames - 1) / span
    source_fps = 1.0 / period if period > 0 else math.inf
    ceiling = min(fps_max, source_fps)
    if fit <= ceiling * (1 + 1e-9):
        return fit
    limit = f"fps_max {_num(fps_max)}" if fps_max <= source_fps else f"the source rate {_num(source_fps)} fps"
    raise ClipRejected(
        clip_id,
        "too_short",
        f"{message}, or {_num(fit)} fps to fit, above {limit} "
        f"({num_frames} frames at {_num(ceiling)} fps need {_s((num_frames - 1) / ceiling)})",
    )


def timeline_problem(times_s: np.ndarray, nominal_fps: float) -> str:
    """Why timestamps cannot place frames in time ("" when they can); names metric, value and limit.

    Args:
        times_s: (N,) timestamps in seconds, in frame order, not shifted to start at 0.
        nominal_fps: the stream's nominal rate, or NaN when unknown (skips the span check).
    """
    t = np.asarray(times_s, np.float64)
    n = t.shape[0]
    missing = int(np.count_nonzero(~np.isfinite(t)))
    if missing:
        return f"{missing} of {n} frames have no timestamp (limit 0)"
    if n == 0:
        return ""
    absurd = int(np.count_nonzero(np.abs(t) > MAX_ABS_TIME_S))
    if absurd:  # counted, not printed: the values themselves are garbage like -3.8e17 s
        return f"{absurd} of {n} timestamps lie more than {MAX_ABS_TIME_S / 86400:.1f} days from zero (limit 0)"
    if n < 2:
        return ""
    steps = np.diff(t)
    backwards = int(np.count_nonzero(steps <= 0))
    if backwards:
        return f"{backwards} of {n - 1} frame steps do not increase (limit 0)"
    shortest = float(steps.min())
    if shortest < 1.0 / MAX_SOURCE_FPS:
        limit_ms = 1e3 / MAX_SOURCE_FPS
        return f"shortest frame step {shortest * 1e3:.4f} ms is under {limit_ms:g} ms ({MAX_SOURCE_FPS:g} fps)"
    median = float(np.median(steps))
    gap_limit = max(MAX_GAP_S, MAX_GAP_STEPS * median)
    k = int(np.argmax(steps))
    if steps[k] > gap_limit:
        return (
            f"gap {_s(steps[k])} after frame {k} exceeds {_s(gap_limit)} "
            f"(max of {MAX_GAP_S:g} s, {MAX_GAP_STEPS:g} median steps)"
        )
    if math.isfinite(nominal_fps):
        expected = (n - 1) / nominal_fps
        ratio = (t[-1] - t[0]) / expected
        low, high = SPAN_RATIO_LIMITS
        if not low <= ratio <= high:
            return (
                f"timestamps span {_s(t[-1] - t[0])}, {ratio:.3g} times the {_s(expected)} that {n} frames take "
                f"at the stream rate {_num(nominal_fps)} fps (limits {low:g}-{high:g})"
            )
    return ""


def frame_times(reader) -> np.ndarray:
    """(N,) float64 presentation times of every frame of a decord VideoReader, from the first frame."""
    starts = _raw_frame_times(reader)
    return starts - starts[0] if starts.shape[0] else starts


def decode_clip(spec: ClipSpec, config: DecodeConfig = DecodeConfig()) -> DecodedClip:
    """Decode the label frames of `spec` (see the module docstring for the timelines, policy and geometry).

    Raises:
        ClipRejected: with a reason from `DECODE_REASONS`.
    """
    if is_remote(spec.uri):
        spec = replace(spec, uri=str(_cached(spec, config)))
    probe = _probe(spec)
    nominal = _nominal_fps(probe)
    problem = timeline_problem(probe.pts_s, nominal)
    reader = None
    if problem:
        timeline: Timeline = "frame_index_rate"
        if not math.isfinite(nominal):
            raise ClipRejected(
                spec.clip_id,
                "no_timeline",
                f"container timestamps unusable ({problem}) and the stream rate (r_frame_rate "
                f"{_num(probe.base_rate)}, avg_frame_rate {_num(probe.average_rate)} fps) is outside "
                f"{MIN_SOURCE_FPS:g}-{MAX_SOURCE_FPS:g} fps",
            )
        times = np.arange(probe.num_frames, dtype=np.float64) / nominal
    else:
        reader = _open(spec, config.num_threads)
        raw = _raw_frame_times(reader)
        decord_problem = timeline_problem(raw, nominal)
        if decord_problem:
            timeline, problem, reader = "pyav", decord_problem, None
            times = probe.pts_s - probe.pts_s[0]
        else:
            timeline, times = "container", raw - raw[0]
    n = times.shape[0]
    source_fps = (n - 1) / times[-1] if n > 1 else (nominal if math.isfinite(nominal) else 0.0)
    start_sec, skipped = spec.start_sec, []
    while True:
        try:
            selection = select_frames(
                times, start_sec, spec.end_sec, config.num_frames, spec.fps_target, spec.clip_id, config.fps_max
            )
        except ClipRejected as e:
            if not skipped:
                raise
            raise ClipRejected(spec.clip_id, "shot_cut", f"{_cut_text(skipped[-1], config)}; the rest of the clip "
                               f"from it: {e.reason}: {e.message}") from None
        index = selection.index
        raw_frames = _decode_frames(spec, reader, index, config.num_threads)
        transform = ResizeCrop.from_sizes(raw_frames.shape[1], raw_frames.shape[2], config.height, config.width)
        frames = transform.apply_frames(np.ascontiguousarray(raw_frames, np.uint8))
        cut = None if config.shot_cuts == "ignore" else _first_cut(spec, reader, times, index, frames, config)
        if cut is None:
            break
        if config.shot_cuts == "reject":
            raise ClipRejected(spec.clip_id, "shot_cut", f"{_cut_text(cut, config)} (shot_cuts 'skip' labels the "
                               "shot after it)")
        skipped.append(cut)
        start_sec = cut.time_s
    K = None
    if spec.intrinsics is not None:
        fx, fy, cx, cy = spec.intrinsics
        K_src = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        K = np.broadcast_to(transform.apply_K(K_src), (index.shape[0], 3, 3)).astype(np.float32)
    T = index.shape[0]
    return DecodedClip(
        clip_id=spec.clip_id,
        frames=frames,
        frame_index=index.astype(np.int64),
        timestamps=times[index].astype(np.float64),
        K=K,
        fps=selection.fps if selection.fps is not None else source_fps,
        fps_target=spec.fps_target,
        source_stride=float(index[-1] - index[0]) / (T - 1) if T > 1 else 1.0,
        source_fps=float(source_fps),
        source_size=(int(raw_frames.shape[1]), int(raw_frames.shape[2])),
        source_num_frames=int(n),
        transform=transform,
        timeline=timeline,
        timeline_problem=problem,
        shot_cuts_skipped=tuple(skipped),
    )


def _first_cut(spec: ClipSpec, reader, times: np.ndarray, index: np.ndarray, frames: np.ndarray,
               config: DecodeConfig) -> ShotCut | None:
    """The first shot cut among the label frames (module docstring), or None."""
    threshold = config.shot_cut_threshold
    changes = content_changes(frames)
    steps = np.diff(index)
    # label frames that are consecutive source frames are judged as they are; others are candidates
    candidates = [i for i in np.flatnonzero(changes >= 0.5 * threshold) + 1
                  if steps[i - 1] > 1 or changes[i - 1] >= threshold]
    if not candidates:
        return None
    between = np.unique(np.concatenate([np.arange(index[i - 1], index[i] + 1) for i in candidates]))
    # scored uncropped: `content_changes` shrinks them to its own scale
    source = dict(zip(between.tolist(), np.asarray(_decode_frames(spec, reader, between, config.num_threads), np.uint8)))
    for i in candidates:
        first, last = int(index[i - 1]), int(index[i])
        run = content_changes(np.stack([source[n] for n in range(first, last + 1)]))
        step = int(np.argmax(run))
        if run[step] >= threshold:
            return ShotCut(first + step + 1, float(times[first + step + 1]), float(run[step]))
    return None


def _cut_text(cut: ShotCut, config: DecodeConfig) -> str:
    return (f"shot cut at {_s(cut.time_s)} (source frame {cut.source_frame}: content change {cut.change:.1f}, "
            f"threshold {config.shot_cut_threshold:g})")


def _cached(spec: ClipSpec, config: DecodeConfig) -> Path:
    """The local copy of a clip's remote video, or ClipRejected naming the clip and the URI."""
    root = Path(config.video_cache_dir) if config.video_cache_dir else DEFAULT_CACHE_DIR
    try:
        return VideoCache(root, int(config.video_cache_gb * 1024**3)).local_path(spec.uri)
    except RemoteVideoError as e:
        raise ClipRejected(spec.clip_id, e.reason, str(e)) from None


def _probe(spec: ClipSpec) -> VideoProbe:
    """PyAV's view of the file (packet timestamps, rates), or ClipRejected."""
    import av

    path = spec.uri
    if os.path.isdir(path):
        raise ClipRejected(spec.clip_id, "not_a_file", f"video {path} is a folder, not a video file")
    if not os.path.isfile(path):
        raise ClipRejected(spec.clip_id, "missing_file", f"video {path} does not exist")
    if os.path.getsize(path) == 0:
        raise ClipRejected(spec.clip_id, "unreadable", f"video {path} is empty (0 bytes)")
    try:
        probe = probe_video(path)
    except LookupError as e:
        raise ClipRejected(spec.clip_id, "no_frames", f"{path} has no video stream") from e
    except (av.FFmpegError, ValueError, OSError) as e:
        raise ClipRejected(spec.clip_id, "unreadable", f"cannot open {path}: {_first_line(e)}") from e
    if probe.num_frames == 0:
        raise ClipRejected(spec.clip_id, "no_frames", f"{path} has a video stream with zero frames")
    return probe


def _nominal_fps(probe: VideoProbe) -> float:
    """r_frame_rate, else avg_frame_rate, if inside the sane range; NaN when neither is."""
    for rate in (probe.base_rate, probe.average_rate):
        if MIN_SOURCE_FPS <= rate <= MAX_SOURCE_FPS:
            return rate
    return math.nan


def _open(spec: ClipSpec, num_threads: int):
    """A decord VideoReader on the clip's file, or ClipRejected."""
    import decord  # imported here so that manifest and geometry users do not load the decoder

    path = spec.uri
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
    except Exception as e:  # DECORDError or RuntimeError, depending on where opening fails
        message = _first_line(e)
        if "cannot find video stream" in message:
            raise ClipRejected(spec.clip_id, "no_frames", f"{path} has no video stream") from e
        raise ClipRejected(spec.clip_id, "unreadable", f"cannot open {path}: {message}") from e
    if len(reader) == 0:
        raise ClipRejected(spec.clip_id, "no_frames", f"{path} has a video stream with zero frames")
    return reader


def _raw_frame_times(reader) -> np.ndarray:
    """(N,) float64 decord start times of every frame, as the container gives them."""
    n = len(reader)
    if n == 0:
        return np.zeros(0, np.float64)
    return np.asarray(reader.get_frame_timestamp(np.arange(n)), np.float64).reshape(n, 2)[:, 0]


def _decode_frames(spec: ClipSpec, reader, index: np.ndarray, num_threads: int) -> np.ndarray:
    """(T, h, w, 3) uint8 source frames: decord's seek when its timeline holds, else PyAV from the start."""
    try:
        if reader is None:
            raw = decode_sequential(spec.uri, index, num_threads)
        else:
            batch = reader.get_batch(index)
            raw = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)
    except Exception as e:  # decord raises DECORDError/RuntimeError, PyAV FFmpegError/EOFError
        raise ClipRejected(spec.clip_id, "unreadable", f"decoding frames of {spec.uri} failed: {_first_line(e)}") from e
    finally:
        del reader
    if raw.ndim != 4 or raw.shape[0] != index.shape[0] or raw.shape[3] != 3:
        raise ClipRejected(spec.clip_id, "unreadable", f"decoder returned frames of shape {raw.shape} for {spec.uri}")
    return raw


def _nearest(times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the time nearest to each target; ties (within float32 noise) go to the earlier frame."""
    if times.shape[0] == 1:
        return np.zeros(targets.shape, np.int64)
    right = np.clip(np.searchsorted(times, targets, side="left"), 1, times.shape[0] - 1)
    left = right - 1
    take_left = (targets - times[left]) <= (times[right] - targets) + _TIE_EPS_S
    return np.where(take_left, left, right).astype(np.int64)


def _num(x: float) -> str:
    """A number for a message: 3 decimals, or 4 significant digits when huge; never a 20-digit float."""
    x = float(x)
    if not math.isfinite(x):
        return "unknown"
    return f"{x:.3f}" if abs(x) < 1e6 else f"{x:.4g}"


def _s(seconds: float) -> str:
    return f"{_num(seconds)} s"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__
