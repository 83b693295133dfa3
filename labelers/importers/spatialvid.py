"""Import SpatialVID per-clip annotations (reference/labeling_anchors.md section 1).

Folder of one clip (`annotations/<group>/<id>/` in the release):

    indexes.txt      one line per annotated frame, two integers; the second is the frame
                     number in the clip video (the first is ignored)
    poses.npy        (N, 7) tx, ty, tz, qx, qy, qz, qw: WORLD-TO-CAMERA, quaternion scalar last
    intrinsics.npy   (N, 4) fx, fy, cx, cy NORMALISED by the image size (cx = cy = 0.5)
    dyn_masks.npz    per-frame CSR matrices: `shape`, `f_{i}_data`, `f_{i}_indices`, `f_{i}_indptr`
    depth zip        one float16 EXR per annotated frame (channel Z) holding DISPARITY (1/depth),
                     in name order; at `<folder>/<id>.zip` or, in the release layout,
                     `depths/<group>/<id>.zip` beside `annotations/`

Row i of every file is annotated frame i. Conversion: c2w = inverse of the w2c pose; depth =
1 / disparity, invalid where the disparity is not finite or below float16's smallest normal
number (6.1e-5: below it the value has lost precision, and its depth would overflow float16
storage); intrinsics stay normalised (x_n = (u + 0.5) / W); any non-zero mask entry is
dynamic. Pose translation and depth come from one optimisation and share its unknown scale,
so `metric_scale` is False.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from labelers.importers.common import (
    PARTS,
    AnnotationError,
    AnnotationSet,
    ImportedAnnotations,
    check_array,
    check_frames,
    check_parts,
    decode_exr_depth,
    load_npy,
    quaternion_to_matrix,
    require_file,
    sha256_files,
    to_label_frames,
    unit_quaternions,
)

__all__ = ["read_spatialvid", "import_spatialvid"]

_MIN_DISPARITY = float(np.finfo(np.float16).tiny)


def import_spatialvid(
    annotation_dir: str | Path,
    frame_index: np.ndarray,
    source_size: tuple[int, int],
    label_size: tuple[int, int],
    source_to_label: np.ndarray,
    *,
    name: str | None = None,
    frame_offset: int = 0,
    parts: tuple[str, ...] = PARTS,
    depth_zip: str | Path | None = None,
) -> ImportedAnnotations:
    """Read a SpatialVID clip folder and convert it to the label frames of a clip.

    Args:
        annotation_dir, name, frame_offset, parts, depth_zip: see `read_spatialvid`.
        frame_index, source_size, label_size, source_to_label: see
            `labelers.importers.common.to_label_frames`.
    """
    annotations = read_spatialvid(
        annotation_dir, name=name, frame_offset=frame_offset, parts=parts, depth_zip=depth_zip
    )
    return to_label_frames(annotations, frame_index, source_size, label_size, source_to_label)


def read_spatialvid(
    annotation_dir: str | Path,
    *,
    name: str | None = None,
    frame_offset: int = 0,
    parts: tuple[str, ...] = PARTS,
    depth_zip: str | Path | None = None,
) -> AnnotationSet:
    """Read and check a SpatialVID clip folder.

    Args:
        annotation_dir: the clip's folder holding `poses.npy`, `intrinsics.npy`, `indexes.txt`, ...
        name: the clip's SpatialVID id, which names its depth archive; default: the folder's name.
        frame_offset: source-video frame number of the clip video's frame 0 (the clip's
            `frame_start` when the source is the uncut video; 0 when it is the clip itself).
        parts: what to read: "camera" (always), "depth", "mask". A part asked for whose
            files are missing is an error.
        depth_zip: explicit path of the depth archive; default: searched as described above.

    Raises:
        AnnotationError: missing files, wrong shapes or values, counts that disagree.
    """
    folder = Path(annotation_dir)
    name = name or folder.name
    parts = check_parts(parts)
    if not isinstance(frame_offset, (int, np.integer)) or frame_offset < 0:
        raise ValueError(f"frame_offset must be an integer >= 0, got {frame_offset!r}")
    if not folder.is_dir():
        raise AnnotationError(folder, "missing_file", "SpatialVID annotation folder not found")

    frames = _read_indexes(require_file(folder / "indexes.txt", "frame index file")) + int(frame_offset)
    n = len(frames)
    w2c = check_array(folder / "poses.npy", "poses", load_npy(folder / "poses.npy", "poses"), (None, 7))
    intrinsics = check_array(
        folder / "intrinsics.npy", "intrinsics", load_npy(folder / "intrinsics.npy", "intrinsics"), (None, 4)
    )
    for path, rows in ((folder / "poses.npy", len(w2c)), (folder / "intrinsics.npy", len(intrinsics))):
        if rows != n:
            raise AnnotationError(path, "inconsistent", f"{rows} rows but indexes.txt lists {n} annotated frames")

    files = [folder / "indexes.txt", folder / "poses.npy", folder / "intrinsics.npy"]
    annotations = AnnotationSet(
        kind="spatialvid",
        source=str(folder),
        metric_scale=False,
        pose_frames=frames,
        c2w=_w2c_to_c2w(folder / "poses.npy", w2c),
        intrinsics_frames=frames,
        K_normalised=_normalised_K(folder / "intrinsics.npy", intrinsics),
        files_sha256="",
        params={"name": name, "frame_offset": int(frame_offset), "parts": list(parts)},
    )
    if "depth" in parts:
        archive = _find_depth_zip(folder, name, depth_zip)
        annotations.depth_frames = frames
        annotations.depth_loader = _depth_loader(archive, frames)
        files.append(archive)
    if "mask" in parts:
        masks = require_file(folder / "dyn_masks.npz", "dynamic masks")
        annotations.mask_frames = frames
        annotations.mask_loader = _mask_loader(masks, frames)
        files.append(masks)
    annotations.files_sha256 = sha256_files(files, folder)
    return annotations


def _read_indexes(path: Path) -> np.ndarray:
    frames = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not all(f.lstrip("-").isdigit() for f in fields):
            raise AnnotationError(path, "bad_format", f"line {number} must be two integers, got {line.strip()!r}")
        frames.append(int(fields[1]))
    return check_frames(path, "video frame numbers (second column)", np.array(frames, np.int64))


def _w2c_to_c2w(path: Path, w2c: np.ndarray) -> np.ndarray:
    R_w2c = quaternion_to_matrix(unit_quaternions(path, w2c[:, 3:]))
    c2w = np.tile(np.eye(4), (len(w2c), 1, 1))
    c2w[:, :3, :3] = np.swapaxes(R_w2c, 1, 2)
    c2w[:, :3, 3] = -np.einsum("nji,nj->ni", R_w2c, w2c[:, :3])  # camera centre -R^T t
    return c2w


def _normalised_K(path: Path, intrinsics: np.ndarray) -> np.ndarray:
    fx, fy, cx, cy = intrinsics.T
    if np.any(fx <= 0) or np.any(fy <= 0):
        raise AnnotationError(path, "bad_format", "focal lengths must be > 0")
    if np.any((cx <= 0) | (cx >= 1) | (cy <= 0) | (cy >= 1)):
        raise AnnotationError(
            path,
            "bad_format",
            f"principal point ({cx[0]:.4g}, {cy[0]:.4g}) is not inside (0, 1): intrinsics must be "
            "normalised by the image size (pixel intrinsics?)",
        )
    K = np.zeros((len(intrinsics), 3, 3))
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = fx, fy, cx, cy, 1.0
    return K


def _find_depth_zip(folder: Path, name: str, explicit: str | Path | None) -> Path:
    if explicit is not None:
        return require_file(Path(explicit), "depth archive")
    candidates = [folder / f"{name}.zip"]
    if folder.parent.parent.name == "annotations":  # <root>/annotations/<group>/<id>
        candidates.append(folder.parents[2] / "depths" / folder.parent.name / f"{name}.zip")
    for path in candidates:
        if path.is_file():
            return path
    raise AnnotationError(
        folder, "missing_file", f"depth archive not found at {' or '.join(str(p) for p in candidates)}"
    )


def _depth_loader(archive: Path, frames: np.ndarray):
    """Check the archive holds one EXR per annotated frame; return frame -> (h, w) float32 depth."""
    try:
        with zipfile.ZipFile(archive) as z:
            members = sorted(m for m in z.namelist() if m.lower().endswith(".exr"))
    except (OSError, zipfile.BadZipFile) as exc:
        raise AnnotationError(archive, "bad_format", f"not a readable zip archive: {exc}") from exc
    if len(members) != len(frames):
        raise AnnotationError(
            archive, "inconsistent", f"{len(members)} EXR files but indexes.txt lists {len(frames)} annotated frames"
        )
    row_of = {int(f): i for i, f in enumerate(frames)}

    def load(frame: int) -> np.ndarray:
        member = members[row_of[frame]]
        with zipfile.ZipFile(archive) as z:
            disparity = decode_exr_depth(z.read(member), f"{archive}:{member}")
        with np.errstate(divide="ignore"):
            return np.where(np.isfinite(disparity) & (disparity >= _MIN_DISPARITY), 1.0 / disparity, np.nan).astype(
                np.float32
            )

    return load


def _mask_loader(path: Path, frames: np.ndarray):
    """Check the CSR masks (one per annotated frame); return frame -> (h, w) bool mask."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            shape = np.asarray(npz["shape"]) if "shape" in keys else None
    except (OSError, ValueError) as exc:
        raise AnnotationError(path, "bad_format", f"cannot read dynamic masks: {exc}") from exc
    if shape is None or shape.shape != (2,) or not np.issubdtype(shape.dtype, np.integer) or np.any(shape < 1):
        raise AnnotationError(path, "bad_format", f"needs a 'shape' entry (height, width), got {shape!r}")
    count = (len(keys) - 1) // 3
    expected = {f"f_{i}_{part}" for i in range(count) for part in ("data", "indices", "indptr")} | {"shape"}
    if keys != expected:
        odd = sorted(keys ^ expected)[:3]
        raise AnnotationError(path, "bad_format", f"keys must be shape and f_{{i}}_data/indices/indptr; odd keys {odd}")
    if count != len(frames):
        detail = f"{count} masks but indexes.txt lists {len(frames)} annotated frames"
        raise AnnotationError(path, "inconsistent", detail)
    height, width = (int(s) for s in shape)
    row_of = {int(f): i for i, f in enumerate(frames)}

    def load(frame: int) -> np.ndarray:
        i = row_of[frame]
        with np.load(path, allow_pickle=False) as npz:
            data, indices, indptr = (np.asarray(npz[f"f_{i}_{part}"]) for part in ("data", "indices", "indptr"))
        return _csr_to_dense(f"{path}:f_{i}", data, indices, indptr, height, width)

    return load


def _csr_to_dense(where: str, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, height: int, width: int):
    """(h, w) bool of the non-zero entries of a CSR matrix, after checking its structure."""
    ok = (
        indptr.shape == (height + 1,)
        and indices.shape == data.shape
        and indptr[0] == 0
        and indptr[-1] == len(indices)
        and np.all(np.diff(indptr) >= 0)
        and (len(indices) == 0 or (indices.min() >= 0 and indices.max() < width))
    )
    if not ok:
        raise AnnotationError(where, "bad_format", f"not a valid CSR matrix of shape ({height}, {width})")
    mask = np.zeros((height, width), bool)
    rows = np.repeat(np.arange(height), np.diff(indptr))
    mask[rows, indices] = data != 0
    return mask
