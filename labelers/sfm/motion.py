"""Motion class of a clip (step 2 of `labelers.sfm`): static, rotation or general.

From robust homographies and fundamental matrices (pycolmap LO-RANSAC, both with
`parallax_inlier_px`) of many frame pairs: `static` when the median track moves less than
`static_motion_px`; `general` when some pair shows translation, i.e. parallax (the
homography explains fewer than `max_homography_ratio` of the tracks that the epipolar
geometry explains, COLMAP's test for an initial pair, unless a rotation explains most tracks
and a background spread over the image: a large mover that translates fits one fundamental
matrix together with a rotating background) or motion that a homography explains but no
rotation does (the median residual of the rotation-only homography K R K^-1 is at least
`min_translation_px` and `translation_ratio` x the homography's: a translation towards a
distant or flat scene); `rotation` otherwise. Without given intrinsics the rotation-only
model uses the focal that fits it best.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from labelers.camera import CameraFailure
from labelers.sfm.common import centred_K, image_regions
from labelers.sfm.config import SfmConfig
from labelers.sfm.fixed import still_region_borders
from labelers.sfm.focal import FocalUncertainty
from labelers.sfm.pairs import PairGeometry, analysis_pairs, pair_geometry
from labelers.sfm.rotation import rotation_focal, rotation_transfer_errors
from labelers.sfm.tracks import Tracks


@dataclass(frozen=True)
class MotionAnalysis:
    """Motion class of a clip and the fits behind it.

    Attributes:
        motion: one of `labelers.camera.MOTIONS`.
        pairs: the pair fits.
        K: (T, 3, 3) intrinsics of the rotation-only model (given, or its fitted focal).
        focal_uncertainty: how well the rotation-only model determines that fitted focal
            (None when given).
        rotation_px: (P,) per pair, median transfer residual of the rotation-only homography
            K R K^-1: what no camera rotation explains, i.e. the evidence of translation.
        rotation_background: (P,) bool, pairs whose rotation-only homography explains most
            tracks (median residual below `parallax_inlier_px`) and most tracks of image
            regions on three of the four borders (the `static_grid` test of `labelers.sfm.fixed`): a
            background turning with the camera, so the tracks a fundamental matrix explains
            beyond it belong to a mover, not to parallax.
    """

    motion: str
    pairs: list[PairGeometry]
    K: np.ndarray
    focal_uncertainty: FocalUncertainty | None
    rotation_px: np.ndarray
    rotation_background: np.ndarray

    def translating(self, cfg: SfmConfig) -> np.ndarray:
        """(P,) bool, pairs whose tracks show camera translation: parallax that no homography
        explains, or motion that a homography explains but no rotation does (a translation
        towards a distant or flat scene)."""
        parallax = np.array([p.parallax_px for p in self.pairs])
        ratio = np.array([p.homography_ratio for p in self.pairs])
        rotation = self.rotation_px
        unrotational = (rotation >= cfg.min_translation_px) & (rotation >= cfg.translation_ratio * parallax)
        return ((ratio < cfg.max_homography_ratio) & ~self.rotation_background) | unrotational

    def diagnostics(self) -> dict[str, Any]:
        return {
            "max_motion_px": max((p.motion_px for p in self.pairs), default=0.0),
            "median_parallax_px": float(np.median([p.parallax_px for p in self.pairs])),
            "max_parallax_px": max((p.parallax_px for p in self.pairs), default=0.0),
            "min_homography_ratio": min((p.homography_ratio for p in self.pairs), default=1.0),
            "max_rotation_residual_px": float(self.rotation_px.max(initial=0.0)),
            "rotation_background_pairs": float(self.rotation_background.mean()),
            "num_pairs_analysed": len(self.pairs),
            "nearly_static": self.motion == "static",
            "pure_rotation": self.motion == "rotation",
        }


def analyse_motion(tracks: Tracks, cfg: SfmConfig, K: np.ndarray | None, height: int, width: int) -> MotionAnalysis:
    """Classify the camera motion (module docstring).

    Pairs: every consecutive pair, and from every 4th frame the pairs 2, 4, 8, ... frames ahead.

    Args:
        K: (T, 3, 3) given intrinsics, or None to fit the rotation-only model's focal.

    Raises:
        CameraFailure: too_few_tracks when a consecutive pair cannot be fitted.
    """
    num_frames = tracks.xy.shape[0]
    pairs = []
    for i, j in sorted(analysis_pairs(num_frames)):
        pair = pair_geometry(tracks, i, j, cfg)
        if pair is not None:
            pairs.append(pair)
        elif j == i + 1:
            raise CameraFailure("too_few_tracks", f"no homography fits the tracks of frames {i} and {j}")
    uncertainty = None
    if K is None:
        focal, uncertainty = rotation_focal(tracks, pairs, height, width, cfg.focal_bias_px)
        K = np.tile(centred_K(focal, height, width), (num_frames, 1, 1))
    rotation_errors = [rotation_transfer_errors(tracks, p, K) for p in pairs]
    rotation_px = np.array([np.median(e) for e in rotation_errors])
    rotation_background = np.array(
        [_rotation_background(tracks, p, e, height, width, cfg) for p, e in zip(pairs, rotation_errors)]
    )
    analysis = MotionAnalysis("general", pairs, K, uncertainty, rotation_px, rotation_background)
    if max(p.motion_px for p in pairs) < cfg.static_motion_px:
        return replace(analysis, motion="static")
    if not analysis.translating(cfg).any():
        return replace(analysis, motion="rotation")
    return analysis


def _rotation_background(
    tracks: Tracks, pair: PairGeometry, errors: np.ndarray, height: int, width: int, cfg: SfmConfig
) -> bool:
    """Whether the rotation-only homography explains a background spread over the image
    (`MotionAnalysis.rotation_background`); errors (M,) are its residuals on the common tracks."""
    if not np.median(errors) < cfg.parallax_inlier_px:
        return False
    region = image_regions(tracks.xy[pair.i, pair.common], width, height, cfg.static_grid)
    sides = still_region_borders(region, errors < cfg.parallax_inlier_px, cfg)
    # The bottom border (near ground) must be explained too: under an open sky, far points fit
    # a pure rotation on the top and side borders whatever the camera's translation.
    return bool(sides.sum() >= 3 and sides[1])
