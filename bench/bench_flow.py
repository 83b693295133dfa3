"""Optical-flow labeler benchmark: milliseconds per frame pair, and accuracy where it is cheap.

    python bench/bench_flow.py [--quick] [--classes] [--real-pairs] [--class-size 120x180]
        [--seeds N --first-seed S --frames T] [--decoded] [--compare FIELD=VALUE]

Speed rows (always):
* OpenCV backend (`labelers.dis_flow.DisFlow`, forward + backward flow + uncertainty of one
  pair) against plain DIS at PRESET_MEDIUM (forward only, the in-process baseline) at
  240x360 and 480x720 on the CPU, on synthetic frames with exact flow, so each row also
  shows the end-point error on GT-visible pixels for consecutive frames and frames 4 apart;
* SEA-RAFT S, M and L with random weights (speed only; weights do not change the work) on the
  CPU at 240x360 and 480x720, fp32, one pair per call;
* SEA-RAFT S, M and L at 500x1000, fp16 autocast, when CUDA is available (published anchor,
  ptlflow's benchmark on an RTX 3090: 27.8 / 40.0 ms per pair for S / M).
Times are medians over repeated runs after a warm-up.

`--classes`: per synthetic scene class (rooms under dolly, orbit and pan; open yards under a
far sky; low and repeated texture; noise, motion blur and exposure drift; a fixed camera with a
large mover; T = 9, key stride 4), the flow as `pipelines.labeling` computes it (validity
checks on, key pairs repaired from the chains) with our DIS settings and with plain
DIS-medium: coverage of GT-visible pixels, EPE of both on OUR valid pixels (the same pixels),
their ratio, the share of valid pixels more than 3 px off, and seconds per clip.

`--before`: the same without the validity checks and the chain disagreement rule.
`--decoded`: the frames written as MP4 and decoded back, as the pipeline sees them (the codec's
noise changes which settings pay). `--compare FIELD=VALUE`: one more column, our settings with
one `DisFlowConfig` field changed, its EPE on the same pixels and its own coverage.

`--real-pairs`: OpenCV's sample pairs with ground truth (package opencv-doc; aloe stereo with
its disparity, graf1 -> graf3 with its homography, at 320 px wide): coverage of the known
pixels and the share of valid pixels more than 3 px off, forward-backward only against the
`ValidityChecks`.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import image_size  # noqa: E402
from labelers.dis_flow import DisFlow, DisFlowConfig  # noqa: E402
from labelers.flow import (  # noqa: E402
    ValidityChecks,
    compute_pair_flows,
    consecutive_pairs,
    fill_from_chains,
    key_frame_pairs,
)
from labelers.sea_raft import SEA_RAFT_VARIANTS, SeaRaft, SeaRaftFlow  # noqa: E402
from pipelines.synthetic import SceneConfig, render_clip  # noqa: E402
from pipelines.video_io import decode_sequential, write_video  # noqa: E402

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


SCENE_CLASSES = {
    "room dolly": dict(camera="dolly"),
    "room orbit": dict(camera="orbit"),
    "room pan": dict(camera="pan"),
    "open dolly": dict(scene="open", camera="dolly"),
    "open orbit": dict(scene="open", camera="orbit"),
    "low texture dolly": dict(texture="low", camera="dolly"),
    "repeated texture orbit": dict(texture="repeated", camera="orbit"),
    "repeated texture open dolly": dict(scene="open", texture="repeated", camera="dolly"),
    "noise 3 + blur 0.5 + exposure 0.2": dict(camera="dolly", noise_std=3.0, motion_blur=0.5, exposure_drift=0.2),
    "fixed camera, large mover": dict(camera="static", large_mover=True),
}


def labeling_flows(config: DisFlowConfig, frames: np.ndarray, stride: int, checks: bool = True) -> dict:
    """Consecutive and key-pair flows as `pipelines.labeling` computes them by default (checks False: as
    before the `ValidityChecks` and chain-fill version 3)."""
    flow, validity = DisFlow(config), ValidityChecks() if checks else None
    consecutive = compute_pair_flows(flow, frames, consecutive_pairs(len(frames)), checks=validity)
    key = compute_pair_flows(flow, frames, key_frame_pairs(len(frames), stride), checks=validity)
    key = fill_from_chains(key, consecutive, **({} if checks else {"disagree_gap_px": None}))
    return {"flow": consecutive, "key_flow": key}


def class_frames(cfg: SceneConfig, decoded: bool) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Frames and exact labels of a rendered clip; with `decoded` the frames went through the
    synthetic set's MP4 encoder and back."""
    clip = render_clip(cfg)
    if not decoded:
        return clip.frames, clip.labels
    with tempfile.TemporaryDirectory() as tmp:
        video = write_video(Path(tmp) / "clip.mp4", clip.frames, cfg.fps)
        return decode_sequential(video, np.arange(cfg.num_frames)), clip.labels


def bench_classes(
    height: int,
    width: int,
    seeds: list[int],
    checks: bool = True,
    num_frames: int = 9,
    decoded: bool = False,
    compare: tuple[str, float] | None = None,
) -> None:
    name = "ValidityChecks + chain-fill 4" if checks else "forward-backward only + chain-fill 2"
    frames_from = "decoded from MP4" if decoded else "rendered frames"
    print(f"\nscene classes, {height}x{width}, T = {num_frames}, stride 4, seeds {seeds}, {name}, {frames_from}")
    print("EPE on our valid pixels (px), the same pixels for every column")
    methods = [("ours", DisFlowConfig()), ("plain", DisFlowConfig.plain_medium())]
    alt_title = ""
    if compare is not None:
        methods.append(("alt", replace(DisFlowConfig(), **{compare[0]: compare[1]})))
        alt_title = f" EPE {compare[0]}={compare[1]:g} (ratio to ours, its coverage) |"
    print(f"| class | label | coverage | EPE ours | EPE DIS-medium | ratio | valid > 3 px off |{alt_title} "
          "s/clip ours | s/clip DIS-medium |" + (" s/clip alt |" if compare else ""))
    print("|---|---|---|---|---|---|---|" + ("---|" if compare else "") + "---|---|" + ("---|" if compare else ""))
    for name, kwargs in SCENE_CLASSES.items():
        totals: dict[str, dict[str, float]] = {}
        seconds = dict.fromkeys((m for m, _ in methods), 0.0)
        for seed in seeds:
            frames, labels = class_frames(
                SceneConfig(seed=seed, height=height, width=width, num_frames=num_frames, stride=4, **kwargs), decoded
            )
            results = {}
            for method, config in methods:
                start = time.perf_counter()
                results[method] = labeling_flows(config, frames, 4, checks)
                seconds[method] += time.perf_counter() - start
            for label in ("flow", "key_flow"):
                truth, visible = labels[label], labels[f"{label}_valid"]
                valid = results["ours"][label].valid_fwd & visible
                errors = {m: np.linalg.norm(r[label].flow_fwd_px - truth, axis=-1)[valid] for m, r in results.items()}
                total = totals.setdefault(label, dict.fromkeys(("valid", "visible", "over_3px", "alt_valid"), 0.0))
                total["valid"] += valid.sum()
                total["visible"] += visible.sum()
                for method in results:
                    total[method] = total.get(method, 0.0) + errors[method].sum()
                total["over_3px"] += (errors["ours"] > 3).sum()
                if "alt" in results:
                    total["alt_valid"] += (results["alt"][label].valid_fwd & visible).sum()
        for label, t in totals.items():
            ours, plain = t["ours"] / t["valid"], t["plain"] / t["valid"]
            coverage, over_3px = t["valid"] / t["visible"], t["over_3px"] / t["valid"]
            per_clip = {method: s / len(seeds) for method, s in seconds.items()}
            alt = ""
            if compare is not None:
                alt_epe = t["alt"] / t["valid"]
                alt = f" {alt_epe:.3f} ({alt_epe / ours:.2f}, {t['alt_valid'] / t['visible']:.3f}) |"
            alt_seconds = f" {per_clip['alt']:.1f} |" if compare is not None else ""
            print(f"| {name} | {label} | {coverage:.3f} | {ours:.3f} | {plain:.3f} | {ours / plain:.2f} "
                  f"| {over_3px:.4f} |{alt} {per_clip['ours']:.1f} | {per_clip['plain']:.1f} |{alt_seconds}", flush=True)


OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


def _read_rgb(name: str, width: int) -> tuple[np.ndarray, float]:
    image = cv2.cvtColor(cv2.imread(str(OPENCV_DATA / name)), cv2.COLOR_BGR2RGB)
    scale = width / image.shape[1]
    size = (width, int(round(image.shape[0] * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA), scale


def real_pairs(width: int = 320) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """name -> (frames (2, H, W, 3), GT flow (H, W, 2), GT known (H, W)); see
    tests/labelers/test_flow_real_pairs.py for the conventions."""
    left, scale = _read_rgb("aloeL.jpg", width)
    right, _ = _read_rgb("aloeR.jpg", width)
    height = left.shape[0]
    disparity_full = cv2.imread(str(OPENCV_DATA / "aloeGT.png"), cv2.IMREAD_UNCHANGED).astype(np.float32)
    known = cv2.resize((disparity_full > 0).astype(np.float32), (width, height), interpolation=cv2.INTER_AREA) > 0.999
    disparity = cv2.resize(disparity_full, (width, height), interpolation=cv2.INTER_AREA) * scale
    flow = np.zeros((height, width, 2), np.float32)
    flow[..., 0] = -disparity
    pairs = {"aloe (stereo)": (np.stack([left, right]), flow, known & (np.arange(width) - disparity >= 0))}

    first, scale = _read_rgb("graf1.png", width)
    third, _ = _read_rgb("graf3.png", width)
    text = (OPENCV_DATA / "H1to3p.xml").read_text()
    homography = np.array(re.search(r"<data>(.*?)</data>", text, re.S).group(1).split(), float).reshape(3, 3)
    to_small = np.array([[scale, 0, 0.5 * scale - 0.5], [0, scale, 0.5 * scale - 0.5], [0, 0, 1]])
    homography = to_small @ homography @ np.linalg.inv(to_small)
    height = first.shape[0]
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    mapped = np.stack([u, v, np.ones_like(u)], axis=-1) @ homography.T
    target = mapped[..., :2] / mapped[..., 2:]
    known = (target >= 0).all(axis=-1) & (target[..., 0] <= width - 1) & (target[..., 1] <= height - 1)
    known[int(0.7 * height) :, int(0.45 * width) :] = False  # the car in front of the wall
    flow = (target - np.stack([u, v], axis=-1)).astype(np.float32)
    pairs["graf1 -> graf3 (homography)"] = (np.stack([first, third]), flow, known)
    return pairs


def bench_real_pairs() -> None:
    if not (OPENCV_DATA / "aloeGT.png").exists():
        print(f"\nreal pairs: {OPENCV_DATA} is absent (Debian package opencv-doc), skipped")
        return
    print("\nreal pairs at 320 px wide, our DIS settings: coverage of known pixels, valid pixels > 3 px off, seconds")
    print("| pair | validity | coverage | valid > 3 px off | s |")
    print("|---|---|---|---|---|")
    for name, (frames, truth, known) in real_pairs().items():
        for label, checks in (("forward-backward only", None), ("+ ValidityChecks", ValidityChecks())):
            start = time.perf_counter()
            flows = compute_pair_flows(DisFlow(), frames, [(0, 1)], checks=checks)
            seconds = time.perf_counter() - start
            valid = flows.valid_fwd[0] & known
            error = np.linalg.norm(flows.flow_fwd_px[0] - truth, axis=-1)
            coverage, over_3px = valid.sum() / known.sum(), np.mean(error[valid] > 3)
            print(f"| {name} | {label} | {coverage:.3f} | {over_3px:.4f} | {seconds:.2f} |")


def dis_setting(text: str) -> tuple[str, float]:
    """FIELD=VALUE of a numeric or boolean (0/1) `DisFlowConfig` field, for --compare."""
    name, _, value = text.partition("=")
    types = {f.name: type(f.default) for f in fields(DisFlowConfig) if type(f.default) in (int, float, bool)}
    try:
        return name, (bool(int(value)) if types[name] is bool else types[name](value))
    except (KeyError, ValueError):
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE, FIELD one of {sorted(types)}, got {text!r}") from None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and only the smaller sizes")
    parser.add_argument("--sea-raft-repeats", type=int, default=2, help="timed SEA-RAFT calls per CPU row")
    parser.add_argument("--classes", action="store_true", help="accuracy per synthetic scene class (and no speed rows)")
    parser.add_argument("--class-size", type=image_size, default="120x180", help="frame size of --classes")
    parser.add_argument("--seeds", type=int, default=1, help="clips per class of --classes")
    parser.add_argument("--real-pairs", action="store_true", help="validity on real pairs (and no speed rows)")
    parser.add_argument("--before", action="store_true", help="--classes without the validity checks (the old rule)")
    parser.add_argument("--first-seed", type=int, default=0, help="first seed of --classes")
    parser.add_argument("--frames", type=int, default=9, help="frames per clip of --classes")
    parser.add_argument("--decoded", action="store_true", help="--classes on frames decoded from MP4")
    parser.add_argument("--compare", type=dis_setting, help="--classes with one DisFlowConfig field changed too")
    args = parser.parse_args()
    if args.classes or args.real_pairs:
        if args.real_pairs:
            bench_real_pairs()
        if args.classes:
            seeds = list(range(args.first_seed, args.first_seed + args.seeds))
            bench_classes(*args.class_size, seeds=seeds, checks=not args.before, num_frames=args.frames,
                          decoded=args.decoded, compare=args.compare)
        return
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
