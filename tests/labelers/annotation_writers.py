"""Write SpatialVID- and ViPE-format annotation folders from ground truth (for importer tests).

Ground truth comes in LABELS.md conventions (camera-to-world poses, pixel intrinsics with
pixel centres at integer coordinates, z-depth). The writers encode it the way each upstream
writer does, independently of the importer code (scipy for quaternions, OpenEXR for EXR,
OpenCV for PNG and video):

- SpatialVID (NJU-3DV/SpatialVID): the tracker resizes (h0, w0) frames to
  (h1, w1) = int((h0, w0) * sqrt(384 * 512 / (h0 * w0))), scales the source intrinsics by
  w1 / w0 and h1 / h0 and crops bottom and right to multiples of 8
  (`camera_tracking.py` image_stream); `normalize_intrinsics.py` stores fx / (2 cx),
  fy / (2 cy), 0.5, 0.5; `cvd_opt.py` save_depth zips `{index:05d}.exr` float16 disparity
  (channel Z) at the cropped size; `dynamic_mask/inference_batch.py` compress stores CSR
  masks at the extracted frames' size. `spatialvid_tracker` gives the geometry so tests can
  render depth where the tracker had it.
- ViPE (nv-tlabs/vipe `vipe/utils/io.py`): `inds` and member names count processed frames
  0, 1, 2, ... (whatever the stride); `rgb/<name>.mp4` is written at source fps / frame_skip.

Keyword switches write deliberately wrong conventions, so tests can show that a convention
mistake is caught.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import cv2
import numpy as np
import OpenEXR
from scipy.sparse import csr_matrix
from scipy.spatial.transform import Rotation


def encode_exr(values: np.ndarray, channel: str = "Z") -> bytes:
    """A single-channel float16 EXR (ZIP compression, scan lines), as SpatialVID and ViPE store depth."""
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    buffer = io.BytesIO()
    OpenEXR.File(header, {channel: np.ascontiguousarray(values, np.float16)}).write(buffer)
    return buffer.getvalue()


def write_zip(path: Path, members: dict[str, bytes]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)


def spatialvid_tracker(source_size: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """((h1, w1), (h_crop, w_crop)): SpatialVID's tracker frame for (h0, w0) source frames, and its crop."""
    h0, w0 = source_size
    h1 = int(h0 * np.sqrt((384 * 512) / (h0 * w0)))
    w1 = int(w0 * np.sqrt((384 * 512) / (h0 * w0)))
    return (h1, w1), (h1 - h1 % 8, w1 - w1 % 8)


def spatialvid_tracker_K(K_source: np.ndarray, source_size: tuple[int, int]) -> np.ndarray:
    """(..., 3, 3) intrinsics in tracker pixels: the source intrinsics scaled by w1 / w0, h1 / h0 (as upstream)."""
    (h1, w1), _ = spatialvid_tracker(source_size)
    h0, w0 = source_size
    return np.diag([w1 / w0, h1 / h0, 1.0]) @ K_source


def write_spatialvid(
    folder: Path,
    *,
    clip_frames: np.ndarray,
    c2w: np.ndarray,
    K: np.ndarray,
    source_size: tuple[int, int],
    depth: np.ndarray | None,
    dynamic: np.ndarray | None,
    depth_zip: Path | None = None,
    layout: str = "release",
    pose_convention: str = "w2c",
    depth_encoding: str = "disparity",
    normalise_intrinsics: bool = True,
) -> None:
    """Write one SpatialVID clip folder.

    Args:
        folder: the clip folder to create (its name is the clip id).
        clip_frames: (N,) clip-video frame number of each annotated frame.
        c2w: (N, 4, 4) camera-to-world poses.
        K: (N, 3, 3) intrinsics in pixels of the source frames `source_size` (height, width);
            upstream sets the principal point to the image centre (cx = w0 / 2).
        depth: (N, h_crop, w_crop) z-depth (> 0) at the tracker's cropped frame
            (`spatialvid_tracker`), or None to write no depth archive.
        dynamic: (N, h0, w0) bool masks, or None to write no dyn_masks.npz.
        depth_zip: where the depth archive goes; default `<folder>/<id>.zip` ("release") or
            `<folder>/reconstructions/depth_opt.zip` ("internal").
        layout: "release" (files in the folder, `indexes.txt`) or "internal" (files in
            `reconstructions/`, frame numbers as `img/frame_%06d.jpg` names).
        pose_convention: "w2c" (correct) or "c2w" (wrong, for tests).
        depth_encoding: "disparity" (correct) or "depth" (wrong, for tests).
        normalise_intrinsics: False writes tracker-pixel intrinsics (wrong, for tests).
    """
    files = folder / "reconstructions" if layout == "internal" else folder
    files.mkdir(parents=True, exist_ok=True)
    n = len(clip_frames)
    if layout == "internal":
        (folder / "img").mkdir(exist_ok=True)
        for f in clip_frames:
            (folder / "img" / f"frame_{int(f):06d}.jpg").write_bytes(b"")
    else:
        (files / "indexes.txt").write_text("".join(f"{i} {int(f)}\n" for i, f in enumerate(clip_frames)))
    pose = c2w if pose_convention == "c2w" else np.linalg.inv(c2w)
    quat_xyzw = Rotation.from_matrix(pose[:, :3, :3]).as_quat()  # scalar last
    np.save(files / "poses.npy", np.concatenate([pose[:, :3, 3], quat_xyzw], axis=1).astype(np.float32))
    K1 = spatialvid_tracker_K(K, source_size)
    fx, fy, cx, cy = K1[:, 0, 0], K1[:, 1, 1], K1[:, 0, 2], K1[:, 1, 2]
    if normalise_intrinsics:  # normalize_intrinsics.py: fx /= 2 cx, fy /= 2 cy, cx = cy = 0.5
        fx, fy, cx, cy = fx / (2 * cx), fy / (2 * cy), np.full(n, 0.5), np.full(n, 0.5)
    np.save(files / "intrinsics.npy", np.stack([fx, fy, cx, cy], axis=1).astype(np.float32))
    if depth is not None:
        values = 1.0 / depth if depth_encoding == "disparity" else depth
        default = files / "depth_opt.zip" if layout == "internal" else folder / f"{folder.name}.zip"
        archive = depth_zip if depth_zip is not None else default
        write_zip(archive, {f"{i:05d}.exr": encode_exr(values[i]) for i in range(n)})
    if dynamic is not None:
        entries = {"shape": np.array(dynamic.shape[1:], np.int64)}
        for i, mask in enumerate(dynamic):
            sparse = csr_matrix(mask.astype(np.uint8))
            entries[f"f_{i}_data"], entries[f"f_{i}_indices"], entries[f"f_{i}_indptr"] = (
                sparse.data,
                sparse.indices,
                sparse.indptr,
            )
        np.savez_compressed(files / "dyn_masks.npz", **entries)


def write_vipe(
    root: Path,
    name: str,
    *,
    c2w: np.ndarray,
    K: np.ndarray,
    depth: np.ndarray | None = None,
    mask_inds: np.ndarray | None = None,
    instance_ids: np.ndarray | None = None,
    phrases: dict[int, str] | None = None,
    rgb_fps: float | None = None,
    pose_convention: str = "c2w",
) -> None:
    """Write ViPE's artifacts for one video `name` under `root`, for processed frames 0..N-1.

    Args:
        c2w, K: (N, 4, 4) camera-to-world poses and (N, 3, 3) intrinsics in pixels of the
            frames ViPE processed (the depth maps' resolution), one per processed frame.
        depth: (N, h, w) metric z-depth as ViPE saves it (sky clamped at 1000 m), or None.
        mask_inds, instance_ids, phrases: (E,) processed-frame numbers with a mask, (E, h, w)
            uint8 instance ids and the id -> phrase table, or None.
        rgb_fps: write `rgb/<name>.mp4` (N tiny black frames) at this frame rate (source fps /
            frame_skip, as ViPE does), or None to write no video.
        pose_convention: "c2w" (correct) or "w2c" (wrong, for tests).
    """
    n = len(c2w)
    inds = np.arange(n, dtype=np.int64)
    pose = c2w if pose_convention == "c2w" else np.linalg.inv(c2w)
    (root / "pose").mkdir(parents=True, exist_ok=True)
    np.savez(root / "pose" / f"{name}.npz", data=pose.astype(np.float32), inds=inds)
    (root / "intrinsics").mkdir(parents=True, exist_ok=True)
    intr = np.stack([K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]], axis=1).astype(np.float32)
    np.savez(root / "intrinsics" / f"{name}.npz", data=intr, inds=inds)
    (root / "intrinsics" / f"{name}_camera.txt").write_text("".join(f"{i}: PINHOLE\n" for i in inds))
    if depth is not None:
        write_zip(root / "depth" / f"{name}.zip", {f"{i:05d}.exr": encode_exr(d) for i, d in enumerate(depth)})
    if instance_ids is not None:
        members = {}
        for i, ids in zip(mask_inds, instance_ids):
            ok, png = cv2.imencode(".png", ids.astype(np.uint8))
            assert ok
            members[f"{int(i):05d}.png"] = png.tobytes()
        write_zip(root / "mask" / f"{name}.zip", members)
        (root / "mask" / f"{name}.txt").write_text("".join(f"{i}: {p}\n" for i, p in phrases.items()))
    if rgb_fps is not None:
        (root / "rgb").mkdir(parents=True, exist_ok=True)
        video = cv2.VideoWriter(str(root / "rgb" / f"{name}.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), rgb_fps, (16, 16))
        assert video.isOpened()
        for _ in range(n):
            video.write(np.zeros((16, 16, 3), np.uint8))
        video.release()
