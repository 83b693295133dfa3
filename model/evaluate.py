"""4D geometry evaluation of predictions against labels, and `worldreel evaluate`.

Metrics (numpy, one clip at a time; inputs in LABELS.md conventions on the S key frames):

- depth: one scale per video, s = median(gt) / median(pred) over the valid pixels of all
  frames together (median scaling), then on those pixels log-RMSE
  sqrt(mean((log s*pred - log gt)^2)) (s*pred clamped >= 1e-5), delta_1_25 = share with
  max(s*pred/gt, gt/(s*pred)) < 1.25 (a fraction; papers print it in percent) and abs-rel;
- camera, as evo's APE/RPE with `align=True, correct_scale=True`, RMSE over frames / pairs:
  ATE: camera centres after a Sim(3) Umeyama alignment to ground truth, in ground-truth
  units (`labelers.camera.ate_sim3`);
  RTE: relative translation between consecutive frames, t_i = R_i^T (c_{i+1} - c_i) (frame
  i+1's centre seen from camera i), error |s t_i^pred - t_i^gt| with s the Sim(3) scale of
  the ATE alignment (its rotation and translation cancel in relative poses), ground-truth units;
  RRE: angle of (R_i^T R_{i+1})_pred^T (R_i^T R_{i+1})_gt in degrees
  (`labelers.camera.relative_rotation_errors_deg`).
  ATE and RTE are NaN when the ground-truth camera does not move or the predicted centres
  coincide (a Sim(3) alignment is then undefined);
- scene flow: EPE3D = mean |s*pred - gt| over valid pixels, with the depth scale s (the
  prediction's unit is its depth's unit);
- dynamic mask: IoU of (logit > 0) with the label over all key frames; 1 when both are empty.

`worldreel evaluate` runs a checkpoint on label-store clips in reconstruction mode (the
clip's RGB video is given, the geometry-motion latents are sampled, the DPT head reads the
last step; `model.pipeline`) and prints these metrics per clip and their mean.
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pipelines.geometry import ate_sim3, relative_rotation_errors_deg

__all__ = [
    "LABEL_KEYS",
    "METRICS",
    "PRED_KEYS",
    "camera_metrics",
    "depth_metrics",
    "EvaluateConfig",
    "evaluate_clip",
    "evaluate_main",
    "mask_iou",
    "scene_flow_epe",
]

METRICS = ("log_rmse", "delta_1_25", "abs_rel", "ate", "rte", "rre_deg", "epe3d", "mask_iou")
PRED_KEYS = ("depth", "c2w", "scene_flow", "mask_logits")
LABEL_KEYS = ("depth", "depth_valid", "c2w", "scene_flow", "scene_flow_valid", "dynamic_mask")


def depth_metrics(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray | None = None) -> dict[str, float]:
    """Depth errors after per-video median scaling.

    Args:
        pred, gt: (T, H, W) z-depth (any unit; gt's unit is kept).
        valid: (T, H, W) bool, where gt is trustworthy (default: everywhere); pixels with a
            non-finite or non-positive gt or prediction are left out as well.

    Returns:
        log_rmse, delta_1_25 (fraction), abs_rel and the applied scale.
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ")
    valid = np.ones(gt.shape, bool) if valid is None else np.asarray(valid, bool)
    if valid.shape != gt.shape:
        raise ValueError(f"valid {valid.shape} must match depth {gt.shape}")
    ok = valid & np.isfinite(gt) & (gt > 0) & np.isfinite(pred) & (pred > 0)
    if not ok.any():
        raise ValueError("no pixel with valid ground truth and prediction")
    p, g = pred[ok], gt[ok]
    scale = float(np.median(g) / np.median(p))
    p = np.maximum(scale * p, 1e-5)
    ratio = np.maximum(p / g, g / p)
    return {
        "log_rmse": float(np.sqrt(np.mean((np.log(p) - np.log(g)) ** 2))),
        "delta_1_25": float(np.mean(ratio < 1.25)),
        "abs_rel": float(np.mean(np.abs(p - g) / g)),
        "scale": scale,
    }


def camera_metrics(c2w_pred: np.ndarray, c2w_gt: np.ndarray) -> dict[str, float]:
    """ATE, RTE and RRE (RMSE; see the module docstring) of (T, 4, 4) camera-to-world trajectories, T >= 3."""
    c2w_pred, c2w_gt = np.asarray(c2w_pred, np.float64), np.asarray(c2w_gt, np.float64)
    rre = relative_rotation_errors_deg(c2w_pred, c2w_gt)
    out = {"ate": math.nan, "rte": math.nan, "rre_deg": float(np.sqrt(np.mean(rre**2)))}
    try:
        ate = ate_sim3(c2w_pred, c2w_gt)
    except ValueError:  # static ground truth or coincident predicted centres
        return out
    R_pred, R_gt = c2w_pred[:, :3, :3], c2w_gt[:, :3, :3]
    step_pred = np.einsum("tji,tj->ti", R_pred[:-1], np.diff(c2w_pred[:, :3, 3], axis=0))
    step_gt = np.einsum("tji,tj->ti", R_gt[:-1], np.diff(c2w_gt[:, :3, 3], axis=0))
    rte = np.linalg.norm(ate["scale"] * step_pred - step_gt, axis=1)
    out.update(ate=ate["rmse"], rte=float(np.sqrt(np.mean(rte**2))))
    return out


def scene_flow_epe(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, scale: float = 1.0) -> float:
    """Mean 3D end-point error |scale * pred - gt| over valid pixels (NaN if none).

    Args:
        pred, gt: (S-1, H, W, 3) scene flow; valid: (S-1, H, W) bool.
    """
    pred, gt, valid = np.asarray(pred, np.float64), np.asarray(gt, np.float64), np.asarray(valid, bool)
    if pred.shape != gt.shape or pred.shape[-1] != 3 or valid.shape != gt.shape[:-1]:
        raise ValueError(f"need pred and gt (..., 3) and valid (...) alike, got {pred.shape}, {gt.shape}, {valid.shape}")
    ok = valid & np.isfinite(gt).all(-1) & np.isfinite(pred).all(-1)
    if not ok.any():
        return math.nan
    return float(np.linalg.norm(scale * pred[ok] - gt[ok], axis=-1).mean())


def mask_iou(pred: np.ndarray, gt: np.ndarray) -> float:
    """Intersection over union of two boolean masks of one shape; 1 when both are empty."""
    pred, gt = np.asarray(pred, bool), np.asarray(gt, bool)
    if pred.shape != gt.shape:
        raise ValueError(f"pred {pred.shape} and gt {gt.shape} differ")
    union = np.logical_or(pred, gt).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, gt).sum() / union)


def evaluate_clip(pred: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> dict[str, float]:
    """All metrics of one clip on its S key frames.

    Args:
        pred: depth (S, H, W), c2w (S, 4, 4), scene_flow (S-1, H, W, 3), mask_logits (S, H, W).
        labels: depth, depth_valid, c2w, scene_flow, scene_flow_valid, dynamic_mask (LABELS.md names).
    """
    depth = depth_metrics(pred["depth"], labels["depth"], labels["depth_valid"])
    out = {k: depth[k] for k in ("log_rmse", "delta_1_25", "abs_rel")}
    out.update(camera_metrics(pred["c2w"], labels["c2w"]))
    out["epe3d"] = scene_flow_epe(pred["scene_flow"], labels["scene_flow"], labels["scene_flow_valid"], depth["scale"])
    out["mask_iou"] = mask_iou(np.asarray(pred["mask_logits"]) > 0, labels["dynamic_mask"])
    return out


# ============================================================================ CLI
@dataclass
class EvaluateConfig:
    """`worldreel evaluate`: a checkpoint's 4D geometry on label-store clips (reconstruction mode)."""

    checkpoint: str = field(metadata={"help": "training checkpoint folder, or a run folder (its latest checkpoint)"})
    stores: list[str] = field(metadata={
        "name": "stores", "flag": "--store", "aliases": ("--data",), "repeat": True,
        "help": "label store to evaluate on"})
    steps: int = field(default=10, metadata={"ge": 1, "help": "denoising steps of the geometry-motion latents"})
    seed: int = field(default=0, metadata={"help": "random seed of the sampler"})
    limit: int | None = field(default=None, metadata={"ge": 1, "help": "evaluate at most this many clips"})
    scheduler: Literal["dpm", "ddim"] = field(default="ddim", metadata={"help": "diffusion sampler"})
    pretrained: str | None = field(default=None, metadata={
        "name": "weights", "aliases": ("--pretrained",),
        "help": "local diffusers folder of the base model (default: the run's)"})
    device: str = field(default="auto", metadata={"help": "torch device; auto takes cuda when available"})
    json_path: str | None = field(default=None, metadata={
        "name": "json", "help": "also write per-clip metrics and their mean to this file"})


def _job():
    from pipelines.jobconfig import JobConfig

    return JobConfig(EvaluateConfig)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="worldreel evaluate", description="4D geometry metrics of a checkpoint on label stores.")
    _job().add_arguments(p)
    return p


def _table(rows: list[dict[str, Any]]) -> str:
    header = f"{'clip':<28}" + "".join(f"{m:>11}" for m in METRICS)
    lines = [header, "-" * len(header)]
    for row in rows:
        lines.append(f"{row['clip_id'][:27]:<28}" + "".join(f"{row[m]:>11.4f}" for m in METRICS))
    return "\n".join(lines)


def evaluate_main(argv: list[str] | None = None) -> int:
    """`worldreel evaluate`: run a checkpoint on every accepted clip, print the metrics table. 0 on success."""
    import torch

    from model.data import LabelClipDataset
    from model.pipeline import WorldReelPipeline

    job = _job()
    (args,) = job.build(job.from_args(_parser().parse_args(argv)))
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    try:
        pipe = WorldReelPipeline.from_checkpoint(args.checkpoint, args.pretrained, device, dtype, args.scheduler)
        T, H, W = pipe.video_size
        dataset = LabelClipDataset(args.stores, num_frames=T)
        rows = []
        for index in range(len(dataset) if args.limit is None else min(args.limit, len(dataset))):
            sample = dataset[index]
            if tuple(sample["rgb"].shape) != (T, 3, H, W):
                raise ValueError(f"clip {sample['clip_id']} is {tuple(sample['rgb'].shape)}, the model needs {(T, 3, H, W)}")
            generator = torch.Generator().manual_seed(args.seed)
            video = sample["rgb"][None]
            out = pipe(video[:, 0], sample["caption"], args.steps, 1.0, generator=generator, video=video, decode_video=False)
            pred = {k: getattr(out, k)[0].float().cpu().numpy() for k in PRED_KEYS}
            labels = {k: sample[k].numpy() for k in LABEL_KEYS}
            rows.append({"clip_id": sample["clip_id"], **evaluate_clip(pred, labels)})
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}")
        return 2
    mean = {m: float(np.nanmean([r[m] for r in rows])) if any(np.isfinite(r[m]) for r in rows) else math.nan for m in METRICS}
    print(_table([*rows, {"clip_id": f"mean of {len(rows)}", **mean}]))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps({"clips": rows, "mean": mean}, indent=2))
    return 0
