"""Feature tracks of a clip (step 1 of `labelers.sfm`).

Shi-Tomasi corners, moved frame to frame by pyramidal Lucas-Kanade (OpenCV) with a
forward-backward check, then refined by an affine Lucas-Kanade fit of each track's
first-frame patch (`_AffinePatches`); corners are re-detected where the image is not
covered. A clip is a video: tracking consecutive frames is cheaper than matching descriptors
between all pairs, and ties many frames together. The affine refinement matters:
translation-only tracking drifts and is biased by the scaling of the patches (radially for a
dolly, which bundle adjustment reads as a focal change); tracking against the first
appearance with an affine warp removes most of that error (measured: docs/benchmarks.md,
"Labeler design measurements", SfM camera: tracks).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from labelers.camera import CameraFailure
from labelers.sfm.config import SfmConfig


@dataclass(frozen=True)
class Tracks:
    """Feature tracks of a clip.

    Attributes:
        xy: (T, N, 2) float64 pixel positions (LABELS.md convention), NaN where a track is absent.
        detected: (T,) int, corners found (tracked + new) in each frame.
    """

    xy: np.ndarray
    detected: np.ndarray

    @property
    def observed(self) -> np.ndarray:
        """(T, N) bool."""
        return ~np.isnan(self.xy[..., 0])


def track_klt(frames: np.ndarray, cfg: SfmConfig, exclude: np.ndarray | None = None) -> Tracks:
    """Track corners through the clip (module docstring).

    Args:
        frames: (T, H, W, 3) uint8 RGB.
        exclude: optional (H, W) bool pixels that no track may start on or enter (static
            overlays, `labelers.overlay`).

    Raises:
        CameraFailure: too_little_texture (few corners), too_few_tracks (tracking lost).
    """
    num_frames, height, width = frames.shape[:3]
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    spacing = max(3, int(round(cfg.track_spacing * max(height, width))))
    lk = {
        "winSize": (cfg.klt_window_px, cfg.klt_window_px),
        "maxLevel": cfg.klt_levels,
        "criteria": (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 30, 0.01),  # the affine fit refines
    }
    patches = _AffinePatches(cfg.patch_radius_px)
    margin = cfg.patch_radius_px + 1  # patches stay inside the image: clamped pixels would bias them
    positions: list[np.ndarray] = []  # per frame: (n, 2) float64
    ids: list[np.ndarray] = []
    detected = np.zeros(num_frames, np.int64)
    active = _ActiveTracks.empty(patches.num_pixels)
    next_id = 0
    for t in range(num_frames):
        image = gray[t].astype(np.float32)
        if t > 0 and len(active.ids):
            moved, keep = lk_step(gray[t - 1], gray[t], active.xy, lk, cfg.fb_max_px)
            active = active.select(keep)
            active.warp[:, :, 2] = moved
            active.warp, residual = patches.refine(
                image, active.warp, active.template, active.steepest, active.hessian_inv
            )
            keep = _plausible(active.warp, residual, moved, cfg.max_patch_residual, margin, width, height)
            if exclude is not None:
                keep &= ~_on(exclude, active.xy)
            active = active.select(keep)
        new = _detect_corners(gray[t], active.xy, cfg.max_tracks - len(active.ids), spacing, margin, cfg.min_corner_eig,
                              exclude)
        active = active.extend(patches, image, new, np.arange(next_id, next_id + len(new)))
        next_id += len(new)
        detected[t] = len(active.ids)
        positions.append(active.xy.copy())
        ids.append(active.ids.copy())
    if np.median(detected) < cfg.min_features:
        raise CameraFailure(
            "too_little_texture",
            f"a typical frame has {int(np.median(detected))} trackable corners, fewer than {cfg.min_features}",
        )
    xy = np.full((num_frames, next_id, 2), np.nan)
    for t in range(num_frames):
        xy[t, ids[t]] = positions[t]
    tracks = Tracks(xy, detected)
    common = (tracks.observed[:-1] & tracks.observed[1:]).sum(1)
    if common.size and common.min() < cfg.min_common_tracks:
        t = int(np.argmin(common))
        raise CameraFailure(
            "too_few_tracks",
            f"frames {t} and {t + 1} share {int(common[t])} tracks, fewer than {cfg.min_common_tracks}",
        )
    return tracks


@dataclass
class _ActiveTracks:
    """Tracks alive in the current frame: ids, affine warps (n, 2, 3) from template to image
    coordinates (column 2 is the track position) and the templates' precomputed terms."""

    ids: np.ndarray
    warp: np.ndarray
    template: np.ndarray
    steepest: np.ndarray
    hessian_inv: np.ndarray

    @classmethod
    def empty(cls, num_pixels: int) -> "_ActiveTracks":
        return cls(
            np.zeros(0, np.int64),
            np.zeros((0, 2, 3)),
            np.zeros((0, num_pixels)),
            np.zeros((0, num_pixels, 6)),
            np.zeros((0, 6, 6)),
        )

    @property
    def xy(self) -> np.ndarray:
        return self.warp[:, :, 2]

    def select(self, keep: np.ndarray) -> "_ActiveTracks":
        return _ActiveTracks(
            self.ids[keep], self.warp[keep], self.template[keep], self.steepest[keep], self.hessian_inv[keep]
        )

    def extend(self, patches: "_AffinePatches", image: np.ndarray, xy: np.ndarray, ids: np.ndarray) -> "_ActiveTracks":
        if len(xy) == 0:
            return self
        warp = np.zeros((len(xy), 2, 3))
        warp[:, 0, 0] = warp[:, 1, 1] = 1.0
        warp[:, :, 2] = xy
        template, steepest, hessian_inv = patches.template(image, xy)
        return _ActiveTracks(
            np.concatenate([self.ids, ids]),
            np.concatenate([self.warp, warp]),
            np.concatenate([self.template, template]),
            np.concatenate([self.steepest, steepest]),
            np.concatenate([self.hessian_inv, hessian_inv]),
        )


class _AffinePatches:
    """Inverse-compositional affine Lucas-Kanade (Baker and Matthews) of square patches
    against each track's first appearance, with normalised (zero-mean, unit-variance)
    intensities. Tracking against the first appearance does not drift, and the affine warp
    absorbs the patch's scaling and shearing, which bias translation-only tracking
    systematically (radially for a camera moving forwards)."""

    def __init__(self, radius: int, iterations: int = 8) -> None:
        r = np.arange(-radius, radius + 1, dtype=np.float64)
        v, u = np.meshgrid(r, r, indexing="ij")
        self.uv = np.stack([u.ravel(), v.ravel()], -1)  # (P, 2) template coordinates
        self.radius = radius
        self.iterations = iterations

    @property
    def num_pixels(self) -> int:
        return len(self.uv)

    def template(self, image: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Normalised patches (n, P), steepest-descent images (n, P, 6), inverse Hessians (n, 6, 6)."""
        n, side = len(xy), 2 * self.radius + 3
        r = np.arange(-self.radius - 1, self.radius + 2, dtype=np.float64)
        v, u = np.meshgrid(r, r, indexing="ij")
        grid = np.stack([u.ravel(), v.ravel()], -1)
        patch = _sample(image, xy[:, None, :] + grid[None]).reshape(n, side, side).astype(np.float64)
        gx = 0.5 * (patch[:, 1:-1, 2:] - patch[:, 1:-1, :-2]).reshape(n, -1)
        gy = 0.5 * (patch[:, 2:, 1:-1] - patch[:, :-2, 1:-1]).reshape(n, -1)
        template = patch[:, 1:-1, 1:-1].reshape(n, -1)
        std = template.std(1, keepdims=True) + 1e-6
        template = (template - template.mean(1, keepdims=True)) / std
        gx, gy = gx / std, gy / std
        u, v = self.uv[:, 0], self.uv[:, 1]
        steepest = np.stack([gx * u, gx * v, gx, gy * u, gy * v, gy], -1)
        hessian = steepest.transpose(0, 2, 1) @ steepest + 1e-6 * np.eye(6)
        return template, steepest, np.linalg.inv(hessian)

    def refine(
        self, image: np.ndarray, warp: np.ndarray, template: np.ndarray, steepest: np.ndarray, hessian_inv: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Refined warps (n, 2, 3) and the RMS normalised residual (n,) of each patch.

        Each patch iterates until its translation update is below 1e-3 px.
        """
        warp = warp.copy()
        uv1 = np.concatenate([self.uv, np.ones((len(self.uv), 1))], 1)
        todo = np.arange(len(warp))
        for _ in range(self.iterations):
            if len(todo) == 0:
                break
            error = self._normalised(image, warp[todo], uv1) - template[todo]
            dp = (hessian_inv[todo] @ (steepest[todo].transpose(0, 2, 1) @ error[..., None]))[..., 0]
            dp[~np.isfinite(dp).all(1) | (np.abs(dp[:, [2, 5]]).max(1) > 2.0)] = 0.0
            step = np.zeros((len(todo), 3, 3))
            step[:, :2] = dp.reshape(-1, 2, 3) + np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
            step[:, 2, 2] = 1.0
            # inverse compositional update: W <- W o dW^-1, with [a b tx; c d ty] rows
            inv_step = np.linalg.inv(step)
            warp[todo] = warp[todo, :, :2] @ inv_step[:, :2, :] + np.concatenate(
                [np.zeros((len(todo), 2, 2)), warp[todo, :, 2:]], axis=2
            )
            todo = todo[np.abs(dp[:, [2, 5]]).max(1) >= 1e-3]
        residual = np.sqrt(((self._normalised(image, warp, uv1) - template) ** 2).mean(1))
        return warp, residual

    @staticmethod
    def _normalised(image: np.ndarray, warp: np.ndarray, uv1: np.ndarray) -> np.ndarray:
        values = _sample(image, uv1[None] @ warp.transpose(0, 2, 1))
        return (values - values.mean(1, keepdims=True)) / (values.std(1, keepdims=True) + 1e-6)


def _sample(image: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Bilinear samples (float32) of a float32 image at (..., 2) positions, clamped to the image
    (the patches of tracks near the border: their positions are checked separately)."""
    height, width = image.shape
    x = np.clip(xy[..., 0], 0, width - 1.000001)
    y = np.clip(xy[..., 1], 0, height - 1.000001)
    x0, y0 = x.astype(np.int32), y.astype(np.int32)  # floor: x, y >= 0
    fx, fy = (x - x0).astype(np.float32), (y - y0).astype(np.float32)
    flat = image.ravel()
    i = y0 * width + x0
    a, b, c, d = flat.take(i), flat.take(i + 1), flat.take(i + width), flat.take(i + width + 1)
    top = a + fx * (b - a)
    bottom = c + fx * (d - c)
    return top + fy * (bottom - top)


def _plausible(
    warp: np.ndarray, residual: np.ndarray, lk_xy: np.ndarray, max_residual: float, margin: int, width: int, height: int
) -> np.ndarray:
    """Tracks whose patch still matches, whose warp stays a mild deformation that moved the
    position by less than a pixel from the Lucas-Kanade estimate, `margin` pixels inside the image."""
    singular = np.linalg.svd(warp[:, :, :2], compute_uv=False)
    xy = warp[:, :, 2]
    u, v = xy[:, 0], xy[:, 1]
    inside = (u >= margin) & (u <= width - 1 - margin) & (v >= margin) & (v <= height - 1 - margin)
    mild = (singular[:, 1] > 0.5) & (singular[:, 0] < 2.0)
    near = np.linalg.norm(xy - lk_xy, axis=1) <= 1.0
    return np.isfinite(xy).all(1) & inside & mild & near & (residual <= max_residual)


def lk_step(
    gray0: np.ndarray, gray1: np.ndarray, xy: np.ndarray, lk: dict, fb_max_px: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pyramidal LK from gray0 to gray1 with the forward-backward check: new positions of the
    kept tracks and the keep mask (the affine refinement then sharpens the positions)."""
    pos = xy.astype(np.float32).reshape(-1, 1, 2)
    fwd, st_f, _ = cv2.calcOpticalFlowPyrLK(gray0, gray1, pos, None, **lk)
    bwd, st_b, _ = cv2.calcOpticalFlowPyrLK(gray1, gray0, fwd, None, **lk)
    fb_err = np.linalg.norm((bwd - pos).reshape(-1, 2), axis=1)
    keep = (st_f.ravel() == 1) & (st_b.ravel() == 1) & (fb_err < fb_max_px)
    return fwd.reshape(-1, 2)[keep].astype(np.float64), keep


def _on(mask: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """(n,) bool: the (n, 2) positions whose nearest pixel lies in the (H, W) mask."""
    height, width = mask.shape
    u = np.clip(np.round(xy[:, 0]).astype(int), 0, width - 1)
    v = np.clip(np.round(xy[:, 1]).astype(int), 0, height - 1)
    return mask[v, u]


def _detect_corners(
    gray: np.ndarray, pos: np.ndarray, budget: int, spacing: int, margin: int, min_eig: float,
    exclude: np.ndarray | None = None,
) -> np.ndarray:
    """New corners (float64) at least `spacing` pixels away from the tracked ones and `margin`
    pixels inside the image, off the `exclude` pixels."""
    if budget <= 0:
        return np.zeros((0, 2))
    mask = np.zeros(gray.shape, np.uint8)
    mask[margin:-margin, margin:-margin] = 255
    if exclude is not None:
        mask[exclude] = 0
    for u, v in np.round(pos).astype(int):
        cv2.circle(mask, (int(u), int(v)), spacing, 0, -1)
    corners = cv2.goodFeaturesToTrack(gray, budget, 0.01, spacing, mask=mask, blockSize=7)
    if corners is None:
        return np.zeros((0, 2))
    corners = corners.reshape(-1, 2)
    eig = cv2.cornerMinEigenVal(gray, 7, 3)
    strong = eig[corners[:, 1].astype(int), corners[:, 0].astype(int)] >= min_eig
    return corners[strong].astype(np.float64)


def track_diagnostics(tracks: Tracks) -> dict[str, Any]:
    lengths = tracks.observed.sum(0)
    return {
        "num_tracks": int(tracks.xy.shape[1]),
        "mean_track_length": float(lengths.mean()) if lengths.size else 0.0,
        "min_corners_per_frame": int(tracks.detected.min()),
    }
