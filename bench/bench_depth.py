"""Depth and dynamic-mask labelers on CPU: milliseconds per frame at 240x360 and 480x720.

Data: a rendered synthetic dolly (or `--camera orbit`) clip with two moving objects (T = 17
frames, key-frame stride 4), its DIS flows on consecutive and key-frame pairs in both
directions (computed once, not timed), cameras with an arbitrary global scale. Timed, each
the median of `--repeats` runs in this process:

- mvs_depth:   `MultiViewDepth.estimate` with a given dynamic mask, ms per frame;
- frame_masks: `FlowRigidityMasks.frame_masks` without depth (step 1), ms per frame; also its
               ratio to the same without carried static points (`carry_frames` 0);
- key_masks:   `FlowRigidityMasks.key_masks` with depth (step 3), ms per key frame;
- chain:       `label_depth_and_masks` (steps 1-4), ms per frame;
- nn_infer:    `NeuralDepth.predict_inverse_depth` with the architecture of Depth-Anything-V2-Small
               (ViT-S/14, 24.8 M parameters) and its preprocessing (shorter side 518, multiple of
               14), random weights saved to a temporary folder and loaded as a checkpoint would be
               (weights do not change the work), fp32, batches of 4, ms per frame;
- nn_align:    `NeuralDepth.align` of that prediction to the multi-view depth, ms per frame.
  The neural backend's cost per frame is mvs_depth + nn_infer + nn_align.

Then the stripe models against their baselines, in the same process (`--texture repeated` for a
striped scene): `MultiViewDepth` with and without its stripe model (`min_isotropy` 0), with the
depth quality of each, and `compute_pair_flows` with and without the forward-backward check
across stripes (`ValidityChecks.stripe_max_isotropy` 0), with the consecutive flow's coverage of
the visible pixels.

Quality of the chain against the ground truth is printed alongside (delta < 1.25 after one
median scale, static coverage, key-mask IoU), so a speed-up that breaks labels shows. With
`--scene open` (ground under a textured sky 80 m away) coverage counts the static pixels off
the sky, and the share of sky pixels given a depth is printed too (the sky's parallax is within
the flow noise: its depth should be invalid). `--focal-error 0.01` gives the labelers a focal
length 1 % too long, as SfM without intrinsics may (the truth keeps the exact one): far points
whose parallax is within the camera error must stay invalid, not come out too near.

    .venv/bin/python bench/bench_depth.py [--quick] [--repeats 3] [--sizes 240x360,480x720] [--scene open]
    .venv/bin/python bench/bench_depth.py --sizes 240x360 --repeats 1 --scene open --camera orbit --focal-error 0.01
    .venv/bin/python bench/bench_depth.py --sizes 240x360 --repeats 5 --scene open --texture repeated
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "labelers"))

from common import image_sizes, timed  # noqa: E402
from depth_anything_writer import save_depth_anything  # noqa: E402
from labelers.depth import MultiViewDepth, MultiViewDepthConfig, median_scale  # noqa: E402
from labelers.dis_flow import DisFlow  # noqa: E402
from labelers.dynamic_mask import FlowRigidityMasks, label_depth_and_masks  # noqa: E402
from labelers.flow import ValidityChecks, compute_pair_flows, consecutive_pairs, key_frame_pairs  # noqa: E402
from labelers.neural_depth import NeuralDepth  # noqa: E402
from pipelines.synthetic import SCENES, SKY_ID, TEXTURES, SceneConfig, render_clip  # noqa: E402

CAMERA_SCALE = 0.37


def depth_quality(clip, depth: np.ndarray, valid: np.ndarray) -> str:
    truth = clip.labels["depth"]
    static = clip.object_ids < 6 + clip.config.num_static
    sky = clip.object_ids == SKY_ID if clip.config.scene == "open" else np.zeros_like(static)
    scaled = median_scale(depth, truth, valid) * depth[valid]
    ratio = np.maximum(scaled / truth[valid], truth[valid] / scaled)
    coverage = (valid & static & ~sky).sum() / (static & ~sky).sum()
    text = f"delta1 {np.mean(ratio < 1.25):.3f}  coverage {coverage:.2f}"
    return text + (f"  sky valid {valid[sky].mean():.4f}" if sky.any() else "")


def quality(clip, chain) -> str:
    mask, gt = chain.dynamic_mask, clip.labels["dynamic_mask"]
    iou = (mask & gt).sum() / max((mask | gt).sum(), 1)
    return depth_quality(clip, chain.depth.depth, chain.depth.depth_valid) + f"  mask IoU {iou:.2f}"


def timed_pair(baseline: Callable[[], Any], candidate: Callable[[], Any], repeats: int) -> tuple[float, float, Any, Any]:
    """Median seconds of `baseline` and `candidate`, called in turn `repeats` times each (the
    machine's drift hits both alike), and their last results."""
    seconds: tuple[list[float], list[float]] = ([], [])
    for _ in range(repeats):
        for times, fn in zip(seconds, (baseline, candidate)):
            start = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - start)
            if fn is baseline:
                base_result = result
    return statistics.median(seconds[0]), statistics.median(seconds[1]), base_result, result


def stripe_models(clip, flows, pairs, c2w, K, moving, repeats: int) -> None:
    """Time and score the stripe models against their baselines, in this process (module docstring)."""
    frames = clip.frames
    t_plain, t_aware, plain, aware = timed_pair(
        lambda: MultiViewDepth(MultiViewDepthConfig(min_isotropy=0)).estimate(frames, flows, c2w, K, moving),
        lambda: MultiViewDepth().estimate(frames, flows, c2w, K, moving),
        repeats,
    )
    print(f"  mvs_depth without / with the stripe model: {t_plain:.2f} / {t_aware:.2f} s (x{t_aware / t_plain:.2f}); "
          f"{depth_quality(clip, plain.depth, plain.depth_valid)} / {depth_quality(clip, aware.depth, aware.depth_valid)}")
    t_off, t_on, off, on = timed_pair(
        lambda: compute_pair_flows(DisFlow(), frames, pairs, checks=ValidityChecks(stripe_max_isotropy=0)),
        lambda: compute_pair_flows(DisFlow(), frames, pairs),
        repeats,
    )
    index = [pairs.index(pair) for pair in consecutive_pairs(len(frames))]
    visible = clip.labels["flow_valid"]
    coverage = [(result.valid_fwd[index] & visible).sum() / visible.sum() for result in (off, on)]
    print(f"  compute_pair_flows without / with the check across stripes: {t_off:.2f} / {t_on:.2f} s "
          f"(x{t_on / t_off:.2f}); consecutive coverage {coverage[0]:.3f} / {coverage[1]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 9 frames at 120x180, one repeat, a tiny depth network"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=image_sizes, default="240x360,480x720")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--scene", choices=SCENES, default="room")
    parser.add_argument("--camera", choices=("dolly", "orbit"), default="dolly")
    parser.add_argument("--texture", choices=TEXTURES, default="rich")
    parser.add_argument("--focal-error", type=float, default=0.0,
                        help="relative error of the focal length given to the labelers (0.01: 1 %% too long)")
    args = parser.parse_args()
    sizes = args.sizes
    frames, repeats = args.frames, args.repeats
    if args.quick:
        sizes, frames, repeats = [(120, 180)], 9, 1
    stride = 4
    with tempfile.TemporaryDirectory(prefix="depth_anything_") as network_dir:
        folder = save_depth_anything(
            Path(network_dir), "tiny" if args.quick else "small", processor_size=(56, 56) if args.quick else (518, 518)
        )
        neural = NeuralDepth.from_pretrained(folder)
    millions = sum(p.numel() for p in neural.model.parameters()) / 1e6
    print(f"depth + mask labelers, CPU: {args.scene} {args.camera} clip, T={frames}, stride {stride}, "
          f"focal error {args.focal_error:+.1%}, median of {repeats} runs")
    threads = torch.get_num_threads()
    print(f"neural depth: Depth Anything {millions:.1f} M parameters, random weights, torch {threads} threads")
    print(f"{'size':>8} {'mvs_depth':>10} {'frame_masks':>11} {'key_masks':>10} {'chain':>8}", end="")
    print(f" {'nn_infer':>9} {'nn_align':>9}   (ms per frame; key_masks per key frame)")
    per_size = {}
    for height, width in sizes:
        start = time.perf_counter()
        cfg = SceneConfig(seed=0, height=height, width=width, num_frames=frames, stride=stride, camera=args.camera,
                          scene=args.scene, texture=args.texture)
        clip = render_clip(cfg)
        pairs = consecutive_pairs(frames) + key_frame_pairs(frames, stride)
        flows = compute_pair_flows(DisFlow(), clip.frames, pairs)
        print(f"# {height}x{width}: rendered and DIS flow in {time.perf_counter() - start:.1f} s (not timed)")
        c2w = clip.labels["c2w"].astype(np.float64)
        c2w[:, :3, 3] *= CAMERA_SCALE
        K = clip.labels["K"].astype(np.float64).copy()
        K[:, :2, :2] *= 1.0 + args.focal_error
        keys = list(range(0, frames, stride))
        moving = clip.object_ids >= 6 + clip.config.num_static
        masks = FlowRigidityMasks()
        t_depth, depth = timed(lambda: MultiViewDepth().estimate(clip.frames, flows, c2w, K, moving), repeats)
        t_frame, frame_masks = timed(lambda: masks.frame_masks(flows, c2w, K), repeats)
        uncarried = FlowRigidityMasks(replace(masks.config, carry_frames=0))
        t_uncarried, _ = timed(lambda: uncarried.frame_masks(flows, c2w, K), repeats)
        print(f"# frame masks with static points carried from other frames: {1e3 * t_frame / frames:.0f} ms per "
              f"frame, {t_frame / t_uncarried:.2f}x those without (carry_frames 0)")
        t_key, _ = timed(lambda: masks.key_masks(flows, c2w, K, keys, depth.depth, frame_masks), repeats)
        t_chain, chain = timed(
            lambda: label_depth_and_masks(clip.frames, flows, c2w, K, keys, MultiViewDepth(), masks), repeats
        )
        t_infer, prediction = timed(lambda: neural.predict_inverse_depth(clip.frames), repeats)
        t_align, _ = timed(lambda: neural.align(prediction, depth), repeats)
        ms = [1e3 * t_depth / frames, 1e3 * t_frame / frames, 1e3 * t_key / len(keys), 1e3 * t_chain / frames]
        ms += [1e3 * t_infer / frames, 1e3 * t_align / frames]
        per_size[(height, width)] = ms
        size = f"{height}x{width}"
        print(f"{size:>8} {ms[0]:>10.0f} {ms[1]:>11.0f} {ms[2]:>10.0f} {ms[3]:>8.0f}", end="")
        print(f" {ms[4]:>9.0f} {ms[5]:>9.0f}   {quality(clip, chain)}")
        stripe_models(clip, flows, pairs, c2w, K, moving, repeats)
    if len(per_size) > 1:
        (small, a), (large, b) = list(per_size.items())[0], list(per_size.items())[-1]
        pixels = (large[0] * large[1]) / (small[0] * small[1])
        names = ("mvs_depth", "frame_masks", "key_masks", "chain", "nn_infer", "nn_align")
        ratios = "  ".join(f"{name} {y / x:.1f}x" for name, x, y in zip(names, a, b))
        print(f"# {large[0]}x{large[1]} / {small[0]}x{small[1]} ({pixels:.0f}x pixels): {ratios}")


if __name__ == "__main__":
    main()
