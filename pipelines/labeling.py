"""The per-clip labeling path: manifest row -> decoded frames -> labels -> QA -> commit.

DESIGN.md "Data path of one clip", as plain functions that run in-process, in a Ray worker
or under a Prefect flow alike:

    decode -> flow (consecutive and key pairs, both directions, forward-backward check)
           -> camera -> dynamic masks -> depth -> key-pair flow again from depth and cameras
           -> key-frame masks -> point maps and scene flow -> QA -> commit

`label_and_commit` never raises for a bad clip: every failure becomes a rejected clip in the
store with a reason naming the stage and the cause, so one bad clip never stops a run and a
re-run does not retry it unless asked (`redo_failed`). It returns a small `ClipOutcome`
(never arrays), which is what orchestration collects.
"""

from __future__ import annotations

import time
import traceback
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import cv2
import numpy as np

from labelers.depth import MultiViewDepth, MultiViewDepthConfig
from labelers.dynamic_mask import label_depth_and_masks, label_masks_given_depth
from labelers.flow import (
    CHAIN_DISAGREE_GAP_PX,
    CHAIN_FILL_VERSION,
    CHAIN_MIN_CORRECTION_PX,
    CHAIN_REPLACE_GAP_PX,
    FlowEstimator,
    PairFlows,
    ValidityChecks,
    compute_pair_flows,
    consecutive_pairs,
    fill_from_chains,
    key_frame_pairs,
)
from labelers.guided_flow import (
    CHAIN_START_VERSION,
    GEOMETRY_REL_TOL,
    GUIDED_KEY_FLOW_VERSION,
    INPAINT_RADIUS_PX,
    PRIOR_SMOOTH_SIGMA_PX,
    GuidedKeyFlows,
    chain_guided_pair_flows,
    direct_flow_on_movers,
    invalid_against_depth,
)
from labelers.overlay import STATIC_OVERLAY_VERSION, StaticOverlayConfig, static_overlay
from pipelines.clips import ClipRejected, ClipSpec
from pipelines.decode import SHOT_CUT_POLICIES, DecodeConfig, DecodedClip, decode_clip
from pipelines.geometry import SceneFlowTolerance, key_flow_error_px, point_maps, scene_flow
from pipelines.quality import QualityThresholds, clip_quality, gate
from pipelines.shot_cuts import DEFAULT_CUT_THRESHOLD
from storage import LabelStore

__all__ = [
    "LabelConfig",
    "ClipOutcome",
    "Backends",
    "build_backends",
    "plan",
    "label_clip",
    "label_stages",
    "FrameLabels",
    "Overlays",
    "label_scene_flow",
    "label_and_commit",
    "label_clips",
    "summarise",
    "STAGES",
]

STAGES = ("decode", "flow", "camera", "depth_and_masks", "scene_flow", "qa", "write")
FLOW_BACKENDS = ("dis", "sea-raft")
CAMERA_BACKENDS = ("sfm", "import")
DEPTH_BACKENDS = ("mvs", "neural", "import")


@dataclass(frozen=True)
class LabelConfig:
    """How clips are labelled (serialisable; the same object drives the CLI and the flows).

    Each field's metadata (`help`, bounds `ge`/`gt`/`le`/`lt`, `choices`, public `name`) generates
    `worldreel label`'s option and the Prefect form's field (`flows.labeling.LABEL_JOB`, see
    `pipelines.jobconfig`): a new field needs `metadata={"help": ...}` and appears in both.

    Attributes:
        height, width: label resolution.
        num_frames: T label frames per clip.
        stride: key-frame stride (S = (T - 1) / stride + 1 key frames).
        flow: "dis" (weight-free OpenCV) or "sea-raft" (needs `flow_weights`).
        camera: "sfm" (weight-free structure from motion) or "import" (outside annotations).
        depth: "mvs" (weight-free multi-view), "neural" (needs `depth_weights`) or "import".
        depth_near_views: `labelers.depth.MultiViewDepthConfig.near_views`.
        device: torch device of neural backends ("cpu", "cuda").
        max_flow_uncertainty_px: flow with a larger expected error is invalid.
        scene_flow_max_uncertainty_px: key flow with a larger expected error gives no valid scene
            flow (None: the flow validity alone). 0.5 px suits the DIS backend's forward-backward
            uncertainty; SEA-RAFT's uncertainty never drops below ~1.6 px, so use None or ~2.5 there.
        scene_flow_border_px: scene flow is valid only this far inside a moving region.
        scene_flow_tolerance_rel, scene_flow_tolerance_m: the accuracy a valid scene-flow pixel is
            held to, max(rel |F3d|, m) (`pipelines.geometry.SceneFlowTolerance`).
        scene_flow_max_error_fraction: the key flow's expected error (`key_flow_error_px`),
            carried into metres at the target, must stay within this share of the tolerance.
        scene_flow_max_rigid_residual: distance to a robust rigid fit of the moving region's
            motion allowed, as a share of the tolerance (`rigid_motion_residual`).
        fps_max: short clips: the fastest label rate a clip too short for T frames at its
            target rate may be sampled at (`pipelines.decode`); None keeps the target rate.
        static_overlays: find static overlays on a moving camera's frames (`labelers.overlay`) and
            keep the camera, flow, depth and masks off them.
        shot_cuts, shot_cut_threshold: what a shot cut among the label frames does ("skip" to
            the shot after it, "reject", "ignore") and the content change that is a cut
            (`pipelines.decode`, `pipelines.shot_cuts`).
        unknown_focal, prior_fov_x_deg: what a moving camera gets when its tracks do not
            determine the focal length (`labelers.sfm.SfmConfig`), and the field of view assumed.
        uncertain_focal_max_std: the largest relative std of an estimated focal kept on a turning
            camera when its error cannot bend the labels (`labelers.sfm.focal_prior`); 0: none.
        key_flow_chain_start: with multi-view depth, estimate the key-pair flow from the consecutive
            flows composed over the key interval as a start (`labelers.guided_flow.chain_guided_pair_flows`)
            rather than from zero motion: a search over the whole interval locks onto wrong matches
            in repeated texture, and loses fast movers. What it adds is more often 1-3 px off on
            weak texture (the fused consecutive flows agree with their own mirror, so the
            forward-backward check keeps it); depth triangulated from the same flow shares that
            error, an import's or a network's does not and the masks flag it, so with those the
            key pairs are searched from zero. Off by default: on held-out seeds 1500-1501 it raised
            IoU and key and depth coverage, on seeds 1700-1701 it raised false alarms on 5 of 5
            clips, one over 1 % (docs/benchmarks.md, "Session 38"). Recorded in the flow labeler's
            params where applied.
        key_flow_chains: repair the first key-pair flow with the consecutive flows composed
            over the key interval (`labelers.flow.fill_from_chains`): a direct estimate loses
            fast movers that single-frame steps track, and can lock onto wrong matches in
            repeated texture. Recorded in the flow labeler's params.
        key_flow_guided: with multi-view or imported depth, estimate the key pairs' flows again once
            depth and cameras are known, starting from the rigid flow they predict
            (`labelers.guided_flow`): near the camera, weak texture magnified between key frames
            sends a search from zero motion 1-4 px wrong in both directions alike. The key flow
            labels, the key-frame masks and scene flow use it. Recorded in the flow labeler's params.
        key_flow_geometry_px: with multi-view depth, key-pair flow is invalid where its source pixel
            has valid depth and the flow lands farther than this (plus 5 % of its length) from the
            rigid flow of that depth and the cameras (`labelers.guided_flow.invalid_against_depth`):
            repeated texture lets a flow lock one period off and pass its own checks. None: no
            test. QA: key_flow_geometry_invalid_fraction; the camera gate reads the flow as measured.
        thresholds: quality gates.
    """

    height: int = field(default=480, metadata={"help": "label height in pixels", "ge": 16, "le": 4320})
    width: int = field(default=720, metadata={"help": "label width in pixels", "ge": 16, "le": 7680})
    num_frames: int = field(default=49, metadata={
        "name": "frames", "ge": 2, "help": "frames per clip T (T - 1 a multiple of the stride)"})
    stride: int = field(default=4, metadata={"ge": 1, "help": "key-frame stride"})
    flow: str = field(default="dis", metadata={
        "choices": FLOW_BACKENDS, "help": "optical-flow backend: dis (weight-free) or sea-raft (needs flow weights)"})
    flow_weights: str | None = field(default=None, metadata={
        "help": "local SEA-RAFT checkpoint (.pth or .safetensors)"})
    camera: str = field(default="sfm", metadata={
        "choices": CAMERA_BACKENDS, "help": "camera backend: sfm (weight-free) or import (annotations)"})
    depth: str = field(default="mvs", metadata={
        "choices": DEPTH_BACKENDS,
        "help": "depth backend: mvs (weight-free multi-view), neural (needs depth weights) or import"})
    depth_weights: str | None = field(default=None, metadata={
        "help": "local folder of a transformers depth model"})
    depth_near_views: int = field(default=MultiViewDepthConfig().near_views, metadata={
        "ge": 0, "le": MultiViewDepthConfig().max_views,
        "help": "with multi-view depth, this many of each frame's views are its nearest frames, not the longest "
        "baselines (more coverage where long composed flows are lost; part of what they add lies too near beside "
        "occluders)"})
    device: str = field(default="cpu", metadata={"choices": ("cpu", "cuda"), "help": "device of neural labelers"})
    max_flow_uncertainty_px: float = field(default=3.0, metadata={
        "gt": 0, "help": "flow with a larger expected error (px) is invalid"})
    scene_flow_max_uncertainty_px: float | None = field(default=0.5, metadata={
        "gt": 0, "help": "key flow with a larger expected error (px) gives no valid scene flow; none: flow validity "
        "alone (the default with sea-raft, whose uncertainty never drops below ~1.6 px)"})
    scene_flow_border_px: int = field(default=2, metadata={
        "ge": 0, "help": "scene flow is valid only this many pixels inside a moving region"})
    scene_flow_tolerance_rel: float = field(default=0.05, metadata={
        "ge": 0, "help": "accuracy scene flow is held to: this share of the motion's length, or the floor below"})
    scene_flow_tolerance_m: float = field(default=0.01, metadata={
        "gt": 0, "help": "floor of the scene-flow accuracy tolerance, in scene units (metres when metric)"})
    scene_flow_max_error_fraction: float | None = field(default=0.5, metadata={
        "gt": 0, "help": "scene flow is valid only where the key flow's expected error (its uncertainty, its gap "
        "to the chained consecutive flows, the photometric correction), in metres at the target, is at most this "
        "share of the tolerance; "
        "none: no test"})
    scene_flow_max_rigid_residual: float | None = field(default=0.5, metadata={
        "gt": 0, "help": "scene flow is valid only within this share of the tolerance of a robust rigid fit of its "
        "moving region's motion (up to 3 rigid parts per region); none: no test"})
    fps_max: float | None = field(default=None, metadata={
        "gt": 0, "help": "short clips: a clip too short for T frames at --fps is sampled at the slowest rate that "
        "fits them, (T-1)/(end-start), if that is at most this many fps and the source rate (the rate used is the "
        "clip's fps attribute); none (default): keep --fps exactly and reject short clips as too_short"})
    static_overlays: bool = field(default=True, metadata={
        "help": "find captions and logos that stay put in the margins of a moving camera's picture "
        "(labelers.overlay) and keep corners, flow, depth and masks off them (QA: static_overlay_fraction)"})
    shot_cuts: str = field(default="skip", metadata={
        "choices": SHOT_CUT_POLICIES, "help": "a shot cut among the label frames: skip (start the clip again at the "
        "new shot, recorded as the source attribute shot_cuts_skipped), reject (reason shot_cut) or ignore"})
    shot_cut_threshold: float = field(default=DEFAULT_CUT_THRESHOLD, metadata={
        "gt": 0, "help": "content change between consecutive source frames that is a shot cut (PySceneDetect's "
        "content score, 0-255)"})
    vipe_frame_skip: int | None = field(default=None, metadata={
        "ge": 1, "none": "auto", "help": "ViPE streams.frame_skip, used when ViPE's rgb/<name>.mp4 is absent (auto: "
        "read from that video, else 1)"})
    vipe_min_depth_m: float = field(default=0.0, metadata={"ge": 0, "help": "imported ViPE depth is valid above this (m)"})
    vipe_max_depth_m: float = field(default=500.0, metadata={
        "gt": 0, "help": "imported ViPE depth is valid up to this (m); ViPE clamps the sky at 1000 m"})
    video_cache_dir: str | None = field(default=None, metadata={
        "help": "local cache of source videos read from object storage (s3://, gs://, az:// video paths; default: "
        "worldreel-video-cache in the system temp folder)"})
    video_cache_gb: float = field(default=20.0, metadata={
        "gt": 0, "help": "size bound of that cache per machine: least recently used videos are deleted beyond it"})
    unknown_focal: str = field(default="prior", metadata={
        "choices": ("reject", "prior"),
        "help": "a moving camera whose tracks do not determine the focal length (no intrinsics in the manifest, "
        "little rotation, e.g. a dolly): label it with the prior field of view when its rotations, sparse points "
        "and dense depth do not depend on the focal (recorded as the QA metric camera_intrinsics_prior), or reject "
        "it"})
    prior_fov_x_deg: float = field(default=60.0, metadata={
        "gt": 10, "lt": 170, "help": "horizontal field of view (degrees) assumed for unknown intrinsics: fixed "
        "cameras, and moving ones under --unknown-focal prior"})
    uncertain_focal_max_std: float = field(default=0.04, metadata={
        "ge": 0, "lt": 1, "help": "a turning camera whose tracks give the focal length with a relative std over "
        "0.02 keeps it up to this std when three stds leave at most 0.1 deg of rotation error, its cameras explain "
        "the dense flow's background and the depth does not depend on it (QA: camera_focal_uncertain_rel_std); "
        "0 rejects such clips"})
    key_flow_chain_start: bool = field(default=False, metadata={
        "help": "with multi-view depth, estimate key-pair flow from the composed consecutive flows as a start, not "
        "from zero motion (higher IoU and coverage, more false alarms on fresh seeds: off by default)"})
    key_flow_chains: bool = field(default=True, metadata={
        "help": "repair the first key-pair flow with the composed consecutive flows where they are valid and it is not"})
    key_flow_guided: bool = field(default=True, metadata={
        "help": "estimate the key-pair flows again from the labelled or imported depth and cameras (not with "
        "--depth neural)"})
    key_flow_geometry_px: float | None = field(default=2.0, metadata={
        "gt": 0, "help": "with multi-view depth, key-pair flow is invalid where the source pixel's depth is valid and "
        "the flow lands farther than this (px, plus 5 % of its length) from the rigid flow of that depth and the "
        "cameras (repeated texture: a match one period off); none: no test"})
    thresholds: QualityThresholds = field(default_factory=QualityThresholds, metadata={
        "name": "gates", "flag": "--gate", "help": "quality gate overrides, e.g. min_depth_valid_fraction_off_infinity=0.2"})

    def __post_init__(self) -> None:
        if self.num_frames < 2 or (self.num_frames - 1) % self.stride:
            raise ValueError(f"num_frames - 1 ({self.num_frames - 1}) must be a positive multiple of stride {self.stride}")
        for name, value, allowed in (
            ("flow", self.flow, FLOW_BACKENDS),
            ("camera", self.camera, CAMERA_BACKENDS),
            ("depth", self.depth, DEPTH_BACKENDS),
        ):
            if value not in allowed:
                raise ValueError(f"{name} backend must be one of {allowed}, got {value!r}")
        if self.flow == "sea-raft" and self.scene_flow_max_uncertainty_px is not None and self.scene_flow_max_uncertainty_px < 1.7:
            raise ValueError("SEA-RAFT uncertainty is never below ~1.6 px: set scene_flow_max_uncertainty_px to None or >= 1.7")
        if self.flow == "sea-raft" and not self.flow_weights:
            raise ValueError("flow 'sea-raft' needs flow_weights: a local SEA-RAFT checkpoint (.pth or .safetensors)")
        if self.depth_near_views and self.depth != "mvs":
            raise ValueError(f"depth_near_views applies to multi-view depth (depth 'mvs') only, got depth {self.depth!r}")
        if self.depth == "neural" and not self.depth_weights:
            raise ValueError("depth 'neural' needs depth_weights: a local folder of a transformers depth model")
        if self.vipe_min_depth_m >= self.vipe_max_depth_m:
            raise ValueError(f"vipe_min_depth_m {self.vipe_min_depth_m} must be below vipe_max_depth_m {self.vipe_max_depth_m}")
        if (self.camera == "import") != (self.depth == "import"):
            raise ValueError("camera and depth must both be 'import' or neither: imported depth and poses share one scale")

    @property
    def decode(self) -> DecodeConfig:
        return DecodeConfig(
            num_frames=self.num_frames, height=self.height, width=self.width, num_threads=1, fps_max=self.fps_max,
            video_cache_dir=self.video_cache_dir, video_cache_gb=self.video_cache_gb, shot_cuts=self.shot_cuts,
            shot_cut_threshold=self.shot_cut_threshold,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ClipOutcome:
    """What happened to one clip (small: crosses process boundaries, feeds summaries)."""

    clip_id: str
    status: str  # "accepted", "rejected" or "skipped"
    reasons: list[str] = field(default_factory=list)
    qa: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    node: str | None = None  # the machine (Ray node) that labelled it; None for skipped clips

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Backends:
    """The labeler objects of one worker (built once, reused for every clip it labels).

    Any object satisfying the family's protocol fits: orchestration swaps in proxies for
    models that live in a Ray actor.
    """

    flow: FlowEstimator
    camera: Any
    depth: Any
    masks: Any

    def describe(self) -> dict[str, dict[str, Any]]:
        """The clip's `labelers` attribute: name, version, parameters per family."""
        out = {}
        for family in ("flow", "camera", "depth", "masks"):
            backend = getattr(self, family)
            out["mask" if family == "masks" else family] = {
                "name": backend.name,
                "version": backend.version,
                "params": _jsonable(backend.params),
                "weights_sha256": getattr(backend, "weights_sha256", None),
            }
        return out


def build_backends(cfg: LabelConfig, skip: Sequence[str] = ()) -> Backends:
    """Construct the labelers `cfg` names (neural ones load their local weights here, once).

    Args:
        skip: families not to build here (orchestration supplies them, e.g. from a GPU actor).
    """
    from labelers.sfm import SfmCamera, SfmConfig
    from labelers.dis_flow import DisFlow
    from labelers.dynamic_mask import FlowRigidityMasks

    flow = depth = None
    if "flow" not in skip:
        if cfg.flow == "sea-raft":
            from labelers.sea_raft import SeaRaftFlow

            flow = SeaRaftFlow.from_checkpoint(cfg.flow_weights, device=cfg.device)
        else:
            flow = DisFlow()
    if "depth" not in skip:
        if cfg.depth == "neural":
            from labelers.neural_depth import NeuralDepth

            depth = NeuralDepth.from_pretrained(cfg.depth_weights, device=cfg.device)
        else:
            # "import" reads depth from annotations; MVS describes nothing then
            depth = MultiViewDepth(MultiViewDepthConfig(near_views=cfg.depth_near_views))
    camera = (
        _ImportedLabels("camera")
        if cfg.camera == "import"
        else SfmCamera(SfmConfig(unknown_focal=cfg.unknown_focal, prior_fov_x_deg=cfg.prior_fov_x_deg,
                                 uncertain_focal_max_rel_std=cfg.uncertain_focal_max_std))
    )
    if cfg.depth == "import":
        depth = _ImportedLabels("depth")
    return Backends(flow=flow, camera=camera, depth=depth, masks=FlowRigidityMasks())


@dataclass(frozen=True)
class _ImportedLabels:
    """Stands for a family whose labels come from outside annotations (described per clip)."""

    family: str
    name: str = "imported_annotations"
    version: str = "1"
    params: dict = field(default_factory=dict)


def plan(items: Sequence[Any], store: LabelStore, redo_failed: bool = False) -> tuple[list[Any], list[ClipOutcome]]:
    """Split clips (`ClipSpec`s, import tasks: anything with a `clip_id`) into those to do and those
    already committed (skipped).

    The committed clips are the truth (the index, or the clip itself when its row is missing);
    rejected clips are done again only with `redo_failed`.
    """
    status = {row["clip_id"]: row["status"] for row in store.index().select(["clip_id", "status"]).to_pylist()}
    todo, skipped = [], []
    for item in items:
        committed = status.get(item.clip_id) or ("accepted" if store.has_clip(item.clip_id) else None)
        if committed is None or (redo_failed and committed == "rejected"):
            todo.append(item)
        else:
            skipped.append(ClipOutcome(item.clip_id, "skipped", reasons=[f"already committed ({committed})"]))
    return todo, skipped


@contextmanager
def timed_stage(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall time of the `with` block to `seconds[name]`."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start


def pair_flows(frames: np.ndarray, cfg: LabelConfig, backends: Backends) -> tuple[PairFlows, PairFlows]:
    """Consecutive-frame flows and key-frame flows of (T, H, W, 3) frames; key flows estimated from the
    composed consecutive ones where `_starts_key_flow_from_chains`, and repaired from their validated
    chains when `cfg.key_flow_chains`."""
    T = frames.shape[0]
    flows = compute_pair_flows(backends.flow, frames, consecutive_pairs(T), cfg.max_flow_uncertainty_px)
    key_pairs = key_frame_pairs(T, cfg.stride)
    if _starts_key_flow_from_chains(cfg):
        key_flows = chain_guided_pair_flows(backends.flow, frames, key_pairs, flows, cfg.max_flow_uncertainty_px)
    else:
        key_flows = compute_pair_flows(backends.flow, frames, key_pairs, cfg.max_flow_uncertainty_px)
    if cfg.key_flow_chains:
        key_flows = fill_from_chains(key_flows, flows, cfg.max_flow_uncertainty_px)
    return flows, key_flows


def _starts_key_flow_from_chains(cfg: LabelConfig) -> bool:
    return cfg.key_flow_chain_start and cfg.depth == "mvs"


def key_flows_against_depth(
    key_flows: PairFlows, depth: np.ndarray, depth_valid: np.ndarray, c2w: np.ndarray, K: np.ndarray,
    backends: Backends, cfg: LabelConfig,
) -> PairFlows:
    """`key_flows` invalid where they contradict the multi-view depth and cameras (`cfg.key_flow_geometry_px`,
    `labelers.guided_flow.invalid_against_depth`); unchanged without the test or with another depth,
    whose error the flow need not share (a network's, an import's that holds movers)."""
    if not _checks_key_flow_geometry(backends, cfg):
        return key_flows
    return invalid_against_depth(key_flows, depth, depth_valid, c2w, K, cfg.key_flow_geometry_px)


def _checks_key_flow_geometry(backends: Backends, cfg: LabelConfig) -> bool:
    return cfg.key_flow_geometry_px is not None and cfg.depth == "mvs" and isinstance(backends.depth, MultiViewDepth)


def key_flow_guide(backends: Backends, cfg: LabelConfig) -> GuidedKeyFlows | None:
    """The second key-pair flow pass of `cfg.key_flow_guided` on the clip's flow backend (None: off, or
    a neural depth, with which it is not measured)."""
    if not cfg.key_flow_guided or cfg.depth == "neural":
        return None
    return GuidedKeyFlows(backends.flow, cfg.max_flow_uncertainty_px, cfg.key_flow_chains)


@dataclass(frozen=True)
class Overlays:
    """The static overlays (captions, logos) of a clip's frames and how every stage treats them.

    Found on the frames before any labeler (`labelers.overlay`). The camera's tracks and the
    key flows it gets stay off them. A fixed camera's overlays cannot be told from its still
    background, so they are dropped when the camera comes out fixed (`for_camera`). Otherwise
    flow is invalid there (`off_flow`), and an overlay shows no scene surface: no depth and
    no mover (`off_surfaces`).

    Attributes:
        mask: (H, W) bool overlay pixels, the same in every frame.
    """

    mask: np.ndarray

    @classmethod
    def find(cls, frames: np.ndarray, cfg: LabelConfig) -> Overlays:
        """Overlays of (T, H, W, 3) uint8 frames, none when `cfg.static_overlays` is off."""
        return cls(static_overlay(frames) if cfg.static_overlays else np.zeros(frames.shape[1:3], bool))

    @property
    def camera_exclude(self) -> np.ndarray | None:
        """The pixels the camera's tracks stay off (None: no overlay)."""
        return self.mask if self.mask.any() else None

    def for_camera(self, camera_fixed: bool) -> Overlays:
        return Overlays(np.zeros_like(self.mask)) if camera_fixed else self

    def off_flow(self, flows: PairFlows) -> PairFlows:
        return flows.invalid_where(self.mask)

    def off_surfaces(self, depth_valid: np.ndarray, dynamic: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """depth_valid (T, H, W) and dynamic (S, H, W) bool without the overlay's pixels."""
        return depth_valid & ~self.mask, dynamic & ~self.mask


def label_arrays(
    K: np.ndarray,
    c2w: np.ndarray,
    depth: np.ndarray,
    depth_valid: np.ndarray,
    flows: PairFlows,
    key_flows: PairFlows,
    dynamic_key: np.ndarray,
    scene_flow: np.ndarray,
    scene_flow_valid: np.ndarray,
) -> dict[str, np.ndarray]:
    """The LABELS.md arrays of a labelled clip but `frame_index` and `timestamps`, with `c2w[0] = I`."""
    c2w = c2w.astype(np.float32)
    c2w[0] = np.eye(4, dtype=np.float32)
    return {
        "K": K.astype(np.float32),
        "c2w": c2w,
        "depth": np.where(depth_valid, depth, 0).astype(np.float32),
        "depth_valid": depth_valid,
        "flow": flows.flow_fwd_px,
        "flow_valid": flows.valid_fwd,
        "flow_uncertainty": flows.uncertainty_fwd_px,
        "key_flow": key_flows.flow_fwd_px,
        "key_flow_valid": key_flows.valid_fwd,
        "dynamic_mask": dynamic_key,
        "scene_flow": scene_flow.astype(np.float32),
        "scene_flow_valid": scene_flow_valid,
    }


@dataclass
class FrameLabels:
    """What the labeling stages give for T frames (`label_stages`).

    Attributes:
        arrays: the LABELS.md arrays but `frame_index` and `timestamps` (`label_arrays`).
        camera_qa: the camera labeler's QA metrics (empty for imported cameras).
        metric_scale: whether the cameras and depth are in metres.
        overlay: (H, W) bool static-overlay pixels (`Overlays`).
        fb_inside: (T-1, H, W) bool consecutive-pair pixels whose forward-backward check could be
            made (the target inside the image).
        measured_key_flow_valid: (S-1, H, W) bool key-flow validity before the depth's check.
    """

    arrays: dict[str, np.ndarray]
    camera_qa: dict[str, float]
    metric_scale: bool
    overlay: np.ndarray
    fb_inside: np.ndarray
    measured_key_flow_valid: np.ndarray


def label_stages(
    clip_id: str,
    frames: np.ndarray,
    K: np.ndarray | None,
    cfg: LabelConfig,
    backends: Backends,
    imported=None,
    seconds: dict[str, float] | None = None,
) -> FrameLabels:
    """Every labeling stage after the decode, on T frames:

        flow (consecutive and key pairs, key flows repaired from the chains; static overlays)
             -> camera -> dynamic masks and depth -> point maps and scene flow

    Args:
        clip_id: names the frames in a rejection.
        frames: (T, H, W, 3) uint8 RGB, T - 1 a multiple of `cfg.stride`.
        K: (T, 3, 3) intrinsics in pixels of the frames; None lets the camera labeler estimate them.
        imported: the clip's imported cameras and depth (`cfg.camera` "import"), else None.
        seconds: per-stage wall times are added here.

    Raises:
        ClipRejected: `camera_<reason>` when the camera labeler fails, `camera_static` /
            `camera_rotation` when the camera gives no parallax for multi-view depth,
            `camera_intrinsics_unobservable` when the dense depth depends on an unobserved focal.
    """
    seconds = {} if seconds is None else seconds
    key_frames = list(range(0, len(frames), cfg.stride))
    with timed_stage(seconds, "flow"):
        flows, key_flows = pair_flows(frames, cfg, backends)
        overlays = Overlays.find(frames, cfg)
    with timed_stage(seconds, "camera"):
        c2w, K, metric_scale, camera_qa, focal_alternatives = _cameras(
            clip_id, frames, K, overlays.off_flow(key_flows), backends, imported, cfg, overlays.camera_exclude)
    overlays = overlays.for_camera(camera_fixed=bool(camera_qa.get("camera_static")))
    flows, key_flows = overlays.off_flow(flows), overlays.off_flow(key_flows)
    with timed_stage(seconds, "depth_and_masks"):
        # one set of pair flows for depth and masks: a copy, freed when the stage ends
        merged = flows.merged(key_flows)
        if imported is not None:
            depth, depth_valid, dynamic_key, guided = _imported_depth_and_masks(
                imported, backends, frames, merged, c2w, K, key_frames, key_flow_guide(backends, cfg)
            )
        else:
            result = label_depth_and_masks(frames, merged, c2w, K, key_frames, backends.depth, backends.masks,
                                           key_flow_guide(backends, cfg))
            depth, depth_valid, dynamic_key = result.depth.depth, result.depth.depth_valid, result.dynamic_mask
            guided = result.key_flows
        if guided is not None:  # the depth and the key frames' masks come from these now
            key_flows = overlays.off_flow(guided)
            merged = merged.merged(key_flows)
        depth_valid, dynamic_key = overlays.off_surfaces(depth_valid, dynamic_key)
        if focal_alternatives and isinstance(backends.depth, MultiViewDepth):
            camera_qa.update(_check_prior_focal_depth(
                clip_id, backends, merged, depth, depth_valid, key_frames, focal_alternatives, frames,
                uncertain=camera_qa["camera_focal_uncertain_rel_std"] > 0,
            ))
        del merged
        measured_key_valid = key_flows.valid_fwd
        key_flows = key_flows_against_depth(key_flows, depth, depth_valid, c2w, K, backends, cfg)
    with timed_stage(seconds, "scene_flow"):
        flow3d, flow3d_valid = label_scene_flow(depth, depth_valid, K, c2w, key_flows, flows, frames, dynamic_key, cfg)
    arrays = label_arrays(K, c2w, depth, depth_valid, flows, key_flows, dynamic_key, flow3d, flow3d_valid)
    return FrameLabels(arrays, camera_qa, metric_scale, overlays.mask, ~np.isnan(flows.fb_error_fwd_px),
                       measured_key_valid)


def label_clip(
    spec: ClipSpec, cfg: LabelConfig, backends: Backends, seconds: dict[str, float] | None = None
) -> tuple[dict[str, np.ndarray], dict[str, Any], list[str]]:
    """Label one clip: the stored arrays of LABELS.md, the clip attributes and the QA rejection reasons.

    Raises:
        ClipRejected: the clip cannot be labelled (decode, camera or annotation failure).
    """
    seconds = {} if seconds is None else seconds
    with timed_stage(seconds, "decode"):
        decoded = decode_clip(spec, cfg.decode)
    imported = _import_annotations(spec, decoded, cfg) if cfg.camera == "import" else None
    labelled = label_stages(spec.clip_id, decoded.frames, decoded.K, cfg, backends, imported, seconds)
    arrays = {"frame_index": decoded.frame_index, "timestamps": decoded.timestamps, **labelled.arrays}
    with timed_stage(seconds, "qa"):
        # depth not triangulated under the cameras can tell a mover's background fit from a camera error
        depth_independent = imported is not None or backends.depth.dense
        qa = {**clip_quality(arrays, cfg.stride, fb_inside=labelled.fb_inside,
                             measured_key_flow_valid=labelled.measured_key_flow_valid,
                             depth_independent=depth_independent), **labelled.camera_qa,
              "static_overlay_fraction": float(labelled.overlay.mean())}
        reasons = gate(qa, cfg.thresholds)
    labelers = _labelers_attr(backends, cfg)
    if imported is not None:
        labelers.update(imported.attrs["labelers"])
    attrs = {
        "source": {
            **spec.source_attrs(),
            "fps": decoded.source_fps,
            "size": list(decoded.source_size),
            "timeline": decoded.timeline,
            "timeline_problem": decoded.timeline_problem,
            "shot_cuts_skipped": [asdict(cut) for cut in decoded.shot_cuts_skipped],
        },
        "fps": decoded.fps,
        "fps_target": decoded.fps_target,
        "source_stride": decoded.source_stride,
        "stride": cfg.stride,
        "metric_scale": labelled.metric_scale,
        "labelers": labelers,
        "qa": qa,
        "config": cfg.to_dict(),
    }
    return arrays, attrs, reasons


def _labelers_attr(backends: Backends, cfg: LabelConfig) -> dict[str, dict[str, Any]]:
    """`Backends.describe`, plus the flow validity checks, the static-overlay test's settings and how
    key-pair flows were repaired."""
    labelers = backends.describe()
    labelers["flow"]["params"]["validity_checks"] = ValidityChecks().to_dict()
    if key_flow_guide(backends, cfg) is not None:
        labelers["flow"]["params"]["key_flow_guided"] = {
            "version": GUIDED_KEY_FLOW_VERSION,
            "inpaint_radius_px": INPAINT_RADIUS_PX,
            "prior_smooth_sigma_px": PRIOR_SMOOTH_SIGMA_PX,
        }
    if cfg.static_overlays:  # flow is made invalid on what they find
        labelers["flow"]["params"]["static_overlays"] = {
            "version": STATIC_OVERLAY_VERSION, **asdict(StaticOverlayConfig())
        }
    if _checks_key_flow_geometry(backends, cfg):
        labelers["flow"]["params"]["key_flow_geometry"] = {"abs_px": cfg.key_flow_geometry_px, "rel": GEOMETRY_REL_TOL}
    if _starts_key_flow_from_chains(cfg):
        labelers["flow"]["params"]["key_flow_chain_start"] = {"version": CHAIN_START_VERSION}
    if cfg.key_flow_chains:
        labelers["flow"]["params"]["key_flow_chains"] = {
            "version": CHAIN_FILL_VERSION,
            "min_correction_px": CHAIN_MIN_CORRECTION_PX,
            "replace_gap_px": CHAIN_REPLACE_GAP_PX,
            "disagree_gap_px": CHAIN_DISAGREE_GAP_PX,
        }
    return labelers


def _import_annotations(spec: ClipSpec, decoded: DecodedClip, cfg: LabelConfig):
    from labelers.importers import AnnotationError, import_spatialvid, import_vipe

    ann = spec.annotations
    if ann is None:
        raise ClipRejected(spec.clip_id, "no_annotations", "camera/depth 'import' needs an annotations folder for the clip")
    common = dict(
        frame_index=decoded.frame_index,
        source_size=decoded.source_size,
        label_size=(cfg.height, cfg.width),
        source_to_label=decoded.transform.matrix(),
        frame_offset=ann.frame_offset,
        parts=("camera", "depth"),
    )
    try:
        if ann.kind == "vipe":
            return import_vipe(ann.dir, ann.name, **common, frame_skip=cfg.vipe_frame_skip, source_fps=decoded.source_fps,
                               depth_range=(cfg.vipe_min_depth_m, cfg.vipe_max_depth_m))
        return import_spatialvid(ann.dir, name=ann.name, **common)
    except AnnotationError as e:
        raise ClipRejected(spec.clip_id, f"annotations_{e.reason}", str(e)) from e


def _imported_depth_and_masks(
    imported, backends: Backends, frames: np.ndarray, flows: PairFlows, c2w, K, key_frames,
    guide: GuidedKeyFlows | None,
) -> tuple:
    """Imported depth (kept on moving objects: scene flow needs it), the key pairs' flows estimated again
    from it and the imported cameras (`guide`; None: not; the direct flow back on the pixels the masks
    call moving where the import has no depth, `direct_flow_on_movers`), and key-frame masks from flow
    rigidity (the frames let the masks judge striped texture across its stripes only).

    Returns:
        depth (T, H, W), depth_valid (T, H, W), the key-frame masks (S, H, W) and the guided key
        flows (None without `guide`).
    """
    depth_valid = imported.arrays["depth_valid"]
    depth = np.where(depth_valid, imported.arrays["depth"], 0.0)
    if guide is None:
        return depth, depth_valid, label_masks_given_depth(flows, c2w, K, key_frames, depth, backends.masks,
                                                           frames=frames), None
    key_flows = guide.refine(frames, flows, key_frames, depth, depth_valid, c2w, K)
    masks = label_masks_given_depth(flows.merged(key_flows), c2w, K, key_frames, depth, backends.masks, frames=frames)
    direct = flows.select(list(zip(key_frames[:-1], key_frames[1:])))
    return depth, depth_valid, masks, direct_flow_on_movers(key_flows, direct, masks, depth_valid[key_frames])


def label_scene_flow(
    depth: np.ndarray,
    depth_valid: np.ndarray,
    K: np.ndarray,
    c2w: np.ndarray,
    key_flows: PairFlows,
    flows: PairFlows,
    frames: np.ndarray,
    dynamic_key: np.ndarray,
    cfg: LabelConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """Scene flow (S-1, H, W, 3) and its validity (S-1, H, W) on the key frames, with the validity
    rules of `cfg` (`pipelines.geometry.scene_flow`).

    Args:
        depth, depth_valid: (T, H, W) of every frame; K (T, 3, 3); c2w (T, 4, 4).
        key_flows: key-pair flows; flows: consecutive flows (the chain behind the error estimate).
        frames: (T, H, W, 3) uint8 RGB the flows were estimated on.
        dynamic_key: (S, H, W) bool dynamic masks.
    """
    key = slice(None, None, cfg.stride)
    points = point_maps(depth[key], depth_valid[key], K[key], c2w[key])
    support, _ = _scene_flow_support(key_flows, dynamic_key, cfg)
    with_error = cfg.scene_flow_max_error_fraction is not None
    return scene_flow(
        points, depth[key], depth_valid[key], key_flows.flow_fwd_px, support, dynamic_key,
        flow_error_px=key_flow_error_px(key_flows, flows, frames) if with_error else None,
        tolerance=SceneFlowTolerance(cfg.scene_flow_tolerance_rel, cfg.scene_flow_tolerance_m),
        max_error_fraction=cfg.scene_flow_max_error_fraction,
        max_rigid_residual=cfg.scene_flow_max_rigid_residual,
    )


def _scene_flow_support(key_flows: PairFlows, dynamic_key: np.ndarray, cfg: LabelConfig) -> tuple[np.ndarray, np.ndarray]:
    """Stricter flow validity and dynamic support for scene flow than for the flow labels.

    3D motion amplifies flow errors, and flow is least reliable on thin structures and at
    motion boundaries: scene flow is only trusted where the key flow's uncertainty is below
    `scene_flow_max_uncertainty_px` and at least `scene_flow_border_px` pixels inside a moving
    region (the scene flow values still cover the whole mask, as the contract defines them).
    """
    flow_valid = key_flows.valid_fwd
    if cfg.scene_flow_max_uncertainty_px is not None:
        flow_valid = flow_valid & (key_flows.uncertainty_fwd_px <= cfg.scene_flow_max_uncertainty_px)
    if cfg.scene_flow_border_px > 0:
        size = 2 * cfg.scene_flow_border_px + 1
        kernel = np.ones((size, size), np.uint8)
        inner = np.stack([cv2.erode(m.astype(np.uint8), kernel).astype(bool) for m in dynamic_key[:-1]])
        flow_valid = flow_valid & inner
    return flow_valid, dynamic_key


def _cameras(
    clip_id: str, frames: np.ndarray, K: np.ndarray | None, key_flows: PairFlows, backends: Backends, imported,
    cfg: LabelConfig, overlay: np.ndarray | None = None,
) -> tuple:
    """c2w (T, 4, 4), K (T, 3, 3), metric_scale and camera QA metrics.

    The camera labeler gets the key-frame flows, whose background geometry tells its tracks
    on movers apart (`labelers.sfm.background`).

    A fixed or rotating camera gives no parallax, so multi-view depth has nothing to
    triangulate: with depth "mvs" the clip is rejected (`camera_static`, `camera_rotation`),
    naming the options that would label it. A network depth needs no parallax: the clip is
    labelled with the camera's identity translations (`labelers.neural_depth`, `own_scale`),
    in metres when the network is metric.
    """
    if imported is not None:
        return imported.arrays["c2w"].astype(np.float64), imported.arrays["K"].astype(np.float64), bool(
            imported.attrs["metric_scale"]
        ), {}, ()
    from labelers.camera import CameraFailure

    try:
        result = backends.camera.estimate(frames, K, key_flows, exclude=overlay)
    except CameraFailure as e:
        raise ClipRejected(clip_id, f"camera_{e.reason}", e.message) from e
    qa = {
        "camera_reproj_median_px": float(result.reproj_px.get("median", np.nan)),
        "camera_registered_fraction": float(np.mean(result.registered)),
        "camera_intrinsics_prior": float(result.intrinsics_source == "prior"),
        # an estimated focal kept over `max_focal_rel_std` (`labelers.sfm.focal_prior`): its relative std
        "camera_focal_uncertain_rel_std": float(result.diagnostics["focal_rel_std"])
        if result.intrinsics_source == "estimated" and result.focal_alternatives else 0.0,
        # share of the tracks left out as movers' (`labelers.sfm.background`); 0 when none or not applied
        "camera_mover_track_share": float(result.diagnostics.get("mover_track_share", 0.0))
        if result.diagnostics.get("mover_screen_applied") else 0.0,
    }
    if result.intrinsics_source == "prior" and result.motion == "general":
        qa["camera_focal_prior_log_offset"] = float(result.diagnostics.get("focal_prior_log_offset", np.nan))
    if result.motion == "general":
        return result.c2w, result.K, bool(result.metric_scale), qa, result.focal_alternatives
    if cfg.depth != "neural":
        raise ClipRejected(clip_id, f"camera_{result.motion}", _no_parallax_message(result))
    metric = backends.depth.params.get("depth_estimation_type") == "metric"  # `params` crosses Ray proxies
    return result.c2w, result.K, metric, {**qa, "camera_static": float(result.motion == "static")}, ()


def _check_prior_focal_depth(
    clip_id: str,
    backends: Backends,
    flows: PairFlows,
    depth: np.ndarray,
    depth_valid: np.ndarray,
    key_frames: list[int],
    focal_alternatives: tuple,
    images: np.ndarray,
    uncertain: bool = False,
) -> dict[str, float]:
    """Test 4 of a prior focal or an uncertain estimated one (`labelers.sfm.focal_prior.
    dense_depth_agreement`) on up to three key frames (first, middle, last): the clip's multi-view
    depth must not depend on the focal (`uncertain`: an uncertain estimate's span). Returns its QA
    metrics; raises ClipRejected (`camera_intrinsics_unobservable`)."""
    from labelers.sfm import SfmConfig
    from labelers.sfm.focal_prior import dense_depth_agreement

    frames = sorted({key_frames[0], key_frames[len(key_frames) // 2], key_frames[-1]})
    agreement = dense_depth_agreement(backends.depth, flows, depth, depth_valid, focal_alternatives, frames, images)
    limit = getattr(backends.camera, "config", SfmConfig()).min_prior_dense_agreement
    if not agreement >= limit:
        raise ClipRejected(
            clip_id,
            "camera_intrinsics_unobservable",
            f"the tracks do not determine the focal length and the dense depth depends on it: with the focal at "
            f"either end of {'its uncertain estimate' if uncertain else 'the prior'}'s span, only {agreement:.3f} of "
            f"the pixels with valid depth keep it, within a factor 1.25 (limit {limit}); give intrinsics",
        )
    return {"camera_focal_prior_dense_agreement": agreement}


def _no_parallax_message(result) -> str:
    """Why a fixed or rotating camera cannot be labelled with multi-view depth, and what would label it."""
    diag = result.diagnostics
    if result.motion == "static" and diag.get("background_rotation_holds"):
        what = ("the camera does not move (the dense flow's background follows one rotation of "
                f"{diag.get('max_rotation_deg', float('nan')):.2f} deg over the clip, under half a pixel)")
    elif result.motion == "static":
        what = (
            "the camera does not move (fixed camera: the background stands still in "
            f"{100 * diag.get('static_pairs_fixed', 1.0):.0f} % of the frame pairs, still share of the probes "
            f"{diag.get('static_fraction_min', float('nan')):.2f} at least)"
        )
    else:
        rotation = diag.get("max_rotation_deg", float("nan"))
        what = f"the camera only rotates (by up to {rotation:.1f} deg between frames, no measurable translation)"
    return (
        f"{what}: multi-view depth (--depth mvs) needs parallax, a camera translation; label it with a depth that "
        "needs none: --depth neural --depth-weights DIR (a local transformers depth model), or imported annotations "
        "(--camera import --depth import)"
    )


def label_and_commit(spec: ClipSpec, cfg: LabelConfig, store: LabelStore, backends: Backends) -> ClipOutcome:
    """Label one clip and commit it as accepted or rejected. Never raises for a bad clip."""
    seconds: dict[str, float] = {}
    replace = store.has_clip(spec.clip_id)  # only reached for rejected clips under redo_failed
    try:
        arrays, attrs, reasons = label_clip(spec, cfg, backends, seconds)
    except ClipRejected as e:
        return _commit_rejected(store, spec, cfg, [f"{e.reason}: {e.message}"], {}, seconds, replace, backends)
    except Exception as e:  # a labeler bug or an unforeseen input: record it, keep the run going
        detail = "".join(traceback.format_exception_only(type(e), e)).strip()
        outcome = _commit_rejected(store, spec, cfg, [f"error: {detail}"], {}, seconds, replace, backends)
        outcome.error = traceback.format_exc(limit=8)
        return outcome
    if reasons:
        return _commit_rejected(store, spec, cfg, reasons, attrs["qa"], seconds, replace, backends)
    start = time.perf_counter()
    store.commit(spec.clip_id, arrays, attrs, replace=replace)
    seconds["write"] = time.perf_counter() - start
    return ClipOutcome(spec.clip_id, "accepted", qa=attrs["qa"], seconds=seconds)


def _commit_rejected(
    store: LabelStore,
    spec: ClipSpec,
    cfg: LabelConfig,
    reasons: list[str],
    qa: dict,
    seconds: dict,
    replace: bool,
    backends: Backends,
) -> ClipOutcome:
    start = time.perf_counter()
    labelers = _labelers_attr(backends, cfg)
    attrs = {"source": spec.source_attrs(), "qa": qa, "labelers": labelers, "config": cfg.to_dict()}
    store.commit_rejected(spec.clip_id, attrs, reasons, replace=replace)
    seconds["write"] = time.perf_counter() - start
    return ClipOutcome(spec.clip_id, "rejected", reasons=reasons, qa=qa, seconds=seconds)


def label_clips(
    specs: Iterable[ClipSpec],
    cfg: LabelConfig,
    store: LabelStore,
    backends: Backends | None = None,
) -> list[ClipOutcome]:
    """Label clips one after the other in this process (what each Ray worker runs on its batch)."""
    backends = backends or build_backends(cfg)
    return [label_and_commit(spec, cfg, store, backends) for spec in specs]


def summarise(outcomes: Sequence[ClipOutcome], row_errors: Sequence[Any] = ()) -> dict[str, Any]:
    """Counts by status and rejections by reason (the reason code before the first ':')."""
    by_reason: dict[str, int] = {}
    for o in outcomes:
        if o.status == "rejected":
            for reason in o.reasons:
                code = reason.split(":", 2)[:2]
                key = ":".join(code) if code[0] == "qa" else code[0]
                by_reason[key.strip()] = by_reason.get(key.strip(), 0) + 1
    stage_seconds: dict[str, list[float]] = {}
    for o in outcomes:
        for stage, s in o.seconds.items():
            stage_seconds.setdefault(stage, []).append(s)
    return {
        "accepted": sum(o.status == "accepted" for o in outcomes),
        "rejected": sum(o.status == "rejected" for o in outcomes),
        "skipped": sum(o.status == "skipped" for o in outcomes),
        "manifest_row_errors": len(row_errors),
        "rejected_by_reason": dict(sorted(by_reason.items(), key=lambda kv: -kv[1])),
        "median_seconds_by_stage": {k: float(np.median(v)) for k, v in stage_seconds.items()},
        "clips_by_node": _clips_by_node(outcomes),
    }


def _clips_by_node(outcomes: Sequence[ClipOutcome]) -> dict[str, int]:
    """Clips labelled (accepted or rejected) per node; skipped clips were labelled by an earlier run."""
    counts: dict[str, int] = {}
    for o in outcomes:
        if o.status != "skipped" and o.node is not None:
            counts[o.node] = counts.get(o.node, 0) + 1
    return dict(sorted(counts.items()))


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if isinstance(value, Path):
        return str(value)
    return repr(value)
