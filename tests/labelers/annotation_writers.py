"""Write SpatialVID- and ViPE-format annotation folders from ground truth (for importer tests).

Ground truth comes in LABELS.md conventions (camera-to-world poses, pixel intrinsics with
pixel centres at integer coordinates, z-depth). The writers encode it the way each dataset
stores it, independently of the importer code (scipy for quaternions, OpenEXR for EXR,
OpenCV for PNG). Keyword switches write deliberately wrong conventions, so tests can show
that a convention mistake is caught.
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


def write_spatialvid(
    folder: Path,
    *,
    clip_frames: np.ndarray,
    c2w: np.ndarray,
    K: np.ndarray,
    image_size: tuple[int, int],
    depth: np.ndarray | None,
    dynamic: np.ndarray | None,
    depth_zip: Path | None = None,
    pose_convention: str = "w2c",
    depth_encoding: str = "disparity",
    normalise_intrinsics: bool = True,
) -> None:
    """Write one SpatialVID clip folder.

    Args:
        folder: the clip folder to create (its name is the clip id).
        clip_frames: (N,) clip-video frame number of each annotated frame.
        c2w: (N, 4, 4) camera-to-world poses.
        K: (N, 3, 3) intrinsics in pixels of `image_size` (height, width).
        depth: (N, h, w) z-depth (> 0), or None to write no depth archive.
        dynamic: (N, h', w') bool masks, or None to write no dyn_masks.npz.
        depth_zip: where the depth archive goes; default `<folder>/<id>.zip`.
        pose_convention: "w2c" (correct) or "c2w" (wrong, for tests).
        depth_encoding: "disparity" (correct) or "depth" (wrong, for tests).
        normalise_intrinsics: False writes pixel intrinsics (wrong, for tests).
    """
    folder.mkdir(parents=True, exist_ok=True)
    n = len(clip_frames)
    (folder / "indexes.txt").write_text("".join(f"{i} {int(f)}\n" for i, f in enumerate(clip_frames)))
    pose = c2w if pose_convention == "c2w" else np.linalg.inv(c2w)
    quat_xyzw = Rotation.from_matrix(pose[:, :3, :3]).as_quat()  # scalar last
    np.save(folder / "poses.npy", np.concatenate([pose[:, :3, 3], quat_xyzw], axis=1).astype(np.float32))
    h, w = image_size
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    if normalise_intrinsics:  # x_n = (u + 0.5) / W: pixel centres at integers, 0 and 1 at the image edges
        fx, fy, cx, cy = fx / w, fy / h, (cx + 0.5) / w, (cy + 0.5) / h
    np.save(folder / "intrinsics.npy", np.stack([fx, fy, cx, cy], axis=1).astype(np.float32))
    if depth is not None:
        values = 1.0 / depth if depth_encoding == "disparity" else depth
        archive = depth_zip if depth_zip is not None else folder / f"{folder.name}.zip"
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
        np.savez_compressed(folder / "dyn_masks.npz", **entries)


def write_vipe(
    root: Path,
    name: str,
    *,
    pose_frames: np.ndarray,
    c2w: np.ndarray,
    intrinsics_frames: np.ndarray,
    K: np.ndarray,
    depth_frames: np.ndarray | None = None,
    depth: np.ndarray | None = None,
    mask_frames: np.ndarray | None = None,
    instance_ids: np.ndarray | None = None,
    phrases: dict[int, str] | None = None,
    pose_convention: str = "c2w",
) -> None:
    """Write ViPE's artifacts for one video `name` under `root`.

    Args:
        pose_frames, c2w: (N,) frame numbers and (N, 4, 4) camera-to-world poses.
        intrinsics_frames, K: (M,) frame numbers and (M, 3, 3) intrinsics in pixels of the
            frames ViPE processed (the depth maps' resolution).
        depth_frames, depth: (D,) frame numbers and (D, h, w) metric z-depth, or None.
        mask_frames, instance_ids, phrases: (E,) frame numbers, (E, h, w) uint8 instance ids
            and the id -> phrase table, or None.
        pose_convention: "c2w" (correct) or "w2c" (wrong, for tests).
    """
    pose = c2w if pose_convention == "c2w" else np.linalg.inv(c2w)
    (root / "pose").mkdir(parents=True, exist_ok=True)
    np.savez(root / "pose" / f"{name}.npz", data=pose.astype(np.float32), inds=np.asarray(pose_frames, np.int64))
    (root / "intrinsics").mkdir(parents=True, exist_ok=True)
    intr = np.stack([K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]], axis=1).astype(np.float32)
    np.savez(root / "intrinsics" / f"{name}.npz", data=intr, inds=np.asarray(intrinsics_frames, np.int64))
    (root / "intrinsics" / f"{name}_camera.txt").write_text("".join(f"{int(f)}: PINHOLE\n" for f in intrinsics_frames))
    if depth is not None:
        members = {f"{int(f):05d}.exr": encode_exr(d) for f, d in zip(depth_frames, depth)}
        write_zip(root / "depth" / f"{name}.zip", members)
    if instance_ids is not None:
        members = {}
        for f, ids in zip(mask_frames, instance_ids):
            ok, png = cv2.imencode(".png", ids.astype(np.uint8))
            assert ok
            members[f"{int(f):05d}.png"] = png.tobytes()
        write_zip(root / "mask" / f"{name}.zip", members)
        (root / "mask" / f"{name}.txt").write_text("".join(f"{i}: {p}\n" for i, p in phrases.items()))
