"""Milliseconds per clip to decode T = 49 label frames from a longer source video.

Compares `pipelines.decode.decode_clip` (decord `get_batch` on only the needed frames) with
two in-process baselines that read every frame and then pick:

- naive_span:  decode every source frame of the clip's span in one batch, then pick;
- naive_scan:  read every frame from the start of the video up to the clip's last frame,
               keeping the needed ones (what a plain sequential reader does).

and reports three parts of decode_clip on their own:

- cut_check:   decode_clip with the shot-cut check (`DecodeConfig.shot_cuts`, on by default) against
               the same call without it (`shot_cuts="ignore"`): the source pans over fine texture,
               so every pair of label frames is a candidate and its source frames are decoded too
               (the worst case; clips whose label frames change less pay only the scoring);

- probe:       the PyAV packet-timestamp read every clip now starts with (no decoding);
- pyav_seq:    the broken-timestamp fallback, PyAV decoding from the first frame without
               seeking up to the clip's last frame (`video_io.decode_sequential`), plus the
               same resize + crop.

All three open a fresh reader per clip and apply the same resize + centre crop, so only the
decoding strategy differs. Clips start at several offsets of the source; medians are over
clips x repeats. The source video is generated once and cached under --out-dir.

    .venv/bin/python bench/bench_decode.py [--duration 60] [--encoder mp4v|x264]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import cv2
import decord
import numpy as np

from pipelines.clips import ClipSpec, make_clip_id
from pipelines.decode import DecodeConfig, ResizeCrop, decode_clip, frame_times, select_frames
from pipelines.video_io import decode_sequential, probe_video


def make_source(path: Path, seconds: float, fps: float, height: int, width: int, encoder: str) -> Path:
    """A textured scene panning by a few pixels per frame (so inter-frame coding does real work)."""
    if path.exists():
        return path
    rng = np.random.default_rng(0)
    num_frames = int(round(seconds * fps))
    texture = cv2.GaussianBlur(rng.integers(0, 256, (height + 64, width * 3, 3), dtype=np.uint8), (0, 0), 2.0)
    tmp = path.with_suffix(".tmp" + path.suffix)
    frames = (
        # back and forth (up to 3 px per frame), never wrapping: a wrap is a jump, which is a shot cut
        np.ascontiguousarray(texture[32 + int(8 * np.sin(i / 20)) :][:height, int(width * (1 - np.cos(3 * i / width))) :][:, :width])
        for i in range(num_frames)
    )
    if encoder == "mp4v":
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps, (width, height))
        for frame in frames:
            writer.write(frame)
        writer.release()
    else:  # H.264 with x264 defaults (key frame every <= 250 frames, B-frames), as web video
        import av  # bench-only; not a project dependency

        with av.open(str(tmp), "w") as container:
            stream = container.add_stream("libx264", rate=round(fps))
            stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
            stream.options = {"preset": "veryfast", "crf": "23"}
            for frame in frames:
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame[..., ::-1], format="rgb24")):
                    container.mux(packet)
            for packet in stream.encode():
                container.mux(packet)
    tmp.rename(path)
    return path


def naive_span(spec: ClipSpec, config: DecodeConfig) -> np.ndarray:
    reader = decord.VideoReader(spec.uri, ctx=decord.cpu(0), num_threads=config.num_threads)
    index = _index(reader, spec, config)
    every = reader.get_batch(np.arange(index[0], index[-1] + 1)).asnumpy()
    picked = every[index - index[0]]
    return ResizeCrop.from_sizes(*picked.shape[1:3], config.height, config.width).apply_frames(picked)


def naive_scan(spec: ClipSpec, config: DecodeConfig) -> np.ndarray:
    reader = decord.VideoReader(spec.uri, ctx=decord.cpu(0), num_threads=config.num_threads)
    index = _index(reader, spec, config)
    wanted, picked = set(index.tolist()), []
    for i in range(int(index[-1]) + 1):
        frame = reader.next().asnumpy()
        if i in wanted:
            picked.append(frame)
    frames = np.stack(picked)
    return ResizeCrop.from_sizes(*frames.shape[1:3], config.height, config.width).apply_frames(frames)


def pyav_seq(spec: ClipSpec, config: DecodeConfig) -> np.ndarray:
    reader = decord.VideoReader(spec.uri, ctx=decord.cpu(0), num_threads=config.num_threads)
    frames = decode_sequential(spec.uri, _index(reader, spec, config), config.num_threads)
    return ResizeCrop.from_sizes(*frames.shape[1:3], config.height, config.width).apply_frames(frames)


def ours(spec: ClipSpec, config: DecodeConfig) -> np.ndarray:
    return decode_clip(spec, config).frames


def ours_no_cut_check(spec: ClipSpec, config: DecodeConfig) -> np.ndarray:
    return decode_clip(spec, replace(config, shot_cuts="ignore")).frames


def _index(reader, spec: ClipSpec, config: DecodeConfig) -> np.ndarray:
    times = frame_times(reader)
    return select_frames(times, spec.start_sec, spec.end_sec, config.num_frames, spec.fps_target).index


def time_ms(fn, spec: ClipSpec, config: DecodeConfig) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    frames = fn(spec, config)
    return 1000.0 * (time.perf_counter() - t0), frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=60.0, help="source length in seconds")
    parser.add_argument("--source-fps", type=float, default=30.0)
    parser.add_argument("--source-size", default="720x1280", help="HxW of the source video")
    parser.add_argument("--encoder", choices=("mp4v", "x264"), default="mp4v")
    parser.add_argument("--clips", type=int, default=5, help="clips at evenly spread offsets")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="decord decoder threads (0 = decord's choice)")
    parser.add_argument("--out-dir", default="bench_out")
    parser.add_argument("--quick", action="store_true", help="smoke run: a 10 s 240x360 source, 2 clips, 1 repeat")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.source_size, args.clips, args.repeats = 10.0, "240x360", 2, 1

    src_h, src_w = (int(x) for x in args.source_size.split("x"))
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"decode_src_v2_{args.encoder}_{src_h}x{src_w}_{args.source_fps:g}fps_{args.duration:g}s.mp4"
    t0 = time.perf_counter()
    source = make_source(out_dir / name, args.duration, args.source_fps, src_h, src_w, args.encoder)
    print(f"source {source} ({source.stat().st_size / 1e6:.1f} MB, ready in {time.perf_counter() - t0:.1f}s)")

    span = 48 / 8.0  # 49 frames at 8 fps
    starts = np.linspace(1.0, args.duration - span - 1.0, args.clips)
    specs = [ClipSpec(make_clip_id(name, s, s + span), str(source), float(s), float(s + span)) for s in starts]
    results = []
    for height, width in ((240, 360), (480, 720)):
        config = DecodeConfig(num_frames=49, height=height, width=width, num_threads=args.threads)
        times: dict[str, list[float]] = {"ours": [], "ours_no_cut_check": [], "naive_span": [], "naive_scan": [],
                                         "pyav_seq": [], "probe": []}
        for _ in range(args.repeats):
            for spec in specs:
                t0 = time.perf_counter()
                probe_video(spec.uri)
                times["probe"].append(1000.0 * (time.perf_counter() - t0))
                reference = None
                methods = (("ours", ours), ("ours_no_cut_check", ours_no_cut_check), ("naive_span", naive_span),
                           ("naive_scan", naive_scan), ("pyav_seq", pyav_seq))
                for label, fn in methods:
                    ms, frames = time_ms(fn, spec, config)
                    times[label].append(ms)
                    if reference is None:
                        reference = frames
                    elif not np.array_equal(frames, reference):
                        raise AssertionError(f"{label} decoded different frames than decode_clip for {spec.clip_id}")
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {
            "label_size": f"{height}x{width}",
            "ours_ms": round(med["ours"], 1),
            "naive_span_ms": round(med["naive_span"], 1),
            "naive_scan_ms": round(med["naive_scan"], 1),
            "speedup_vs_span": round(med["naive_span"] / med["ours"], 2),
            "speedup_vs_scan": round(med["naive_scan"] / med["ours"], 2),
            "probe_ms": round(med["probe"], 1),
            "no_cut_check_ms": round(med["ours_no_cut_check"], 1),
            "cut_check_ratio": round(med["ours"] / med["ours_no_cut_check"], 2),
            "pyav_seq_ms": round(med["pyav_seq"], 1),
        }
        results.append(row)
        print(
            f"{row['label_size']:>8}: decode_clip {row['ours_ms']:8.1f} ms | naive_span {row['naive_span_ms']:8.1f} ms "
            f"(x{row['speedup_vs_span']}) | naive_scan {row['naive_scan_ms']:8.1f} ms (x{row['speedup_vs_scan']}) | "
            f"probe {row['probe_ms']:6.1f} ms | pyav_seq fallback {row['pyav_seq_ms']:8.1f} ms | "
            f"without the cut check {row['no_cut_check_ms']:8.1f} ms (with it x{row['cut_check_ratio']})  "
            f"[median of {len(times['ours'])}]"
        )
    print(json.dumps({"bench": "decode", "source": name, "encoder": args.encoder, "results": results}))


if __name__ == "__main__":
    main()
