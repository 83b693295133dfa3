"""Frame pairs (`analysis_pairs`) and their robust two-view fits (`PairGeometry`): a homography
and a fundamental matrix per pair (pycolmap LO-RANSAC), for the motion class
(`labelers.sfm.motion`) and the initial pairs of the reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pycolmap

from labelers.sfm.common import apply_homography, ransac_options
from labelers.sfm.config import SfmConfig
from labelers.sfm.tracks import Tracks


@dataclass(frozen=True)
class PairGeometry:
    """Robust homography fit of one frame pair (i < j).

    Attributes:
        common: (M,) indices of the tracks seen in both frames.
        H: (3, 3) homography i -> j (pixels, LABELS.md convention); H_inliers (M,) bool.
        F_inliers: how many common tracks a fundamental matrix explains.
        motion_px: median track displacement.
        parallax_px: median transfer residual of H over all common tracks (what a plane or a
            pure rotation cannot explain).
    """

    i: int
    j: int
    common: np.ndarray
    H: np.ndarray
    H_inliers: np.ndarray
    F_inliers: int
    motion_px: float
    parallax_px: float

    @property
    def homography_ratio(self) -> float:
        """Tracks explained by the homography per track explained by the epipolar geometry."""
        return float(self.H_inliers.sum()) / max(self.F_inliers, 1)


def pair_geometry(tracks: Tracks, i: int, j: int, cfg: SfmConfig) -> PairGeometry | None:
    """Fits of frames i and j; None when they share too few tracks or a fit fails."""
    common = np.nonzero(tracks.observed[i] & tracks.observed[j])[0]
    if len(common) < max(cfg.min_common_tracks, 8):
        return None
    xy_i, xy_j = tracks.xy[i, common], tracks.xy[j, common]
    hom = pycolmap.estimate_homography_matrix(xy_i, xy_j, ransac_options(cfg, cfg.parallax_inlier_px))
    fund = pycolmap.estimate_fundamental_matrix(xy_i, xy_j, ransac_options(cfg, cfg.parallax_inlier_px))
    if hom is None or fund is None:
        return None
    H = np.asarray(hom["H"])
    return PairGeometry(
        i=i,
        j=j,
        common=common,
        H=H,
        H_inliers=np.asarray(hom["inlier_mask"], bool).ravel(),
        F_inliers=int(fund["num_inliers"]),
        motion_px=float(np.median(np.linalg.norm(xy_j - xy_i, axis=1))),
        parallax_px=float(np.median(np.linalg.norm(apply_homography(H, xy_i) - xy_j, axis=1))),
    )


def analysis_pairs(num_frames: int) -> set[tuple[int, int]]:
    """Every consecutive pair, from every 4th frame the pairs 2, 4, 8, ... frames ahead, and
    the first and last frames."""
    pairs = {(i, i + 1) for i in range(num_frames - 1)}
    for i in range(0, num_frames - 1, 4):
        gap = 2
        while i + gap < num_frames:
            pairs.add((i, i + gap))
            gap *= 2
    pairs.add((0, num_frames - 1))
    return pairs
