"""Optical-flow labeler benchmark: milliseconds per frame pair, and accuracy where it is cheap.

    python bench/bench_flow.py [--quick]

Rows:
* OpenCV backend (`labelers.dis_flow.DisFlow`, forward + backward flow + uncertainty of one
  pair) against plain DIS at PRESET_MEDIUM (forward only, the in-process baseline) at
  240x360 and 480x720 on the CPU, on synthetic frames with exact flow, so each row also
  shows the end-point error on GT-visible pixels for consecutive frames and frames 4 apart;
* SEA-RAFT S, M and L with random weights (speed only; weights do not change the work) on the
  CPU at 240x360 and 480x720, fp32, one pair per call;
* SEA-RAFT S, M and L at 500x1000, fp16 autocast, when CUDA is available (published anchor,
  ptlflow's benchmark on an RTX 3090: 27.8 / 40.0 ms per pair for S / M).
Times are medians over repeated runs after a warm-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labelers.dis_flow import DisFlow  # noqa: E402
from labelers.sea_raft import SEA_RAFT_VARIANTS, SeaRaft, SeaRaftFlow  # noqa: E402
from pipelines.synthetic import SceneConfig, render_clip  # noqa: E402

PUBLISHED_FP16_MS = {"S": 27.8, "M": 40.0}  # RTX 3090, 500x1000 (reference/sea_raft/ARCHITECTURE.md section 13)


def median_ms(
    fn: Callable[[], object], repeats: int, warmup: int = 1, sync: Callable[[], None] = lambda: None
) -> float:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def plain_dis_medium(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return dis.calc(cv2.cvtColor(src, cv2.COLOR_RGB2GRAY), cv2.cvtColor(dst, cv2.COLOR_RGB2GRAY), None)


def epe(flow: np.ndarray, gt: np.ndarray, valid: np.ndarray) -> float:
    return float(np.linalg.norm(flow - gt, axis=-1)[valid].mean())


def bench_opencv(height: int, width: int, repeats: int) -> list[tuple[str, str, float, str]]:
    clip = render_clip(SceneConfig(seed=1, height=height, width=width, num_frames=5, stride=4, camera="orbit"))
    frames, labels = clip.frames, clip.labels
    ours = DisFlow()
    pairs = {"consecutive": (0, 1, labels["flow"][0], labels["flow_valid"][0])}
    pairs["4 apart"] = (0, 4, labels["key_flow"][0], labels["key_flow_valid"][0])
    errors = {}
    for name, (i, j, gt, valid) in pairs.items():
        errors[name] = (
            epe(plain_dis_medium(frames[i], frames[j]), gt, valid),
            epe(ours.estimate(frames[i : i + 1], frames[j : j + 1]).flow_px[0], gt, valid),
        )
    src, dst = frames[0], frames[1]
    plain_ms = median_ms(lambda: plain_dis_medium(src, dst), repeats)
    ours_ms = median_ms(lambda: ours.estimate_bidirectional(src[None], dst[None]), repeats)
    size = f"{height}x{width}"
    note_plain = "EPE px: consecutive {:.3f}, 4 apart {:.3f}".format(errors["consecutive"][0], errors["4 apart"][0])
    note_ours = "EPE px: consecutive {:.3f}, 4 apart {:.3f}; {:.1f}x plain time per direction".format(
        errors["consecutive"][1], errors["4 apart"][1], ours_ms / 2 / plain_ms
    )
    return [
        ("DIS-medium, forward only (baseline)", size, plain_ms, note_plain),
        ("OpenCV backend, fwd+bwd+uncertainty", size, ours_ms, note_ours),
    ]


def bench_sea_raft(variant: str, height: int, width: int, device: str, repeats: int) -> tuple[str, str, float, str]:
    torch.manual_seed(0)
    flow = SeaRaftFlow(SeaRaft(SEA_RAFT_VARIANTS[variant]), device=device, fp16=True, batch_size=1)
    rng = np.random.default_rng(0)
    src = rng.integers(0, 256, (1, height, width, 3), dtype=np.uint8)
    dst = np.roll(src, 3, axis=2)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    ms = median_ms(lambda: flow.estimate(src, dst), repeats, warmup=2 if device == "cuda" else 1, sync=sync)
    precision = "fp16 autocast" if device == "cuda" else "fp32"
    note = f"random weights, {flow.iters} iters, {precision}"
    if device == "cuda":
        note += f"; published RTX 3090 fp16: {PUBLISHED_FP16_MS.get(variant, '-')} ms"
    return (f"SEA-RAFT {variant} ({device})", f"{height}x{width}", ms, note)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and only the smaller sizes")
    parser.add_argument("--sea-raft-repeats", type=int, default=2, help="timed SEA-RAFT calls per CPU row")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    sizes = [(240, 360)] if args.quick else [(240, 360), (480, 720)]

    rows = []
    for height, width in sizes:
        rows += bench_opencv(height, width, repeats)
    for height, width in [(128, 192)] if args.quick else sizes:
        for variant in ("S",) if args.quick else ("S", "M", "L"):
            rows.append(bench_sea_raft(variant, height, width, "cpu", args.sea_raft_repeats))
    if torch.cuda.is_available():
        for variant in ("S", "M", "L"):
            rows.append(bench_sea_raft(variant, 500, 1000, "cuda", 3 * repeats))

    print(
        f"CPU: {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"OpenCV {cv2.__version__} ({cv2.getNumThreads()} threads)"
        + (f", GPU: {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ", no CUDA")
    )
    widths = [max(len(str(r[k])) for r in rows) for k in (0, 1)]
    print(f"{'method':<{widths[0]}}  {'size':<{widths[1]}}  {'ms/pair':>9}  notes")
    for method, size, ms, note in rows:
        print(f"{method:<{widths[0]}}  {size:<{widths[1]}}  {ms:9.1f}  {note}")


if __name__ == "__main__":
    main()
