"""Decode the frames of one clip: only the needed ones, at the label timeline and resolution.

Timeline (LABELS.md): label frame i sits at t_i = start_sec + i / fps for i = 0..T-1, and
shows the source frame whose timestamp is nearest to t_i (ties go to the earlier frame).
Timestamps are the source frames' presentation times measured from the first frame, the
convention of the PySceneDetect timecodes that SpatialVID and Panda-70M manifests use, so
non-integer rates such as 29.97 fps need no special case. With `fps_target=None` the clip
keeps the source rate: T consecutive source frames from the one nearest to start_sec.

Only those T frames are decoded (decord `get_batch` on their indices; decord still decodes
the frames between a key frame and a needed frame, but never holds them).

Geometry: aspect-preserving resize so the frame covers the label resolution, then a centre
crop (`ResizeCrop`). With pixel centres at integer coordinates, resizing by s maps
u -> s (u + 0.5) - 0.5 and cropping subtracts the crop offset; `K` is mapped with exactly
the same affine map.

Failures raise `ClipRejected` with a reason from `DECODE_REASONS`:
    missing_file   the video file does not exist
    unreadable     empty, corrupt or truncated file, or a frame fails to decode
    no_frames      no video stream, or zero frames
    out_of_range   the clip span is not inside the video
    too_short      the span holds fewer than T label frames
    low_fps        the source is slower than the target fps (label frames would repeat)

Caveat: decord 0.6 can hang inside native code when a container over-reports its frame
count and a requested index lies past the real end (dmlc/decord#373); callers running many
clips should decode in worker processes with a timeout.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import cv2
import numpy as np

from pipelines.clips import ClipRejected, ClipSpec

__all__ = [
    "DECODE_REASONS",
    "DecodeConfig",
    "DecodedClip",
    "ResizeCrop",
    "decode_clip",
    "frame_times",
    "select_frames",
]

DECODE_REASONS = ("missing_file", "unreadable", "no_frames", "out_of_range", "too_short", "low_fps")
_TIE_EPS_S = 1e-6  # decord timestamps are float32: differences below this count as ties


@dataclass(frozen=True)
class DecodeConfig:
    """How clips are decoded.

    Attributes:
        num_frames: T, label frames per clip.
        height, width: label resolution.
        num_threads: decord decoder threads (0 lets decord choose; use 1 in busy worker pools).
    """

    num_frames: int = 49
    height: int = 480
    width: int = 720
    num_threads: int = 0

    def __post_init__(self) -> None:
        if self.num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {self.num_frames}")
        if self.height < 1 or self.width < 1:
            raise ValueError(f"label resolution must be positive, got {self.height}x{self.width}")
        if self.num_threads < 0:
            raise ValueError(f"num_threads must be >= 0, got {self.num_threads}")


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
        timestamps: (T,) float64 seconds of those frames in the source video.
        K: (T, 3, 3) float32 label intrinsics when the spec gave intrinsics, else None
            (the camera labeler then estimates them).
        fps: label frame rate (the target, or the source's average rate when native).
        source_fps: average frame rate of the source video.
        source_size: (height, width) of the source frames.
        source_num_frames: frames in the source video.
        transform: the source -> label pixel map.
    """

    clip_id: str
    frames: np.ndarray
    frame_index: np.ndarray
    timestamps: np.ndarray
    K: np.ndarray | None
    fps: float
    source_fps: float
    source_size: tuple[int, int]
    source_num_frames: int
    transform: ResizeCrop


def select_frames(
    times: np.ndarray, start_sec: float, end_sec: float, num_frames: int, fps: float | None, clip_id: str = "?"
) -> np.ndarray:
    """Source frame numbers of the T label frames.

    Args:
        times: (N,) non-decreasing timestamps of all source frames, seconds from the first frame.
        start_sec, end_sec: clip span.
        num_frames: T.
        fps: label fps, or None for T consecutive source frames.
        clip_id: for error messages.

    Returns:
        (T,) int64 strictly increasing frame numbers.

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
    if start_sec > video_end:
        raise ClipRejected(clip_id, "out_of_range", f"clip starts at {start_sec:.3f}s but the video ends at {times[-1]:.3f}s")
    if fps is None:
        first = int(_nearest(times, np.array([start_sec]))[0])
        index = np.arange(first, first + num_frames, dtype=np.int64)
        if index[-1] >= n:
            raise ClipRejected(
                clip_id, "out_of_range", f"needs source frames up to {index[-1]} but the video has {n} frames"
            )
        if times[index[-1]] > end_sec + half:
            raise ClipRejected(
                clip_id,
                "too_short",
                f"{num_frames} consecutive frames need {times[index[-1]] - times[first]:.3f}s "
                f"but the clip spans {end_sec - start_sec:.3f}s",
            )
        return index
    label_times = start_sec + np.arange(num_frames, dtype=np.float64) / fps
    if label_times[-1] > end_sec + half:
        raise ClipRejected(
            clip_id,
            "too_short",
            f"{num_frames} frames at {fps:g} fps need {label_times[-1] - start_sec:.3f}s "
            f"but the clip spans {end_sec - start_sec:.3f}s",
        )
    if label_times[-1] > video_end:
        raise ClipRejected(
            clip_id, "out_of_range", f"clip needs frames until {label_times[-1]:.3f}s but the video ends at {times[-1]:.3f}s"
        )
    index = _nearest(times, label_times)
    if num_frames > 1 and np.any(np.diff(index) <= 0):
        raise ClipRejected(
            clip_id,
            "low_fps",
            f"source runs at {1.0 / period if period > 0 else 0.0:.3f} fps, below the target {fps:g} fps: "
            "label frames would repeat source frames",
        )
    return index


def frame_times(reader) -> np.ndarray:
    """(N,) float64 presentation times of every frame of a decord VideoReader, from the first frame."""
    n = len(reader)
    if n == 0:
        return np.zeros(0, np.float64)
    starts = np.asarray(reader.get_frame_timestamp(np.arange(n)), np.float64).reshape(n, 2)[:, 0]
    return starts - starts[0]


def decode_clip(spec: ClipSpec, config: DecodeConfig = DecodeConfig()) -> DecodedClip:
    """Decode the label frames of `spec` (see the module docstring for the timeline and geometry).

    Raises:
        ClipRejected: with a reason from `DECODE_REASONS`.
    """
    reader = _open(spec, config.num_threads)
    source_fps = float(reader.get_avg_fps())
    times = frame_times(reader)
    index = select_frames(times, spec.start_sec, spec.end_sec, config.num_frames, spec.fps_target, spec.clip_id)
    try:
        batch = reader.get_batch(index)
        raw = batch.asnumpy() if hasattr(batch, "asnumpy") else np.asarray(batch)
    except Exception as e:  # decord raises DECORDError/RuntimeError for damaged streams
        raise ClipRejected(spec.clip_id, "unreadable", f"decoding frames of {spec.uri} failed: {_first_line(e)}") from e
    finally:
        del reader
    if raw.ndim != 4 or raw.shape[0] != index.shape[0] or raw.shape[3] != 3:
        raise ClipRejected(spec.clip_id, "unreadable", f"decoder returned frames of shape {raw.shape} for {spec.uri}")
    transform = ResizeCrop.from_sizes(raw.shape[1], raw.shape[2], config.height, config.width)
    frames = transform.apply_frames(np.ascontiguousarray(raw, np.uint8))
    K = None
    if spec.intrinsics is not None:
        fx, fy, cx, cy = spec.intrinsics
        K_src = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
        K = np.broadcast_to(transform.apply_K(K_src), (index.shape[0], 3, 3)).astype(np.float32)
    return DecodedClip(
        clip_id=spec.clip_id,
        frames=frames,
        frame_index=index.astype(np.int64),
        timestamps=times[index].astype(np.float64),
        K=K,
        fps=float(spec.fps_target) if spec.fps_target is not None else source_fps,
        source_fps=source_fps,
        source_size=(int(raw.shape[1]), int(raw.shape[2])),
        source_num_frames=int(times.shape[0]),
        transform=transform,
    )


def _open(spec: ClipSpec, num_threads: int):
    """A decord VideoReader on the clip's file, or ClipRejected."""
    import decord  # imported here so that manifest and geometry users do not load the decoder

    path = spec.uri
    if not os.path.isfile(path):
        raise ClipRejected(spec.clip_id, "missing_file", f"video {path} does not exist")
    if os.path.getsize(path) == 0:
        raise ClipRejected(spec.clip_id, "unreadable", f"video {path} is empty (0 bytes)")
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
    except Exception as e:  # DECORDError or RuntimeError, depending on where opening fails
        message = _first_line(e)
        if "cannot find video stream" in message:
            raise ClipRejected(spec.clip_id, "no_frames", f"{path} has no video stream") from e
        raise ClipRejected(spec.clip_id, "unreadable", f"cannot open {path}: {message}") from e
    if len(reader) == 0:
        raise ClipRejected(spec.clip_id, "no_frames", f"{path} has a video stream with zero frames")
    fps = reader.get_avg_fps()
    if not (math.isfinite(fps) and fps > 0):
        raise ClipRejected(spec.clip_id, "unreadable", f"{path} reports frame rate {fps}")
    return reader


def _nearest(times: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Index of the time nearest to each target; ties (within float32 noise) go to the earlier frame."""
    if times.shape[0] == 1:
        return np.zeros(targets.shape, np.int64)
    right = np.clip(np.searchsorted(times, targets, side="left"), 1, times.shape[0] - 1)
    left = right - 1
    take_left = (targets - times[left]) <= (times[right] - targets) + _TIE_EPS_S
    return np.where(take_left, left, right).astype(np.int64)


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else type(error).__name__
