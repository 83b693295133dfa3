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
2. still textured pixels are joined into regions (closing by `close_px`, so that the letters
   of a caption form one region) of at least `min_area_fraction` of the frame: the scene
   points that a camera orbits about stay still too, on a thin locus (0.2-0.35 % of the frame
   in small specks on rendered orbits, against 0.3-0.7 % for one caption);
3. the scene must change: when more than `max_still_share` of the textured pixels are still,
   or one region covers more than `max_area_fraction` of the frame, the camera is fixed or
   nearly so and overlays cannot be told from a still background (a large mover in front of a
   fixed camera changes most of the frame, not its still background): none is reported. Nor
   do they harm there, where the fixed-camera test needs no corners;
4. a region must lie in the margins of the picture, within `margin_fraction` of its height or
   width from one of its sides, where broadcasters put logos, captions and tickers: inside the
   picture the focus of expansion of a dolly and the pivot of an orbit stay still too, over
   short clips (on rendered dollies and orbits of 17-25 frames, 1-9 % of the frame in one
   region). A watermark across the middle of the picture is not found;
5. a region is an overlay when the scene around it changes: of the textured pixels in a ring
   `ring_px` wide around it, at most `max_still_ring_share` are still (a ring with fewer than
   `min_ring_px` textured pixels, on a plain wall, leaves the decision to step 2). The focus of
   expansion of a forward dolly, a still patch in a still neighbourhood, is not an overlay.

Limits (measured: docs/benchmarks.md, "Session 30"): on rendered clips without overlays of 49
frames none is found (24 clips), but on 17-25 frames the still pivot of an orbit reaches the margins
(1.3-3.3 % of the frame on 7 of 20 orbits) and so does a dolly's focus of expansion (1.5-2.4 % on 3
of 20); the label pipeline therefore runs it only when asked (`LabelConfig.static_overlays`).
Captions on the same clips were found whole at every length. Before a fixed camera with a large
mover the guards of step 3 do not always hold (8-12 % of the frame on 3 of 6 rendered clips): the
pipeline drops the overlay when the camera comes out fixed.

The overlay mask is the accepted regions grown by `grow_px`: the anti-aliased outlines, and the
band over which the flow's patches mix the overlay's still strokes with the moving scene (on the
orbit above, false alarms of the masks were 2.78 % of the static pixels with a 2 px margin,
1.23 % with 6 px and 0.62 % with 9 px; 0.61 % without the overlay). The label pipeline makes
flow invalid there, keeps the camera's corners off it, and leaves it without depth and out of
the dynamic masks (`pipelines.labeling`).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from labelers.flow import image_noise_sigma
from labelers.geometry import check_frames

__all__ = ["StaticOverlayConfig", "static_overlay"]


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
        grow_px: the overlay mask is the regions grown by this many pixels (outlines, flow smear).
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
    grow_px: int = 9

    def __post_init__(self) -> None:
        if min(self.max_level_change, self.min_gradient) <= 0 or self.noise_sigmas < 0:
            raise ValueError("max_level_change and min_gradient must be > 0, noise_sigmas >= 0")
        if not 0 < self.margin_fraction <= 0.5:
            raise ValueError(f"margin_fraction must be in (0, 0.5], got {self.margin_fraction}")
        if not (0 < self.min_still_share <= 1 and 0 <= self.max_still_ring_share < 1 and 0 < self.max_still_share < 1):
            raise ValueError("need 0 < min_still_share <= 1, 0 <= max_still_ring_share < 1, 0 < max_still_share < 1")
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
    gradient = np.hypot(cv2.Sobel(median, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(median, cv2.CV_32F, 0, 1, ksize=3))
    textured = gradient >= cfg.min_gradient
    overlay = np.zeros((height, width), bool)
    if not textured.any() or still[textured].mean() > cfg.max_still_share:
        return overlay
    candidates = _close(still & textured, cfg.close_px)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(candidates.astype(np.uint8), connectivity=8)
    if count > 1 and stats[1:, cv2.CC_STAT_AREA].max() > cfg.max_area_fraction * height * width:
        return overlay
    for n in range(1, count):
        if stats[n, cv2.CC_STAT_AREA] < cfg.min_area_fraction * height * width:
            continue
        if not _in_margin(stats[n], height, width, cfg.margin_fraction):
            continue
        region = labels == n
        ring = _grow(region, cfg.ring_px) & ~region & textured
        if ring.sum() < cfg.min_ring_px or still[ring].mean() <= cfg.max_still_ring_share:
            overlay |= region
    return _grow(overlay, cfg.grow_px)


def _in_margin(box: np.ndarray, height: int, width: int, fraction: float) -> bool:
    """Whether a connected-component box (left, top, box width, box height, area) lies within
    `fraction` of the frame from one of its sides."""
    left, top, box_width, box_height = (int(v) for v in box[:4])
    return (top + box_height <= fraction * height or top >= (1 - fraction) * height
            or left + box_width <= fraction * width or left >= (1 - fraction) * width)


def _grow(mask: np.ndarray, radius_px: int) -> np.ndarray:
    if radius_px == 0 or not mask.any():
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius_px + 1, 2 * radius_px + 1))
    return cv2.dilate(mask.astype(np.uint8), kernel).astype(bool)


def _close(mask: np.ndarray, radius_px: int) -> np.ndarray:
    if radius_px == 0:
        return mask
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius_px + 1, 2 * radius_px + 1))
    return cv2.morphologyEx(mask.astype(np.uint8), cv2.MORPH_CLOSE, kernel).astype(bool)
