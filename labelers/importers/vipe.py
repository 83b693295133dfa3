"""Import ViPE outputs (reference/datasets.md, section ViPE; nv-tlabs/vipe `vipe/utils/io.py`).

Files of one video `<name>` (the stem of the video ViPE ran on) in ViPE's output folder:

    pose/<name>.npz          `data` (N, 4, 4) OpenCV CAMERA-TO-WORLD, `inds` (N,) frame numbers
    intrinsics/<name>.npz    `data` (N, 4) fx, fy, cx, cy in pixels, `inds` (N,)
    intrinsics/<name>_camera.txt   optional `frame: CameraType` lines; only PINHOLE is accepted
    depth/<name>.zip         `{frame:05d}.exr`, float16 channel Z, METRIC z-depth
    mask/<name>.zip          `{frame:05d}.png` instance ids (0 = none)
    mask/<name>.txt          `id: phrase` lines naming each instance
    rgb/<name>.mp4           the processed frames, written at source fps / frame_skip

Timeline: `inds` and the member names count frames of ViPE's processed stream, not source
frames: ViPE reads `range(frame_start, frame_end, frame_skip)` of the video
(`streams/raw_mp4_stream.py`), so processed frame i is source frame
`frame_offset + frame_skip * i` (`frame_offset` = ViPE's `streams.frame_start`). ViPE saves
no config; the stride is read from `rgb/<name>.mp4` (its frame rate is the source's divided
by the stride) when that video and the source frame rate are at hand, else it is the
`frame_skip` argument (ViPE's default 1); both given and disagreeing is an error. ViPE's
`run.py` stops at `streams.frame_end=1000` by default: label frames past an annotated span
that ends there are reported with that cause.

Conversion: poses are checked to be rigid (orthonormal rotation, det +1, last row 0 0 0 1)
and re-orthonormalised; intrinsics are in pixels of the frames ViPE processed, which is also
the resolution of its depth maps (`image_size` says so explicitly when needed), and are
taken with pixel centres at integer coordinates like OpenCV; depth is valid inside
`depth_range` (metres, `min < depth <= max`): ViPE clamps inverse depth at 1e-3
(`pipeline/processors.py`), so sky and other unresolved pixels come out at up to 1000 m,
and the default upper bound of 500 m (inverse depth 2e-3, twice the clamp) drops them with
a margin, as ViPE's own exports drop unreliable depth (`reliable_depth_mask_range`); the
dynamic mask holds the instances whose phrase names a movable class
(`VIPE_MOVABLE_PHRASES`: ViPE's default prompts without "sky"), or every non-zero id with
`dynamic_phrases=None`. Depth and translation are metric, so `metric_scale` is True.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import cv2
import numpy as np

from labelers.importers.common import (
    PARTS,
    AnnotationError,
    AnnotationSet,
    ImportedAnnotations,
    check_array,
    check_frames,
    check_parts,
    check_rotations,
    check_size,
    decode_exr_depth,
    pixels_to_normalised,
    require_file,
    sha256_files,
    to_label_frames,
)

__all__ = ["VIPE_DEPTH_RANGE", "VIPE_MOVABLE_PHRASES", "read_vipe", "import_vipe"]

VIPE_MOVABLE_PHRASES = ("person", "animal", "vehicle", "ball", "balloon", "gun", "pet", "car", "bus")
VIPE_DEPTH_RANGE = (0.0, 500.0)  # metres, min < depth <= max; ViPE's clamped sky sits at 1000 m
VIPE_RUN_FRAME_END = 1000  # run.py's default streams.frame_end (configs/streams/raw_mp4_stream.yaml)
_STRIDE_TOL = 0.02  # relative: container frame rates are rounded rationals (29.97 / 2 -> 14.985)


def import_vipe(
    output_dir: str | Path,
    name: str,
    frame_index: np.ndarray,
    source_size: tuple[int, int],
    label_size: tuple[int, int],
    source_to_label: np.ndarray,
    *,
    frame_offset: int = 0,
    parts: tuple[str, ...] = PARTS,
    image_size: tuple[int, int] | None = None,
    dynamic_phrases: tuple[str, ...] | None = VIPE_MOVABLE_PHRASES,
    frame_skip: int | None = None,
    source_fps: float | None = None,
    depth_range: tuple[float, float] = VIPE_DEPTH_RANGE,
) -> ImportedAnnotations:
    """Read ViPE outputs for one video and convert them to the label frames of a clip.

    Args:
        output_dir, name, frame_offset, parts, image_size, dynamic_phrases, frame_skip,
            source_fps, depth_range: see `read_vipe`.
        frame_index, source_size, label_size, source_to_label: see
            `labelers.importers.common.to_label_frames`.
    """
    annotations = read_vipe(
        output_dir,
        name,
        frame_offset=frame_offset,
        parts=parts,
        image_size=image_size,
        dynamic_phrases=dynamic_phrases,
        frame_skip=frame_skip,
        source_fps=source_fps,
        depth_range=depth_range,
    )
    return to_label_frames(annotations, frame_index, source_size, label_size, source_to_label)


def read_vipe(
    output_dir: str | Path,
    name: str,
    *,
    frame_offset: int = 0,
    parts: tuple[str, ...] = PARTS,
    image_size: tuple[int, int] | None = None,
    dynamic_phrases: tuple[str, ...] | None = VIPE_MOVABLE_PHRASES,
    frame_skip: int | None = None,
    source_fps: float | None = None,
    depth_range: tuple[float, float] = VIPE_DEPTH_RANGE,
) -> AnnotationSet:
    """Read and check ViPE outputs for one video.

    Args:
        output_dir: ViPE's output folder (holding `pose/`, `intrinsics/`, `depth/`, `mask/`).
        name: the stem of the video ViPE ran on.
        frame_offset: source-video frame number of ViPE's frame 0: its `streams.frame_start`
            (0 by default) when ViPE ran on the source video itself.
        parts: what to read: "camera" (always), "depth", "mask"; a part asked for whose
            files are missing is an error.
        image_size: (height, width) of the frames ViPE processed, which its intrinsics are
            in pixels of; default: the size of its depth maps.
        dynamic_phrases: instance phrases counted as dynamic (case-insensitive), or None for
            every non-zero instance id.
        frame_skip: ViPE's `streams.frame_skip` (>= 1) when its `rgb/<name>.mp4` cannot tell
            it; None: what the video tells, else 1 (ViPE's default).
        source_fps: frame rate of the source video, to read the stride off `rgb/<name>.mp4`.
        depth_range: (min, max) metres; depth is valid where min < depth <= max.

    Raises:
        AnnotationError: missing files, wrong shapes or values, counts that disagree.
    """
    root = Path(output_dir)
    parts = check_parts(parts)
    if not isinstance(frame_offset, (int, np.integer)) or frame_offset < 0:
        raise ValueError(f"frame_offset must be an integer >= 0, got {frame_offset!r}")
    if frame_skip is not None and (not isinstance(frame_skip, (int, np.integer)) or frame_skip < 1):
        raise ValueError(f"frame_skip must be an integer >= 1 or None, got {frame_skip!r}")
    if source_fps is not None and not (np.isfinite(source_fps) and source_fps > 0):
        raise ValueError(f"source_fps must be > 0 or None, got {source_fps!r}")
    depth_range = _check_depth_range(depth_range)
    if not root.is_dir():
        raise AnnotationError(root, "missing_file", "ViPE output folder not found")
    stride, stride_from = _frame_skip(root, name, frame_skip, source_fps)

    pose_path = require_file(root / "pose" / f"{name}.npz", "ViPE poses")
    pose_frames, c2w = _read_poses(pose_path)
    intr_path = require_file(root / "intrinsics" / f"{name}.npz", "ViPE intrinsics")
    intr_frames, intrinsics = _read_npz_pair(intr_path, "intrinsics")
    if intrinsics.ndim != 2 or intrinsics.shape[1] != 4:
        detail = f"data must be (N, 4) pinhole fx, fy, cx, cy, got {intrinsics.shape} (non-pinhole camera?)"
        raise AnnotationError(intr_path, "bad_format", detail)
    intrinsics = check_array(intr_path, "intrinsics data", intrinsics, (None, 4))
    if np.any(intrinsics[:, :2] <= 0):
        raise AnnotationError(intr_path, "bad_format", "focal lengths must be > 0")
    files = [pose_path, intr_path]  # not rgb/<name>.mp4: only its frame rate is read (params)
    camera_txt = root / "intrinsics" / f"{name}_camera.txt"
    if camera_txt.is_file():
        _check_pinhole(camera_txt)
        files.append(camera_txt)

    depth_zip = root / "depth" / f"{name}.zip"
    depth_members = None
    if "depth" in parts or image_size is None:
        what = "ViPE depth archive"
        if "depth" not in parts:
            what += " (it gives the intrinsics' resolution; or pass image_size)"
        depth_members = _frame_members(require_file(depth_zip, what), ".exr")
        files.append(depth_zip)
    if image_size is not None:
        image_size = check_size("image_size", image_size)
    else:
        first = next(iter(depth_members.values()))
        with zipfile.ZipFile(depth_zip) as z:
            image_size = decode_exr_depth(z.read(first), f"{depth_zip}:{first}").shape
    K_px = np.zeros((len(intrinsics), 3, 3))
    K_px[:, 0, 0], K_px[:, 1, 1], K_px[:, 0, 2], K_px[:, 1, 2], K_px[:, 2, 2] = (*intrinsics.T, 1.0)

    offset = int(frame_offset)
    annotations = AnnotationSet(
        kind="vipe",
        source=str(root),
        metric_scale=True,
        pose_frames=offset + stride * pose_frames,
        c2w=c2w,
        intrinsics_frames=offset + stride * intr_frames,
        K_normalised=pixels_to_normalised(image_size) @ K_px,
        files_sha256="",
        params={
            "name": name,
            "frame_offset": offset,
            "frame_skip": stride,
            "frame_skip_from": stride_from,
            "parts": list(parts),
            "image_size": [int(s) for s in image_size],
            "depth_range_m": list(depth_range),
            "dynamic_phrases": None if dynamic_phrases is None else list(dynamic_phrases),
        },
        span_note=_span_note(offset, stride, int(pose_frames[-1])),
    )
    if "depth" in parts:
        by_frame = {offset + stride * i: member for i, member in depth_members.items()}
        annotations.depth_frames = np.array(sorted(by_frame), np.int64)
        annotations.depth_loader = _depth_loader(depth_zip, by_frame, depth_range)
    if "mask" in parts:
        mask_zip = require_file(root / "mask" / f"{name}.zip", "ViPE instance masks")
        mask_members = _frame_members(mask_zip, ".png")
        files.append(mask_zip)
        dynamic_ids = None
        if dynamic_phrases is not None:
            phrase_path = require_file(root / "mask" / f"{name}.txt", "ViPE instance phrases")
            wanted = {p.strip().lower() for p in dynamic_phrases}
            dynamic_ids = [i for i, phrase in _read_phrases(phrase_path).items() if phrase.lower() in wanted]
            files.append(phrase_path)
        by_frame = {offset + stride * i: member for i, member in mask_members.items()}
        annotations.mask_frames = np.array(sorted(by_frame), np.int64)
        annotations.mask_loader = _mask_loader(mask_zip, by_frame, dynamic_ids)
    annotations.files_sha256 = sha256_files(files, root)
    return annotations


def _read_npz_pair(path: Path, what: str) -> tuple[np.ndarray, np.ndarray]:
    """`inds` and `data` of a ViPE npz, with matching lengths."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            entries = {key: np.asarray(npz[key]) for key in npz.files if key in ("data", "inds")}
            present = sorted(npz.files)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise AnnotationError(path, "bad_format", f"cannot read {what}: {exc}") from exc
    if len(entries) != 2:
        raise AnnotationError(path, "bad_format", f"needs entries 'data' and 'inds', has {present}")
    data, inds = entries["data"], entries["inds"]
    frames = check_frames(path, "inds", inds)
    if len(data) != len(frames):
        raise AnnotationError(path, "inconsistent", f"{len(data)} {what} rows but {len(frames)} inds")
    return frames, data


def _read_poses(path: Path) -> tuple[np.ndarray, np.ndarray]:
    frames, data = _read_npz_pair(path, "poses")
    c2w = check_array(path, "pose data", data, (None, 4, 4))
    if np.abs(c2w[:, 3] - np.array([0.0, 0.0, 0.0, 1.0])).max() > 1e-6:
        raise AnnotationError(path, "bad_format", "pose matrices must end with the row 0 0 0 1")
    c2w[:, :3, :3] = check_rotations(path, c2w[:, :3, :3])
    return frames, c2w


def _check_pinhole(path: Path) -> None:
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip() and line.split(":", 1)[-1].strip().upper() != "PINHOLE":
            raise AnnotationError(path, "bad_format", f"line {number}: camera {line.strip()!r} is not PINHOLE")


def _frame_members(archive: Path, suffix: str) -> dict[int, str]:
    """Members `{frame:05d}<suffix>` of a zip archive, by frame number."""
    try:
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
    except (OSError, zipfile.BadZipFile) as exc:
        raise AnnotationError(archive, "bad_format", f"not a readable zip archive: {exc}") from exc
    members = {}
    for member in names:
        stem = Path(member).name[: -len(suffix)] if member.lower().endswith(suffix) else ""
        if not stem.isdigit():
            raise AnnotationError(archive, "bad_format", f"member {member!r} is not named <frame number>{suffix}")
        members[int(stem)] = member
    if not members:
        raise AnnotationError(archive, "bad_format", f"holds no {suffix} files")
    return members


def _read_phrases(path: Path) -> dict[int, str]:
    phrases = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        key, sep, phrase = line.partition(":")
        if not sep or not key.strip().isdigit():
            raise AnnotationError(path, "bad_format", f"line {number} must be 'id: phrase', got {line.strip()!r}")
        phrases[int(key)] = phrase.strip()
    return phrases


def _check_depth_range(depth_range: tuple[float, float]) -> tuple[float, float]:
    lo, hi = (float(v) for v in depth_range)
    if not (np.isfinite(lo) and np.isfinite(hi) and 0 <= lo < hi):
        raise ValueError(f"depth_range must be (min, max) metres with 0 <= min < max, got {depth_range!r}")
    return lo, hi


def _frame_skip(root: Path, name: str, option: int | None, source_fps: float | None) -> tuple[int, str]:
    """ViPE's frame stride and where it came from."""
    rgb_path = root / "rgb" / f"{name}.mp4"
    if not (rgb_path.is_file() and source_fps is not None):
        return (1, "vipe default") if option is None else (int(option), "option")
    capture = cv2.VideoCapture(str(rgb_path))
    rgb_fps = capture.get(cv2.CAP_PROP_FPS) if capture.isOpened() else 0.0
    capture.release()
    if not (np.isfinite(rgb_fps) and rgb_fps > 0):
        raise AnnotationError(rgb_path, "bad_format", "cannot read the frame rate of ViPE's processed video")
    ratio = source_fps / rgb_fps
    stride = max(int(round(ratio)), 1)
    if abs(ratio - stride) > _STRIDE_TOL * stride:
        detail = (
            f"ViPE's video runs at {rgb_fps:.3f} fps, which is not the source's {source_fps:.3f} fps divided "
            "by a whole frame_skip: is this the ViPE run of this video?"
        )
        raise AnnotationError(rgb_path, "inconsistent", detail)
    if option is not None and option != stride:
        detail = (
            f"ViPE's video says frame_skip {stride} ({rgb_fps:.3f} fps from {source_fps:.3f}), "
            f"the option says {option}"
        )
        raise AnnotationError(rgb_path, "inconsistent", detail)
    return stride, f"rgb video: {rgb_fps:.4g} fps of a {source_fps:.4g} fps source"


def _span_note(offset: int, stride: int, last_ind: int) -> str:
    """Why the annotated span may end early: run.py's default frame_end, when the span ends there."""
    last = offset + stride * last_ind
    if last < VIPE_RUN_FRAME_END <= last + stride:
        return (
            f"the annotations end at source frame {last}, the last one below ViPE run.py's default "
            f"streams.frame_end={VIPE_RUN_FRAME_END}: rerun ViPE with streams.frame_end=-1 to annotate the whole video"
        )
    return ""


def _depth_loader(archive: Path, members: dict[int, str], depth_range: tuple[float, float]):
    lo, hi = depth_range

    def load(frame: int) -> np.ndarray:
        member = members[frame]
        with zipfile.ZipFile(archive) as z:
            depth = decode_exr_depth(z.read(member), f"{archive}:{member}")
        valid = np.isfinite(depth) & (depth > lo) & (depth <= hi)
        return np.where(valid, depth, np.nan).astype(np.float32)

    return load


def _mask_loader(archive: Path, members: dict[int, str], dynamic_ids: list[int] | None):
    def load(frame: int) -> np.ndarray:
        member = members[frame]
        where = f"{archive}:{member}"
        with zipfile.ZipFile(archive) as z:
            ids = cv2.imdecode(np.frombuffer(z.read(member), np.uint8), cv2.IMREAD_UNCHANGED)
        if ids is None or ids.ndim != 2 or not np.issubdtype(ids.dtype, np.integer):
            raise AnnotationError(where, "bad_format", "must be a single-channel integer PNG of instance ids")
        return ids != 0 if dynamic_ids is None else np.isin(ids, dynamic_ids)

    return load
