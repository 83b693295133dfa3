"""Imported-annotation adapters on CPU: label alignment before/after the upstream fixes, and ms per label frame.

Alignment (first table): an exact ray-cast scene (a room holding a box) written as
SpatialVID's tracker stores it (depth on the 328x584 crop of its 332x591 resize of a
720x1280 source, principal point at the image centre) and as a strided ViPE run
(frame_skip=3, sky clamped at 1000 m), imported at the label size; "before" re-reads the same
files the way importer version 1 did (depth map stretched over the whole frame, principal
point half a pixel left and up, ViPE `inds` taken as source frames, every positive depth
valid), "after" is the current importer. Reported: mean |depth - GT| over label pixels both
call valid, the share of those off by more than 5 %, the source-pixel shift between the two
depth footprints, the principal point, ViPE pose error and the share of sky pixels kept.

Each adapter reads one clip's annotation folder and converts it to the clip's label frames
(`labelers.importers.import_spatialvid` / `import_vipe`: checks, poses interpolated, depth
and masks decoded and resampled), as the labeling pipeline's `--camera import --depth import`
does. The folders are written once (not timed) in the datasets' own layouts by the writers
the importer tests use, at the datasets' sizes:

- SpatialVID: a 720x1280 30 fps source, annotations at 5 fps (every 6th frame), disparity
  EXRs of 328x584 in a zip, CSR dynamic masks of 720x1280 (the extracted frames' size);
- ViPE: every frame annotated, metric-depth EXRs and instance-id PNG masks of 360x640.

The clip: T = 49 label frames at 8 fps from source frame 30, resized and centre-cropped to
the label size. Timed: `camera` (poses and intrinsics only) and `camera+depth+mask`, median
of `--repeats` runs in this process; ms per label frame.

    .venv/bin/python bench/bench_import.py [--quick] [--repeats 3] [--sizes 240x360,480x720]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "labelers"))

from annotation_writers import spatialvid_tracker, spatialvid_tracker_K, write_spatialvid, write_vipe  # noqa: E402
from common import image_sizes, timed  # noqa: E402
from labelers.importers import import_vipe, read_spatialvid, read_vipe, to_label_frames  # noqa: E402
from labelers.importers import import_spatialvid  # noqa: E402
from pipelines.decode import ResizeCrop  # noqa: E402

SOURCE_SIZE, SOURCE_FPS, LABEL_FPS, FIRST_FRAME = (720, 1280), 30.0, 8.0, 30
SPATIALVID_DEPTH, SPATIALVID_EVERY = (328, 584), 6
VIPE_DEPTH = (360, 640)
FULL_PARTS = ("camera", "depth", "mask")
ROOM_HALF, BOX_LO, BOX_HI = np.array([4.0, 2.0, 6.0]), np.array([-0.6, -0.4, 2.0]), np.array([0.4, 0.5, 2.8])


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
    """(count, 3, 3) pinhole intrinsics in pixels of `size`, 60 degrees horizontal field of view.

    The principal point is (w / 2, h / 2), where SpatialVID's tracker puts it.
    """
    h, w = size
    K = np.array([[0.866 * w, 0, w / 2], [0, 0.866 * w, h / 2], [0, 0, 1]])
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
    depth, _ = depth_and_mask(len(clip_frames), SPATIALVID_DEPTH)
    _, mask = depth_and_mask(len(clip_frames), SOURCE_SIZE)
    write_spatialvid(
        folder,
        clip_frames=clip_frames,
        c2w=trajectory(clip_frames),
        K=intrinsics(len(clip_frames), SOURCE_SIZE),
        source_size=SOURCE_SIZE,
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
        c2w=trajectory(frames),
        K=intrinsics(len(frames), VIPE_DEPTH),
        depth=depth,
        mask_inds=frames,
        instance_ids=mask.astype(np.uint8),
        phrases={1: "person"},
    )
    return root


# --------------------------------------------------------------------------- alignment
def ray_cast(c2w: np.ndarray, K: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Exact z-depth (h, w) at pixel centres of a room holding a box, and where the ceiling is seen."""
    h, w = size
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    d = np.stack([u, v, np.ones_like(u)], axis=-1) @ np.linalg.inv(K).T @ c2w[:3, :3].T
    o = c2w[:3, 3]
    with np.errstate(divide="ignore", invalid="ignore"):
        exits = np.maximum((-ROOM_HALF - o) / d, (ROOM_HALF - o) / d)
        t_room = exits.min(axis=-1)
        ceiling = (exits.argmin(axis=-1) == 1) & (d[..., 1] < 0)
        t1, t2 = (BOX_LO - o) / d, (BOX_HI - o) / d
    t_near, t_far = np.minimum(t1, t2).max(axis=-1), np.maximum(t1, t2).min(axis=-1)
    box = (t_far >= t_near) & (t_near > 0) & (t_near < t_room)
    return np.where(box, t_near, t_room), ceiling & ~box


def room_poses(frames: np.ndarray) -> np.ndarray:
    t = np.asarray(frames, np.float64)
    c2w = np.tile(np.eye(4), (len(t), 1, 1))
    c2w[:, :3, :3] = (Rotation.from_rotvec([0.05, -0.1, 0.02]) * Rotation.from_rotvec(np.outer(t, [0.002, 0.005, -0.001]))).as_matrix()
    c2w[:, :3, 3] = np.array([0.2, -0.1, -2.0]) + np.outer(t, [0.01, -0.003, 0.03])
    return c2w


def depth_error(imported, frame_index: np.ndarray, K_label: np.ndarray, label_size, both_valid) -> tuple[float, float]:
    """Mean |depth - GT| (m) and the share off by > 5 %, at the first exact label frame, on `both_valid`."""
    t = int(np.flatnonzero(imported.frame_flags["depth_exact"])[0])
    gt, _ = ray_cast(room_poses(frame_index[t : t + 1])[0], K_label, label_size)
    err = np.abs(imported.arrays["depth"][t] - gt)[both_valid[t]]
    return float(err.mean()), float((err > 0.05 * gt[both_valid[t]]).mean())


def spatialvid_alignment(tmp: Path, label_size: tuple[int, int]) -> None:
    (h1, w1), crop = spatialvid_tracker(SOURCE_SIZE)
    K_src = intrinsics(1, SOURCE_SIZE)[0]
    clip_frames = np.arange(0, 13, 6)
    depth = np.stack([ray_cast(c, spatialvid_tracker_K(K_src, SOURCE_SIZE), crop)[0] for c in room_poses(clip_frames)])
    folder = tmp / "align" / "clip"
    write_spatialvid(
        folder, clip_frames=clip_frames, c2w=room_poses(clip_frames), K=np.tile(K_src, (3, 1, 1)),
        source_size=SOURCE_SIZE, depth=depth, dynamic=None,
    )  # fmt: skip
    after = read_spatialvid(folder, parts=("camera", "depth"))
    before = dataclasses.replace(after, scaling="edges", depth_frame=None)  # importer version 1 geometry
    to_label = ResizeCrop.from_sizes(*SOURCE_SIZE, *label_size).matrix()
    frame_index = np.array([0, 6])
    K_label = to_label @ K_src
    out = {name: to_label_frames(ann, frame_index, SOURCE_SIZE, label_size, to_label) for name, ann in
           (("before", before), ("after", after))}  # fmt: skip
    both = out["before"].arrays["depth_valid"] & out["after"].arrays["depth_valid"]
    x = np.arange(crop[1])
    shift_x = np.abs((x + 0.5) * SOURCE_SIZE[1] / crop[1] - 0.5 - x * SOURCE_SIZE[1] / w1)
    y = np.arange(crop[0])
    shift_y = np.abs((y + 0.5) * SOURCE_SIZE[0] / crop[0] - 0.5 - y * SOURCE_SIZE[0] / h1)
    print(f"# SpatialVID 720x1280 source -> label {label_size[0]}x{label_size[1]}; depth {crop[0]}x{crop[1]} "
          f"cropped from {h1}x{w1}; footprint shift before->after: x max {shift_x.max():.1f} mean {shift_x.mean():.1f} "
          f"px, y max {shift_y.max():.1f} mean {shift_y.mean():.1f} px (source pixels)")  # fmt: skip
    print(f"{'':>8} {'mean |d-GT| m':>14} {'>5% off':>8} {'valid px':>9} {'cx label px':>12} {'cx GT':>8}")
    for name, result in out.items():
        mean, off = depth_error(result, frame_index, K_label, label_size, both)
        valid = result.arrays["depth_valid"][0].mean()
        print(f"{name:>8} {mean:>14.4f} {off:>8.2%} {valid:>9.1%} {result.arrays['K'][0, 0, 2]:>12.3f} {K_label[0, 2]:>8.3f}")


def vipe_alignment(tmp: Path, label_size: tuple[int, int]) -> None:
    skip, n = 3, 12
    K = np.tile(intrinsics(1, VIPE_DEPTH)[0], (n, 1, 1))
    source_frames = skip * np.arange(n)
    cast = [ray_cast(c, K[0], VIPE_DEPTH) for c in room_poses(source_frames)]
    depth = np.stack([np.where(sky, 1000.0, d) for d, sky in cast])
    root = tmp / "align" / "vipe"
    write_vipe(root, "video", c2w=room_poses(source_frames), K=K, depth=depth, rgb_fps=SOURCE_FPS / skip)
    to_label = ResizeCrop.from_sizes(*SOURCE_SIZE, *label_size).matrix()
    frame_index = np.arange(1, 12)  # inside the span both ways of reading `inds`
    common = dict(frame_index=frame_index, source_size=SOURCE_SIZE, label_size=label_size, source_to_label=to_label)
    after = import_vipe(root, "video", parts=("camera", "depth"), source_fps=SOURCE_FPS, **common)
    # Version 1: `inds` as source frames (no video fps to read the stride from), every depth > 0 valid.
    before = to_label_frames(read_vipe(root, "video", parts=("camera", "depth"), depth_range=(0.0, 1e9)), **common)
    gt = np.linalg.inv(room_poses(frame_index[:1])[0]) @ room_poses(frame_index)
    print(f"# ViPE run with frame_skip={skip} on a 30 fps source, sky clamped at 1000 m; label {label_size[0]}x{label_size[1]}")
    print(f"{'':>8} {'max pose err m':>14} {'valid px at 1000 m':>19}")
    for name, result in (("before", before), ("after", after)):
        err = np.abs(result.arrays["c2w"][:, :3, 3] - gt[:, :3, 3]).max()
        valid = result.arrays["depth_valid"]
        sky = valid & (result.arrays["depth"] >= 999.0)
        print(f"{name:>8} {err:>14.3f} {sky.sum() / max(valid.sum(), 1):>19.1%}")


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
        spatialvid_alignment(Path(tmp), sizes[0])
        vipe_alignment(Path(tmp), sizes[0])
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
