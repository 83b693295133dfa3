"""`SfmCamera`: the steps of `labelers.sfm` in order, with the seconds of each in the diagnostics."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

import numpy as np

from labelers.camera import CameraResult, check_camera_inputs
from labelers.sfm.background import screen_movers
from labelers.sfm.config import SfmConfig
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
    version = "3"

    def __init__(self, config: SfmConfig | None = None) -> None:
        self.config = config or SfmConfig()

    @property
    def params(self) -> dict[str, Any]:
        return asdict(self.config)

    def estimate(self, frames: np.ndarray, K: np.ndarray | None = None, flows: PairFlows | None = None) -> CameraResult:
        """Cameras of every frame (see `labelers.camera.CameraEstimator.estimate`); with `flows`,
        tracks that contradict the dense flows' background geometry are left out
        (`labelers.sfm.background`)."""
        K_given = check_camera_inputs(frames, K)
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
        start = time.perf_counter()
        tracks = track_klt(frames, cfg)
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
            result = general_result(tracks, analysis, K_given, height, width, cfg, diagnostics)
        seconds["solve"] = time.perf_counter() - start
        result.diagnostics["seconds"] = seconds
        return result
