"""What every annotation importer shares: errors, the parsed annotations, and their conversion to label frames.

A reader (`read_spatialvid`, `read_vipe`) turns an outside folder into an `AnnotationSet`
that already speaks LABELS.md conventions except for timeline and resolution: poses are
camera-to-world in the annotation's own world frame, intrinsics are normalised (below), and
depth is z-depth. `to_label_frames` then brings it to the clip's label frames and pixels.

Coordinate spaces (pixel centres at integer coordinates throughout, as in LABELS.md):

- normalised image coordinates, in one of two conventions (`AnnotationSet.scaling`):
  "edges": x_n = (u + 0.5) / W, y_n = (v + 0.5) / H, so 0 and 1 are the image edges for
  any resolution (how cv2.resize maps pixels; ViPE's pixel intrinsics are converted so);
  "origin": x_n = u / W, y_n = v / H, the form SpatialVID stores: its tracker scaled
  pixel intrinsics by plain ratios (cx -> cx * w1 / w0) and upstream's `load_intrinsics`
  (`utils/pack_clip_assets.py`) multiplies by the target size, so cx_n = 0.5 is 640.0 px
  at 1280 wide (639.5 under "edges").
- annotation pixels: an annotation image (h, w) covers the top-left (h, w) of a full frame
  of size (h_f, w_f) at its own resolution, and maps to source pixels by the convention
  above: "edges" u_source = (W / w_f)(u + 0.5) - 0.5, "origin" u_source = (W / w_f) u.
  Usually (h_f, w_f) = (h, w); SpatialVID's depth covers the top-left crop of its
  tracker's resized frame (`AnnotationSet.depth_frame`). Masks are full frames, "edges".
- label pixels: `source_to_label`, a (3, 3) affine map of homogeneous source pixels, e.g.
  `pipelines.decode.ResizeCrop.matrix()` (resize then crop: u' = s_x (u + 0.5) - 0.5 - left).

Timeline: annotation frames are source-video frame numbers (the reader adds the folder's
frame offset). Poses and intrinsics at a label frame between two annotated frames are
interpolated in frame number: slerp on rotation, linear on camera centre and intrinsics.
A label frame outside the annotated span is an error (reason "out_of_range", with the
reader's `span_note` when it knows why the span ends there), never an extrapolation.
Depth and masks are only taken from an annotation of exactly the label frame's source
frame; every other label frame has no depth (`depth_valid` False, depth 0) and no mask.

Resampling to label pixels is nearest-neighbour: each label pixel takes the annotation pixel
whose centre is nearest to its own centre mapped back, so depth is never averaged across a
depth discontinuity (a blurred edge would invent surfaces between foreground and background)
and masks stay binary. Label pixels that map outside the annotation image are invalid
(depth 0 and `depth_valid` False; mask False): no value is invented past what was annotated.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import OpenEXR

__all__ = [
    "IMPORTER_VERSION",
    "PARTS",
    "AnnotationError",
    "AnnotationSet",
    "ImportedAnnotations",
    "to_label_frames",
]

IMPORTER_VERSION = "2"  # 2: SpatialVID depth footprint, clipping and principal point; ViPE stride and depth range
PARTS = ("camera", "depth", "mask")
_ROTATION_TOL = 1e-3  # float32 storage keeps R^T R within ~1e-6 of I; more is a broken pose
_QUAT_NORM_TOL = 1e-3
SCALINGS = ("edges", "origin")


class AnnotationError(ValueError):
    """An annotation folder that cannot be imported, with a machine-readable reason.

    Attributes:
        path: the folder or file at fault.
        reason: one of "missing_file", "bad_format" (unreadable, wrong shape or values),
            "inconsistent" (counts or frame numbers disagree between files),
            "bad_rotation" (not a rotation), "out_of_range" (label frames outside the
            annotated span).
        detail: what is wrong, in words.
    """

    REASONS = ("missing_file", "bad_format", "inconsistent", "bad_rotation", "out_of_range")

    def __init__(self, path: str | Path, reason: str, detail: str) -> None:
        if reason not in self.REASONS:
            raise ValueError(f"reason must be one of {self.REASONS}, got {reason!r}")
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{path}: {reason}: {detail}")

    def __reduce__(self):  # pickles with its fields, so it crosses process boundaries (Ray)
        return (type(self), (self.path, self.reason, self.detail))


@dataclass
class AnnotationSet:
    """Annotations of one clip as read from an outside folder, in LABELS.md conventions.

    Attributes:
        kind: "spatialvid" or "vipe".
        source: the folder read.
        metric_scale: True when depth and translation are in metres.
        pose_frames: (Np,) int64 increasing source-video frame numbers of `c2w`.
        c2w: (Np, 4, 4) float64 camera-to-world in the annotation's world frame; depth and
            translation share one scale.
        intrinsics_frames: (Nk,) int64 increasing source-video frame numbers of `K_normalised`.
        K_normalised: (Nk, 3, 3) float64 pinhole intrinsics in normalised image coordinates.
        scaling: "edges" or "origin": the normalised-coordinate convention of `K_normalised`,
            also used to map depth pixels to source pixels (module docstring).
        depth_frames: (Nd,) int64 increasing source-video frame numbers with a depth map.
        depth_loader: frame number -> (h, w) float32 z-depth, NaN where invalid. Decoding is
            deferred: only the few annotated frames that are exactly label frames are read.
        depth_frame: (source_size, depth_shape) -> (h_f, w_f), the full frame at depth
            resolution whose top-left the depth map covers; raises AnnotationError when the
            depth shape does not fit the source. None: the depth map is the full frame.
        mask_frames: (Nm,) int64 increasing source-video frame numbers with a dynamic mask.
        mask_loader: frame number -> (h, w) bool dynamic mask (a full frame, "edges").
        files_sha256: sha256 over the names and bytes of every annotation file read.
        params: how the folder was read (for the `labelers` attribute).
        span_note: appended to "out_of_range" errors, e.g. why the annotated span ends there.
    """

    kind: str
    source: str
    metric_scale: bool
    pose_frames: np.ndarray
    c2w: np.ndarray
    intrinsics_frames: np.ndarray
    K_normalised: np.ndarray
    files_sha256: str
    params: dict[str, Any] = field(default_factory=dict)
    scaling: str = "edges"
    depth_frames: np.ndarray | None = None
    depth_loader: Any = None
    depth_frame: Callable[[tuple[int, int], tuple[int, int]], tuple[int, int]] | None = None
    mask_frames: np.ndarray | None = None
    mask_loader: Any = None
    span_note: str = ""

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {self.scaling!r}")

    @property
    def parts(self) -> tuple[str, ...]:
        """The label families this import provides."""
        present = {"camera": True, "depth": self.depth_frames is not None, "mask": self.mask_frames is not None}
        return tuple(part for part, here in present.items() if here)


@dataclass(frozen=True)
class ImportedAnnotations:
    """Imported labels at the T label frames of a clip.

    Attributes:
        arrays: LABELS.md-named arrays at the label resolution (H, W):
            `K` (T, 3, 3) float32; `c2w` (T, 4, 4) float32 with c2w[0] = I;
            with depth: `depth` (T, H, W) float32 (0 where invalid), `depth_valid` (T, H, W) bool;
            with masks: `dynamic_mask` (T, H, W) bool at every label frame (take
            `[::stride]` for the contract's key frames).
        frame_flags: per label frame (T,) bool: `pose_interpolated` (no pose annotated at
            exactly that source frame), `depth_exact`, `mask_exact` (an annotation of exactly
            that source frame was used; False frames have no depth / an all-False mask).
        attrs: `metric_scale` (bool) and `labelers` (family -> description of the import).
    """

    arrays: dict[str, np.ndarray]
    frame_flags: dict[str, np.ndarray]
    attrs: dict[str, Any]


# --------------------------------------------------------------------------- conversion
def to_label_frames(
    annotations: AnnotationSet,
    frame_index: np.ndarray,
    source_size: tuple[int, int],
    label_size: tuple[int, int],
    source_to_label: np.ndarray,
) -> ImportedAnnotations:
    """Bring annotations to a clip's label frames and resolution.

    Args:
        annotations: what a reader returned.
        frame_index: (T,) non-decreasing source-video frame numbers of the label frames.
        source_size: (height, width) of the source video frames.
        label_size: (H, W) label resolution.
        source_to_label: (3, 3) affine map of homogeneous source pixels to label pixels,
            axis-aligned (scale and offset, no shear or rotation).

    Returns:
        The imported labels; see `ImportedAnnotations`.

    Raises:
        AnnotationError: "out_of_range" when a label frame lies outside the annotated span.
        ValueError: malformed arguments.
    """
    frames = _check_frame_index(frame_index)
    source_size = check_size("source_size", source_size)
    label_size = check_size("label_size", label_size)
    source_to_label = _check_affine(source_to_label)
    ann = annotations

    _check_in_span(ann.source, "poses", ann.pose_frames, frames, ann.span_note)
    _check_in_span(ann.source, "intrinsics", ann.intrinsics_frames, frames, ann.span_note)
    c2w_world, interpolated = _interpolate_poses(ann.pose_frames, ann.c2w, frames)
    c2w = np.linalg.inv(c2w_world[0]) @ c2w_world  # first-label-frame coordinates
    c2w[0] = np.eye(4)
    K_norm = _interpolate_linear(ann.intrinsics_frames, ann.K_normalised, frames)
    K = source_to_label @ normalised_to_pixels(source_size, ann.scaling) @ K_norm

    arrays: dict[str, np.ndarray] = {"K": K.astype(np.float32), "c2w": c2w.astype(np.float32)}
    flags: dict[str, np.ndarray] = {"pose_interpolated": interpolated}
    label_to_source = np.linalg.inv(source_to_label)
    if ann.depth_frames is not None:

        def depth_to_source(shape: tuple[int, int]) -> np.ndarray:
            frame = shape if ann.depth_frame is None else ann.depth_frame(source_size, shape)
            return image_to_source(frame, source_size, ann.scaling)

        depth, exact = _exact_frames(
            ann.depth_frames, ann.depth_loader, frames, label_size, label_to_source, depth_to_source, np.float32
        )
        valid = np.isfinite(depth) & (depth > 0)
        arrays["depth"] = np.where(valid, depth, 0.0).astype(np.float32)
        arrays["depth_valid"] = valid
        flags["depth_exact"] = exact
    if ann.mask_frames is not None:

        def mask_to_source(shape: tuple[int, int]) -> np.ndarray:
            return image_to_source(shape, source_size, "edges")

        mask, exact = _exact_frames(
            ann.mask_frames, ann.mask_loader, frames, label_size, label_to_source, mask_to_source, np.bool_
        )
        arrays["dynamic_mask"] = mask
        flags["mask_exact"] = exact

    entry = {
        "name": f"{ann.kind}-import",
        "version": IMPORTER_VERSION,
        "source": ann.source,
        "params": dict(ann.params),
        "annotations_sha256": ann.files_sha256,
        "weights_sha256": None,
    }
    attrs = {"metric_scale": ann.metric_scale, "labelers": {part: dict(entry) for part in ann.parts}}
    return ImportedAnnotations(arrays, flags, attrs)


def _exact_frames(
    annotated: np.ndarray,
    loader,
    frames: np.ndarray,
    label_size: tuple[int, int],
    label_to_source: np.ndarray,
    image_to_source_of: Callable[[tuple[int, int]], np.ndarray],
    dtype: type,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-pixel annotations at label frames that are exactly annotated, resampled to label pixels.

    Args:
        image_to_source_of: annotation image shape (h, w) -> (3, 3) map of its pixels to source pixels.

    Returns:
        values: (T, H, W) `dtype` (0 / False at frames without an annotation; NaN / False
            where a label pixel maps outside the annotation image);
        exact: (T,) bool.
    """
    exact = np.isin(frames, annotated)
    values = np.zeros((len(frames),) + label_size, dtype)
    decoded: dict[int, np.ndarray] = {}
    for t in np.flatnonzero(exact):
        frame = int(frames[t])
        if frame not in decoded:  # repeated label frames decode once
            image = loader(frame)
            label_to_image = np.linalg.inv(image_to_source_of(image.shape)) @ label_to_source
            decoded[frame] = _nearest_resample(image, label_size, label_to_image)
        values[t] = decoded[frame]
    return values, exact


def _nearest_resample(image: np.ndarray, label_size: tuple[int, int], label_to_image: np.ndarray) -> np.ndarray:
    """Nearest-neighbour resampling of an annotation image (h, w) to label pixels (H, W).

    Label pixels mapping outside the image get NaN (float images) or False (bool images).
    """
    h, w = image.shape
    H, W = label_size
    u = label_to_image[0, 0] * np.arange(W) + label_to_image[0, 2]
    v = label_to_image[1, 1] * np.arange(H) + label_to_image[1, 2]
    # Nearest centre. A label centre exactly between two annotation centres (2x downsampling)
    # goes to the right / lower one; the epsilon stops rounding noise from flipping such ties.
    cols = np.floor(u + 0.5 + 1e-9).astype(np.int64)
    rows = np.floor(v + 0.5 + 1e-9).astype(np.int64)
    col_ok = (cols >= 0) & (cols < w)
    row_ok = (rows >= 0) & (rows < h)
    out = image[np.clip(rows, 0, h - 1)[:, None], np.clip(cols, 0, w - 1)[None, :]]
    inside = row_ok[:, None] & col_ok[None, :]
    fill = False if image.dtype == bool else np.nan
    return np.where(inside, out, fill)


def normalised_to_pixels(size: tuple[int, int], scaling: str = "edges") -> np.ndarray:
    """(3, 3) map of normalised image coordinates (`scaling` convention) to pixels of an image of `size` (h, w)."""
    h, w = size
    offset = -0.5 if scaling == "edges" else 0.0
    return np.array([[w, 0.0, offset], [0.0, h, offset], [0.0, 0.0, 1.0]])


def pixels_to_normalised(size: tuple[int, int], scaling: str = "edges") -> np.ndarray:
    """(3, 3) map of pixels of an image of `size` (height, width) to normalised image coordinates."""
    return np.linalg.inv(normalised_to_pixels(size, scaling))


def image_to_source(frame_size: tuple[int, int], source_size: tuple[int, int], scaling: str) -> np.ndarray:
    """(3, 3) map of pixels of a full frame of `frame_size` (annotation resolution) to source pixels."""
    return normalised_to_pixels(source_size, scaling) @ pixels_to_normalised(frame_size, scaling)


# --------------------------------------------------------------------------- timeline
def _check_in_span(source: str, what: str, annotated: np.ndarray, frames: np.ndarray, note: str = "") -> None:
    lo, hi = int(annotated[0]), int(annotated[-1])
    outside = frames[(frames < lo) | (frames > hi)]
    if outside.size:
        raise AnnotationError(
            source,
            "out_of_range",
            f"label frames {outside[:5].tolist()}{'...' if outside.size > 5 else ''} lie outside the "
            f"annotated {what} span [{lo}, {hi}] (source-video frames); "
            + (note or "shorten the clip or fix frame_offset"),
        )


def _bracket(annotated: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Indices (a, b) of the annotated frames around each frame and the fraction s in [0, 1] from a to b."""
    b = np.clip(np.searchsorted(annotated, frames, side="left"), 0, len(annotated) - 1)
    exact = annotated[b] == frames
    a = np.where(exact, b, np.maximum(b - 1, 0))
    span = (annotated[b] - annotated[a]).astype(np.float64)
    s = np.where(span > 0, (frames - annotated[a]) / np.where(span > 0, span, 1.0), 0.0)
    return a, b, s


def _interpolate_linear(annotated: np.ndarray, values: np.ndarray, frames: np.ndarray) -> np.ndarray:
    a, b, s = _bracket(annotated, frames)
    s = s.reshape((-1,) + (1,) * (values.ndim - 1))
    return (1 - s) * values[a] + s * values[b]


def _interpolate_poses(annotated: np.ndarray, c2w: np.ndarray, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """c2w at `frames`: slerp on rotation, linear on camera centre.

    Returns:
        (T, 4, 4) float64 poses and (T,) bool, True where interpolated.
    """
    a, b, s = _bracket(annotated, frames)
    quats = matrix_to_quaternion(c2w[:, :3, :3])
    out = np.tile(np.eye(4), (len(frames), 1, 1))
    out[:, :3, :3] = quaternion_to_matrix(_slerp(quats[a], quats[b], s))
    out[:, :3, 3] = (1 - s)[:, None] * c2w[a, :3, 3] + s[:, None] * c2w[b, :3, 3]
    return out, annotated[a] != frames


# --------------------------------------------------------------------------- rotations
def quaternion_to_matrix(q_xyzw: np.ndarray) -> np.ndarray:
    """(..., 4) unit quaternions (x, y, z, w), scalar last -> (..., 3, 3) rotation matrices."""
    x, y, z, w = np.moveaxis(np.asarray(q_xyzw, np.float64), -1, 0)
    R = np.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w),
            2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w),
            2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y),
        ],
        axis=-1,
    )  # fmt: skip
    return R.reshape(R.shape[:-1] + (3, 3))


def matrix_to_quaternion(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 4) unit quaternions (x, y, z, w) with w >= 0.

    Each quaternion is computed from its largest component (Shepperd's method), which keeps
    the division well conditioned for every rotation, 180 degree turns included.
    """
    R = np.asarray(R, np.float64)
    m = R.reshape(-1, 3, 3)
    tr = np.trace(m, axis1=1, axis2=2)
    cands = np.stack([m[:, 0, 0], m[:, 1, 1], m[:, 2, 2], tr], axis=1)
    k = np.argmax(cands, axis=1)
    q = np.empty((m.shape[0], 4))
    for i in range(m.shape[0]):
        r = m[i]
        if k[i] == 3:
            w = 0.5 * np.sqrt(max(1.0 + tr[i], 0.0))
            q[i] = [(r[2, 1] - r[1, 2]) / (4 * w), (r[0, 2] - r[2, 0]) / (4 * w), (r[1, 0] - r[0, 1]) / (4 * w), w]
        else:
            a, b, c = k[i], (k[i] + 1) % 3, (k[i] + 2) % 3
            big = 0.5 * np.sqrt(max(1.0 + r[a, a] - r[b, b] - r[c, c], 0.0))
            q[i, a] = big
            q[i, b] = (r[b, a] + r[a, b]) / (4 * big)
            q[i, c] = (r[c, a] + r[a, c]) / (4 * big)
            q[i, 3] = (r[c, b] - r[b, c]) / (4 * big)
    q *= np.where(q[:, 3:] < 0, -1.0, 1.0)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return q.reshape(R.shape[:-2] + (4,))


def _slerp(q0: np.ndarray, q1: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Spherical interpolation of (N, 4) unit quaternions at fractions (N,), along the shorter arc."""
    dot = np.sum(q0 * q1, axis=1)
    q1 = np.where(dot[:, None] < 0, -q1, q1)
    dot = np.clip(np.abs(dot), 0.0, 1.0)
    theta = np.arccos(dot)
    sin_theta = np.sin(theta)
    near = sin_theta < 1e-9  # (almost) the same rotation: the linear blend is exact enough
    safe = np.where(near, 1.0, sin_theta)
    w0 = np.where(near, 1 - s, np.sin((1 - s) * theta) / safe)
    w1 = np.where(near, s, np.sin(s * theta) / safe)
    q = w0[:, None] * q0 + w1[:, None] * q1
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def check_rotations(path: str | Path, R: np.ndarray) -> np.ndarray:
    """Check (N, 3, 3) rotations are orthonormal with det +1 and return them re-orthonormalised (SVD)."""
    err = np.abs(np.swapaxes(R, 1, 2) @ R - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(R)
    bad = np.flatnonzero((err > _ROTATION_TOL) | (det <= 0))
    if bad.size:
        i = int(bad[0])
        raise AnnotationError(
            path,
            "bad_rotation",
            f"row {i} is not a rotation (max |R^T R - I| = {err[i]:.2g}, det = {det[i]:.4g}); "
            f"{bad.size} bad rows",
        )
    U, _, Vt = np.linalg.svd(R)
    return U @ Vt


def unit_quaternions(path: str | Path, q: np.ndarray) -> np.ndarray:
    """Check (N, 4) quaternions have unit norm (within float32 storage error) and normalise them."""
    norm = np.linalg.norm(q, axis=1)
    bad = np.flatnonzero(np.abs(norm - 1) > _QUAT_NORM_TOL)
    if bad.size:
        i = int(bad[0])
        detail = f"row {i} quaternion has norm {norm[i]:.4g}, not 1; {bad.size} bad rows"
        raise AnnotationError(path, "bad_rotation", detail)
    return q / norm[:, None]


# --------------------------------------------------------------------------- files
def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise AnnotationError(path, "missing_file", f"{what} not found")
    return path


def load_npy(path: Path, what: str) -> np.ndarray:
    require_file(path, what)
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise AnnotationError(path, "bad_format", f"cannot read {what}: {exc}") from exc


def check_array(path: str | Path, what: str, array: np.ndarray, shape: tuple) -> np.ndarray:
    """Check an array's shape (None = any length) and finiteness; return it as float64."""
    if array.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, array.shape)):
        want = "(" + ", ".join("N" if s is None else str(s) for s in shape) + ")"
        raise AnnotationError(path, "bad_format", f"{what} must have shape {want}, got {array.shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise AnnotationError(path, "bad_format", f"{what} must be numeric, got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise AnnotationError(path, "bad_format", f"{what} holds NaN or inf")
    return array


def check_frames(path: str | Path, what: str, frames: np.ndarray) -> np.ndarray:
    """Annotation frame numbers: (N,) integers >= 0, strictly increasing, N >= 1."""
    frames = np.asarray(frames)
    if frames.ndim != 1 or frames.size == 0 or not np.issubdtype(frames.dtype, np.integer):
        detail = f"{what} must be a non-empty (N,) integer array, got {frames.dtype} {frames.shape}"
        raise AnnotationError(path, "bad_format", detail)
    if np.any(frames < 0) or np.any(np.diff(frames) <= 0):
        raise AnnotationError(path, "bad_format", f"{what} must be >= 0 and strictly increasing")
    return frames.astype(np.int64)


def sha256_files(paths: list[Path], root: Path) -> str:
    """sha256 over (name relative to root, bytes) of each file, in the given order."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(root) if path.is_relative_to(root) else path.name).encode())
        digest.update(b"\0")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def decode_exr_depth(data: bytes, where: str) -> np.ndarray:
    """Decode a single-channel EXR (the 'Z' channel, or the only channel) to (h, w) float32.

    OpenEXR, not OpenCV: the opencv-python wheels this project pins are built without
    OpenEXR support (`cv2.getBuildInformation()` reports "OpenEXR: NO").
    """
    try:
        channels = OpenEXR.File(io.BytesIO(data), separate_channels=True).channels()
    except Exception as exc:  # OpenEXR raises bare RuntimeError/Exception on corrupt input
        raise AnnotationError(where, "bad_format", f"not a readable EXR image: {exc}") from exc
    if "Z" in channels:
        pixels = channels["Z"].pixels
    elif len(channels) == 1:
        pixels = next(iter(channels.values())).pixels
    else:
        raise AnnotationError(where, "bad_format", f"EXR has channels {sorted(channels)}, expected 'Z'")
    if pixels.ndim != 2:
        raise AnnotationError(where, "bad_format", f"EXR channel must be 2-D, got shape {pixels.shape}")
    return pixels.astype(np.float32)


# --------------------------------------------------------------------------- argument checks
def check_parts(parts) -> tuple[str, ...]:
    parts = tuple(parts)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown or "camera" not in parts:
        raise ValueError(f"parts must include 'camera' and come from {PARTS}, got {parts}")
    return parts


def _check_frame_index(frame_index: np.ndarray) -> np.ndarray:
    frames = np.asarray(frame_index)
    if frames.ndim != 1 or frames.size == 0:
        raise ValueError(f"frame_index must be (T,) with T >= 1, got shape {frames.shape}")
    if not np.issubdtype(frames.dtype, np.integer):
        raise TypeError(f"frame_index must hold integers, got dtype {frames.dtype}")
    if np.any(np.diff(frames) < 0):
        raise ValueError("frame_index must be non-decreasing")
    return frames.astype(np.int64)


def check_size(name: str, size: tuple[int, int]) -> tuple[int, int]:
    if len(size) != 2 or min(size) < 1:
        raise ValueError(f"{name} must be (height, width) > 0, got {size}")
    return int(size[0]), int(size[1])


def _check_affine(A: np.ndarray) -> np.ndarray:
    A = np.asarray(A, np.float64)
    if A.shape != (3, 3) or not np.all(np.isfinite(A)):
        raise ValueError(f"source_to_label must be a finite (3, 3) matrix, got shape {A.shape}")
    if A[0, 1] != 0 or A[1, 0] != 0 or A[0, 0] <= 0 or A[1, 1] <= 0 or not np.array_equal(A[2], [0, 0, 1]):
        raise ValueError(
            "source_to_label must be an axis-aligned scale and offset [[sx, 0, ox], [0, sy, oy], [0, 0, 1]] "
            f"with sx, sy > 0, got {A.tolist()}"
        )
    return A
