"""`worldreel import`: sequences of outside data sets with exact 4D labels -> label-store clips.

A reader (`pipelines.datasets`) gives one sequence's frames, cameras, depth and whatever motion
the set ships, at the set's resolution and frame numbers, in LABELS.md conventions. This module
cuts the sequence into windows of T label frames, resamples to the label rate and resolution,
re-expresses the cameras in the window's first camera (`c2w[0] = I`), derives what follows
exactly from the read arrays, and commits one clip per window with each label part's
provenance (`exact`, `derived`, `estimated`, `absent`; `pipelines.datasets.base.LABEL_PARTS`).

Motion of a label frame pair (a, b), first that applies (per pixel where noted):

1. the set's flow a -> b when it ships one for exactly that step (exact);
2. the set's exact world motion (`read_world_motion`, e.g. Kubric's per-object poses), projected
   into camera b (derived);
3. the set's flows chained through the intermediate frames (derived), valid only where the
   flows a bilinear read blends agree within `CHAIN_MAX_SPREAD_PX`;
4. static pixels (not in the set's dynamic mask, valid depth): the rigid flow of depth and
   cameras (derived). Pixels whose motion none of these gives (movers of sets without dense
   motion, or every pixel when the set has no dynamic mask) are left invalid, or, with
   `unknown_motion="estimate"`, filled by the project's flow labeler (estimated).

Flow is valid where its target lies inside the image and, where the target's 3D point is
known, where that point is visible in frame b (its depth agrees with frame b's depth within
`VISIBILITY_REL_TOL`). Dynamic masks come from the set, else from world motion (a surface
point that moves more than `DYNAMIC_MIN_MOTION` scene units between the key frames). Scene flow
is the world motion itself where the set gives it (derived), else LABELS.md's
P_{k+1}(u + F) - P_k(u) from the key flow, depth and cameras.

Resizing uses `pipelines.decode.ResizeCrop`'s geometry: per-pixel labels (depth, masks, flow,
scene flow) take the source pixel nearest to each label pixel centre, K goes through the
affine map, flow is scaled by it. Nothing raises for a bad sequence: `import_and_commit`
commits a rejected clip with the `DatasetError` reason, so one bad sequence never stops a run.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from labelers.geometry import bilinear_sample, inside_image, pixel_grid
from pipelines.clips import check_clip_id
from pipelines.datasets import FORMATS, list_sequences
from pipelines.datasets.base import DatasetError, SequenceReader
from pipelines.decode import ResizeCrop
from pipelines.geometry import point_maps, scene_flow
from pipelines.labeling import ClipOutcome, plan
from storage import LabelStore

__all__ = [
    "ImportConfig",
    "ImportTask",
    "IMPORTER_VERSION",
    "DYNAMIC_MIN_MOTION",
    "VISIBILITY_REL_TOL",
    "CHAIN_MAX_SPREAD_PX",
    "label_timeline",
    "plan_imports",
    "import_window",
    "import_and_commit",
    "import_tasks",
    "build_estimator",
]

IMPORTER_VERSION = "1"
DYNAMIC_MIN_MOTION = 1e-4  # scene units (0.1 mm when metric) a surface point must move to count as dynamic
VISIBILITY_REL_TOL = 0.03  # a projected point is visible where frame b's depth agrees within this share
CHAIN_MAX_SPREAD_PX = 0.1  # chained flows: the 4 flows a bilinear read blends may differ by this much (px)
_EXACT_RANK = {"exact": 0, "derived": 1, "estimated": 2, "absent": 3}


@dataclass(frozen=True)
class ImportConfig:
    """One import job: which set, where to, and how its sequences become clips.

    Each field's metadata generates `worldreel import`'s option and the Prefect form's field
    (`flows.importing.IMPORT_JOB`, `pipelines.jobconfig`).
    """

    format: str = field(metadata={"choices": tuple(FORMATS), "help": "data set format of --root"})
    root: str = field(metadata={"help": "the data set's folder (as the set is laid out on disk)"})
    store: str = field(metadata={
        "help": "label store: a directory, or s3://bucket/prefix (gs://, az://) with credentials from the "
        "environment (created if missing)", "aliases": ("--out",)})
    split: str | None = field(default=None, metadata={
        "help": "split subfolder of --root, e.g. train (none: all of --root)"})
    sequences: list[str] | None = field(default=None, metadata={
        "help": "import only these sequences (the set's own names; default all)"})
    dataset_options: list[str] | None = field(default=None, metadata={
        "name": "dataset_option", "repeat": True,
        "help": "a reader option KEY=VALUE: bedlam depth_type=z|ray (its depth type is not settled upstream) and "
        "fps=30|6; dynamic-replica camera=left|right"})
    height: int = field(default=480, metadata={"help": "label height in pixels", "ge": 16, "le": 4320})
    width: int = field(default=720, metadata={"help": "label width in pixels", "ge": 16, "le": 7680})
    num_frames: int = field(default=49, metadata={
        "name": "frames", "ge": 2, "help": "label frames per clip T (T - 1 a multiple of the stride)"})
    stride: int = field(default=4, metadata={"ge": 1, "help": "key-frame stride"})
    fps: float | None = field(default=8.0, metadata={
        "gt": 0, "none": "native",
        "help": "label frame rate, resampled by frame number; native (empty in the form): consecutive set frames"})
    window_step: int | None = field(default=None, metadata={
        "ge": 1, "help": "label frames between the starts of consecutive windows of a sequence (none: T, disjoint)"})
    max_windows: int | None = field(default=None, metadata={"ge": 1, "help": "at most this many clips per sequence"})
    unknown_motion: str = field(default="invalid", metadata={
        "choices": ("invalid", "estimate"),
        "help": "pixels whose motion the set does not give (movers without dense motion): leave flow invalid, or "
        "fill it with the flow labeler, marked estimated"})
    flow: str = field(default="dis", metadata={
        "choices": ("dis", "sea-raft"), "help": "flow labeler of --unknown-motion estimate"})
    flow_weights: str | None = field(default=None, metadata={
        "help": "local SEA-RAFT checkpoint (.pth or .safetensors)"})
    device: str = field(default="cpu", metadata={"choices": ("cpu", "cuda"), "help": "device of a neural flow labeler"})
    max_flow_uncertainty_px: float = field(default=3.0, metadata={
        "gt": 0, "help": "estimated flow with a larger expected error (px) is invalid"})

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"format must be one of {sorted(FORMATS)}, got {self.format!r}")
        if self.num_frames < 2 or (self.num_frames - 1) % self.stride:
            raise ValueError(f"frames - 1 ({self.num_frames - 1}) must be a positive multiple of stride {self.stride}")
        for option in self.dataset_options or ():
            if "=" not in option or not option.split("=", 1)[0].strip():
                raise ValueError(f"--dataset-option {option!r}: expected KEY=VALUE")
        if self.unknown_motion not in ("invalid", "estimate"):
            raise ValueError(f"unknown_motion must be 'invalid' or 'estimate', got {self.unknown_motion!r}")
        if self.unknown_motion == "estimate" and self.flow == "sea-raft" and not self.flow_weights:
            raise ValueError("flow 'sea-raft' needs flow_weights: a local SEA-RAFT checkpoint")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def reader_options(self) -> dict[str, str]:
        """`dataset_options` as the reader's keyword arguments."""
        return dict((key.strip(), value.strip()) for key, value in (o.split("=", 1) for o in self.dataset_options or ()))


@dataclass(frozen=True)
class ImportTask:
    """One clip to import: a window of a sequence (small: crosses process boundaries)."""

    clip_id: str
    sequence: str
    frames: tuple[int, ...]  # the set's frame number of each label frame
    error: tuple[str, str, str] | None = None  # (where, reason, detail): a sequence that gives no window


# ====================================================================== planning
def label_timeline(frame_numbers: np.ndarray, native_fps: float, fps: float | None) -> np.ndarray:
    """The set frame number of each label frame of the whole sequence.

    native (fps None): every frame the set has. A rate: label frame j at t_0 + j / fps, taking the
    set frame nearest in time (frame n at n / native_fps; half way: the later one); a rate above
    the native one is refused.
    """
    frame_numbers = np.asarray(frame_numbers, np.int64)
    if fps is None or len(frame_numbers) == 0:
        return frame_numbers
    if not (native_fps > 0 and math.isfinite(native_fps)):
        raise DatasetError("sequence", "bad_values", f"native frame rate {native_fps!r} is not a positive number")
    if fps > native_fps * (1 + 1e-9):
        raise DatasetError("sequence", "unsupported", f"label rate {fps:g} fps is above the set's {native_fps:g} fps")
    per_label = native_fps / fps  # set frames per label frame
    count = int(math.floor((frame_numbers[-1] - frame_numbers[0]) / per_label + 1e-9)) + 1
    targets = frame_numbers[0] + np.arange(count) * per_label
    # nearest frame number, a tie (half way) going to the later frame: reversed argmin finds the last minimum
    distance = np.round(np.abs(frame_numbers[None, :] - targets[:, None]), 6)[:, ::-1]
    return frame_numbers[len(frame_numbers) - 1 - distance.argmin(axis=1)]


def _windows(timeline: np.ndarray, cfg: ImportConfig) -> list[np.ndarray]:
    step = cfg.window_step or cfg.num_frames
    starts = range(0, len(timeline) - cfg.num_frames + 1, step)
    windows = [timeline[s : s + cfg.num_frames] for s in starts]
    return windows[: cfg.max_windows] if cfg.max_windows else windows


def clip_id_for(cfg: ImportConfig, sequence: str, frames: Sequence[int]) -> str:
    """`<format>-<sequence>-<first frame>-<hash>`: the set's sequence name, stable across runs.

    The hash covers the format, split, sequence, the window's frame numbers and the label size, so
    another rate, T or size gives another clip.
    """
    key = f"{cfg.format}|{cfg.split}|{sequence}|{','.join(map(str, frames))}|{cfg.height}x{cfg.width}|{cfg.stride}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", sequence).strip("._-")[:120] or "seq"
    clip_id = f"{cfg.format}-{name}-{int(frames[0]) if len(frames) else 0:06d}-{digest}"
    check_clip_id(clip_id)
    return clip_id


def plan_imports(cfg: ImportConfig) -> list[ImportTask]:
    """Every window of every selected sequence, as tasks; a sequence too short (or unreadable in its
    frame list) becomes one task carrying its error, so it is committed as rejected with a reason.

    Raises:
        DatasetError / ValueError: the root, split or a named sequence is not there (the run cannot start).
    """
    tasks = []
    for reader in list_sequences(cfg.format, cfg.root, cfg.split, cfg.sequences, cfg.reader_options):
        try:
            timeline = label_timeline(reader.frame_numbers, reader.fps, cfg.fps)
            windows = _windows(timeline, cfg)
            if not windows:
                rate = "native rate" if cfg.fps is None else f"{cfg.fps:g} fps"
                raise DatasetError(reader.root, "too_short",
                                   f"{len(timeline)} label frames at {rate}, a clip needs {cfg.num_frames}")
        except DatasetError as e:
            where = reader.root if e.where == "sequence" else e.where
            error = (str(where), e.reason, e.detail)
            tasks.append(ImportTask(clip_id_for(cfg, reader.name, []), reader.name, (), error))
            continue
        tasks += [ImportTask(clip_id_for(cfg, reader.name, w), reader.name, tuple(int(f) for f in w)) for w in windows]
    return tasks


# ====================================================================== one window
class _Frames:
    """Per-window memo of a reader's per-frame reads (world motion is read per pair)."""

    def __init__(self, reader: SequenceReader) -> None:
        self.reader = reader
        self._memo: dict[tuple, Any] = {}

    def get(self, name: str, *args: int) -> Any:
        key = (name, *args)
        if key not in self._memo:
            self._memo[key] = getattr(self.reader, name)(*args)
        return self._memo[key]


@dataclass
class _PairMotion:
    """Motion of a frame pair at source resolution."""

    flow: np.ndarray  # (H, W, 2) float64, 0 where unknown
    known: np.ndarray  # (H, W) motion known (whether or not the target is observable)
    valid: np.ndarray  # (H, W) known, target inside the image and (where checkable) visible
    provenance: str  # of the known pixels: exact or derived ("absent" when none)
    target_world: np.ndarray | None  # (H, W, 3) world point at b of each pixel of a (where known)


def _project(points_world: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    w2c = np.linalg.inv(c2w)
    cam = points_world @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        x, y = cam[..., 0] / z, cam[..., 1] / z
        uv = np.stack([K[0, 0] * x + K[0, 1] * y + K[0, 2], K[1, 1] * y + K[1, 2]], -1)
    uv[~(z > 0)] = np.nan
    return uv, z


def _visible(points_world: np.ndarray, known: np.ndarray, frames: _Frames, b: int) -> np.ndarray:
    """Where the world point of each pixel is inside frame b and not hidden (depth agrees)."""
    K, c2w = frames.get("read_camera", b)
    depth_b, valid_b = frames.get("read_depth", b)
    uv, z = _project(points_world, K, c2w)
    height, width = depth_b.shape
    inside = inside_image(uv, height, width) & known
    all_valid = bilinear_sample(valid_b.astype(np.float64), uv) > 1 - 1e-9
    seen = bilinear_sample(np.where(valid_b, depth_b, 0.0).astype(np.float64), uv)
    with np.errstate(invalid="ignore"):
        agree = np.abs(seen - z) <= VISIBILITY_REL_TOL * z
    return inside & np.nan_to_num(all_valid, nan=0.0).astype(bool) & np.nan_to_num(agree, nan=0.0).astype(bool)


def _world_points(frames: _Frames, a: int) -> tuple[np.ndarray, np.ndarray]:
    K, c2w = frames.get("read_camera", a)
    depth, valid = frames.get("read_depth", a)
    height, width = depth.shape
    grid = pixel_grid(height, width)
    rays = np.concatenate([grid, np.ones((height, width, 1))], -1) @ np.linalg.inv(K).T
    points = (rays * np.where(valid, depth, 0.0)[..., None]) @ c2w[:3, :3].T + c2w[:3, 3]
    return points, valid


def _compose_checked(flow_ab: np.ndarray, valid_ab: np.ndarray, flow_bc: np.ndarray,
                     valid_bc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F_{a->c}(u) = F_{a->b}(u) + F_{b->c}(u + F_{a->b}(u)), bilinear, valid only where the 4 pixels the
    read touches are valid and agree within `CHAIN_MAX_SPREAD_PX` per channel: across a motion edge
    the interpolation would blend two surfaces' motions, and nothing bounds that error."""
    height, width = valid_ab.shape
    target = pixel_grid(height, width) + flow_ab
    inside = inside_image(target, height, width) & valid_ab
    u = np.where(inside, target[..., 0], 0.0)
    v = np.where(inside, target[..., 1], 0.0)
    u0 = np.clip(np.floor(u).astype(np.int64), 0, max(width - 2, 0))
    v0 = np.clip(np.floor(v).astype(np.int64), 0, max(height - 2, 0))
    rows, cols = (v0, v0, v0 + 1, v0 + 1), (u0, u0 + 1, u0, u0 + 1)
    corners = np.stack([flow_bc[r, c] for r, c in zip(rows, cols)])  # (4, H, W, 2)
    corners_valid = np.stack([valid_bc[r, c] for r, c in zip(rows, cols)]).all(axis=0)
    spread = (corners.max(axis=0) - corners.min(axis=0)).max(axis=-1)
    valid = inside & corners_valid & (spread <= CHAIN_MAX_SPREAD_PX)
    du, dv = (u - u0)[..., None], (v - v0)[..., None]
    sampled = corners[0] * (1 - du) * (1 - dv) + corners[1] * du * (1 - dv) + corners[2] * (1 - du) * dv + corners[3] * du * dv
    return np.where(valid[..., None], flow_ab + sampled, 0.0), valid


def _shipped_chain(frames: _Frames, a: int, b: int) -> tuple[np.ndarray, np.ndarray, int] | None:
    """The set's flows a -> ... -> b composed, their validity and the number of hops; None if no chain."""
    flow, valid, current, hops = None, None, a, 0
    while current != b:
        step = frames.get("read_flow", current)
        if step is None or not current < step.target_frame <= b:
            return None
        step_flow = step.flow_px.astype(np.float64)
        step_valid = step.flow_valid.astype(bool) & np.isfinite(step_flow).all(-1)
        if flow is None:
            flow, valid = step_flow, step_valid
        else:
            flow, valid = _compose_checked(flow, valid, step_flow, step_valid)
        current, hops = step.target_frame, hops + 1
    return flow, valid, hops


def _pair_motion(frames: _Frames, a: int, b: int) -> _PairMotion:
    reader = frames.reader
    K_b, c2w_b = frames.get("read_camera", b)
    height, width = reader.image_size
    grid = pixel_grid(height, width)
    world = frames.get("read_world_motion", a, b)
    chain = _shipped_chain(frames, a, b)
    if world is not None:
        target, known = world
        known = known & np.isfinite(target).all(-1)
        visible = _visible(target, known, frames, b)
        if chain is not None and chain[2] == 1:  # the set's own flow for this step: exact
            flow, flow_known, _ = chain
            flow_known = flow_known & np.isfinite(flow).all(-1)
            return _PairMotion(np.where(flow_known[..., None], flow, 0.0), flow_known,
                               flow_known & visible & inside_image(grid + flow, height, width), "exact", target)
        uv, _ = _project(target, K_b, c2w_b)
        flow = np.where(known[..., None], uv - grid, 0.0)
        return _PairMotion(np.nan_to_num(flow), known, visible, "derived", target)
    if chain is not None:
        flow, known, hops = chain
        known = known & np.isfinite(flow).all(-1)
        flow = np.where(known[..., None], flow, 0.0)
        return _PairMotion(flow, known, known & inside_image(grid + flow, height, width),
                           "exact" if hops == 1 else "derived", None)
    dynamic = frames.get("read_dynamic_mask", a, b)
    if dynamic is None:  # moving and still pixels cannot be told apart: nothing follows from the cameras
        zeros = np.zeros((height, width), bool)
        return _PairMotion(np.zeros((height, width, 2)), zeros, zeros, "absent", None)
    points, depth_valid = _world_points(frames, a)
    known = depth_valid & ~np.asarray(dynamic, bool)
    uv, _ = _project(points, K_b, c2w_b)
    flow = np.where(known[..., None], np.nan_to_num(uv - grid), 0.0)
    target = np.where(known[..., None], points, np.nan)  # static: the point stays where it is
    return _PairMotion(flow, known, _visible(points, known, frames, b), "derived", target)


class _ToLabel:
    """Source -> label resolution: `ResizeCrop` geometry, nearest source pixel per label pixel."""

    def __init__(self, src_size: tuple[int, int], size: tuple[int, int]) -> None:
        self.transform = ResizeCrop.from_sizes(*src_size, *size)
        t = self.transform
        rows = np.floor((np.arange(t.height) + t.crop_top + 0.5) / t.scale_y).astype(np.int64)
        cols = np.floor((np.arange(t.width) + t.crop_left + 0.5) / t.scale_x).astype(np.int64)
        self.rows = np.clip(rows, 0, t.src_height - 1)
        self.cols = np.clip(cols, 0, t.src_width - 1)
        self.flow_scale = np.array([t.scale_x, t.scale_y])

    def __call__(self, image: np.ndarray) -> np.ndarray:
        return image[self.rows][:, self.cols]

    def flow(self, flow_px: np.ndarray) -> np.ndarray:
        return self(flow_px) * self.flow_scale


def _combine(provenances: Iterable[str]) -> str:
    present = [p for p in provenances if p != "absent"]
    return max(present, key=_EXACT_RANK.__getitem__) if present else "absent"


@dataclass
class _Window:
    """Geometry of one window at label resolution, and what every part of it needs."""

    frames: list[int]  # set frame numbers
    stride: int
    to_label: _ToLabel
    world_to_first: np.ndarray  # (4, 4)
    K: np.ndarray  # (T, 3, 3)
    c2w: np.ndarray  # (T, 4, 4), c2w[0] = I
    depth: np.ndarray  # (T, H, W)
    depth_valid: np.ndarray
    has_world_motion: bool

    @property
    def key_frames(self) -> list[int]:
        return self.frames[:: self.stride]


@dataclass
class _Flows:
    """Flows of several label frame pairs at label resolution, with provenance and the source motions."""

    flow: np.ndarray  # (P, H, W, 2) float32
    valid: np.ndarray
    uncertainty: np.ndarray
    provenance: str
    raw: list[_PairMotion]


def _window(memo: _Frames, frames: list[int], cfg: ImportConfig) -> _Window:
    reader = memo.reader
    to_label = _ToLabel(reader.image_size, (cfg.height, cfg.width))
    cams = [memo.get("read_camera", f) for f in frames]
    c2w_world = np.stack([c for _, c in cams])
    _check_cameras(reader, frames, c2w_world)
    world_to_first = np.linalg.inv(c2w_world[0])
    c2w = np.einsum("ij,tjk->tik", world_to_first, c2w_world)
    c2w[0] = np.eye(4)
    depth_src = [memo.get("read_depth", f) for f in frames]
    depth = np.stack([to_label(np.where(v, d, 0.0)) for d, v in depth_src]).astype(np.float32)
    key = frames[:: cfg.stride]
    return _Window(
        frames=frames, stride=cfg.stride, to_label=to_label, world_to_first=world_to_first,
        K=np.stack([to_label.transform.apply_K(k) for k, _ in cams]), c2w=c2w, depth=depth,
        depth_valid=np.stack([to_label(v) for _, v in depth_src]) & (depth > 0),
        has_world_motion=memo.get("read_world_motion", key[0], key[1]) is not None,
    )


def _flows(memo: _Frames, win: _Window, pairs: list[tuple[int, int]], cfg: ImportConfig, estimator: Any | None,
           rgb: np.ndarray | None) -> _Flows:
    """Flows of label frame pairs (i, j): what the set gives, unknown pixels estimated when asked."""
    raw = [_pair_motion(memo, win.frames[i], win.frames[j]) for i, j in pairs]
    flow = np.stack([win.to_label.flow(m.flow) for m in raw])
    valid = np.stack([win.to_label(m.valid) for m in raw])
    unknown = ~np.stack([win.to_label(m.known) for m in raw])
    uncertainty = np.zeros(valid.shape, np.float32)
    provenance = _combine(m.provenance for m in raw)
    if estimator is not None and unknown.any():
        from labelers.flow import compute_pair_flows

        est = compute_pair_flows(estimator, rgb, pairs, cfg.max_flow_uncertainty_px)
        fill = unknown & est.valid_fwd
        flow = np.where(fill[..., None], est.flow_fwd_px, flow)
        valid = valid | fill
        uncertainty = np.where(fill, est.uncertainty_fwd_px, 0.0).astype(np.float32)
        if fill.any():
            provenance = "estimated"
    flow = np.where(valid[..., None], flow, 0.0).astype(np.float32)
    return _Flows(flow, valid, uncertainty, provenance if valid.any() else "absent", raw)


def import_window(
    reader: SequenceReader, frames: Sequence[int], cfg: ImportConfig, estimator: Any | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Import one window: the stored arrays of LABELS.md and the clip attributes.

    Args:
        reader: the sequence.
        frames: the set's frame number of each of the T label frames.
        estimator: a `labelers.flow.FlowEstimator` for `unknown_motion="estimate"`.

    Raises:
        DatasetError: a file is missing or unreadable, values are bad (the clip is rejected).
    """
    frames = [int(f) for f in frames]
    T, stride = len(frames), cfg.stride
    if T != cfg.num_frames:
        raise ValueError(f"window has {T} frames, the config {cfg.num_frames}")
    memo = _Frames(reader)
    win = _window(memo, frames, cfg)
    rgb = None
    if estimator is not None:
        rgb = win.to_label.transform.apply_frames(np.stack([reader.read_rgb(f) for f in frames]))
    flows = _flows(memo, win, [(t, t + 1) for t in range(T - 1)], cfg, estimator, rgb)
    key_flows = _flows(memo, win, [(k, k + stride) for k in range(0, T - 1, stride)], cfg, estimator, rgb)
    dynamic, dyn_prov = _dynamic_masks(memo, win, key_flows.raw)
    flow3d, flow3d_valid, sf_prov = _scene_flow(memo, win, key_flows, dynamic, dyn_prov)
    arrays = {
        "frame_index": np.asarray(frames, np.int64),
        "timestamps": np.asarray(frames, np.float64) / reader.fps,
        "K": win.K.astype(np.float32),
        "c2w": win.c2w.astype(np.float32),
        "depth": win.depth,
        "depth_valid": win.depth_valid,
        "flow": flows.flow,
        "flow_valid": flows.valid,
        "flow_uncertainty": flows.uncertainty,
        "key_flow": key_flows.flow,
        "key_flow_valid": key_flows.valid,
        "dynamic_mask": dynamic,
        "scene_flow": flow3d.astype(np.float32),
        "scene_flow_valid": flow3d_valid,
    }
    provenance = {**reader.provenance, "flow": flows.provenance, "key_flow": key_flows.provenance,
                  "dynamic_mask": dyn_prov, "scene_flow": sf_prov}
    if not win.depth_valid.any():
        provenance["depth"] = "absent"
    return arrays, _attrs(reader, frames, cfg, arrays, provenance, estimator, memo)


def _check_cameras(reader: SequenceReader, frames: list[int], c2w: np.ndarray) -> None:
    if not np.isfinite(c2w).all():
        raise DatasetError(reader.root, "bad_values", "camera poses are not finite")
    R = c2w[:, :3, :3]
    error = np.abs(np.einsum("tji,tjk->tik", R, R) - np.eye(3)).max(axis=(1, 2))
    if (error > 1e-3).any() or (np.linalg.det(R) < 0).any():
        t = int(np.argmax(error))
        raise DatasetError(reader.root, "bad_values", f"camera rotation of frame {frames[t]} is not a rotation")


def _moved(memo: _Frames, frame: int, target: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Where the surface seen at `frame` lies more than `DYNAMIC_MIN_MOTION` from `target` (source resolution)."""
    start, _ = _world_points(memo, frame)
    return (np.linalg.norm(np.nan_to_num(target - start), axis=-1) > DYNAMIC_MIN_MOTION) & known


def _dynamic_masks(memo: _Frames, win: _Window, key_raw: list[_PairMotion]) -> tuple[np.ndarray, str]:
    """(S, H, W) M_k and its provenance: the set's masks, else world motion between key frames."""
    key_frames = win.key_frames
    # M_k: motion between key frames k and k+1; the last key frame's, from the key frame before (LABELS.md)
    steps = [*zip(key_frames[:-1], key_frames[1:]), (key_frames[-1], key_frames[-2])]
    shipped = [memo.get("read_dynamic_mask", a, b) for a, b in steps]
    if all(m is not None for m in shipped):
        given = memo.reader.provenance.get("dynamic_mask", "exact")
        return np.stack([win.to_label(np.asarray(m, bool)) for m in shipped]), given if given != "absent" else "derived"
    if not win.has_world_motion:
        return np.zeros((len(key_frames), *win.depth.shape[1:]), bool), "absent"
    masks = [win.to_label(_moved(memo, key_frames[k], m.target_world, m.known)) for k, m in enumerate(key_raw)]
    # the last key frame: its motion from the key frame before (LABELS.md)
    back, known = memo.get("read_world_motion", key_frames[-1], key_frames[-2])
    masks.append(win.to_label(_moved(memo, key_frames[-1], back, known)))
    return np.stack(masks), "derived"


def _scene_flow(memo: _Frames, win: _Window, key_flows: _Flows, dynamic: np.ndarray,
                dyn_prov: str) -> tuple[np.ndarray, np.ndarray, str]:
    """(S-1, H, W, 3) F3d_k, its validity and provenance (LABELS.md; first-frame coordinates)."""
    shape = (dynamic.shape[0] - 1, *dynamic.shape[1:])
    if dyn_prov == "absent":
        return np.zeros((*shape, 3)), np.zeros(shape, bool), "absent"
    key = slice(None, None, win.stride)
    if win.has_world_motion:  # the surface's own motion: no sampling of the next point map needed
        out, valid = np.zeros((*shape, 3)), np.zeros(shape, bool)
        for k, motion in enumerate(key_flows.raw):
            start, start_valid = _world_points(memo, win.key_frames[k])
            moved = np.nan_to_num(motion.target_world - start) @ win.world_to_first[:3, :3].T
            v = dynamic[k] & win.to_label(start_valid & motion.known) & key_flows.valid[k] & win.depth_valid[key][k]
            out[k][v] = win.to_label(moved)[v]
            valid[k] = v
        return out, valid, "derived" if valid.any() else "absent"
    points = point_maps(win.depth[key], win.depth_valid[key], win.K[key], win.c2w[key])
    estimated = key_flows.provenance == "estimated"  # then held to the rigid-fit test, as labelled clips are
    flow3d, valid = scene_flow(points, win.depth[key], win.depth_valid[key], key_flows.flow, key_flows.valid, dynamic,
                               flow_error_px=None, max_error_fraction=None,
                               max_rigid_residual=0.5 if estimated else None)
    provenance = ("estimated" if estimated else "derived") if valid.any() else "absent"
    return flow3d, valid, provenance


def _attrs(reader: SequenceReader, frames: list[int], cfg: ImportConfig, arrays: dict, provenance: dict,
           estimator: Any | None, memo: _Frames) -> dict[str, Any]:
    c2w = arrays["c2w"].astype(np.float64)
    fps_native = float(reader.fps)
    steps = np.diff(frames)
    importer = {"name": f"import-{reader.dataset}", "version": IMPORTER_VERSION,
                "params": {"format": cfg.format, "licence": reader.licence, "visibility_rel_tol": VISIBILITY_REL_TOL,
                           "dynamic_min_motion": DYNAMIC_MIN_MOTION, "unknown_motion": cfg.unknown_motion},
                "weights_sha256": None}
    labelers = {family: importer for family in ("camera", "depth", "mask")}
    labelers["flow"] = importer
    if estimator is not None and provenance["flow"] == "estimated":
        labelers["flow"] = {**importer, "estimator": {"name": estimator.name, "version": estimator.version,
                                                      "params": _plain(estimator.params),
                                                      "weights_sha256": getattr(estimator, "weights_sha256", None)}}
    qa = {
        "dynamic_ratio": float(arrays["dynamic_mask"].mean()),
        "flow_valid_fraction": float(arrays["flow_valid"].mean()),
        "depth_valid_fraction": float(arrays["depth_valid"].mean()),
        "scene_flow_valid_fraction": float(arrays["scene_flow_valid"].mean()),
        "trajectory_length": float(np.linalg.norm(np.diff(c2w[:, :3, 3], axis=0), axis=1).sum()),
    }
    qa.update(_flow_motion_gap(memo, frames))
    start = frames[0] / fps_native
    return {
        "source": {
            "dataset": reader.dataset,
            "uri": str(Path(reader.root).resolve()),
            "sequence": reader.name,
            "start_sec": float(start),
            "end_sec": float(frames[-1] / fps_native),
            "caption": "",
            "fps": fps_native,
            "size": list(reader.image_size),
            "frame_numbers": list(frames),
            "frames": [str(Path(reader.rgb_path(f)).resolve()) for f in frames],
            "licence": reader.licence,
        },
        "fps": float(cfg.fps) if cfg.fps is not None else fps_native / float(np.mean(steps) if len(steps) else 1.0),
        "fps_target": cfg.fps,
        "source_stride": float(np.mean(steps)) if len(steps) else 1.0,
        "stride": cfg.stride,
        "height": cfg.height,
        "width": cfg.width,
        "T": len(frames),
        "metric_scale": bool(reader.metric_scale),
        "labelers": labelers,
        "provenance": provenance,
        "refused": dict(reader.refusals),  # parts the set ships but the reader does not decode, and why
        "qa": qa,
        "config": _plain(cfg.to_dict()),
    }


def _flow_motion_gap(memo: _Frames, frames: list[int]) -> dict[str, float]:
    """Median |shipped flow - world-motion flow| (px) of the first step, where the set gives both.

    Kubric's users report its rendered flow disagreeing with depth and poses
    (google-research/kubric#301): this QA metric shows it per clip instead of hiding it.
    """
    reader = memo.reader
    a, b = frames[0], frames[1]
    shipped = memo.get("read_flow", a)
    world = memo.get("read_world_motion", a, b)
    if shipped is None or world is None or shipped.target_frame != b:
        return {}
    target, known = world
    K_b, c2w_b = memo.get("read_camera", b)
    uv, _ = _project(target, K_b, c2w_b)
    grid = pixel_grid(*reader.image_size)
    both = known & shipped.flow_valid & np.isfinite(uv).all(-1)
    if not both.any():
        return {}
    gap = np.linalg.norm(shipped.flow_px - (uv - grid), axis=-1)[both]
    return {"flow_motion_gap_px": float(np.median(gap))}


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


# ====================================================================== commit, batches
def build_estimator(cfg: ImportConfig) -> Any | None:
    """The flow labeler of `unknown_motion="estimate"` (None otherwise)."""
    if cfg.unknown_motion != "estimate":
        return None
    if cfg.flow == "sea-raft":
        from labelers.sea_raft import SeaRaftFlow

        return SeaRaftFlow.from_checkpoint(cfg.flow_weights, device=cfg.device)
    from labelers.dis_flow import DisFlow

    return DisFlow()


def _rejected_attrs(cfg: ImportConfig, task: ImportTask, reader: SequenceReader | None) -> dict[str, Any]:
    uri = str(Path(reader.root).resolve()) if reader is not None else str(Path(cfg.root) / task.sequence)
    return {
        "source": {"dataset": cfg.format, "uri": uri, "sequence": task.sequence, "start_sec": 0.0, "end_sec": 0.0,
                   "caption": "", "frame_numbers": list(task.frames)},
        "qa": {},
        "labelers": {},
        "config": _plain(cfg.to_dict()),
    }


def import_and_commit(task: ImportTask, cfg: ImportConfig, store: LabelStore, reader: SequenceReader | None,
                      estimator: Any | None = None) -> ClipOutcome:
    """Import one window and commit it; a bad sequence is committed as rejected with its reason. Never raises."""
    seconds: dict[str, float] = {}
    replace = store.has_clip(task.clip_id)
    start = time.perf_counter()
    error: str | None = None
    try:
        if task.error is not None:
            raise DatasetError(*task.error)
        if reader is None:
            raise DatasetError(Path(cfg.root) / task.sequence, "missing_file", "sequence is not there")
        arrays, attrs = import_window(reader, task.frames, cfg, estimator)
    except DatasetError as e:
        reasons = [f"{e.reason}: {e.where}: {e.detail}"]
    except Exception as e:  # an importer bug or an unforeseen input: recorded, the run goes on
        reasons = [f"error: {''.join(traceback.format_exception_only(type(e), e)).strip()[:300]}"]
        error = traceback.format_exc(limit=8)
    else:
        seconds["import"] = time.perf_counter() - start
        start = time.perf_counter()
        store.commit(task.clip_id, arrays, attrs, replace=replace)
        seconds["write"] = time.perf_counter() - start
        return ClipOutcome(task.clip_id, "accepted", qa=attrs["qa"], seconds=seconds)
    seconds["import"] = time.perf_counter() - start
    store.commit_rejected(task.clip_id, _rejected_attrs(cfg, task, reader), reasons, replace=replace)
    return ClipOutcome(task.clip_id, "rejected", reasons=reasons, seconds=seconds, error=error)


def import_tasks(tasks: Sequence[ImportTask], cfg: ImportConfig, store: LabelStore, redo_failed: bool = False,
                 progress: Callable[[ClipOutcome], None] | None = None) -> list[ClipOutcome]:
    """Import tasks one after the other in this process (what each Ray task runs on its batch), skipping
    committed clips."""
    todo, outcomes = plan(tasks, store, redo_failed)
    estimator = build_estimator(cfg) if todo else None
    readers: dict[str, SequenceReader | None] = {}
    for task in todo:
        if task.sequence not in readers and task.error is None:
            try:
                found = list_sequences(cfg.format, cfg.root, cfg.split, [task.sequence], cfg.reader_options)
                readers[task.sequence] = found[0] if found else None
            except DatasetError as e:  # the sequence vanished or broke since planning: its reason, per clip
                task = ImportTask(task.clip_id, task.sequence, task.frames, (e.where, e.reason, e.detail))
        outcome = import_and_commit(task, cfg, store, readers.get(task.sequence), estimator)
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome)
    return outcomes
