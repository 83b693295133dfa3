"""Import SpatialVID per-clip annotations (reference/datasets.md, section SpatialVID).

Two layouts hold the same files. The public release (SpatialVID-HQ):

    annotations/group_XXXX/<id>/   indexes.txt, poses.npy, intrinsics.npy, dyn_masks.npz
    depths/group_XXXX/<id>.zip     one float16 EXR of DISPARITY per annotated frame

and the internal pipeline's clip folder `<id>/` with the same files under
`<id>/reconstructions/` (depth as `depth_opt.zip`, disparity EXRs, or `sgd_cvd_hr.npz`,
clipped depth) and the extracted frames `<id>/img/frame_%06d.jpg`.

    indexes.txt      one line per annotated frame, two integers; the second is the frame
                     number in the clip video (the first is ignored); without it (internal
                     layout) the numbers come from the names of `img/frame_%06d.jpg`
    poses.npy        (N, 7) tx, ty, tz, qx, qy, qz, qw: WORLD-TO-CAMERA, quaternion scalar last
    intrinsics.npy   (N, 4) fx, fy, cx, cy normalised "origin"-style (common module docstring):
                     pixels = normalised * size, cx = cy = 0.5 (upstream `load_intrinsics`)
    dyn_masks.npz    per-frame CSR matrices: `shape`, `f_{i}_data`, `f_{i}_indices`,
                     `f_{i}_indptr`, at the extracted frames' (source) resolution

Row i of every file is annotated frame i. Conversion: c2w = inverse of the w2c pose; depth =
clip(1 / disparity, 1e-3, 100) exactly as upstream `utils/read_depth.py`, invalid where the
disparity is not finite or <= 0 (no depth at all, not a far one). Depth footprint: the
tracker resized each frame to (h1, w1) = int((h0, w0) * sqrt(384 * 512 / (h0 * w0))) and
cropped bottom and right to multiples of 8 (`camera_tracking.py`, `preprocess_flow.py`);
the depth map is that crop, so depth pixel (x, y) is source pixel (x * w0 / w1, y * h0 / h1)
and label pixels past the crop get no depth. Any non-zero mask entry is dynamic. Pose
translation and depth come from one optimisation and share its scale; SpatialVID's depth
is aligned to a metric prior but not metric by construction, so `metric_scale` is False.
"""

from __future__ import annotations

import re
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

__all__ = ["read_spatialvid", "import_spatialvid", "tracker_frame_size", "DEPTH_CLIP"]

DEPTH_CLIP = (1e-3, 100.0)  # upstream read_depth: np.clip(1 / disparity, 1e-3, 1e2)
_TRACKER_AREA = 384 * 512
_FRAME_NAME = re.compile(r"^frame_(\d+)\.(?:jpg|png)$")


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
        annotation_dir: the clip's folder: `annotations/group_XXXX/<id>` (release) or `<id>`
            holding `reconstructions/` (internal pipeline).
        name: the clip's SpatialVID id, which names its depth archive; default: the folder's name.
        frame_offset: source-video frame number of the clip video's frame 0 (the clip's
            `frame_start` when the source is the uncut video; 0 when it is the clip itself).
        parts: what to read: "camera" (always), "depth", "mask". A part asked for whose
            files are missing is an error.
        depth_zip: explicit depth file (zip of disparity EXRs, or `sgd_cvd_hr.npz`); default:
            `<folder>/<name>.zip`, `reconstructions/depth_opt.zip`, `reconstructions/sgd_cvd_hr.npz`,
            then the release's `../../depths/group_XXXX/<name>.zip`.

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
    files_dir = folder / "reconstructions" if (folder / "reconstructions").is_dir() else folder

    index_path = files_dir / "indexes.txt"
    if not index_path.is_file() and (folder / "img").is_dir():
        clip_frames, index_files = _frames_from_images(folder / "img"), []
    else:
        clip_frames, index_files = _read_indexes(require_file(index_path, "frame index file")), [index_path]
    frames = clip_frames + int(frame_offset)
    n = len(frames)
    w2c = check_array(files_dir / "poses.npy", "poses", load_npy(files_dir / "poses.npy", "poses"), (None, 7))
    intrinsics = check_array(
        files_dir / "intrinsics.npy",
        "intrinsics",
        load_npy(files_dir / "intrinsics.npy", "intrinsics"),
        (None, 4),
    )
    for path, rows in ((files_dir / "poses.npy", len(w2c)), (files_dir / "intrinsics.npy", len(intrinsics))):
        if rows != n:
            raise AnnotationError(path, "inconsistent", f"{rows} rows but {n} annotated frames are listed")

    files = index_files + [files_dir / "poses.npy", files_dir / "intrinsics.npy"]
    annotations = AnnotationSet(
        kind="spatialvid",
        source=str(folder),
        metric_scale=False,
        pose_frames=frames,
        c2w=_w2c_to_c2w(files_dir / "poses.npy", w2c),
        intrinsics_frames=frames,
        K_normalised=_normalised_K(files_dir / "intrinsics.npy", intrinsics),
        scaling="origin",
        files_sha256="",
        params={
            "name": name,
            "frame_offset": int(frame_offset),
            "parts": list(parts),
            "depth_clip": list(DEPTH_CLIP),
            "depth_footprint": "tracker crop",
        },
    )
    if "depth" in parts:
        archive = _find_depth(folder, files_dir, name, depth_zip)
        annotations.depth_frames = frames
        if archive.suffix == ".npz":
            annotations.depth_loader = _npz_depth_loader(archive, frames)
        else:
            annotations.depth_loader = _depth_loader(archive, frames)
        annotations.depth_frame = _tracker_footprint(archive)
        files.append(archive)
    if "mask" in parts:
        masks = require_file(files_dir / "dyn_masks.npz", "dynamic masks")
        annotations.mask_frames = frames
        annotations.mask_loader = _mask_loader(masks, frames)
        files.append(masks)
    annotations.files_sha256 = sha256_files(files, folder)
    return annotations


def tracker_frame_size(source_size: tuple[int, int]) -> tuple[int, int]:
    """(h1, w1): the size SpatialVID's tracker resized (h0, w0) source frames to, before its crop.

    The same float expression as upstream (`camera_tracking.py` image_stream,
    `preprocess_flow.py`): int(h0 * sqrt(384 * 512 / (h0 * w0))), so the truncation agrees.
    """
    h0, w0 = source_size
    scale = np.sqrt(_TRACKER_AREA / (h0 * w0))
    return int(h0 * scale), int(w0 * scale)


def _tracker_footprint(archive: Path):
    """`AnnotationSet.depth_frame` for SpatialVID: the tracker's resized frame; checks the crop."""

    def frame(source_size: tuple[int, int], depth_shape: tuple[int, int]) -> tuple[int, int]:
        h1, w1 = tracker_frame_size(source_size)
        crop = (h1 - h1 % 8, w1 - w1 % 8)
        if tuple(depth_shape) != crop:
            raise AnnotationError(
                archive,
                "inconsistent",
                f"depth maps are {depth_shape[0]}x{depth_shape[1]} but SpatialVID's tracker makes {crop[0]}x{crop[1]} "
                f"(cropped from {h1}x{w1}) for {source_size[0]}x{source_size[1]} source frames: "
                "the video is not the one that was annotated",
            )
        return h1, w1

    return frame


def _frames_from_images(img_dir: Path) -> np.ndarray:
    """Clip frame numbers from upstream's extracted frames `frame_%06d.jpg` (internal layout)."""
    numbers = sorted(int(m.group(1)) for m in map(_FRAME_NAME.match, (p.name for p in img_dir.iterdir())) if m)
    return check_frames(img_dir, "frame numbers of img/frame_%06d.jpg", np.array(numbers, np.int64))


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


def _find_depth(folder: Path, files_dir: Path, name: str, explicit: str | Path | None) -> Path:
    """The depth file: explicit, beside the annotations, or in the release's `depths/` tree."""
    if explicit is not None:
        return require_file(Path(explicit), "depth archive")
    candidates = [folder / f"{name}.zip", files_dir / "depth_opt.zip", files_dir / "sgd_cvd_hr.npz"]
    # Release: <root>/annotations/group_XXXX/<id> beside <root>/depths/group_XXXX/<id>.zip.
    absolute = folder.resolve()
    if len(absolute.parents) > 2:
        candidates.append(absolute.parents[2] / "depths" / absolute.parent.name / f"{name}.zip")
    for path in dict.fromkeys(candidates):
        if path.is_file():
            return path
    where = " or ".join(str(p) for p in dict.fromkeys(candidates))
    raise AnnotationError(folder, "missing_file", f"depth archive not found at {where}")


def disparity_to_depth(disparity: np.ndarray) -> np.ndarray:
    """Upstream's clip(1 / disparity, 1e-3, 100); NaN where the disparity is not finite or <= 0."""
    valid = np.isfinite(disparity) & (disparity > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        depth = np.clip(1.0 / np.where(valid, disparity, 1.0), *DEPTH_CLIP)
    return np.where(valid, depth, np.nan).astype(np.float32)


def _depth_loader(archive: Path, frames: np.ndarray):
    """Check the archive holds one EXR per annotated frame; return frame -> (h, w) float32 depth."""
    try:
        with zipfile.ZipFile(archive) as z:
            members = sorted(m for m in z.namelist() if m.lower().endswith(".exr"))
    except (OSError, zipfile.BadZipFile) as exc:
        raise AnnotationError(archive, "bad_format", f"not a readable zip archive: {exc}") from exc
    if len(members) != len(frames):
        raise AnnotationError(
            archive, "inconsistent", f"{len(members)} EXR files but {len(frames)} annotated frames are listed"
        )
    row_of = {int(f): i for i, f in enumerate(frames)}

    def load(frame: int) -> np.ndarray:
        member = members[row_of[frame]]
        with zipfile.ZipFile(archive) as z:
            disparity = decode_exr_depth(z.read(member), f"{archive}:{member}")
        return disparity_to_depth(disparity)

    return load


def _npz_depth_loader(path: Path, frames: np.ndarray):
    """Internal layout's `sgd_cvd_hr.npz`: `depths` (N, h, w), already clipped depth (not disparity)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            if "depths" not in npz.files:
                raise AnnotationError(path, "bad_format", f"needs an entry 'depths', has {sorted(npz.files)}")
            depths = np.asarray(npz["depths"], np.float32)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise AnnotationError(path, "bad_format", f"cannot read depth: {exc}") from exc
    if depths.ndim != 3 or len(depths) != len(frames):
        detail = f"depths must be (N, h, w) with N = {len(frames)} annotated frames, got {depths.shape}"
        raise AnnotationError(path, "inconsistent", detail)
    row_of = {int(f): i for i, f in enumerate(frames)}

    def load(frame: int) -> np.ndarray:
        depth = depths[row_of[frame]]
        return np.where(np.isfinite(depth) & (depth > 0), depth, np.nan).astype(np.float32)

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
        detail = f"{count} masks but {len(frames)} annotated frames are listed"
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
