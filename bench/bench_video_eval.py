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

    .venv/bin/python bench/bench_video_eval.py [--quick] [--size 240x360] [--frames 17] [--clips 2]
        [--steps 2] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import statistics
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
        Trainer(TrainConfig(model="tiny", stage="2", data=[str(root / "store")], output_dir=str(root / "run"), steps=1,
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="smoke run: 64x96, 9 frames, 1 clip, 1 step, 1 repeat")
    p.add_argument("--size", type=image_size, default=(240, 360), help="part 2 clip size HxW (default 240x360)")
    p.add_argument("--frames", type=int, default=17, help="part 2 frames T (1 + 4k; default 17)")
    p.add_argument("--clips", type=int, default=2, help="part 1 held-out clips (default 2)")
    p.add_argument("--steps", type=int, default=2, help="part 1 denoising steps (default 2)")
    p.add_argument("--repeats", type=int, default=3, help="part 2 repeats (median; default 3)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.size, args.frames, args.clips, args.steps, args.repeats = (64, 96), 9, 1, 1, 1
    out = {
        "end_to_end_tiny_model": bench_end_to_end(args.clips, args.steps, 64, 96, 9),
        "per_metric": bench_metrics(*args.size, args.frames, args.repeats),
        "threads": args.threads,
    }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
