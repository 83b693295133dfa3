"""Video files through PyAV: writing (libx264), probing packet timestamps, sequential decoding.

The label path reads frames with decord (`pipelines.decode`), which seeks by the container's
timestamps. When those are broken, decord's seeks return wrong frames (measured on OpenCV's
Megamind.avi: index 100 returns the content of frame 2) and an absurd timestamp can abort the
process (std::bad_alloc on an mkv whose pts jump by 1e12 ticks). `probe_video` reads the packet
timestamps without decoding, so the caller can judge them before opening decord, and
`decode_sequential` decodes from the first frame without seeking, which stays correct whatever
the timestamps say.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = ["VideoProbe", "decode_sequential", "probe_video", "write_video"]


@dataclass(frozen=True)
class VideoProbe:
    """What the container says about its first video stream, read without decoding.

    Attributes:
        num_frames: video packets that carry data and are not discarded (one per frame).
        pts_s: (num_frames,) float64 packet presentation times in seconds, sorted (decoders
            emit frames in presentation order); NaN for a packet without a timestamp.
        base_rate: the stream's r_frame_rate (FFmpeg's guess of the nominal rate from the
            typical timestamp step), 0.0 when unknown.
        average_rate: the stream's avg_frame_rate (frames / duration, so it inherits any
            timestamp damage), 0.0 when unknown.
        size: (height, width) of the coded frames.
    """

    num_frames: int
    pts_s: np.ndarray
    base_rate: float
    average_rate: float
    size: tuple[int, int]


def probe_video(path: str | Path) -> VideoProbe:
    """Demux (no decoding) the first video stream of `path`.

    Raises:
        av.FFmpegError: the file cannot be opened or demuxed.
        LookupError: the file has no video stream.
    """
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise LookupError(f"{path} has no video stream")
        stream = container.streams.video[0]
        time_base = float(stream.time_base) if stream.time_base else math.nan
        pts = [
            math.nan if packet.pts is None else float(packet.pts) * time_base
            for packet in container.demux(stream)
            if packet.size > 0 and not packet.is_discard  # discarded: before an mp4 edit list's start
        ]
        ctx = stream.codec_context
        return VideoProbe(
            num_frames=len(pts),
            pts_s=np.sort(np.asarray(pts, np.float64)),  # NaNs sort last
            base_rate=_rate(stream.base_rate),
            average_rate=_rate(stream.average_rate),
            size=(int(ctx.height), int(ctx.width)),
        )


def decode_sequential(path: str | Path, index: np.ndarray, num_threads: int = 0) -> np.ndarray:
    """Decode from the first frame without seeking; keep the frames at `index` (decoder output order).

    Costs a decode of every frame up to index[-1]; only the kept frames are converted to RGB.

    Args:
        path: video file.
        index: (T,) strictly increasing frame numbers.
        num_threads: decoder threads; 0 lets FFmpeg choose.

    Returns:
        (T, H, W, 3) uint8 RGB.

    Raises:
        av.FFmpegError: decoding fails.
        EOFError: the stream ends before index[-1].
    """
    index = np.asarray(index, np.int64)
    wanted = {int(i): k for k, i in enumerate(index)}
    last = int(index[-1])
    out: list[np.ndarray | None] = [None] * index.shape[0]
    decoded = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = num_threads
        for number, frame in enumerate(container.decode(stream)):
            decoded = number + 1
            if number in wanted:
                out[wanted[number]] = frame.to_ndarray(format="rgb24")
            if number >= last:
                break
    if decoded <= last:
        raise EOFError(f"the decoder produced {decoded} frames, frame {last} is needed")
    return np.stack(out)


def write_video(path: str | Path, frames: np.ndarray, fps: float, crf: int = 8) -> Path:
    """Encode RGB frames as an H.264 mp4 that decord reads back.

    4:4:4 chroma at a low CRF keeps the synthetic textures within ~1 grey level (about
    44 dB PSNR measured on synthetic clips), so labelers see what the ground truth describes.

    Args:
        path: output file (.mp4).
        frames: (T, H, W, 3) uint8 RGB; H and W must be even for the encoder.
        fps: frame rate written into the stream.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"H.264 needs even sizes, got {height}x{width}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial.mp4")
    with av.open(str(tmp), "w") as container:
        stream = container.add_stream("libx264", rate=_fps_fraction(fps))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv444p"
        # Without macroblock-tree rate control: with it, this x264 encoded the same frames
        # differently on every call (up to 22 grey levels apart, even one-threaded), so the
        # synthetic sets and every benchmark on them changed from run to run.
        stream.options = {"crf": str(crf), "preset": "medium", "x264-params": "mbtree=0"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)  # a reader never sees a half-written video
    return path


def _fps_fraction(fps: float) -> Fraction:
    return Fraction(fps).limit_denominator(1001)


def _rate(value) -> float:
    """A stream rate as float; 0.0 when FFmpeg does not know it."""
    if value is None:
        return 0.0
    rate = float(value)
    return rate if math.isfinite(rate) else 0.0
