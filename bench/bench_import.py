"""Imported-annotation adapters on CPU: milliseconds per label frame at 240x360 and 480x720.

Each adapter reads one clip's annotation folder and converts it to the clip's label frames
(`labelers.importers.import_spatialvid` / `import_vipe`: checks, poses interpolated, depth
and masks decoded and resampled), as the labeling pipeline's `--camera import --depth import`
does. The folders are written once (not timed) in the datasets' own layouts by the writers
the importer tests use, at the datasets' sizes:

- SpatialVID: a 720x1280 30 fps source, annotations at 5 fps (every 6th frame), disparity
  EXRs of 328x584 in a zip, CSR dynamic masks of 328x584;
- ViPE: every frame annotated, metric-depth EXRs and instance-id PNG masks of 360x640.

The clip: T = 49 label frames at 8 fps from source frame 30, resized and centre-cropped to
the label size. Timed: `camera` (poses and intrinsics only) and `camera+depth+mask`, median
of `--repeats` runs in this process; ms per label frame.

    .venv/bin/python bench/bench_import.py [--quick] [--repeats 3] [--sizes 240x360,480x720]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "labelers"))

from annotation_writers import write_spatialvid, write_vipe  # noqa: E402
from common import image_sizes, timed  # noqa: E402
from labelers.importers import import_spatialvid, import_vipe  # noqa: E402
from pipelines.decode import ResizeCrop  # noqa: E402

SOURCE_SIZE, SOURCE_FPS, LABEL_FPS, FIRST_FRAME = (720, 1280), 30.0, 8.0, 30
SPATIALVID_DEPTH, SPATIALVID_EVERY = (328, 584), 6
VIPE_DEPTH = (360, 640)
FULL_PARTS = ("camera", "depth", "mask")


def label_frame_index(frames: int) -> np.ndarray:
    """Source frame numbers of `frames` label frames at LABEL_FPS."""
    return FIRST_FRAME + np.round(np.arange(frames) * SOURCE_FPS / LABEL_FPS).astype(np.int64)


def trajectory(source_frames: np.ndarray) -> np.ndarray:
    """(N, 4, 4) camera-to-world poses of a smooth forward-moving, turning camera."""
    t = np.asarray(source_frames, np.float64)
    c2w = np.tile(np.eye(4), (len(t), 1, 1))
    c2w[:, :3, :3] = Rotation.from_rotvec(np.outer(t, [0.001, 0.004, -0.0005])).as_matrix()
    c2w[:, :3, 3] = np.outer(t, [0.005, -0.001, 0.02])
    return c2w


def intrinsics(count: int, size: tuple[int, int]) -> np.ndarray:
    """(count, 3, 3) pinhole intrinsics in pixels of `size`, 60 degrees horizontal field of view."""
    h, w = size
    K = np.array([[0.866 * w, 0, (w - 1) / 2], [0, 0.866 * w, (h - 1) / 2], [0, 0, 1]])
    return np.tile(K, (count, 1, 1))


def depth_and_mask(count: int, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(count, h, w) z-depth (a textured slanted wall) and a box moving across it."""
    h, w = size
    v, u = np.mgrid[0:h, 0:w].astype(np.float32)
    wall = 3.0 + 2.0 * v / h + 0.2 * np.sin(u / 17.0) * np.cos(v / 11.0)
    depth = np.repeat(wall[None], count, axis=0)
    mask = np.zeros((count, h, w), bool)
    for i in range(count):
        left = int((0.1 + 0.6 * i / max(count - 1, 1)) * w)
        mask[i, h // 3 : 2 * h // 3, left : left + w // 5] = True
    depth[mask] = 1.5
    return depth, mask


def write_spatialvid_clip(folder: Path, last_frame: int) -> Path:
    clip_frames = np.arange(0, last_frame + SPATIALVID_EVERY, SPATIALVID_EVERY)
    depth, mask = depth_and_mask(len(clip_frames), SPATIALVID_DEPTH)
    write_spatialvid(
        folder,
        clip_frames=clip_frames,
        c2w=trajectory(clip_frames),
        K=intrinsics(len(clip_frames), SOURCE_SIZE),
        image_size=SOURCE_SIZE,
        depth=depth,
        dynamic=mask,
    )
    return folder


def write_vipe_clip(root: Path, last_frame: int) -> Path:
    frames = np.arange(last_frame + 1)
    depth, mask = depth_and_mask(len(frames), VIPE_DEPTH)
    write_vipe(
        root,
        "video",
        pose_frames=frames,
        c2w=trajectory(frames),
        intrinsics_frames=frames,
        K=intrinsics(len(frames), VIPE_DEPTH),
        depth_frames=frames,
        depth=depth,
        mask_frames=frames,
        instance_ids=mask.astype(np.uint8),
        phrases={1: "person"},
    )
    return root


def folder_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 13 frames at 120x180, one repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--sizes", type=image_sizes, default="240x360,480x720")
    parser.add_argument("--frames", type=int, default=49)
    args = parser.parse_args()
    sizes = args.sizes
    frames, repeats = args.frames, args.repeats
    if args.quick:
        sizes, frames, repeats = [(120, 180)], 13, 1
    frame_index = label_frame_index(frames)
    with tempfile.TemporaryDirectory(prefix="annotations_") as tmp:
        start = time.perf_counter()
        sv_dir = write_spatialvid_clip(Path(tmp) / "spatialvid" / "clip_0", int(frame_index[-1]))
        vp_dir = write_vipe_clip(Path(tmp) / "vipe", int(frame_index[-1]))
        print(
            f"# annotation folders written in {time.perf_counter() - start:.1f} s (not timed): "
            f"SpatialVID {folder_mb(sv_dir):.1f} MB, ViPE {folder_mb(vp_dir):.1f} MB; "
            f"T={frames} label frames, source frames {frame_index[0]}-{frame_index[-1]}, median of {repeats} runs"
        )
        print(f"{'adapter':>10} {'size':>8} {'camera':>8} {'camera+depth+mask':>18}   (ms per label frame)")
        for height, width in sizes:
            to_label = ResizeCrop.from_sizes(*SOURCE_SIZE, height, width).matrix()
            common = dict(frame_index=frame_index, source_size=SOURCE_SIZE, label_size=(height, width))
            adapters = {
                "spatialvid": lambda parts: import_spatialvid(sv_dir, source_to_label=to_label, parts=parts, **common),
                "vipe": lambda parts: import_vipe(vp_dir, "video", source_to_label=to_label, parts=parts, **common),
            }
            for name, run in adapters.items():
                t_camera, _ = timed(lambda: run(("camera",)), repeats)
                t_full, result = timed(lambda: run(FULL_PARTS), repeats)
                exact = result.frame_flags["depth_exact"].mean()
                valid = result.arrays["depth_valid"].mean()
                print(
                    f"{name:>10} {height}x{width:<4} {1e3 * t_camera / frames:>8.2f} {1e3 * t_full / frames:>18.1f}"
                    f"   depth at {exact:.0%} of label frames, {valid:.0%} of pixels valid"
                )


if __name__ == "__main__":
    main()
