"""Label frames held in memory (e.g. a generated video) with the labeling pipeline's stages.

`pipelines.labeling.label_clip` starts from a manifest row and decodes the clip; a video
that only exists as an array (a model's sample) enters here instead, after the decode stage,
and runs the same stages (`pipelines.labeling.label_stages`) on the same backends and
configuration. No QA gating and no commit: the caller compares the labels with something else
(`model.video_eval`). A clip the labelers cannot label raises `ClipRejected` naming the stage's
reason, as `label_clip` does.
"""

from __future__ import annotations

import numpy as np

from labelers.geometry import check_frames
from pipelines.labeling import Backends, LabelConfig, label_stages

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
        cfg: labeling configuration (backends' options, flow and scene-flow thresholds, stride);
            its camera is labelled, not imported.
        backends: the labelers (`pipelines.labeling.build_backends`).
        K: (T, 3, 3) or (3, 3) intrinsics in pixels of the frames; None lets the camera labeler
            estimate them.
        clip_id: names the frames in a rejection.
        seconds: per-stage wall times are added here.

    Raises:
        ClipRejected: as `pipelines.labeling.label_stages`.
    """
    frames = np.asarray(frames)
    T, _, _ = check_frames(frames)
    if T < 2 or (T - 1) % cfg.stride:
        raise ValueError(f"T - 1 ({T - 1}) must be a positive multiple of the stride {cfg.stride}")
    if cfg.camera == "import":
        raise ValueError("in-memory frames have no annotations to import: label their camera (camera 'sfm')")
    if K is not None:
        K = np.broadcast_to(np.asarray(K, np.float64), (T, 3, 3)).copy()
    return label_stages(clip_id, frames, K, cfg, backends, seconds=seconds).arrays
