"""Static overlays: logos, captions and watermarks burned into the picture of a moving camera.

An overlay keeps its place and its pixels in every frame while the scene behind it moves, so
it belongs to no scene surface: flow reads zero motion there, multi-view depth would place it
at infinity, the masks flag it as moving (it moves against the world), and above all its
sharp, textured strokes draw the camera's corners: on a rendered open-yard orbit (49 frames),
a caption and a logo in two corners sent the tracks' focal length from a labelled clip to
`camera_intrinsics_unobservable` (measured: docs/benchmarks.md, "Session 30").

Test (`static_overlay`), on the grey frames alone, so that it needs no flow and runs before
any labeler:

1. a pixel is still when it stays within `max_level_change` grey levels (or `noise_sigmas`
   times the frames' noise, if more) of its temporal median in at least `min_still_share` of
   the frames, and textured when the median frame's Sobel gradient there reaches `min_gradient`;
   1b. a translucent mark (a broadcaster's logo) shows the scene through it, so its levels
   change; its edges do not: alpha times its own gradient is added to every frame's. An edge
   is steady when, in at least `min_edge_share` of the frames, its gradient differs from its
   median over the frames by at most `max_edge_change` times that median's length
   (`steady_edges`). After the still regions, steady edges and still pixels are joined into
   regions again (apart from the overlays found) and go through steps 2-6 with the edges'
   own shift (step 6): a translucent caption over a plain ground is nearly still, but its
   levels drift with the ground's shading;
2. still textured pixels are joined into regions (closing by `close_px`, so that the letters
   of a caption form one region) of at least `min_area_fraction` of the frame: the scene
   points that a camera orbits about stay still too, on a thin locus (0.2-0.35 % of the frame
   in small specks on rendered orbits, against 0.3-0.7 % for one caption);
3. the scene must change: when more than `max_still_share` of the textured pixels outside the
   regions found (steps 4-6) are still, or one region covers more than `max_area_fraction` of
   the frame, the camera is fixed or nearly so and overlays cannot be told from a still
   background (a large mover in front of a fixed camera changes most of the frame, not its
   still background): none is reported. Nor do they harm there, where the fixed-camera test
   needs no corners. (Counting the captions' own strokes, a textureless orbit with two
   captions looked fixed: 54 % of its textured pixels were still, 8 % without them);
4. a region must lie in the margins of the picture, within `margin_fraction` of its height or
   width from one of its sides, where broadcasters put logos, captions and tickers: inside the
   picture the focus of expansion of a dolly and the pivot of an orbit stay still too, over
   short clips (on rendered dollies and orbits of 17-25 frames, 1-9 % of the frame in one
   region);
5. a region is an overlay when the scene around it changes: of the textured pixels in a ring
   `ring_px` wide around it, at most `max_still_ring_share` are still (a ring with fewer than
   `min_ring_px` textured pixels, on a plain wall, leaves the decision to step 2). The focus of
   expansion of a forward dolly, a still patch in a still neighbourhood, is not an overlay;
6. and when its strokes do not move at all: the change of the region's still textured pixels
   between the mean of the first and the mean of the last third of the frames, divided by
   their gradient, is the shift that change would take (pixels); its median must be at most
   `max_shift_px`. A burned-in caption changes by compression noise only, while the scene
   point an orbit pivots about, or the focus of expansion of a dolly, drifts slowly, by a
   fraction of a pixel that steps 1-5 cannot see over 17-25 frames. A region of steady edges
   (1b) has no steady levels to compare: its shift is the one displacement that best explains,
   in least squares over the region, the change of its median gradient between the first and
   the last third of the frames (`edge_shift_px`); the scene seen through the mark changes
   those medians by both signs, which cancel in the sum.

Measured (docs/benchmarks.md, "Session 31"; frames encoded as H.264 at CRF 8-28): the median
shift of captions is at most 0.05 px on rendered clips and 0.013 px on the real regression
footage; the still regions that steps 1-5 accept, an orbit's pivot and a dolly's focus of
expansion on rendered clips of 17-25 frames, shift by 0.21-1.09 px. Content fixed to the
camera passes as an overlay, and is one for the labels: the inside of the car that carries the
camera in a real clip shifts by 0.08-0.20 px and was found over 17 frames. White captions
at alpha 0.5 are found with a mean recall of 0.85-1.00 over plain and striped walls and open
yards, at alpha 0.3 with 0.46-0.94, and seldom where strong moving texture shows through them,
whose gradients outweigh the mark's in most frames (rooms 0.00-0.16, pans 0.27-0.46; per class
in docs/benchmarks.md, "Session 32"). A watermark across the middle of the picture is not
found (step 4). Before a fixed camera with a large mover, its still background can pass every step
(it does not move): the label pipeline drops the overlay when the camera comes out fixed.

The overlay mask is the accepted regions grown by `grow_px`: the anti-aliased outlines, and the
band over which the flow's patches mix the overlay's still strokes with the moving scene (on the
orbit above, false alarms of the masks were 2.78 % of the static pixels with a 2 px margin,
1.23 % with 6 px and 0.62 % with 9 px; 0.61 % without the overlay). The label pipeline makes
flow invalid there, keeps the camera's corners off it, and leaves it without depth and out of
the dynamic masks (`pipelines.labeling`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

from labelers.flow import image_noise_sigma
from labelers.geometry import check_frames, close_mask, grow_mask

__all__ = ["STATIC_OVERLAY_VERSION", "StaticOverlayConfig", "apparent_shift_px", "edge_shift_px", "static_overlay", "steady_edges"]

# 1: steps 1-5 (session 30); 2: the drift test (step 6) and the guard counted outside the regions;
# 3: translucent marks by their steady edges (step 1b)
STATIC_OVERLAY_VERSION = "3"


@dataclass(frozen=True)
class StaticOverlayConfig:
    """Settings of `static_overlay` (module docstring).

    Attributes:
        max_level_change: grey levels a still pixel may differ from its temporal median.
        noise_sigmas: ... or this many times the frames' noise sigma, if more.
        min_still_share: share of the frames in which a still pixel stays within that.
        min_gradient: Sobel gradient magnitude (grey levels per pixel, 3x3) of a textured pixel.
        max_still_share: largest share of still pixels among the textured ones of a changing scene.
        max_area_fraction: largest region of a changing scene, as a share of the frame.
        close_px: radius of the closing that joins strokes into regions.
        min_area_fraction: smallest region kept, after closing, as a share of the frame.
        margin_fraction: a region lies within this share of the frame's height (width) from its
            top or bottom (left or right) side.
        ring_px: width of the ring around a region whose change is tested.
        min_ring_px: fewest textured ring pixels for the ring test.
        max_still_ring_share: largest share of still pixels among the ring's textured ones.
        max_shift_px: largest median apparent shift of a region's still strokes over the clip.
        grow_px: the overlay mask is the regions grown by this many pixels (outlines, flow smear).
        translucent: also find translucent marks by their steady edges (step 1b).
        max_edge_change, min_edge_share: an edge is steady when, in at least min_edge_share
            of the frames, its gradient differs from its median over the frames by at most
            max_edge_change times that median's length.
    """

    max_level_change: float = 10.0
    noise_sigmas: float = 4.0
    min_still_share: float = 0.95
    min_gradient: float = 60.0
    max_still_share: float = 0.5
    max_area_fraction: float = 0.05
    close_px: int = 3
    min_area_fraction: float = 0.002
    margin_fraction: float = 0.2
    ring_px: int = 8
    min_ring_px: int = 20
    max_still_ring_share: float = 0.3
    max_shift_px: float = 0.1
    grow_px: int = 9
    translucent: bool = True
    max_edge_change: float = 0.6
    min_edge_share: float = 0.8

    def __post_init__(self) -> None:
        if min(self.max_level_change, self.min_gradient) <= 0 or self.noise_sigmas < 0:
            raise ValueError("max_level_change and min_gradient must be > 0, noise_sigmas >= 0")
        if not 0 < self.margin_fraction <= 0.5:
            raise ValueError(f"margin_fraction must be in (0, 0.5], got {self.margin_fraction}")
        if not (0 < self.min_still_share <= 1 and 0 <= self.max_still_ring_share < 1 and 0 < self.max_still_share < 1):
            raise ValueError("need 0 < min_still_share <= 1, 0 <= max_still_ring_share < 1, 0 < max_still_share < 1")
        if self.max_shift_px <= 0 or self.max_edge_change <= 0 or not 0 < self.min_edge_share <= 1:
            raise ValueError("need max_shift_px > 0, max_edge_change > 0 and 0 < min_edge_share <= 1, got "
                             f"{self.max_shift_px}, {self.max_edge_change}, {self.min_edge_share}")
        if min(self.close_px, self.grow_px, self.min_ring_px) < 0 or self.ring_px < 1 or not 0 < self.min_area_fraction < 1:
            raise ValueError("close_px, grow_px and min_ring_px must be >= 0, ring_px >= 1, 0 < min_area_fraction < 1")


def static_overlay(frames: np.ndarray, config: StaticOverlayConfig | None = None) -> np.ndarray:
    """(H, W) bool mask of the static overlays of (T, H, W, 3) uint8 RGB frames (module docstring)."""
    cfg = config or StaticOverlayConfig()
    num_frames, height, width = check_frames(frames, min_frames=2)
    gray = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]).astype(np.float32)
    median = np.median(gray, axis=0)
    noise = float(np.median([image_noise_sigma(g) for g in gray[:: max(1, num_frames // 5)]]))
    tolerance = max(cfg.max_level_change, cfg.noise_sigmas * noise)
    still = np.mean(np.abs(gray - median) <= tolerance, axis=0) >= cfg.min_still_share
    gradient = np.hypot(*_gradient(median))
    textured = gradient >= cfg.min_gradient
    overlay = np.zeros((height, width), bool)
    if not textured.any():
        return overlay
    candidates = close_mask(still & textured, cfg.close_px)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(candidates.astype(np.uint8), connectivity=8)
    if count > 1 and stats[1:, cv2.CC_STAT_AREA].max() > cfg.max_area_fraction * height * width:
        return overlay
    level_shift_px = apparent_shift_px(gray, gradient)
    for region in _margin_regions(labels, stats, count, cfg):
        strokes = region & still & textured
        if _ring_changes(region, still, textured, cfg) and np.median(level_shift_px[strokes]) <= cfg.max_shift_px:
            overlay |= region
    if cfg.translucent:  # step 1b: the scene shows through; its levels change, its edges stay
        edges, jacobian, change = steady_edges(gray, cfg.max_edge_change, cfg.min_edge_share)
        # the edges about an opaque caption's strokes are already in its grown mask
        candidates = close_mask((edges | still) & textured, cfg.close_px) & ~grow_mask(overlay, cfg.grow_px)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(candidates.astype(np.uint8), connectivity=8)
        for region in _margin_regions(labels, stats, count, cfg):
            strokes = region & edges & textured
            if _ring_changes(region, still, textured, cfg) and edge_shift_px(strokes, jacobian, change) <= cfg.max_shift_px:
                overlay |= region
    scene = textured & ~overlay
    if not scene.any() or still[scene].mean() > cfg.max_still_share:
        return np.zeros((height, width), bool)
    return grow_mask(overlay, cfg.grow_px)


def _margin_regions(labels: np.ndarray, stats: np.ndarray, count: int, cfg: StaticOverlayConfig) -> Iterator[np.ndarray]:
    """(H, W) bool connected components of a size steps 2-3 allow, in the margins (step 4)."""
    height, width = labels.shape
    for n in range(1, count):
        if not cfg.min_area_fraction <= stats[n, cv2.CC_STAT_AREA] / (height * width) <= cfg.max_area_fraction:
            continue
        if _in_margin(stats[n], height, width, cfg.margin_fraction):
            yield labels == n


def _ring_changes(region: np.ndarray, still: np.ndarray, textured: np.ndarray, cfg: StaticOverlayConfig) -> bool:
    """Step 5: the scene around the region changes (or its ring has too little texture to say)."""
    ring = grow_mask(region, cfg.ring_px) & ~region & textured
    return ring.sum() < cfg.min_ring_px or still[ring].mean() <= cfg.max_still_ring_share


def _gradient(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3 Sobel derivatives (x, y) of a (..., H, W) float32 image stack, frame by frame."""
    flat = image.reshape(-1, *image.shape[-2:])
    gx = np.stack([cv2.Sobel(f, cv2.CV_32F, 1, 0, ksize=3) for f in flat]).reshape(image.shape)
    gy = np.stack([cv2.Sobel(f, cv2.CV_32F, 0, 1, ksize=3) for f in flat]).reshape(image.shape)
    return gx, gy


def steady_edges(gray: np.ndarray, max_edge_change: float, min_edge_share: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Edges that keep their gradient while the levels around them change (step 1b), and what
    `edge_shift_px` needs to measure their drift over the clip (step 6).

    A translucent mark adds alpha times its own gradient to every frame's, whatever the scene
    behind it shows: the median over the frames of the gradient vector keeps it, while the
    scene's gradients, which move, vary around it. An edge is steady when, in at least
    `min_edge_share` of the frames, its gradient differs from that median by at most
    `max_edge_change` times the median's length.

    Args:
        gray: (T, H, W) float32 grey frames.

    Returns:
        steady: (H, W) bool;
        jacobian: (H, W, 2, 2) spatial derivatives of the median gradient, per pixel of shift;
        change: (H, W, 2) median gradient of the last third of the frames minus the first's.
    """
    gx, gy = _gradient(gray)
    median = np.stack([np.median(gx, axis=0), np.median(gy, axis=0)])  # (2, H, W)
    within = np.hypot(gx - median[0], gy - median[1]) <= max_edge_change * np.hypot(*median)
    steady = within.mean(axis=0) >= min_edge_share
    third = max(1, len(gray) // 3)
    change = np.stack([np.median(g[-third:], axis=0) - np.median(g[:third], axis=0) for g in (gx, gy)], axis=-1)
    # Sobel scales a unit ramp by 8: the jacobian in gradient units per pixel
    jacobian = np.stack([np.stack(_gradient(m), axis=-1) / 8.0 for m in median], axis=-2)
    return steady, jacobian, change


def edge_shift_px(region: np.ndarray, jacobian: np.ndarray, change: np.ndarray) -> float:
    """The one shift (pixels) that best explains the change of the median gradient over a region's
    steady edges (least squares, `steady_edges`): the scene behind a translucent mark adds
    changes of both signs, which cancel here and would not in a per-pixel ratio.

    Args:
        region: (H, W) bool pixels of the region's steady edges.
        jacobian, change: from `steady_edges`.

    Returns:
        The shift's length, inf when the edges do not determine it (a straight edge, or none).
    """
    J, d = jacobian[region], change[region]  # (N, 2, 2), (N, 2)
    normal = np.einsum("nki,nkj->ij", J, J)
    if np.linalg.cond(normal) > 1e6:
        return float("inf")  # a straight edge: its shift along itself is not seen
    return float(np.linalg.norm(np.linalg.solve(normal, np.einsum("nki,nk->i", J, d))))


def apparent_shift_px(gray: np.ndarray, gradient: np.ndarray) -> np.ndarray:
    """(H, W) change between the means of the first and the last third of (T, H, W) grey frames,
    over the median frame's gradient (`gradient`: 3x3 Sobel magnitude, 8 times the grey levels
    per pixel of a ramp): the shift in pixels that would cause it."""
    third = max(1, gray.shape[0] // 3)
    change = np.abs(gray[:third].mean(axis=0) - gray[-third:].mean(axis=0))
    return change / np.maximum(gradient / 8.0, 1e-6)


def _in_margin(box: np.ndarray, height: int, width: int, fraction: float) -> bool:
    """Whether a connected-component box (left, top, box width, box height, area) lies within
    `fraction` of the frame from one of its sides."""
    left, top, box_width, box_height = (int(v) for v in box[:4])
    return (top + box_height <= fraction * height or top >= (1 - fraction) * height
            or left + box_width <= fraction * width or left >= (1 - fraction) * width)

