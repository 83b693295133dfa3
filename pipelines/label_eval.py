"""Compare labels with ground truth (synthetic clips): how good is each labeler, in numbers.

Used by the demo (pseudo-labels next to the exact labels of the same clips) and by tests.
Depth and scene flow of labels with an unknown scale are compared after one scale per clip
(the median ratio of ground-truth to labelled depth on pixels valid in both).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from labelers.camera import trajectory_errors

__all__ = ["compare_labels"]


def compare_labels(labels: Mapping[str, np.ndarray], truth: Mapping[str, np.ndarray]) -> dict[str, float]:
    """Errors of `labels` against `truth` (both LABELS.md arrays of the same clip and frames).

    Returns:
        flow_epe_px: mean end-point error of `flow` where both are valid;
        key_flow_epe_px: the same for `key_flow`;
        rre_mean_deg, ate_percent_of_path, rta_max_deg: camera errors (ATE and the relative
            translation angle only when the camera moves; `labelers.camera.trajectory_errors`);
        depth_delta125: share of valid depth within a factor 1.25 after scale alignment;
        depth_coverage_static: share of ground-truth static pixels with valid labelled depth;
        scene_flow_epe_rel: median |F3d - F3d_gt| / |F3d_gt| where both are valid;
        scene_flow_within_5pct: share of those within 5 % of the motion (or 1 cm);
        dynamic_iou: IoU of the dynamic masks (NaN when neither has dynamic pixels).
    """
    out: dict[str, float] = {}
    for name, valid in (("flow", "flow_valid"), ("key_flow", "key_flow_valid")):
        both = np.asarray(labels[valid]) & np.asarray(truth[valid])
        err = np.linalg.norm(np.asarray(labels[name], np.float64) - truth[name], axis=-1)[both]
        out[f"{name}_epe_px"] = float(err.mean()) if err.size else float("nan")
    out.update(trajectory_errors(labels["c2w"], truth["c2w"]))
    scale = _depth_scale(labels, truth)
    out["depth_scale"] = scale
    both = np.asarray(labels["depth_valid"]) & np.asarray(truth["depth_valid"])
    ratio = np.asarray(labels["depth"], np.float64)[both] * scale / np.asarray(truth["depth"], np.float64)[both]
    out["depth_delta125"] = float(np.mean(np.maximum(ratio, 1 / ratio) < 1.25)) if ratio.size else float("nan")
    stride = (len(truth["depth"]) - 1) // (len(truth["dynamic_mask"]) - 1)
    static = ~np.repeat(np.asarray(truth["dynamic_mask"]), stride, axis=0)[: len(truth["depth"])] & truth["depth_valid"]
    out["depth_coverage_static"] = float(np.mean(np.asarray(labels["depth_valid"])[static])) if static.any() else float("nan")
    both = np.asarray(labels["scene_flow_valid"]) & np.asarray(truth["scene_flow_valid"])
    motion = np.linalg.norm(np.asarray(truth["scene_flow"], np.float64), axis=-1)[both]
    err = np.linalg.norm(np.asarray(labels["scene_flow"], np.float64) * scale - truth["scene_flow"], axis=-1)[both]
    out["scene_flow_epe_rel"] = float(np.median(err / np.maximum(motion, 1e-9))) if err.size else float("nan")
    out["scene_flow_within_5pct"] = float(np.mean(err < np.maximum(0.05 * motion, 0.01))) if err.size else float("nan")
    union = np.logical_or(labels["dynamic_mask"], truth["dynamic_mask"]).sum()
    inter = np.logical_and(labels["dynamic_mask"], truth["dynamic_mask"]).sum()
    out["dynamic_iou"] = float(inter / union) if union else float("nan")
    return out


def _depth_scale(labels: Mapping[str, np.ndarray], truth: Mapping[str, np.ndarray]) -> float:
    both = np.asarray(labels["depth_valid"]) & np.asarray(truth["depth_valid"]) & (np.asarray(labels["depth"]) > 0)
    if not both.any():
        return float("nan")
    return float(np.median(np.asarray(truth["depth"], np.float64)[both] / np.asarray(labels["depth"], np.float64)[both]))
