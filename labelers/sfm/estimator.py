"""`SfmCamera`: the steps of `labelers.sfm` in order, with the seconds of each in the diagnostics."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from labelers.camera import CameraFailure, CameraResult, check_camera_inputs
from labelers.sfm.background import screen_movers
from labelers.sfm.common import centred_K, prior_focal_px
from labelers.sfm.config import SfmConfig
from labelers.sfm.dense_rotation import (
    BackgroundRotation,
    background_rotation,
    background_rotation_result,
    max_rotation_gap_deg,
)
from labelers.sfm.fixed import fixed_camera_evidence, fixed_result, static_result
from labelers.sfm.general import general_result
from labelers.sfm.motion import analyse_motion
from labelers.sfm.rotation import rotation_result
from labelers.sfm.tracks import track_diagnostics, track_klt

if TYPE_CHECKING:
    from labelers.flow import PairFlows


class SfmCamera:
    """Weight-free `CameraEstimator`: KLT tracks + incremental SfM + pycolmap bundle adjustment."""

    name = "sfm-klt-colmap"
    version = "5"

    def __init__(self, config: SfmConfig | None = None) -> None:
        self.config = config or SfmConfig()

    @property
    def params(self) -> dict[str, Any]:
        return asdict(self.config)

    def estimate(self, frames: np.ndarray, K: np.ndarray | None = None, flows: PairFlows | None = None,
                 exclude: np.ndarray | None = None) -> CameraResult:
        """Cameras of every frame (see `labelers.camera.CameraEstimator.estimate`); with `flows`,
        tracks that contradict the dense flows' background geometry are left out
        (`labelers.sfm.background`), and a slow rotation of the background replaces the tracks'
        answer where they fail on the focal or turn away from it (`labelers.sfm.dense_rotation`)."""
        K_given = check_camera_inputs(frames, K)
        if exclude is not None and np.shape(exclude) != frames.shape[1:3]:
            raise ValueError(f"exclude must be (H, W) = {frames.shape[1:3]}, got {np.shape(exclude)}")
        cfg = self.config
        height, width = frames.shape[1:3]
        if flows is not None and flows.flow_fwd_px.shape[1:3] != (height, width):
            raise ValueError(f"flows must be of the frames' size {(height, width)}, got {flows.flow_fwd_px.shape[1:3]}")
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        evidence = fixed_camera_evidence(frames, cfg)
        seconds["fixed_camera_test"] = time.perf_counter() - start
        if evidence.fixed:
            result = fixed_result(evidence, K_given, height, width, cfg)
            result.diagnostics["seconds"] = seconds
            return result
        background_K = K_given[0] if K_given is not None else centred_K(prior_focal_px(width, cfg), height, width)
        try:
            result = self._from_tracks(frames, K_given, flows, evidence, seconds, exclude)
        except CameraFailure as e:
            if e.reason != "intrinsics_unobservable":
                raise
            background = self._usable_background(flows, background_K, K_given is not None, seconds)
            if background is None:
                raise
            diagnostics = {**evidence.diagnostics(), "tracks_failed": e.message}
        else:
            gap = self._rotation_gap_deg(result, flows, seconds)
            limit = (cfg.max_track_rotation_gap_deg if result.motion == "rotation"
                     else cfg.max_translating_rotation_gap_deg)
            background = (self._usable_background(flows, background_K, K_given is not None, seconds)
                          if gap > limit else None)
            if background is None:
                result.diagnostics["seconds"] = seconds
                return result
            diagnostics = {**result.diagnostics, "tracks_rotation_gap_deg": gap}
        result = background_rotation_result(
            background, background_K, K_given is not None, len(frames), diagnostics, cfg
        )
        result.diagnostics["seconds"] = seconds
        return result

    def _from_tracks(self, frames: np.ndarray, K_given: np.ndarray | None, flows: PairFlows | None,
                     evidence, seconds: dict[str, float], exclude: np.ndarray | None = None) -> CameraResult:
        """Steps 1-4: tracks, the mover screen, the motion class and its solution."""
        cfg = self.config
        height, width = frames.shape[1:3]
        start = time.perf_counter()
        tracks = track_klt(frames, cfg, exclude)
        seconds["tracking"] = time.perf_counter() - start
        screen_diagnostics: dict[str, Any] = {}
        if flows is not None:
            start = time.perf_counter()
            screen = screen_movers(tracks, flows, cfg)
            tracks = screen.screened(tracks)
            screen_diagnostics = screen.diagnostics()
            seconds["mover_screen"] = time.perf_counter() - start
        start = time.perf_counter()
        analysis = analyse_motion(tracks, cfg, K_given, height, width)
        seconds["analysis"] = time.perf_counter() - start
        diagnostics = {
            **evidence.diagnostics(), **track_diagnostics(tracks), **screen_diagnostics, **analysis.diagnostics()
        }
        start = time.perf_counter()
        if analysis.motion == "static":
            result = static_result(tracks, K_given, height, width, cfg, diagnostics)
        elif analysis.motion == "rotation":
            result = rotation_result(
                tracks, analysis.pairs, analysis.K, analysis.focal_uncertainty, K_given is not None, height, width, cfg,
                diagnostics,
            )
        else:
            result = general_result(tracks, analysis, K_given, height, width, cfg, diagnostics, flows)
        seconds["solve"] = time.perf_counter() - start
        return result

    def _background(self, flows: PairFlows, K: np.ndarray, seconds: dict[str, float]) -> BackgroundRotation | None:
        start = time.perf_counter()
        background = background_rotation(flows, K, self.config)
        seconds["background_rotation"] = seconds.get("background_rotation", 0.0) + time.perf_counter() - start
        return background

    def _usable_background(
        self, flows: PairFlows | None, K: np.ndarray, K_given: bool, seconds: dict[str, float]
    ) -> BackgroundRotation | None:
        """The dense background's rotation at intrinsics K (3, 3) where it holds and, with the prior
        focal, turns slowly enough for it (`labelers.sfm.dense_rotation`); None otherwise."""
        cfg = self.config
        if not cfg.background_rotation or flows is None:
            return None
        background = self._background(flows, K, seconds)
        if background is None or not background.holds:
            return None
        if not K_given and background.max_rotation_per_frame_deg() > cfg.max_prior_rotation_deg:
            return None
        return background

    def _rotation_gap_deg(self, result: CameraResult, flows: PairFlows | None, seconds: dict[str, float]) -> float:
        """How far the tracks' cameras turn away from the background's rotation at the same
        intrinsics (0 for a static camera, or where the background does not hold a rotation)."""
        if result.motion == "static" or not self.config.background_rotation or flows is None:
            return 0.0
        background = self._background(flows, result.K[0], seconds)
        if background is None or not background.holds:
            return 0.0
        return max_rotation_gap_deg(result.c2w, background)
