"""A synthetic data set on disk: videos, a plain-CSV manifest and (optionally) exact labels in a store.

`worldreel synth` is a thin wrapper over `write_synthetic_set`.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from pipelines.clips import make_clip_id
from pipelines.synthetic import (
    CAMERA_MOTIONS,
    GENERATOR_VERSION,
    SceneConfig,
    SyntheticClip,
    render_clip,
    scene_caption,
    scene_intrinsics,
)
from pipelines.video_io import write_video
from storage import LabelStore

__all__ = ["SyntheticSetRow", "scene_configs", "write_synthetic_set", "synthetic_attrs", "MANIFEST_COLUMNS"]

MANIFEST_COLUMNS = ("clip_id", "video_path", "start_sec", "end_sec", "caption", "fx", "fy", "cx", "cy")
_STORED = (
    "frame_index timestamps K c2w depth depth_valid flow flow_valid flow_uncertainty key_flow key_flow_valid "
    "dynamic_mask scene_flow scene_flow_valid"
).split()


@dataclass(frozen=True)
class SyntheticSetRow:
    """One manifest row of a synthetic set."""

    clip_id: str
    video_path: str
    start_sec: float
    end_sec: float
    caption: str
    intrinsics: tuple[float, float, float, float] | None = None  # (fx, fy, cx, cy), pixels of the video

    def cells(self) -> list:
        """The row's manifest cells, in `MANIFEST_COLUMNS` order (empty intrinsics: none given)."""
        intrinsics = [f"{v:.6f}" for v in self.intrinsics] if self.intrinsics else ["", "", "", ""]
        times = [f"{self.start_sec:.3f}", f"{self.end_sec:.3f}"]
        return [self.clip_id, self.video_path, *times, self.caption, *intrinsics]


def scene_configs(num_clips: int, height: int, width: int, seed: int, num_frames: int = 49, fps: float = 8.0) -> list[SceneConfig]:
    """Configs of a varied set: camera motions in turn; every fourth clip has no moving object."""
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    return [
        SceneConfig(
            seed=seed + i,
            height=height,
            width=width,
            num_frames=num_frames,
            fps=fps,
            camera=CAMERA_MOTIONS[i % len(CAMERA_MOTIONS)],
            num_moving=0 if i % 4 == 3 else 1 + i % 3,
        )
        for i in range(num_clips)
    ]


def synthetic_attrs(clip: SyntheticClip, uri: str) -> dict:
    """Clip attributes of exact synthetic labels (metric, labelled by the generator itself)."""
    cfg = clip.config
    labeler = {
        "name": "synthetic-ground-truth",
        "version": GENERATOR_VERSION,
        "params": asdict(cfg),
        "weights_sha256": None,
    }
    c2w = clip.labels["c2w"].astype(np.float64)
    return {
        "source": {
            "dataset": "synthetic",
            "uri": uri,
            "start_sec": 0.0,
            "end_sec": cfg.num_frames / cfg.fps,
            "caption": clip.caption,
        },
        "fps": cfg.fps,
        "stride": cfg.stride,
        "metric_scale": True,
        "labelers": {family: labeler for family in ("flow", "camera", "depth", "mask")},
        "qa": {
            "dynamic_ratio": float(clip.labels["dynamic_mask"].mean()),
            "flow_valid_fraction": float(clip.labels["flow_valid"].mean()),
            "depth_valid_fraction": float(clip.labels["depth_valid"].mean()),
            "scene_flow_valid_fraction": float(clip.labels["scene_flow_valid"].mean()),
            "trajectory_length": float(np.linalg.norm(np.diff(c2w[:, :3, 3], axis=0), axis=1).sum()),
        },
    }


def write_synthetic_set(
    out_dir: str | Path,
    configs: list[SceneConfig],
    store: LabelStore | None = None,
    progress: Callable[[int, int, str], None] | None = None,
    with_intrinsics: bool = True,
) -> list[SyntheticSetRow]:
    """Render clips, write `out_dir/videos/*.mp4` and `out_dir/manifest.csv`, commit labels to `store`.

    Re-running skips videos and clips that already exist (the same config gives the same clip).
    With `with_intrinsics` the manifest gives each clip's true intrinsics, as a calibrated data
    set would; without, labeling must estimate the focal length (and rejects clips whose
    motion does not determine it).
    """
    out_dir = Path(out_dir)
    rows = []
    for n, cfg in enumerate(configs):
        relative = f"videos/synth_{_config_digest(cfg)}.mp4"  # as the manifest writes it
        video = (out_dir / relative).resolve()
        uri = str(video)
        end_sec = cfg.num_frames / cfg.fps
        clip_id = make_clip_id(relative, 0.0, end_sec)
        clip = None
        if not video.exists() or (store is not None and not store.has_clip(clip_id)):
            clip = render_clip(cfg)
            if not video.exists():
                write_video(video, clip.frames, cfg.fps)
            if store is not None:
                arrays = {name: clip.labels[name] for name in _STORED}
                store.commit(clip_id, arrays, synthetic_attrs(clip, uri))
        caption = clip.caption if clip is not None else scene_caption(cfg)
        intrinsics = scene_intrinsics(cfg) if with_intrinsics else None
        rows.append(SyntheticSetRow(clip_id, relative, 0.0, end_sec, caption, intrinsics))
        if progress is not None:
            progress(n + 1, len(configs), clip_id)
    _write_manifest(out_dir / "manifest.csv", rows)
    return rows


def _config_digest(cfg: SceneConfig) -> str:
    return f"{cfg.seed:05d}_" + hashlib.sha1(repr(asdict(cfg)).encode()).hexdigest()[:8]


def _write_manifest(path: Path, rows: list[SyntheticSetRow]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(MANIFEST_COLUMNS)
        for row in rows:
            writer.writerow(row.cells())
    tmp.replace(path)
