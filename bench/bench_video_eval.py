"""Seconds per clip of `worldreel evaluate-video` on CPU, by stage and by metric.

1. End to end (`model.video_eval.evaluate_video`) with a tiny checkpoint trained here for one
   step on a synthetic store: seconds per clip and model of generation, labeling of the
   generated video (flow, camera, depth and masks, scene flow), each consistency metric and
   the paper metrics (when `model.video_metrics` exists; weight-free metrics only, as no
   weights are given). The tiny model's videos are noise, so the labelers usually reject them
   (camera stage): labeling then stops early, see part 2 for its full cost.
2. Per metric on a rendered synthetic clip standing in for a generated one (its exact labels
   are the "model output"), at the size given: the labelers on the RGB (`label_frames`, by
   stage), then each consistency metric alone, and the paper metrics on the clip against
   itself when the library exists. Medians over `--repeats`.
3. Peak memory of the paper metrics per clip, before and after streaming, at `--memory-size`
   x `--memory-frames` (default 480x720 x 49, the model's): "lists" holds every generated and
   held-out clip and calls `paper_metrics` at the end (what `evaluate_video` did before),
   "stream" feeds `PaperMetricsAccumulator.add(generated, reference)` one clip pair at a time
   and drops the frames (what it does now). Each mode runs in a fresh process for
   `--memory-clips` counts (default 4 and 8) with tiny random I3D / Inception / DINO / CLIP
   networks and a zero-flow stub in place of DIS (its per-clip flow arrays are allocated as
   DIS's are; its time is left out: part 2 has it); peak = the process's maximum resident set;
   per clip = the slope between the smallest and the largest count. Network batches are
   `--memory-batch` (default 4) clips / frames: the accumulator holds up to that many
   preprocessed I3D inputs per side (9.2 MiB each at 16x224x224) before a batch runs, so
   counts that are multiples of it compare like with like.

    .venv/bin/python bench/bench_video_eval.py [--quick] [--size 240x360] [--frames 17] [--clips 2]
        [--steps 2] [--repeats 3] [--threads 1] [--memory-size 480x720] [--memory-frames 49]
        [--memory-clips 4,8] [--memory-batch 4] [--skip-end-to-end] [--skip-metrics]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import image_size, timed  # noqa: E402


def bench_end_to_end(clips: int, steps: int, height: int, width: int, frames: int) -> dict:
    from model.train import TrainConfig, Trainer
    from model.video_eval import EvaluateVideoConfig, evaluate_video
    from pipelines.synthetic_set import scene_configs, write_synthetic_set
    from storage import LabelStore

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = LabelStore.create(root / "store", precision="float32")
        write_synthetic_set(root / "set", scene_configs(clips, height, width, seed=0, num_frames=frames), store)
        Trainer(TrainConfig(config="tiny", stage="2", stores=[str(root / "store")], output_dir=str(root / "run"), steps=1,
                            device="cpu")).run()
        cfg = EvaluateVideoConfig(checkpoint=str(root / "run"), baseline=str(root / "run"), stores=[str(root / "store")],
                                  out=str(root / "eval"), num_clips=clips, steps=steps, guidance=1.0, report_clips=1,
                                  device="cpu")
        start = time.perf_counter()
        result = evaluate_video(cfg, log=lambda line: None)
        total = time.perf_counter() - start
    runs = clips * len(result.models)  # generations, labelings and metric passes
    per_run = {k: round(v / runs, 4) for k, v in result.seconds.items()
               if k.startswith(("generation", "labeling_", "metric_"))}
    per_clip = {k: round(v / clips, 4) for k, v in result.seconds.items() if k not in per_run}
    return {"size": f"{frames}x{height}x{width}", "clips": clips, "models": len(result.models), "steps": steps,
            "total_s": round(total, 3), "seconds_per_clip_and_model": per_run, "seconds_per_clip_other": per_clip}


def bench_metrics(height: int, width: int, frames: int, repeats: int) -> dict:
    from model.evaluate import camera_metrics, depth_metrics, mask_iou, scene_flow_epe
    from model.video_eval import reprojection_consistency
    from pipelines.frame_labels import label_frames
    from pipelines.labeling import LabelConfig, build_backends
    from pipelines.synthetic import SceneConfig, render_clip

    stride = 4
    clip = render_clip(SceneConfig(seed=3, height=height, width=width, num_frames=frames, camera="dolly", num_moving=2))
    L = clip.labels
    cfg = LabelConfig(height=height, width=width, num_frames=frames)
    backends = build_backends(cfg)
    stages: dict[str, list[float]] = {}
    for _ in range(repeats):
        seconds: dict[str, float] = {}
        labels = label_frames(clip.frames, cfg, backends, L["K"], seconds=seconds)
        for stage, s in seconds.items():
            stages.setdefault(stage, []).append(s)
    labeling = {k: round(statistics.median(v), 4) for k, v in stages.items()}
    pred = dict(depth=L["depth"][::stride], c2w=L["c2w"][::stride], K=L["K"][::stride], scene_flow=L["scene_flow"],
                mask_logits=np.where(L["dynamic_mask"], 4.0, -4.0))
    key = slice(None, None, stride)
    metrics = {
        "depth (log-RMSE, delta, abs-rel)": lambda: depth_metrics(pred["depth"], labels["depth"][key],
                                                                  labels["depth_valid"][key]),
        "camera (ATE, RTE, RRE)": lambda: camera_metrics(pred["c2w"], labels["c2w"][key]),
        "scene-flow EPE3D": lambda: scene_flow_epe(pred["scene_flow"], labels["scene_flow"], labels["scene_flow_valid"]),
        "mask IoU": lambda: mask_iou(pred["mask_logits"] > 0, labels["dynamic_mask"]),
        "reprojection (4 figures)": lambda: reprojection_consistency(
            clip.frames[key], pred["depth"], pred["c2w"], pred["K"], pred["mask_logits"] <= 0, 0.05,
            labels["key_flow"], labels["key_flow_valid"]),
    }
    per_metric = {name: round(timed(fn, repeats)[0], 5) for name, fn in metrics.items()}
    try:
        from model.video_metrics import VideoMetricWeights, paper_metrics
    except ImportError:
        paper = "model.video_metrics not installed"
    else:
        weights = VideoMetricWeights(inception=None, i3d=None, dino=None, clip=None)
        seconds, results = timed(lambda: paper_metrics([clip.frames], [clip.frames], weights, device="cpu"), repeats)
        paper = {"seconds": round(seconds, 4),
                 "computed": sorted(k for k, r in results.items() if r.value is not None)}
    return {"size": f"{frames}x{height}x{width}", "labeling_s": labeling, "labeling_total_s": round(sum(labeling.values()), 4),
            "metric_s": per_metric, "paper_metrics": paper}


class _ZeroFlow:
    """Flow stub for the memory bench: zero flow of DIS's shapes and dtype, no estimation time."""

    name = "zero"

    def estimate(self, src: np.ndarray, dst: np.ndarray):
        from labelers.flow import FlowResult

        return FlowResult(np.zeros((*src.shape[:3], 2), np.float32), np.zeros(src.shape[:3], np.float32))

    def estimate_bidirectional(self, src: np.ndarray, dst: np.ndarray):
        return self.estimate(src, dst), self.estimate(dst, src)


def _memory_child(mode: str, clips: int, height: int, width: int, frames: int, batch: int) -> None:
    """One measurement in this (fresh) process: print the peak resident set in MiB as JSON."""
    from model.video_metrics import MetricNetworks, PaperMetricsAccumulator, VideoMetricConfig, paper_metrics
    from model.video_metrics.i3d import I3DConfig, InceptionI3d
    from model.video_metrics.inception import FIDInceptionV3, InceptionConfig
    from model.video_metrics.vbench import ClipVisionSpec, DinoSpec

    torch.manual_seed(0)
    inception, i3d = InceptionConfig(width_divisor=32, num_classes=5), I3DConfig(width_divisor=16, num_classes=7)
    dino = DinoSpec(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    clip = ClipVisionSpec(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                          projection_dim=16)
    config = VideoMetricConfig(fvd_num_frames=min(16, frames), batch_size=batch, inception=inception, i3d=i3d,
                               dino=dino, clip=clip)
    nets = MetricNetworks(inception=FIDInceptionV3(inception).eval(), i3d=InceptionI3d(i3d).eval(),
                          dino=dino.build().eval(), clip=clip.build().eval())

    def video(seed: int) -> np.ndarray:  # a textured canvas panning right 2 px per frame
        import cv2

        rng = np.random.default_rng(seed)
        small = rng.uniform(0, 255, ((height + 8) // 8, (width + 2 * frames + 8) // 8, 3)).astype(np.float32)
        canvas = cv2.resize(small, (width + 2 * frames + 8, height + 8), interpolation=cv2.INTER_CUBIC)
        canvas = np.clip(canvas, 0, 255).astype(np.uint8)
        return np.stack([canvas[4 : 4 + height, 2 * t : 2 * t + width] for t in range(frames)])

    flow = _ZeroFlow()
    start = time.perf_counter()
    if mode == "lists":
        generated = [video(i) for i in range(clips)]
        reference = [video(1000 + i) for i in range(clips)]
        result = paper_metrics(generated, reference, None, networks=nets, config=config, flow=flow)
    else:
        accumulator = PaperMetricsAccumulator(networks=nets, config=config, flow=flow)
        for i in range(clips):
            accumulator.add(video(i), video(1000 + i))  # the frames die here
        result = accumulator.result()
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB
    print(json.dumps({"peak_mib": round(peak_mib, 1), "seconds": round(time.perf_counter() - start, 2),
                      "fvd": result["fvd"].value, "dynamic_degree": result["dynamic_degree"].value}))


def bench_memory(height: int, width: int, frames: int, counts: list[int], batch: int, threads: int) -> dict:
    runs: dict[str, dict[int, dict]] = {}
    for mode in ("lists", "stream"):
        for clips in counts:
            line = subprocess.run(
                [sys.executable, __file__, "--memory-child", mode, str(clips), f"{height}x{width}", str(frames),
                 "--threads", str(threads), "--memory-batch", str(batch)], check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            runs.setdefault(mode, {})[clips] = json.loads(line)
    lo, hi = min(counts), max(counts)
    clip_mib = frames * height * width * 3 / 2**20
    out = {"size": f"{frames}x{height}x{width}", "one_clip_mib": round(clip_mib, 1), "counts": counts, "batch": batch}
    for mode, by_count in runs.items():
        out[mode] = {
            "peak_mib": {n: r["peak_mib"] for n, r in by_count.items()},
            "peak_mib_per_clip": round((by_count[hi]["peak_mib"] - by_count[lo]["peak_mib"]) / (hi - lo), 1),
            "seconds": {n: r["seconds"] for n, r in by_count.items()},
        }
    # the two modes must agree: same batches, same features (FVD to 1e-9 relative), same dynamic degree
    out["same_values"] = all(
        _close(runs["lists"][n]["fvd"], runs["stream"][n]["fvd"])
        and runs["lists"][n]["dynamic_degree"] == runs["stream"][n]["dynamic_degree"] for n in counts)
    return out


def _close(a: float | None, b: float | None) -> bool:
    return a is None and b is None or (a is not None and b is not None and abs(a - b) <= 1e-9 * max(1.0, abs(a)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 64x96, 9 frames, 1 clip, 1 step, 1 repeat")
    p.add_argument("--size", type=image_size, default=(240, 360), help="part 2 clip size HxW (default 240x360)")
    p.add_argument("--frames", type=int, default=17, help="part 2 frames T (1 + 4k; default 17)")
    p.add_argument("--clips", type=int, default=2, help="part 1 held-out clips (default 2)")
    p.add_argument("--steps", type=int, default=2, help="part 1 denoising steps (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="part 2 repeats (median; default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    p.add_argument("--memory-size", type=image_size, default=(480, 720), help="part 3 clip size HxW (default 480x720)")
    p.add_argument("--memory-frames", type=int, default=49, help="part 3 frames (default 49)")
    p.add_argument("--memory-clips", default="4,8", help="part 3 clip counts, two or more (default 4,8)")
    p.add_argument("--memory-batch", type=int, default=4, help="part 3 network batch size (default 4)")
    p.add_argument("--skip-end-to-end", action="store_true", help="skip part 1")
    p.add_argument("--skip-metrics", action="store_true", help="skip part 2")
    p.add_argument("--memory-child", nargs=4, metavar=("MODE", "CLIPS", "HxW", "FRAMES"), help=argparse.SUPPRESS)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        mode, clips, size, frames = args.memory_child
        _memory_child(mode, int(clips), *image_size(size), int(frames), args.memory_batch)
        return
    if args.quick:
        args.size, args.frames, args.clips, args.steps, args.repeats = (64, 96), 9, 1, 1, 1
        args.memory_size, args.memory_frames = (120, 180), 17
    out: dict = {"threads": args.threads}
    if not args.skip_end_to_end:
        out["end_to_end_tiny_model"] = bench_end_to_end(args.clips, args.steps, 64, 96, 9)
    if not args.skip_metrics:
        out["per_metric"] = bench_metrics(*args.size, args.frames, args.repeats)
    counts = sorted({int(c) for c in args.memory_clips.split(",")})
    out["paper_metrics_memory"] = bench_memory(*args.memory_size, args.memory_frames, counts, args.memory_batch,
                                               args.threads)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
