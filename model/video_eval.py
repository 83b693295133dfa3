"""`worldreel evaluate-video`: generate videos with their 4D outputs from held-out clips, and score them.

For each held-out clip (accepted clips of label stores, or the rows of a manifest) the run takes
the first frame and the caption, samples a video and its 4D outputs (`model.pipeline`) with the
checkpoint and, in the same run with the same first frame, caption and noise seed, with a baseline
checkpoint and / or the base CogVideoX image-to-video model (`model.base_pipeline`: diffusers' own
pipeline, RGB only), and computes:

- the paper's table (FVD, FID, dynamic degree, motion smoothness, subject and background
  consistency) of the generated videos against the held-out real clips, streamed clip by clip
  through `model.video_metrics.PaperMetricsAccumulator` (imported when the run needs it; a
  metric it cannot compute, e.g. for missing weights, is reported as not computed with the
  option that would compute it);
- labeler acceptance: the share of generated videos the project's labelers label without
  rejecting them (RGB only, so the base model has it too);
- 4D consistency: the project's labelers (`pipelines.frame_labels.label_frames`, the labeling
  pipeline's stages on in-memory frames) label the generated RGB video, and the model's own
  4D outputs on the S key frames are scored against those labels with `model.evaluate`'s
  metrics: depth log-RMSE, delta < 1.25 and abs-rel after one median scale per video
  (s = median(label) / median(model) over pixels valid in both), camera ATE / RTE (Sim(3)
  Umeyama alignment, RMSE) and RRE (degrees, consecutive key frames), scene-flow EPE3D (model
  scene flow times the depth scale s, on the labels' valid scene-flow pixels), dynamic-mask
  IoU (logit > 0 against the labelled mask);
- reprojection consistency of static pixels (`reprojection_consistency`): each static pixel
  u of key frame k (model mask logit <= 0, model depth > 0) is lifted with the model's depth
  D_k and intrinsics K_k, moved by the model's cameras into key frame k+1,
  X = c2w_{k+1}^-1 c2w_k (D_k(u) K_k^-1 [u; 1]), and projected, q = pi(K_{k+1} X); where q lands
  inside frame k+1 and X_z > 0:
    reproj_depth_rel   median |X_z - D_{k+1}(q)| / D_{k+1}(q) (bilinear D_{k+1}): do the model's
                       depth maps and cameras describe one static scene;
    reproj_inliers     share of those pixels with relative error < `reprojection_tolerance`;
    reproj_photo_l1    mean |I_{k+1}(q) - I_k(u)| over the inliers, RGB in 8-bit levels averaged
                       over channels (bilinear I_{k+1}; occluded pixels fail the depth test and
                       are left out): does the geometry explain the model's own video;
    reproj_flow_px     mean |q - (u + F_k(u))| where the labelers' key flow F_k is valid: the
                       geometry's motion against the motion measured in the generated video.
  Pairs pool over all key pairs of a clip; clips are averaged.
  The base model has no 4D outputs: its 4D-consistency rows say so.

Memory is bounded by one clip: held-out clips are read one at a time, and of each generated
video the run keeps only the metric values and accumulator state (and the key frames of the
first `--report-clips` clips for the report).

Results: a table of metrics, one row each, the checkpoint beside the baseline, with the reason
(and the option that would change it) for every value not computed; `results.json`; and an HTML
report (`index.html`) with the table, strips of generated key frames and depth, and a point-cloud
preview per clip (`write_report`).
"""

from __future__ import annotations

import argparse
import html
import json
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from model.evaluate import camera_metrics, depth_metrics, mask_iou, scene_flow_epe

__all__ = [
    "CONSISTENCY_METRICS",
    "EvaluateVideoConfig",
    "HeldOutClip",
    "LABELER_METRICS",
    "PAPER_METRICS",
    "VideoEvalResult",
    "consistency_metrics",
    "evaluate_video",
    "evaluate_video_main",
    "held_out_clips",
    "iter_held_out_clips",
    "label_metrics",
    "markdown_table",
    "point_cloud_preview",
    "reprojection_consistency",
    "write_report",
]

CONSISTENCY_METRICS: dict[str, tuple[str, str]] = {
    "depth_log_rmse": ("lower", "depth log-RMSE, model vs labelers, one median scale per video"),
    "depth_delta_1_25": ("higher", "share of pixels with max(d/d*, d*/d) < 1.25, median-scaled"),
    "depth_abs_rel": ("lower", "mean |d - d*| / d*, median-scaled"),
    "camera_ate": ("lower", "camera-centre RMSE after Sim(3) alignment, labelers' units"),
    "camera_rte": ("lower", "relative translation RMSE between key frames, labelers' units"),
    "camera_rre_deg": ("lower", "relative rotation RMSE between key frames, degrees"),
    "scene_flow_epe3d": ("lower", "mean 3D end-point error on valid labelled scene flow, labelers' units"),
    "mask_iou": ("higher", "IoU of the dynamic masks over all key frames"),
    "reproj_depth_rel": ("lower", "median relative depth disagreement of static pixels warped k -> k+1"),
    "reproj_inliers": ("higher", "share of warped static pixels whose depth agrees within the tolerance"),
    "reproj_photo_l1": ("lower", "mean RGB difference (8-bit levels) of warped static inliers"),
    "reproj_flow_px": ("lower", "mean distance (px) of the warp from the labelers' key flow, static pixels"),
}
"""Consistency metrics: name -> (which way is better, one-line definition)."""

PAPER_METRICS: dict[str, tuple[str, str]] = {
    "fvd": ("lower", "--i3d-weights"),
    "fid": ("lower", "--inception-weights"),
    "dynamic_degree": ("higher", ""),
    "motion_smoothness": ("higher", ""),
    "subject_consistency": ("higher", "--dino-weights"),
    "background_consistency": ("higher", "--clip-weights"),
}
"""The paper's table: name -> (which way is better, the option whose weights it needs, "" when none).
Dynamic degree is "higher" as in the paper's table, although a still scene should score 0."""

LABELER_METRICS: dict[str, tuple[str, str]] = {
    "labeler_acceptance": ("higher", "share of generated videos the project's labelers label without rejecting them"),
}
"""Metrics of the labelers on the generated RGB alone (no 4D output needed): name -> (better, definition)."""

NO_4D_OUTPUTS = "the base model has no 4D outputs"
BASE_MODEL = "base_model"
"""Column of the base model (`--baseline-base-model`)."""

_LABEL_METRICS = tuple(m for m in CONSISTENCY_METRICS if not m.startswith("reproj_")) + ("reproj_flow_px",)
_MISSING_LIBRARY = "the paper-metric library model.video_metrics is not installed"


@dataclass(frozen=True)
class EvaluateVideoConfig:
    """One `worldreel evaluate-video` run (the command line and the Prefect form are generated from
    these fields by `pipelines.jobconfig`)."""

    checkpoint: str = field(metadata={"help": "checkpoint to evaluate: a checkpoint folder or a run folder "
                                              "(its latest checkpoint); needs a DPT head (stage 1b or 2)"})
    out: str = field(metadata={"help": "folder for index.html, results.json and the table"})
    baseline: str | None = field(default=None, metadata={
        "help": "baseline checkpoint generated in the same run with the same noise (e.g. the previous checkpoint); "
                "none: the checkpoint alone"})
    baseline_base_model: str | None = field(default=None, metadata={
        "help": "local diffusers folder of the base CogVideoX image-to-video model (no geometry channels), "
                "generated in the same run with the same first frames, captions and noise seeds: RGB only, so its "
                "column has the paper metrics and labeler acceptance, not 4D consistency; may be given with --baseline"})
    stores: list[str] = field(default_factory=list, metadata={
        "flag": "--store", "repeat": True,
        "help": "held-out label store: its accepted clips' first frames, captions, real videos and intrinsics"})
    manifest: str | None = field(default=None, metadata={
        "help": "held-out manifest (CSV) instead of label stores: its clips' first frames, captions and videos"})
    num_clips: int = field(default=8, metadata={"name": "clips", "ge": 1, "help": "held-out clips to generate from"})
    steps: int = field(default=50, metadata={"ge": 1, "help": "denoising steps per video"})
    guidance: float = field(default=6.0, metadata={
        "ge": 0, "help": "classifier-free guidance scale (<= 1 turns guidance off)"})
    scheduler: Literal["dpm", "ddim"] = field(default="dpm", metadata={"help": "diffusion sampler"})
    seed: int = field(default=0, metadata={"help": "noise seed; clip i uses seed + i for both checkpoints"})
    pretrained: str | None = field(default=None, metadata={
        "help": "local diffusers folder of the base model (VAE, text encoder) for full-size checkpoints; "
                "default: the one each run was trained from"})
    inception_weights: str | None = field(default=None, metadata={
        "help": "local Inception-v3 weights for FID; none: FID not computed"})
    i3d_weights: str | None = field(default=None, metadata={"help": "local I3D weights for FVD; none: FVD not computed"})
    dino_weights: str | None = field(default=None, metadata={
        "help": "local DINO weights for subject consistency; none: not computed"})
    clip_weights: str | None = field(default=None, metadata={
        "help": "local CLIP weights for background consistency; none: not computed"})
    label_flow: Literal["dis", "sea-raft"] = field(default="dis", metadata={
        "help": "flow labeler run on the generated videos: dis (weight-free) or sea-raft (needs --flow-weights)"})
    flow_weights: str | None = field(default=None, metadata={"help": "local SEA-RAFT checkpoint for --label-flow sea-raft"})
    label_depth: Literal["mvs", "neural"] = field(default="mvs", metadata={
        "help": "depth labeler run on the generated videos: mvs (weight-free, static pixels only) or neural "
                "(needs --depth-weights; also labels moving objects and cameras without parallax)"})
    depth_weights: str | None = field(default=None, metadata={
        "help": "local folder of a transformers depth model for --label-depth neural"})
    labeler_intrinsics: Literal["reference", "estimate"] = field(default="reference", metadata={
        "help": "intrinsics the camera labeler gets: reference (the held-out clip's, whose first frame the video "
                "continues) or estimate (from the generated video)"})
    reprojection_tolerance: float = field(default=0.05, metadata={
        "gt": 0, "lt": 1, "help": "relative depth agreement under which a warped static pixel is an inlier"})
    report_clips: int = field(default=4, metadata={
        "ge": 0, "help": "clips shown in the report (key-frame strips, depth, point cloud)"})
    device: str = field(default="auto", metadata={"help": "torch device: auto (cuda if available), cpu, cuda"})

    def __post_init__(self) -> None:
        if bool(self.stores) == bool(self.manifest):
            raise ValueError("give held-out clips either as label stores (--store) or as a manifest (--manifest)")
        if self.label_flow == "sea-raft" and not self.flow_weights:
            raise ValueError("--label-flow sea-raft needs --flow-weights: a local SEA-RAFT checkpoint")
        if self.label_depth == "neural" and not self.depth_weights:
            raise ValueError("--label-depth neural needs --depth-weights: a local transformers depth model")

    def models(self) -> dict[str, str]:
        """Column label -> what generates it: the checkpoint, then the baselines given."""
        return {"checkpoint": self.checkpoint, **({"baseline": self.baseline} if self.baseline else {}),
                **({BASE_MODEL: self.baseline_base_model} if self.baseline_base_model else {})}

    def weights(self) -> dict[str, str | None]:
        return {"inception": self.inception_weights, "i3d": self.i3d_weights, "dino": self.dino_weights,
                "clip": self.clip_weights}


# ============================================================================ held-out clips
@dataclass
class HeldOutClip:
    """A real clip to generate from: frames (T, H, W, 3) uint8, caption, K (T, 3, 3) or None, label fps."""

    clip_id: str
    frames: np.ndarray
    caption: str
    K: np.ndarray | None
    fps: float | None = None


def held_out_clips(cfg: EvaluateVideoConfig, size: tuple[int, int, int]) -> tuple[list[HeldOutClip], list[str]]:
    """Up to `cfg.num_clips` clips of `size` = (T, H, W) (the model's), and one line per clip left out
    (all in memory: `iter_held_out_clips` reads them one at a time)."""
    skipped: list[str] = []
    return list(iter_held_out_clips(cfg, size, skipped)), skipped


def iter_held_out_clips(cfg: EvaluateVideoConfig, size: tuple[int, int, int], skipped: list[str]) -> Iterator[HeldOutClip]:
    """Up to `cfg.num_clips` clips of `size` = (T, H, W) (the model's), read one at a time; one line
    per clip left out is appended to `skipped` as the reading passes it.

    Store clips are read at their label resolution, which must be (H, W), with at least T frames
    (the first T are used); manifest clips are decoded at (T, H, W) as the labeling decode does.
    """
    T, H, W = size
    yielded = 0
    if cfg.manifest:
        from pipelines.clips import ClipRejected
        from pipelines.decode import DecodeConfig, decode_clip
        from pipelines.manifests import read_manifest

        manifest = read_manifest(cfg.manifest)
        skipped += [f"{cfg.manifest} row {e.row}: {e.message}" for e in manifest.errors]
        for spec in manifest.specs:
            if yielded == cfg.num_clips:
                return
            try:
                decoded = decode_clip(spec, DecodeConfig(num_frames=T, height=H, width=W, num_threads=1))
            except ClipRejected as e:
                skipped.append(f"{spec.clip_id}: {e.reason}: {e.message}")
                continue
            yielded += 1
            yield HeldOutClip(spec.clip_id, decoded.frames, spec.caption or "", decoded.K, decoded.fps)
        return
    from model.data import source_frames
    from storage import LabelStore

    for path in cfg.stores:
        store = LabelStore.open(path)
        for clip_id in store.clip_ids(status="accepted"):
            if yielded == cfg.num_clips:
                return
            labels = store.read(clip_id, fields=["frame_index", "K"])
            attrs = labels.attrs
            frames_have = len(labels["frame_index"])
            if (attrs.get("height"), attrs.get("width")) != (H, W) or frames_have < T:
                skipped.append(f"{clip_id} ({path}): {frames_have}x{attrs.get('height')}x{attrs.get('width')} "
                               f"frames, the model generates {T}x{H}x{W}")
                continue
            try:
                frames = source_frames(clip_id, attrs, np.asarray(labels["frame_index"][:T]), (H, W))
            except Exception as e:  # decord's errors for a missing or broken source video have no common base
                skipped.append(f"{clip_id} ({path}): source video unreadable: {_one_line(e)}")
                continue
            caption = str(attrs.get("source", {}).get("caption") or "")
            fps = attrs.get("fps")
            yielded += 1
            yield HeldOutClip(clip_id, frames, caption, np.asarray(labels["K"][:T], np.float64),
                              None if fps is None else float(fps))


# ============================================================================ consistency metrics
def label_metrics(pred: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray], stride: int) -> tuple[dict, dict]:
    """Model 4D outputs on S key frames against labeler labels of the T frames (`model.evaluate` metrics).

    Args:
        pred: depth (S, H, W), c2w (S, 4, 4), scene_flow (S-1, H, W, 3), mask_logits (S, H, W).
        labels: LABELS.md arrays of the T frames: depth, depth_valid, c2w, scene_flow,
            scene_flow_valid, dynamic_mask (the last three on key frames already).
        stride: video frames per key frame.

    Returns:
        values (metric -> float, NaN when not computed) and notes (metric -> why not computed).
    """
    values: dict[str, float] = {}
    notes: dict[str, str] = {}
    depth_valid = np.asarray(labels["depth_valid"])[::stride]
    try:
        depth = depth_metrics(pred["depth"], np.asarray(labels["depth"])[::stride], depth_valid)
        values.update(depth_log_rmse=depth["log_rmse"], depth_delta_1_25=depth["delta_1_25"],
                      depth_abs_rel=depth["abs_rel"])
        scale = depth["scale"]
    except ValueError:
        scale = math.nan
        for m in ("depth_log_rmse", "depth_delta_1_25", "depth_abs_rel", "scene_flow_epe3d"):
            values[m], notes[m] = math.nan, "no labelled depth on the key frames"
    camera = camera_metrics(pred["c2w"], np.asarray(labels["c2w"])[::stride])
    values.update(camera_ate=camera["ate"], camera_rte=camera["rte"], camera_rre_deg=camera["rre_deg"])
    if not math.isfinite(camera["ate"]):
        for m in ("camera_ate", "camera_rte"):
            notes[m] = "the labelled or the model's camera centres do not move: Sim(3) alignment undefined"
    if math.isfinite(scale):
        values["scene_flow_epe3d"] = scene_flow_epe(pred["scene_flow"], labels["scene_flow"], labels["scene_flow_valid"],
                                                    scale)
        if not math.isfinite(values["scene_flow_epe3d"]):
            notes["scene_flow_epe3d"] = ("no valid labelled scene flow (nothing moves, or no depth on the movers: "
                                         "--label-depth neural)")
    values["mask_iou"] = mask_iou(np.asarray(pred["mask_logits"]) > 0, labels["dynamic_mask"])
    return values, notes


def reprojection_consistency(
    frames: np.ndarray,
    depth: np.ndarray,
    c2w: np.ndarray,
    K: np.ndarray,
    static: np.ndarray,
    tolerance: float = 0.05,
    key_flow: np.ndarray | None = None,
    key_flow_valid: np.ndarray | None = None,
) -> dict[str, float]:
    """Static pixels of key frame k warped into k+1 with the model's depth and cameras (module docstring).

    Args:
        frames: (S, H, W, 3) uint8 key frames of the video.
        depth: (S, H, W) model depth (> 0 where usable); c2w: (S, 4, 4); K: (S, 3, 3).
        static: (S, H, W) bool, pixels the model calls static.
        tolerance: relative depth agreement of an inlier.
        key_flow, key_flow_valid: (S-1, H, W, 2) and (S-1, H, W) labelled key flow, for reproj_flow_px.

    Returns:
        reproj_depth_rel, reproj_inliers, reproj_photo_l1, reproj_flow_px (NaN without pixels
        or without key flow).
    """
    from pipelines.geometry import bilinear_sample, inside_image, pixel_grid  # model/ reads geometry via pipelines (DESIGN.md)

    frames = np.asarray(frames)
    S, H, W = np.shape(depth)
    if frames.shape != (S, H, W, 3) or np.shape(c2w) != (S, 4, 4) or np.shape(K) != (S, 3, 3) or np.shape(static) != (S, H, W):
        raise ValueError(f"shapes disagree: frames {frames.shape}, depth {np.shape(depth)}, c2w {np.shape(c2w)}, "
                         f"K {np.shape(K)}, static {np.shape(static)}")
    depth = np.asarray(depth, np.float64)
    c2w, K = np.asarray(c2w, np.float64), np.asarray(K, np.float64)
    uv1 = np.concatenate([pixel_grid(H, W), np.ones((H, W, 1))], axis=-1)
    rel, photo, flow_err = [], [], []
    for k in range(S - 1):
        use = static[k] & np.isfinite(depth[k]) & (depth[k] > 0)
        cam = (uv1 @ np.linalg.inv(K[k]).T) * np.where(use, depth[k], 0.0)[..., None]
        k_to_next = np.linalg.inv(c2w[k + 1]) @ c2w[k]
        X = cam @ k_to_next[:3, :3].T + k_to_next[:3, 3]
        z = X[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            proj = X @ K[k + 1].T
            q = proj[..., :2] / proj[..., 2:3]
        use &= (z > 0) & inside_image(q, H, W)
        if key_flow is not None:
            ok = use & np.asarray(key_flow_valid[k], bool)
            flow_err.append(np.linalg.norm(q[ok] - (uv1[..., :2] + np.asarray(key_flow[k], np.float64))[ok], axis=-1))
        if not use.any():
            continue
        d_next = bilinear_sample(depth[k + 1], q[use])
        good = np.isfinite(d_next) & (d_next > 0)
        r = np.abs(z[use][good] - d_next[good]) / d_next[good]
        rel.append(r)
        inlier = r < tolerance
        target = bilinear_sample(frames[k + 1], q[use][good][inlier])
        photo.append(np.abs(target - frames[k][use][good][inlier].astype(np.float64)).mean(axis=-1))
    rel_all = np.concatenate(rel) if rel else np.zeros(0)
    photo_all = np.concatenate(photo) if photo else np.zeros(0)
    flow_all = np.concatenate(flow_err) if flow_err else np.zeros(0)
    return {
        "reproj_depth_rel": float(np.median(rel_all)) if rel_all.size else math.nan,
        "reproj_inliers": float(np.mean(rel_all < tolerance)) if rel_all.size else math.nan,
        "reproj_photo_l1": float(photo_all.mean()) if photo_all.size else math.nan,
        "reproj_flow_px": float(flow_all.mean()) if flow_all.size else math.nan,
    }


def consistency_metrics(
    video: np.ndarray,
    pred: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray] | None,
    stride: int,
    tolerance: float = 0.05,
    label_failure: str = "",
    seconds: dict[str, float] | None = None,
) -> tuple[dict[str, float], dict[str, str]]:
    """Every consistency metric of one generated video.

    Args:
        video: (T, H, W, 3) uint8 generated frames.
        pred: the model's depth, c2w, K, scene_flow, mask_logits on the S key frames.
        labels: the labelers' arrays of the video (`pipelines.frame_labels.label_frames`), or
            None when they could not label it (`label_failure` says why).
        stride: video frames per key frame.

    Returns:
        values (NaN when not computed) and notes (why, for each NaN).
    """
    seconds = {} if seconds is None else seconds
    values: dict[str, float] = {}
    notes: dict[str, str] = {}
    if labels is not None:
        start = time.perf_counter()
        values, notes = label_metrics(pred, labels, stride)
        seconds["label_metrics"] = time.perf_counter() - start
    else:
        for m in _LABEL_METRICS:
            values[m], notes[m] = math.nan, f"the labelers could not label the generated video: {label_failure}"
    start = time.perf_counter()
    reproj = reprojection_consistency(
        np.asarray(video)[::stride], pred["depth"], pred["c2w"], pred["K"], np.asarray(pred["mask_logits"]) <= 0,
        tolerance, None if labels is None else labels["key_flow"], None if labels is None else labels["key_flow_valid"],
    )
    seconds["reprojection"] = time.perf_counter() - start
    for m, v in reproj.items():
        if m == "reproj_flow_px" and labels is None:
            continue
        values[m] = v
        if not math.isfinite(v):
            notes[m] = ("no labelled key flow on warped static pixels" if m == "reproj_flow_px"
                        else "no static pixel of the model's depth lands inside the next key frame")
    return values, notes


# ============================================================================ point cloud preview
def point_cloud_preview(points: np.ndarray, colors: np.ndarray, size: tuple[int, int] = (160, 240),
                        yaw_deg: float = 30.0, pitch_deg: float = -20.0) -> np.ndarray:
    """(H, W, 3) uint8 picture of a coloured point cloud seen from beside and above its centre.

    Args:
        points: (..., 3) points (non-finite ones are dropped); colors: (..., 3) uint8 alike.
        size: picture (height, width). The virtual camera turns `yaw_deg` about the cloud's
            median and tilts `pitch_deg`; nearest point wins each pixel (2x2 splats); white background.
    """
    P = np.asarray(points, np.float64).reshape(-1, 3)
    C = np.asarray(colors, np.uint8).reshape(-1, 3)
    keep = np.isfinite(P).all(-1) & (np.abs(P).sum(-1) > 0)
    P, C = P[keep], C[keep]
    height, width = size
    image = np.full((height, width, 3), 255, np.uint8)
    if len(P) == 0:
        return image
    centre = np.median(P, axis=0)
    radius = max(float(np.percentile(np.linalg.norm(P - centre, axis=-1), 90)), 1e-6)
    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    Ry = np.array([[math.cos(yaw), 0, math.sin(yaw)], [0, 1, 0], [-math.sin(yaw), 0, math.cos(yaw)]])
    Rx = np.array([[1, 0, 0], [0, math.cos(pitch), -math.sin(pitch)], [0, math.sin(pitch), math.cos(pitch)]])
    X = (P - centre) @ (Rx @ Ry).T + np.array([0.0, 0.0, 2.5 * radius])
    front = X[:, 2] > 1e-6 * radius
    X, C = X[front], C[front]
    focal = 0.9 * width
    u = np.round(focal * X[:, 0] / X[:, 2] + width / 2).astype(np.int64)
    v = np.round(focal * X[:, 1] / X[:, 2] + height / 2).astype(np.int64)
    order = np.argsort(-X[:, 2])  # far first: nearer points overwrite them
    for du in (0, 1):
        for dv in (0, 1):
            uu, vv = u[order] + du, v[order] + dv
            ok = (uu >= 0) & (uu < width) & (vv >= 0) & (vv < height)
            flat = vv[ok] * width + uu[ok]
            # the last (nearest) write per pixel wins: keep the last occurrence of each pixel
            last = len(flat) - 1 - np.unique(flat[::-1], return_index=True)[1]
            image.reshape(-1, 3)[flat[last]] = C[order][ok][last]
    return image


# ============================================================================ the run
@dataclass
class VideoEvalResult:
    """What a run measured.

    Attributes:
        models: column label -> what generated it: "checkpoint", and "baseline" (a checkpoint) and
            "base_model" (a diffusers folder) when given.
        rows: the table: one dict per metric (metric, group, better, definition, and per model
            label its value (None when not computed) and `<label>_note`).
        clips: per clip and model, the consistency values and notes.
        skipped: held-out clips left out, one line each.
        seconds: wall seconds per stage, summed over clips and models.
        report: path of index.html (None until written).
    """

    models: dict[str, str]
    rows: list[dict[str, Any]]
    clips: list[dict[str, Any]]
    skipped: list[str]
    seconds: dict[str, float]
    protocol: dict[str, Any]
    report: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _device(name: str):
    import torch

    return torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name)


def _add(seconds: dict[str, float], name: str, start: float) -> None:
    seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start


def _generate(pipe, clip: HeldOutClip, cfg: EvaluateVideoConfig, index: int) -> tuple[np.ndarray, dict[str, np.ndarray] | None]:
    """(T, H, W, 3) uint8 video and the 4D outputs (numpy) on the key frames; None for the base model (RGB only)."""
    import torch

    from model.base_pipeline import BaseModelSampler

    image = torch.from_numpy(clip.frames[0]).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    generator = torch.Generator().manual_seed(cfg.seed + index)
    out = pipe(image, clip.caption, cfg.steps, cfg.guidance, generator=generator, num_frames=clip.frames.shape[0])
    rgb = out if isinstance(pipe, BaseModelSampler) else out.video
    video = (rgb[0].permute(0, 2, 3, 1).float().cpu().numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    if isinstance(pipe, BaseModelSampler):
        return video, None
    pred = {k: getattr(out, k)[0].float().cpu().numpy()
            for k in ("depth", "points", "c2w", "K", "scene_flow", "mask_logits")}
    return video, pred


def _label_config(cfg: EvaluateVideoConfig, size: tuple[int, int, int], stride: int):
    from pipelines.labeling import LabelConfig

    T, H, W = size
    device = "cuda" if _device(cfg.device).type == "cuda" else "cpu"
    return LabelConfig(height=H, width=W, num_frames=T, stride=stride, flow=cfg.label_flow, flow_weights=cfg.flow_weights,
                       depth=cfg.label_depth, depth_weights=cfg.depth_weights, device=device,
                       scene_flow_max_uncertainty_px=None if cfg.label_flow == "sea-raft" else 0.5)


def _load_pipes(cfg: EvaluateVideoConfig, models: Mapping[str, str], device, dtype) -> dict[str, Any]:
    from model.base_pipeline import BaseModelSampler
    from model.pipeline import WorldReelPipeline

    return {name: BaseModelSampler.from_folder(path, device, dtype, cfg.scheduler) if name == BASE_MODEL
            else WorldReelPipeline.from_checkpoint(path, cfg.pretrained, device, dtype, cfg.scheduler)
            for name, path in models.items()}


def evaluate_video(cfg: EvaluateVideoConfig, log: Callable[[str], None] = print) -> VideoEvalResult:
    """Generate from the held-out clips with the checkpoint (and the baselines), score, write the report.

    Clips stream: each held-out clip is read, generated from, labelled and scored, then dropped.

    Raises:
        ValueError / FileNotFoundError: a checkpoint or base-model folder that cannot sample, or no
            usable held-out clip (one line naming it and the cause).
    """
    import torch

    from pipelines.clips import ClipRejected
    from pipelines.frame_labels import label_frames
    from pipelines.labeling import build_backends

    device = _device(cfg.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    models = cfg.models()
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    pipes = _load_pipes(cfg, models, device, dtype)
    _add(seconds, "load_models", start)
    size = pipes["checkpoint"].video_size
    for name, pipe in pipes.items():
        if pipe.video_size != size:
            raise ValueError(f"{name} {models[name]} generates {pipe.video_size} (T, H, W), the checkpoint {size}")
        if pipe.temporal_scale != pipes["checkpoint"].temporal_scale:
            raise ValueError(f"{name} {models[name]} has a VAE of temporal stride {pipe.temporal_scale}, the "
                             f"checkpoint {pipes['checkpoint'].temporal_scale}")
    skipped: list[str] = []
    start = time.perf_counter()
    held_out = iter_held_out_clips(cfg, size, skipped)
    first = next(held_out, None)  # no usable clip fails here, before anything is generated
    _add(seconds, "read_held_out", start)
    if first is None:
        source = cfg.manifest or ", ".join(cfg.stores)
        why = f": {skipped[0]}" + (f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else "") if skipped else ""
        raise ValueError(f"no held-out clip of {size[0]}x{size[1]}x{size[2]} frames in {source}{why}")
    stride = pipes["checkpoint"].temporal_scale
    label_cfg = _label_config(cfg, size, stride)
    start = time.perf_counter()
    backends = build_backends(label_cfg)
    networks = _metric_networks(cfg, device)
    _add(seconds, "load_models", start)
    paper = _PaperTable(list(models), cfg, device, networks, backends.flow, first.fps)
    per_clip: list[dict[str, Any]] = []
    previews: list[dict[str, Any]] = []
    index = 0
    clip: HeldOutClip | None = first
    while clip is not None:
        entry: dict[str, Any] = {"clip_id": clip.clip_id, "caption": clip.caption}
        preview: dict[str, Any] = {"clip_id": clip.clip_id, "caption": clip.caption, "reference": clip.frames[::stride]}
        start = time.perf_counter()
        paper.add_reference(clip.frames)
        _add(seconds, "paper_metrics", start)
        for name, pipe in pipes.items():
            start = time.perf_counter()
            video, pred = _generate(pipe, clip, cfg, index)
            _add(seconds, "generation", start)
            K = clip.K if cfg.labeler_intrinsics == "reference" else None
            label_seconds: dict[str, float] = {}
            try:
                labels, failure = label_frames(video, label_cfg, backends, K, clip.clip_id, label_seconds), ""
            except ClipRejected as e:
                labels, failure = None, f"{e.reason}: {e.message}"
            except Exception as e:  # a degenerate video a labeler chokes on: recorded, the run goes on
                labels, failure = None, f"error: {type(e).__name__}: {_one_line(e)}"
            for stage, s in label_seconds.items():
                seconds[f"labeling_{stage}"] = seconds.get(f"labeling_{stage}", 0.0) + s
            if pred is None:
                values = {m: math.nan for m in CONSISTENCY_METRICS}
                notes = {m: NO_4D_OUTPUTS for m in CONSISTENCY_METRICS}
            else:
                metric_seconds: dict[str, float] = {}
                values, notes = consistency_metrics(video, pred, labels, stride, cfg.reprojection_tolerance, failure,
                                                    metric_seconds)
                for stage, s in metric_seconds.items():
                    seconds[f"metric_{stage}"] = seconds.get(f"metric_{stage}", 0.0) + s
            entry[name] = {"values": values, "notes": notes, "labeled": labels is not None, "label_failure": failure}
            start = time.perf_counter()
            paper.add(name, video)
            _add(seconds, "paper_metrics", start)
            if index < cfg.report_clips:
                preview[name] = {"video": video[::stride]} if pred is None else {
                    "video": video[::stride], "depth": pred["depth"], "points": pred["points"]}
            del video, pred, labels  # only the scores of this clip stay
        per_clip.append(entry)
        if index < cfg.report_clips:
            previews.append(preview)
        log(f"clip {index + 1} {clip.clip_id}: " + "; ".join(_clip_summary(name, entry[name]) for name in models))
        index += 1
        start = time.perf_counter()
        clip = next(held_out, None)
        _add(seconds, "read_held_out", start)
    start = time.perf_counter()
    paper_results = paper.results()
    _add(seconds, "paper_metrics", start)
    rows = _table(list(models), per_clip, paper_results)
    protocol = {"frames": size[0], "height": size[1], "width": size[2], "clips": len(per_clip), "steps": cfg.steps,
                "guidance": cfg.guidance, "scheduler": cfg.scheduler, "seed": cfg.seed, "stride": stride,
                "labelers": {"flow": cfg.label_flow, "camera": "sfm", "depth": cfg.label_depth,
                             "intrinsics": cfg.labeler_intrinsics},
                "reprojection_tolerance": cfg.reprojection_tolerance}
    result = VideoEvalResult(models, rows, per_clip, skipped, seconds, protocol)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    result.report = str(write_report(result, previews, out))
    _add(seconds, "report", start)
    (out / "results.json").write_text(json.dumps(_jsonable(result.to_dict()), indent=2))
    return result


def _clip_summary(name: str, entry: Mapping[str, Any]) -> str:
    if not entry["labeled"]:
        return f"{name} rejected by the labelers ({entry['label_failure'].split(':')[0]})"
    if entry["notes"].get("depth_log_rmse") == NO_4D_OUTPUTS:
        return f"{name} labelled"
    return f"{name} log-RMSE {entry['values'].get('depth_log_rmse', math.nan):.4g}"


def _metric_networks(cfg: EvaluateVideoConfig, device):
    """The paper-metric networks, loaded once before any generation (a bad weight file fails here,
    in one line); None when `model.video_metrics` is not installed."""
    try:
        from model.video_metrics import MetricNetworks, VideoMetricWeights
    except ImportError:
        return None
    return MetricNetworks.load(VideoMetricWeights(**cfg.weights()), str(device))


class _PaperTable:
    """The paper metrics of every model, streamed: one `PaperMetricsAccumulator` per model for its
    generated clips and one for the held-out clips, encoded once and shared by all models. A clip the
    library cannot score turns the rows it touches into "not computed" with the reason; the run goes on."""

    def __init__(self, names: list[str], cfg: EvaluateVideoConfig, device, networks, flow, fps: float | None) -> None:
        self.names = names
        self.failures: dict[str, str] = {}
        self.generated: dict[str, Any] = {}
        self.reference: Any = None
        if networks is None:
            return
        from model.video_metrics import PaperMetricsAccumulator, VideoMetricConfig, VideoMetricWeights

        def accumulator():
            return PaperMetricsAccumulator(VideoMetricWeights(**cfg.weights()), str(device),
                                           config=VideoMetricConfig(fps=fps), networks=networks, flow=flow)

        try:
            self.reference = accumulator()
            self.generated = {name: accumulator() for name in names}
        except ValueError as e:  # e.g. an fps the protocol rejects
            self.failures = {name: f"model.video_metrics: {e}" for name in names}

    def add_reference(self, clip: np.ndarray) -> None:
        if self.reference is None or "reference" in self.failures:
            return
        try:
            self.reference.add_reference(clip)
        except ValueError as e:
            self.failures["reference"] = f"model.video_metrics: reference: {e}"

    def add(self, name: str, video: np.ndarray) -> None:
        if name not in self.generated or name in self.failures:
            return
        try:
            self.generated[name].add_generated(video)
        except ValueError as e:
            self.failures[name] = f"model.video_metrics: {e}"

    def results(self) -> dict[str, dict[str, tuple[float | None, str]]]:
        """model -> metric -> (value or None, note); a metric not computed names the option that would compute it.

        Dynamic degree and motion smoothness use the project's flow labeler (`--label-flow`)."""
        return {name: self._result(name) for name in self.names}

    def _result(self, name: str) -> dict[str, tuple[float | None, str]]:
        if self.reference is None and not self.failures:
            return {m: (None, _MISSING_LIBRARY) for m in PAPER_METRICS}
        failure = self.failures.get(name)
        if failure:
            return {m: (None, failure) for m in PAPER_METRICS}
        try:
            results = self.generated[name].result(reference=self.reference)
        except ValueError as e:
            return {m: (None, f"model.video_metrics: {e}") for m in PAPER_METRICS}
        out = {}
        for metric, result in results.items():
            note = result.note or ""
            if metric in ("fvd", "fid") and "reference" in self.failures and result.value is not None:
                result, note = None, self.failures["reference"]
            option = PAPER_METRICS.get(metric, ("", ""))[1]
            value = None if result is None or result.value is None else float(result.value)
            if value is None and option and option not in note:
                note = f"{note} ({option} computes it)" if note else f"not computed: give {option}"
            out[metric] = (value, note)
        return out


def _table(names: Sequence[str], per_clip: list[dict[str, Any]], paper: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per metric: paper metrics first, then labeler acceptance, then consistency means over the
    clips that have a value."""
    rows = []
    metrics = list(dict.fromkeys(m for name in names for m in paper[name]))
    for metric in metrics:
        better = PAPER_METRICS.get(metric, ("", ""))[0]
        row: dict[str, Any] = {"metric": metric, "group": "paper", "better": better,
                               "definition": "model.video_metrics (docs/video_metrics.md)"}
        for name in names:
            value, note = paper[name].get(metric, (None, "not returned by model.video_metrics"))
            row[name], row[f"{name}_note"] = value, note
        rows.append(row)
    for metric, (better, definition) in LABELER_METRICS.items():
        row = {"metric": metric, "group": "labelers", "better": better, "definition": definition}
        for name in names:
            accepted = [c[name]["labeled"] for c in per_clip]
            failures = [c[name]["label_failure"] for c in per_clip if not c[name]["labeled"]]
            row[name] = float(np.mean(accepted))
            row[f"{name}_note"] = f"{sum(accepted)} of {len(accepted)} videos labelled" + (
                f"; first rejection: {failures[0]}" if failures else "")
        rows.append(row)
    for metric, (better, definition) in CONSISTENCY_METRICS.items():
        row = {"metric": metric, "group": "4d_consistency", "better": better, "definition": definition}
        for name in names:
            values = [c[name]["values"].get(metric, math.nan) for c in per_clip]
            finite = [v for v in values if math.isfinite(v)]
            reasons = [c[name]["notes"][metric] for c in per_clip if metric in c[name]["notes"]]
            row[name] = float(np.mean(finite)) if finite else None
            if not finite:
                row[f"{name}_note"] = f"not computed: {reasons[0]}" if reasons else "not computed"
            elif len(finite) < len(values):
                row[f"{name}_note"] = f"mean of {len(finite)} of {len(values)} clips; others: {reasons[0]}"
            else:
                row[f"{name}_note"] = f"mean of {len(finite)} clips"
        rows.append(row)
    return rows


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (np.floating, np.integer)):
        return _jsonable(value.item())
    return value


# ============================================================================ report
def markdown_table(result: VideoEvalResult) -> str:
    """The results table in markdown: metric | one column per model | notes."""
    names = list(result.models)
    lines = ["| metric | " + " | ".join(names) + " | notes |", "| --- |" + " --- |" * (len(names) + 1)]
    for row in result.rows:
        cells = [_shown(row[name]) for name in names]
        notes = _notes(row, names)
        lines.append(f"| {row['metric']} | " + " | ".join(cells) + f" | {notes} |")
    return "\n".join(lines)


def _notes(row: Mapping[str, Any], names: Sequence[str]) -> str:
    """The models' notes of a row: once when they agree, else each named."""
    notes = {name: row.get(f"{name}_note", "") for name in names}
    if len(set(notes.values())) == 1:
        return next(iter(notes.values()))
    return "; ".join(f"{name}: {note}" for name, note in notes.items() if note)


def _shown(value: float | None) -> str:
    return "not computed" if value is None else f"{value:.4g}"


def _depth_rgb(depth: np.ndarray) -> np.ndarray:
    """Turbo picture of a depth map, near = warm (robust 2-98 % range of the inverse depth)."""
    import cv2

    ok = np.isfinite(depth) & (depth > 0)
    out = np.zeros(depth.shape + (3,), np.uint8)
    if not ok.any():
        return out
    inv = np.where(ok, 1.0 / np.maximum(depth, 1e-9), 0.0)
    lo, hi = np.percentile(inv[ok], [2, 98])
    norm = np.clip((inv - lo) / max(hi - lo, 1e-12), 0, 1)
    colored = cv2.cvtColor(cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    out[ok] = colored[ok]
    return out


PREVIEW_POINTS = 200_000
"""Point-cloud previews draw about this many points (a regular subsample of the key frames' pixels)."""


def write_report(result: VideoEvalResult, previews: list[dict[str, Any]], out: str | os.PathLike) -> Path:
    """`out/index.html`: the table, then per previewed clip the reference key frames and, per model,
    its key frames, depth and a point-cloud preview (images inline, `pipelines.report.png_data_uri`)."""
    from pipelines.report import png_data_uri

    names = list(result.models)
    head = "".join(f"<th>{html.escape(n)}</th>" for n in names)
    body = []
    for row in result.rows:
        cells = "".join(f'<td class="{"nc" if row[n] is None else "v"}">{_shown(row[n])}</td>' for n in names)
        notes = _notes(row, names)
        better = f" ({row['better']} is better)" if row["better"] else ""
        body.append(f'<tr class="{row["group"]}"><td title="{html.escape(row["definition"])}">'
                    f'{html.escape(row["metric"])}{better}</td>{cells}<td class="note">{html.escape(notes)}</td></tr>')
    sections = []
    for preview in previews:
        strips = [_strip("reference (held-out clip)", preview["reference"], png_data_uri)]
        for name in names:
            if name not in preview:
                continue
            shown = preview[name]
            strips.append(_strip(f"{name}: generated key frames", shown["video"], png_data_uri))
            if "points" not in shown:  # the base model: RGB only
                continue
            step = max(1, int(math.sqrt(shown["points"][..., 0].size / PREVIEW_POINTS)))  # every step-th row and column
            cloud = point_cloud_preview(shown["points"][:, ::step, ::step], shown["video"][:, ::step, ::step])
            strips.append(_strip(f"{name}: depth (near = warm)", np.stack([_depth_rgb(d) for d in shown["depth"]]),
                                 png_data_uri))
            strips.append(f'<div class="row"><span class="lab">{html.escape(name)}: point cloud</span>'
                          f'<img src="{png_data_uri(cloud)}" alt="point cloud of {html.escape(preview["clip_id"])}"></div>')
        sections.append(f'<section><h3>{html.escape(preview["clip_id"])}</h3><p class="cap">'
                        f'{html.escape(preview["caption"])}</p>{"".join(strips)}</section>')
    skipped = "".join(f"<li>{html.escape(s)}</li>" for s in result.skipped) or "<li>none</li>"
    protocol = html.escape(json.dumps(result.protocol))
    models = "".join(f"<li>{html.escape(n)}: <code>{html.escape(p)}</code></li>" for n, p in result.models.items())
    page = _TEMPLATE.format(models=models, protocol=protocol, head=head, rows="".join(body),
                            sections="".join(sections) or "<p>No clip shown (--report-clips 0).</p>", skipped=skipped)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    path.write_text(page, encoding="utf-8")
    return path


THUMB_WIDTH = 160
"""Width of each key frame in the report's strips (frames wider than this are shrunk)."""


def _strip(label: str, images: np.ndarray, png_data_uri: Callable[[np.ndarray], str]) -> str:
    import cv2

    h, w = images.shape[1:3]
    if w > THUMB_WIDTH:
        size = (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w)))
        images = np.stack([cv2.resize(image, size, interpolation=cv2.INTER_AREA) for image in images])
    strip = np.concatenate(list(images), axis=1)
    return (f'<div class="row"><span class="lab">{html.escape(label)}</span>'
            f'<img src="{png_data_uri(strip)}" alt="{html.escape(label)}"></div>')


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Video evaluation</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222;max-width:1600px}}
table{{border-collapse:collapse;font-size:12px;margin:8px 0}} th,td{{border:1px solid #ddd;padding:3px 6px}}
th{{background:#eef}} td.nc{{color:#8a4b00}} td.note{{font-size:11px;color:#444;max-width:700px}}
tr.paper td:first-child{{font-weight:600}} section{{border-top:1px solid #ccc;margin-top:16px}}
.row{{display:flex;gap:8px;align-items:center;margin:4px 0}} .lab{{width:220px;font-size:12px}}
img{{image-rendering:pixelated;max-width:1200px}} .cap{{font-size:12px;color:#444}}
</style></head><body>
<h1>Video evaluation</h1>
<ul>{models}</ul>
<p>Protocol: <code>{protocol}</code></p>
<h2>Results</h2>
<p>Paper metrics: generated videos against the held-out real clips. 4D consistency: the model's own
4D outputs against the project's labelers run on its generated video, and static pixels warped between key frames
with the model's depth and cameras (definitions: docs/video_eval.md). Hover a metric for its definition.</p>
<table><thead><tr><th>metric</th>{head}<th>notes</th></tr></thead><tbody>{rows}</tbody></table>
<h2>Clips</h2>
{sections}
<h2>Held-out clips left out</h2><ul>{skipped}</ul>
</body></html>
"""


# ============================================================================ CLI
def _job():
    from pipelines.jobconfig import JobConfig

    return JobConfig(EvaluateVideoConfig)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="worldreel evaluate-video", description="Generate videos and their 4D outputs "
                                "from held-out clips with a checkpoint (and a baseline); score the paper's table and "
                                "4D consistency; write an HTML report.")
    _job().add_arguments(p)
    return p


def evaluate_video_main(argv: list[str] | None = None) -> int:
    """`worldreel evaluate-video`: run, print the table. 0 on success, 2 on bad input (one line)."""
    job = _job()
    try:
        (cfg,) = job.build(job.from_args(_parser().parse_args(argv)))
        result = evaluate_video(cfg)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}")
        return 2
    print(markdown_table(result))
    print(f"report: {result.report}")
    return 0
