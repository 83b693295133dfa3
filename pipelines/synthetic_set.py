"""A synthetic data set on disk: videos, a plain-CSV manifest and (optionally) exact labels in a store.

`worldreel synth` is a thin wrapper over `write_synthetic_set`. `SCENE_CLASSES` names the
scene classes that sweeps (bench/bench_scene_classes.py) report one by one: open yards under
a far sky, fixed cameras with a large mover, panning, textureless and repeated-texture
surfaces, degraded frames.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import asdict, dataclass, fields, replace
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

__all__ = [
    "SyntheticSetRow",
    "scene_configs",
    "SCENE_CLASSES",
    "class_configs",
    "write_synthetic_set",
    "synthetic_attrs",
    "MANIFEST_COLUMNS",
]

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


def _room(seed: int, height: int, width: int, num_frames: int) -> SceneConfig:
    """Today's mix (`scene_configs`): camera motions in turn, every fourth clip without movers."""
    i = seed % 4
    return SceneConfig(seed=seed, height=height, width=width, num_frames=num_frames, camera=CAMERA_MOTIONS[i],
                       num_moving=0 if i == 3 else 1 + i % 3)


def _open_sky(seed: int, height: int, width: int, num_frames: int) -> SceneConfig:
    return SceneConfig(seed=seed, height=height, width=width, num_frames=num_frames, scene="open",
                       camera=("dolly", "orbit")[seed % 2], num_moving=1 + seed % 2)


def _fixed_large_mover(seed: int, height: int, width: int, num_frames: int) -> SceneConfig:
    return SceneConfig(seed=seed, height=height, width=width, num_frames=num_frames, camera="static",
                       scene=("open", "room")[seed % 2], large_mover=True, num_moving=1 + (seed // 2) % 2)


def _pan(seed: int, height: int, width: int, num_frames: int) -> SceneConfig:
    return SceneConfig(seed=seed, height=height, width=width, num_frames=num_frames, camera="pan",
                       scene=("room", "open")[seed % 2], num_moving=1 + (seed // 2) % 2)


def _moving_camera(seed: int, height: int, width: int, num_frames: int, **kwargs) -> SceneConfig:
    """Dolly and orbit in turn; room and open such that two clips hold both and four every pairing; 1 or 2 movers."""
    return SceneConfig(seed=seed, height=height, width=width, num_frames=num_frames,
                       camera=("dolly", "orbit")[seed % 2], scene=("room", "open")[(seed + seed // 2) % 2],
                       num_moving=1 + (seed // 4) % 2, **kwargs)


def _textureless(seed: int, height: int, width: int, num_frames: int) -> SceneConfig:
    return _moving_camera(seed, height, width, num_frames, texture="low")


def _repeated(seed: int, height: int, width: int, num_frames: int) -> SceneConfig:
    return _moving_camera(seed, height, width, num_frames, texture="repeated")


def _degraded(seed: int, height: int, width: int, num_frames: int) -> SceneConfig:
    return _moving_camera(seed, height, width, num_frames, noise_std=3.0, motion_blur=0.5, exposure_drift=0.1)


# name -> (seed, height, width, num_frames) -> config; consecutive seeds vary camera, scene and movers.
SCENE_CLASSES: dict[str, Callable[[int, int, int, int], SceneConfig]] = {
    "room": _room,
    "open_sky": _open_sky,
    "fixed_large_mover": _fixed_large_mover,
    "pan": _pan,
    "textureless": _textureless,
    "repeated": _repeated,
    "degraded": _degraded,
}


def class_configs(
    name: str, num_clips: int, height: int, width: int, seed: int, num_frames: int = 49, fps: float = 8.0
) -> list[SceneConfig]:
    """Configs of `num_clips` clips of one scene class (`SCENE_CLASSES`), seeds `seed`, `seed + 1`, ..."""
    if name not in SCENE_CLASSES:
        raise ValueError(f"unknown scene class {name!r}: expected one of {sorted(SCENE_CLASSES)}")
    if num_clips < 1:
        raise ValueError(f"num_clips must be >= 1, got {num_clips}")
    return [replace(SCENE_CLASSES[name](seed + i, height, width, num_frames), fps=fps) for i in range(num_clips)]


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
    on_render: Callable[[SyntheticSetRow, SyntheticClip], None] | None = None,
) -> list[SyntheticSetRow]:
    """Render clips, write `out_dir/videos/*.mp4` and `out_dir/manifest.csv`, commit labels to `store`.

    Re-running skips videos and clips that already exist (the same config gives the same clip).
    With `with_intrinsics` the manifest gives each clip's true intrinsics, as a calibrated data
    set would; without, labeling must estimate the focal length (and rejects clips whose
    motion does not determine it). `on_render` receives each clip this call rendered (with its
    exact labels and object ids) and its manifest row, e.g. for a benchmark's ground truth.
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
        if on_render is not None and clip is not None:
            on_render(rows[-1], clip)
        if progress is not None:
            progress(n + 1, len(configs), clip_id)
    _write_manifest(out_dir / "manifest.csv", rows)
    return rows


# Fields added after the first version name a file only where they differ from their default,
# so sets written before keep their video names (and re-runs keep skipping them).
_V1_FIELDS = ("seed", "height", "width", "num_frames", "stride", "fps", "camera", "num_static", "num_moving",
              "fov_x_deg", "camera_speed")


def _config_digest(cfg: SceneConfig) -> str:
    defaults = {f.name: f.default for f in fields(SceneConfig)}
    named = {k: v for k, v in asdict(cfg).items() if k in _V1_FIELDS or v != defaults[k]}
    return f"{cfg.seed:05d}_" + hashlib.sha1(repr(named).encode()).hexdigest()[:8]


def _write_manifest(path: Path, rows: list[SyntheticSetRow]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(MANIFEST_COLUMNS)
        for row in rows:
            writer.writerow(row.cells())
    tmp.replace(path)
