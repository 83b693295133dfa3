"""Label frames held in memory (e.g. a generated video) with the labeling pipeline's stages.

`pipelines.labeling.label_clip` starts from a manifest row and decodes the clip; a video
that only exists as an array (a model's sample) enters here instead, after the decode stage,
and runs the same stages on the same backends and configuration:

    flow (consecutive and key pairs, key flows repaired from the chains; static overlays)
         -> camera -> dynamic masks and depth -> point maps and scene flow

No QA gating and no commit: the caller compares the labels with something else
(`model.video_eval`). A clip the labelers cannot label raises `ClipRejected` naming the stage's
reason, as `label_clip` does.
"""

from __future__ import annotations

import numpy as np

from labelers.dynamic_mask import label_depth_and_masks
from labelers.flow import PairFlows
from labelers.geometry import check_frames
from pipelines.clips import ClipRejected
from pipelines.labeling import (
    Backends,
    LabelConfig,
    Overlays,
    key_flow_guide,
    key_flows_against_depth,
    label_arrays,
    label_scene_flow,
    pair_flows,
    timed_stage,
)

__all__ = ["label_frames"]


def label_frames(
    frames: np.ndarray,
    cfg: LabelConfig,
    backends: Backends,
    K: np.ndarray | None = None,
    clip_id: str = "frames",
    seconds: dict[str, float] | None = None,
) -> dict[str, np.ndarray]:
    """The LABELS.md arrays of T in-memory frames (all but frame_index and timestamps).

    Args:
        frames: (T, H, W, 3) uint8 RGB, T - 1 a multiple of `cfg.stride`.
        cfg: labeling configuration (backends' options, flow and scene-flow thresholds, stride).
        backends: the labelers (`pipelines.labeling.build_backends`).
        K: (T, 3, 3) or (3, 3) intrinsics in pixels of the frames; None lets the camera labeler
            estimate them.
        clip_id: names the frames in a rejection.
        seconds: per-stage wall times are added here.

    Raises:
        ClipRejected: `camera_<reason>` when the camera labeler fails, `camera_static` /
            `camera_rotation` when the camera gives no parallax for multi-view depth.
    """
    frames = np.asarray(frames)
    T, _, _ = check_frames(frames)
    if T < 2 or (T - 1) % cfg.stride:
        raise ValueError(f"T - 1 ({T - 1}) must be a positive multiple of the stride {cfg.stride}")
    if K is not None:
        K = np.broadcast_to(np.asarray(K, np.float64), (T, 3, 3)).copy()
    seconds = {} if seconds is None else seconds
    with timed_stage(seconds, "flow"):
        flows, key_flows = pair_flows(frames, cfg, backends)
        overlays = Overlays.find(frames, cfg)
    with timed_stage(seconds, "camera"):
        c2w, K, fixed = _cameras(frames, K, overlays.off_flow(key_flows), backends, cfg, clip_id,
                                 overlays.camera_exclude)
    overlays = overlays.for_camera(fixed)
    flows, key_flows = overlays.off_flow(flows), overlays.off_flow(key_flows)
    with timed_stage(seconds, "depth_and_masks"):
        result = label_depth_and_masks(frames, flows.merged(key_flows), c2w, K, list(range(0, T, cfg.stride)),
                                       backends.depth, backends.masks, key_flow_guide(backends, cfg))
    depth = result.depth.depth
    depth_valid, dynamic = overlays.off_surfaces(result.depth.depth_valid, result.dynamic_mask)
    if result.key_flows is not None:
        key_flows = overlays.off_flow(result.key_flows)
    key_flows = key_flows_against_depth(key_flows, depth, depth_valid, c2w, K, backends, cfg)
    with timed_stage(seconds, "scene_flow"):
        flow3d, flow3d_valid = label_scene_flow(depth, depth_valid, K, c2w, key_flows, flows, frames, dynamic, cfg)
    return label_arrays(K, c2w, depth, depth_valid, flows, key_flows, dynamic, flow3d, flow3d_valid)


def _cameras(frames: np.ndarray, K: np.ndarray | None, key_flows: PairFlows, backends: Backends, cfg: LabelConfig,
             clip_id: str, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, bool]:
    """c2w (T, 4, 4), K (T, 3, 3) and whether the camera is fixed, from the camera labeler (given the
    key-frame flows, which tell its tracks on movers apart, and the pixels its tracks stay off); a
    camera without parallax needs a neural depth."""
    from labelers.camera import CameraFailure

    try:
        result = backends.camera.estimate(frames, K, key_flows, exclude=exclude)
    except CameraFailure as e:
        raise ClipRejected(clip_id, f"camera_{e.reason}", e.message) from e
    if result.motion != "general" and cfg.depth != "neural":
        raise ClipRejected(clip_id, f"camera_{result.motion}",
                           f"the camera is {result.motion} (no parallax): multi-view depth (--depth mvs) cannot "
                           "triangulate; a neural depth (--depth neural --depth-weights DIR) labels such videos")
    return np.asarray(result.c2w, np.float64), np.asarray(result.K, np.float64), result.motion == "static"
