"""Dynamic masks from flow rigidity, and the order in which masks and depth are labelled.

LABELS.md: M_k(u) = 1 where the surface point seen at u in key frame k moves in world
coordinates between key frames k and k + 1; the last key frame gets the mask of its motion
from key frame S - 2 (here: from its flow back to key frame S - 2).

Residual of one flow field F_{i->j} against a static world (`rigidity_residual`), in pixels:

- where depth D_i is valid: the distance of the flow target from the segment of the
  epipolar line covered by D_i within a factor 1 + n * sigma (sigma = `DepthResult.rel_sigma`,
  n = `depth_sigmas`); for sigma = 0 this is |F - F_rigid(D_i, camera)|, the rigid-flow
  residual, and without translation (no segment) it is always that;
- elsewhere, depth-free: a static point of the pixel's ray lands on the segment of the
  epipolar line between the positions of the farthest and the nearest plausible static
  points; the residual is the distance of the flow target from that segment. Across the
  line this is the epipolar distance; along it, it catches motion that would need a
  negative depth (behind the camera) or a point nearer or farther than any static one.
  The plausible inverse depths are [min(0, m * low), m * high], with low and high the
  (100 - p)-th and p-th percentiles (p = `parallax_percentile`, m = `parallax_margin`) of
  the frame's valid depth when given, else of the inverse depths the flow itself implies
  on epipolar-consistent pixels. The far end always reaches infinity (inverse depth 0, the
  position the rotation alone gives): a pixel without valid depth may be farther than any
  valid one, because far points are exactly those whose depth the views cannot determine
  (`labelers.depth.MultiViewDepth` leaves them invalid). A sky 80 m away, beyond a ground whose
  depth is valid to 20 m, would otherwise be flagged wherever its parallax differs from the
  ground's by more than tau (measured: docs/benchmarks.md, "Labeler design measurements",
  dynamic masks). The price: a mover whose flow
  lies between the rotation-only position and the farthest static surface is taken as static.
  When the camera barely translates (pan, tripod) the
  segment shrinks to a point and the residual becomes the homography residual
  |q - K R K^-1 u|, which needs no depth at all;
- elsewhere, with a dense depth prior (`DepthResult.prior_depth`, a network aligned to the
  cameras): the same segment residual, with the plausible inverse depths narrowed to
  [rho / m, m * rho] around the prior's rho, m = 1 + `prior_rel_tol`. `label_depth_and_masks`
  takes that tolerance from the data: `depth_sigmas` times the median `rel_sigma` of the valid
  depth (for `labelers.neural_depth` the network's disagreement with the multi-view geometry
  on static pixels, i.e. its measured error), at least `min_prior_rel_tol`. This is what catches
  a surface moving along its epipolar lines (e.g. parallel to a camera that translates
  sideways): its flow is consistent with a static point at a wrong depth in every view, so
  triangulation and the depth-free residual accept it, but a network that sees the object
  where it is disagrees by more than the margin. Pixels within a pixel of a jump in the
  prior's depth are left to the depth-free residual (flow is smeared across
  occlusion boundaries).

A pixel is dynamic when its residual exceeds tau = `residual_abs_px` + `residual_rel` * |F|:
flow errors grow with the displacement, and `residual_abs_px` is a few times the flow
noise (the forward-backward check in `labelers.flow` admits 0.5 px inconsistency).
Pixels without valid flow (occluded, leaving the image) have no residual. Source pixels
that the static depth of the destination frame hides (z-buffer test) get none either:
their flow cannot be measured, and flow smeared over such disocclusions is the main
source of false alarms. On stripes or
a single edge (`labelers.flow.texture_isotropy` over `isotropy_window_px` below
`min_isotropy`; `stripe_normals`) the flow is measured across the stripes only: along them
it slides with the estimator's smoothing, by the same amount in both directions, so the
validity checks keep it. There the residual is measured across the stripes alone: the
distance, along the stripes' normal, from the line through the flow target along the
stripes to the static positions above (segment or point); 0 where the two cross. Without
this, on a striped ground (the `repeated` scene class) consecutive flows slid 0.5-1 px along
the stripes and key-frame flows 3-5 px, and that made three quarters of the masks' false
alarms (measured: docs/benchmarks.md, "Labeler design measurements", dynamic masks). The
window is smaller than the flow checks' so that ground beside an object does not borrow the
object's texture.

On repeated texture (a checkerboard, tiles, a fence: `labelers.flow.texture_periods`, up to
`max_period_px`) the flow is known only up to the texture's repeat vectors p1, p2: DIS may lock
one period off, and forward and backward flow then agree on it. There the residual is that of
the alias F + a p1 + b p2 (a, b in {-1, 0, 1}) nearest a static point, if smaller. On a
grazing checkered wall (held-out repeated room orbit 51) 12 % of the valid consecutive flow
was 5-6 px off, one period, and made most of the clip's false alarms (measured: docs/benchmarks.md,
"Session 14"). The price: a mover on such texture whose motion off the static positions is
close to a period is taken as static. Stripes keep their own rule (no periods there). The rule
applies to the key-frame masks (step 3 below), the labels: applied to the frame masks too it
took the masks-and-depth stage from 8.3 to 14.5 s per 240x360 clip for 0.05 points fewer false alarms
on that orbit (the frame masks decide only where the key flow is invalid, and feed depth).

The cameras of a key-frame view (step 3 below) are checked against the view's own flow: its
relative pose is refitted to the background (`refit_to_background`: the pixels a fundamental
matrix on grid samples explains, then rotation and direction of travel fitted to them), and
where the cameras leave the background's flow more than `refit_min_ratio` times farther from
their epipolar lines than the refit does, the refit is used for that view. Camera errors that
the clip's median hides are local: late in 49-frame dollies the camera nears a surface, its
tracks shorten, and one key pair's pose was 0.5 deg and 4.5 deg (direction of travel) off; at
20 px of flow that flagged a quarter of the static pixels (measured: docs/benchmarks.md,
"Session 18"). The refit floor is `REFIT_FLOOR_PX`, and the depth stays the cameras'. Views
whose cameras do not translate (fixed, turning) are not refitted. The fundamental matrix is the
flow's dominant motion, and a mover that fills most of the frame holds it; so where the source
frame has depth that was not triangulated under these cameras (an import's, a network's), the
refit is used only if it also leaves more of the flow within tau of the rigid flow of that depth
than the cameras do (`refit_depth_min_pixels`): a mover's flow is rigid under no pose with the
camera's length of travel. With frame masks (step 1), whose short views flag such a mover, the
refit must also explain the flow of the pixels they find static at least as well as the cameras
do (the median epipolar distance on the refit's grid). A longer view
back over 16 frames of an open orbit, whose large mover filled the frame's side, was refitted
3.4 deg and 14 deg (direction of travel) away from cameras 0.07 deg off, and flagged a far sky
(measured: docs/benchmarks.md, "Session 39"). Triangulated depth was fitted to the flow under the cameras, key pairs
included: on weight-free dollies it refused 8 of 21 refits (those there turn views by 0.1-0.7 deg)
and cost one clip 0.04 of IoU. With exact depth and cameras, refits onto a
large mover approaching the lens turned views by 0.2-57 deg and flagged a third to two thirds of
the static pixels of the last key frames (measured: docs/benchmarks.md, "Session 37").

The raw mask is cleaned up with OpenCV: opening
(`open_radius_px`) removes isolated false alarms, closing (`close_radius_px`) and hole
filling close gaps inside an object, and components smaller than `min_area_fraction` of
the image are dropped. The key-frame masks' borders are then moved to the image's edges: the
cleaned mask is filtered with the frame as colour guide (`kornia.filters.guided_blur`,
`guided_radius_px`, `guided_eps`) and thresholded at one half. The flow smears a mover's motion
a few pixels over the background beside it (DIS's patches and smoothing), and that band made
most of the false alarms left on held-out open dollies (1.25 % of the static pixels, 62 % of
them within 5 px of a mover; measured: docs/benchmarks.md, "Session 15").

Limitation: an object moving along the epipolar lines by an amount a static point of
plausible depth could also show (e.g. sideways, beside a camera that moves sideways) is
indistinguishable from a static one by flow and camera alone: triangulation gives it a
consistent wrong depth. The weight-free chain leaves such objects unmasked (measured by
`bench/bench_masks.py`, docs/benchmarks.md); a depth prior finds them (previous paragraph).
The prior's own errors bound its use: a static surface where the aligned network is off by
more than the margin, in a view with parallax, is a false alarm.

Order (the cycle "depth needs a static mask, masks need depth" is broken by the
depth-free residual), implemented by `label_depth_and_masks`:

1. frame masks (T, H, W) without depth: frame t against frames t -+ g for g in
   `view_gaps` (several time scales), through flows composed along the given pairs; a
   pixel is dynamic when at least `min_dynamic_views` views and `min_dynamic_fraction` of
   its views with valid flow say so. Then each frame whose flags hold pixels nearer than its
   plausible range, at the inverse depth that static points of other frames put there, is scored
   again: the points of the frames within `carry_frames` that the first pass found static, more
   than `carry_clear_px` from any flag, at most `carry_range_margin` times nearer than their own
   frame's plausible range and triangulated by their two longest views over at least
   `carry_min_parallax_px` of parallax, carried through the cameras (`carried_inv_depth`, the
   nearest per cell of a few pixels); the depth-free residual of a pixel carried a point then
   also accepts that inverse depth within a factor 1 + `carry_rel_tol`, and the pixels this frees
   extend over the flagged pixels their implied inverse depth continues into smoothly (at most
   `carry_smooth_rel` per pixel step, `smooth_continuation`). A camera that passes close to a
   static object sees it nearer than the range the rest of the frame sets, and the frame masks
   flagged it whole, after which the depth step left it without depth and the key masks flagged
   it again; in the frames before, farther away, it was found static, except for the parts that
   came into view, or nearer than the range, only later: those the smooth surface reaches. The
   conditions keep movers from being carried: a mover that moves along its epipolar lines a
   little nearer than the range's end stays unflagged in frames whose short views leave it
   within a pixel of that end (hence the range and the parallax), and a mover's unflagged part
   beside its flags is the mover (hence the clearance). Nor do the second pass's freed points
   carry on: they chained a mover's unflagged frames into all its others. The price: a mover
   along its lines that passed these conditions in a nearby frame fits the points carried from
   there and loses flags, and its smooth surface with them (measured: docs/benchmarks.md, sessions 25-26);
2. depth from any `DepthEstimator`, with those frame masks (dynamic pixels invalid); with
   `MultiViewDepth` and a `labelers.guided_flow.GuidedKeyFlows`, the key pairs' flows are then
   estimated again starting from the rigid flow of that depth and the cameras, and every
   frame's depth again from them (`label_depth_and_masks`' `guide`): flow near the camera that
   a search from zero motion got wrong, and depth triangulated from it, no longer disagree with
   a static background (measured: docs/benchmarks.md, "Session 20"), and the far ground, where
   the first key flows failed most, gains depth in the frames between the key frames too
   (docs/benchmarks.md, "Session 35"); after step 3 the pixels
   found moving take the direct flow back where it is valid (`direct_flow_on_movers`): their
   guided start was inpainted from the background around them;
3. key-frame masks (S, H, W) from the key-frame flows, now with the rigid-flow residual
   where depth is valid; where the key-frame flow is invalid, the frame mask of step 1
   decides. Key frame k is also compared with the frames m times as far as its label pair's
   other frame in the same direction, or the other one past the clip's end (m in
   `key_view_multiples`, flows composed): a slow mover stays under the threshold over one
   key interval (measured: docs/benchmarks.md, "Labeler design measurements", dynamic masks)
   but exceeds it over several, while the residual of static pixels grows much less
   (composed-flow noise and depth error). These views leave the prior out (its error grows
   with the baseline as the motion does). A pixel is dynamic when any view finds it moving;
   so the label errs towards "moving" for a surface that moves within a few key intervals of
   k but not between k and k + 1. A longer view counts only where the key pair's own view
   has no score or scores at least `longer_view_min_score` of its threshold: a slow mover
   shows part of its motion there already, while flow that goes wrong later in the clip
   (near the camera, at the end of a 49-frame dolly) and is composed into the longer view
   does not (measured: docs/benchmarks.md, "Session 18"). A view from key frame k to frame
   k + d flags a pixel whose texture is weak (`confirm_max_snr`) only where its mirror view,
   from k to k - d, does not find it static (score below 1; no score, or no such view in the
   clip, is no verdict): near the camera, weak texture magnified between key frames gets flow
   1-4 px off in both directions alike, which the flow checks keep, while a mover moves on
   both sides of k (measured: docs/benchmarks.md, "Session 19"). The frame masks' flags that
   decide where the key pair's flow is invalid pass the same test on weak texture: frame masks
   flag such surfaces too, from the same wrong flow over their short views (measured:
   docs/benchmarks.md, "Session 27"). The last key frame's mask
   is that of the motion since key frame S-2 (LABELS.md), the motion M_{S-2} shows from the
   other end; its own views look one way only, and a mover that travels along the epipolar
   lines fits a wrong depth in all of them. It also takes the regions of M_{S-2} read along its
   valid flow back to S-2 that it already holds part of (`last_from_previous`; a region it
   holds none of stays out, so that M_{S-2}'s false alarms are not carried over wholesale;
   measured: docs/benchmarks.md, "Session 21"). Before the clean-up, a connected region of a key
   frame's flags is kept only where some of its flags (`seed_min_share`, `seed_min_px`) lie on
   texture that determines the flow (9 px structure tensor at least `seed_min_snr` times the
   noise variance): a camera that nears a faint surface under noise magnifies it into ramps
   whose flow is off by several pixels in both directions alike, and whose flags then form
   regions with no such texture at all, while a mover's region holds its textured parts
   (measured: docs/benchmarks.md, "Session 22"). The regions left after the clean-up then grow,
   by up to `grow_radius_px` steps, into neighbouring pixels without valid depth whose key-pair
   score reaches `grow_min_score` (hysteresis): a mover that moves 1.5-2.5 px per key interval
   against the static scene, mostly along its epipolar lines (which the free depth of a pixel
   without depth absorbs), crosses the threshold on only part of its surface while the rest of it
   scores just below, and the static background around it scores lower. Where a network's or an
   import's depth is valid the rigid residual sees motion along the lines in full, and growth
   there only widened the band of flow smeared beside movers (exact dense depth, 120x180: IoU
   0.97 -> 0.94). Depth triangulated from the flows (`MultiViewDepth`) does not: it assumed the
   scene static, and gives such a mover the consistent wrong depth that its motion implies (a
   third to two thirds of the slow movers' missed pixels had valid triangulated depth, scoring
   0.3-0.55 in the median against static pixels there, 0.4-2 % of which reach 0.4), so with
   triangulated depth (`key_masks`' `depth_triangulated`) regions grow into its valid pixels
   too. A region that would grow to more than `grow_max_ratio` times its size keeps its size:
   it lies in a wide area of near-threshold static residuals (late in a dolly, near a surface),
   where growth doubled the false alarms; where growth into triangulated depth would do that,
   the growth without it stands. Growing from the raw flags instead let specks that the clean-up
   drops grow past its size limits (measured: docs/benchmarks.md, "Session 24"; into
   triangulated depth: "Session 27"). Each key frame's mask but the last then takes, along its
   valid flow to the next key frame and to the previous one, the regions of their masks that it
   already holds part of (`from_neighbours`; from the end back, then onwards, so that a region
   passes along the key frames that hold part of it), on its pixels whose key-pair score is at
   least `neighbour_min_score` or unknown. A rigid mover keeps moving over a few key intervals
   while what shows its motion comes and goes: parts of it leave the view, or go behind
   something, before the next key frame, where the key pair has no flow (on the development
   clips about half of the movers' missed pixels had no key-pair score), and its motion turns
   towards its epipolar lines at times. A neighbour that sees the region moving completes it. The
   neighbour's region, read along a flow smeared at the mover's border, takes some background
   along: the score gate keeps it out where the key pair finds the background still, and the
   neighbour's mask is read with its borders moved to its own frame's edges (`snap_to_edges`,
   below), which took out a third to a half of the false alarms the completion added on the
   replayed clips and kept more of the movers (measured: docs/benchmarks.md, "Session 29").
   What growth and the neighbours add is then kept only where its colour is at least as likely
   under a Gaussian of its region's own flags as under one of the pixels around the region
   (`colour_consistent`, CIELAB). Beside a mover, DIS smears its motion over the background, up to
   15-20 px onto a blurred open sky, where the band scores as a slow mover's missed parts do and
   both steps took it up; its colours are the background's (false alarms of 2.7 % of the static
   pixels on an unseen open dolly; measured: docs/benchmarks.md, "Session 33"). Last, each region
   of a key frame's mask, borders moved to the frame's edges, is cut from the pixels around it by
   OpenCV's GrabCut (`colour_cut`: colour mixtures of the region and of the ring within
   `grabcut_ring_px`, and a graph cut that follows the frame's edges): the part of the band that
   the key pair itself flags joins its mover's region and has the ring's colours. A region the cut
   would leave with less than `grabcut_min_keep` of its pixels stays whole: a region of the
   background's own colours, or a mover that looks like its surroundings, is left to the flow's
   verdict (measured: docs/benchmarks.md, "Session 34");
4. for a depth backend that assumes a static scene (`dense = False`), depth on key frames
   is invalidated where step 3 found motion that step 1 missed; a dense backend's depth
   on moving objects is kept (scene flow needs it), and key-frame pixels found moving
   through the prior get the prior's depth, with `rel_sigma` = `prior_rel_tol`.

With depth known beforehand (imported annotations, ground truth) there is no cycle to break:
`label_masks_given_depth` runs steps 1 and 3 with that depth, which stays as given (exact:
no tolerance, no prior).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Sequence

import cv2
import numpy as np
import scipy.sparse
import scipy.sparse.csgraph

from labelers.depth import (
    DepthEstimator,
    DepthResult,
    EpipolarPlanes,
    MultiViewDepth,
    TwoViewTriangulation,
    check_depth_inputs,
    check_pair_flows,
    correspondences_along,
    flow_paths,
    triangulate_flow,
)
from labelers.flow import (
    NOISE_FLOOR_LEVELS,
    STRIPE_MAX_ISOTROPY,
    STRIPE_WINDOW_PX,
    PairFlows,
    aperture_normals,
    image_noise_sigma,
    texture_periods,
    texture_snr,
)
from labelers.geometry import check_frames, disk, grow_mask, pixel_grid, relative_pose, rigid_flow
from labelers.guided_flow import GuidedKeyFlows, direct_flow_on_movers, warp_by_flow
from labelers.sfm.background import (
    REFIT_FLOOR_PX,
    grid_samples,
    pose_distance_px,
    refit_to_background,
    rigid_flow_support,
)
from labelers.sfm.config import SfmConfig

__all__ = [
    "DynamicMaskConfig",
    "FlowRigidityMasks",
    "DepthAndMasks",
    "rigidity_residual",
    "residual_threshold",
    "clean_mask",
    "colour_consistent",
    "colour_cut",
    "carried_inv_depth",
    "smooth_continuation",
    "stripe_normals",
    "SourceTexture",
    "label_depth_and_masks",
    "label_masks_given_depth",
]


@dataclass(frozen=True)
class DynamicMaskConfig:
    """Settings of `FlowRigidityMasks` (serialised into the clip's `labelers` attribute).

    Attributes:
        residual_abs_px, residual_rel: a pixel is dynamic when its residual exceeds
            residual_abs_px + residual_rel * |flow|.
        parallax_percentile, parallax_margin: plausible static inverse depths of the
            depth-free residual (module docstring).
        view_gaps: frame masks compare frame t with frames t - g and t + g for each gap g
            (several scales: fast motion breaks the flow over long gaps, slow motion
            only shows over them).
        max_hops: most given flow pairs composed into one view.
        key_view_multiples: key masks also compare key frame k with the frames m times as far
            as its label pair's other frame, in the same direction, for each m (module
            docstring, step 3); views without a chain of given pairs are skipped.
        min_dynamic_views, min_dynamic_fraction: a pixel of a frame mask is dynamic when at
            least this many of its views, and this share of its views with valid flow, find
            it moving.
        open_radius_px, close_radius_px: morphological opening and closing radii.
        fill_holes: fill background regions entirely enclosed by a dynamic region.
        min_area_fraction: dynamic components smaller than this share of the image are dropped.
        occlusion_rel_tol: a source point more than this fraction behind the static surface
            of the destination frame counts as hidden there (z-buffer test).
        min_depth_fraction: the plausible static depths come from the depth map only when
            it is valid on at least this share of the frame, else from the flow.
        min_prior_rel_tol: least relative tolerance of a depth prior (module docstring).
        depth_sigmas: where depth is known, static points lie within a factor
            1 + depth_sigmas * rel_sigma of it (`DepthResult.rel_sigma`): a network's aligned
            depth is off by several percent, which the exact rigid flow would read as motion.
        min_isotropy, isotropy_window_px: on source pixels whose texture is stripes or a single
            edge (`labelers.flow.texture_isotropy` over the window below min_isotropy) the
            residual is measured across the stripes only (module docstring); 0 disables.
        max_period_px, period_window_px, period_min_zncc, period_min_dip: on source pixels whose
            texture repeats (`labelers.flow.texture_periods` with these settings) the residual
            is taken up to the repeat vectors (module docstring); `max_period_px` 0 disables.
        guided_radius_px, guided_eps: the key-frame masks' borders follow the frame's edges
            (colour-guided filter of this radius and regularisation, RGB in [0, 1]; module
            docstring); radius 0 disables.
        grabcut_ring_px, grabcut_iterations, grabcut_min_keep: each region of a key-frame mask is
            then cut from the pixels within `grabcut_ring_px` around it by OpenCV's GrabCut
            (colour mixtures and a graph cut, `grabcut_iterations` rounds; `colour_cut`); a region
            that the cut would leave with less than `grabcut_min_keep` of its pixels stays whole
            (module docstring, step 3); ring 0 disables.
        longer_view_min_score: a longer key view (`key_view_multiples`) flags a pixel only where
            the key pair's own view has no score or scores at least this (residual over tau):
            a slow mover already shows part of its motion there, while flow that goes wrong
            later in the clip (near the camera) and is composed into the longer view does not
            (module docstring); 0 lets longer views flag alone.
        confirm_max_snr, confirm_window_px: a key-frame view (the key pair's or a longer one)
            flags a pixel whose texture is weak (`labelers.flow.texture_snr` over the window
            below this, in units of the frame's noise variance) only where its mirror view, as
            far the other way in time, does not find it static, and so do the frame masks where
            the key pair's flow is invalid (module docstring, step 3); 0 disables.
        refit_min_ratio: a key-frame view's relative pose is refitted to the background of its
            flow (`refit_to_background`) and the refit replaces the cameras' pose when the
            cameras' median epipolar distance there is more than this many times the refit's
            (module docstring); 0 disables.
        refit_depth_stride_px, refit_depth_min_pixels: with depth not triangulated under the cameras
            (an import's, a network's), the refit is used only where,
            on every `refit_depth_stride_px`-th pixel of both axes with valid flow and depth, it
            leaves more of the flow within tau of the rigid flow than the given cameras do, when
            there are at least `refit_depth_min_pixels` such pixels (`_refit_explains_more`).
        last_from_previous: the last key frame's mask also takes, along its valid flow to key
            frame S-2, the regions of M_{S-2} it already holds part of (module docstring, step 3).
        from_neighbours, neighbour_min_score: each other key frame's mask also takes, along its
            valid flow to the next key frame and to the previous one, the regions of their masks it
            already holds part of, on its pixels whose key-pair score (residual over tau) is at least
            `neighbour_min_score` or unknown (module docstring, step 3).
        seed_min_snr, seed_min_share, seed_min_px: a connected region of a key frame's flags is
            kept only where at least `seed_min_share` of its pixels, and at least `seed_min_px`,
            are flagged on texture that determines the flow (`labelers.flow.texture_snr` over
            `confirm_window_px` at least `seed_min_snr`; module docstring, step 3); 0 disables.
        grow_min_score, grow_radius_px, grow_max_ratio: a key frame's cleaned regions grow, by up
            to `grow_radius_px` 8-connected steps, into pixels without valid depth whose key-pair
            score (residual over tau) is at least `grow_min_score`; a region that would grow to
            more than `grow_max_ratio` times its size stays as it was (module docstring, step 3);
            `grow_min_score` 0 disables.
        grow_into_triangulated: where the depth was triangulated from the flows (`key_masks`'
            `depth_triangulated`), regions also grow into its valid pixels; where that would flood a
            region, its growth without them stands (module docstring, step 3).
        colour_ring_px, colour_margin: what growth and the neighbours' regions add to a key
            frame's regions is kept only where its colour is at least as likely, up to
            `colour_margin` in -2 log-likelihood, under a Gaussian of its region's own flags as
            under one of the pixels within `colour_ring_px` around the region (`colour_consistent`;
            module docstring, step 3); 0 disables.
        carry_frames, carry_rel_tol, carry_clear_px, carry_min_parallax_px, carry_range_margin: in the
            frame masks, the depth-free residual also accepts, within a factor 1 + `carry_rel_tol`, the
            inverse depth of the nearest static point that frames within `carry_frames` put on the
            pixel through the cameras: points found static there, more than `carry_clear_px` from any
            flag, at most `carry_range_margin` times nearer than that frame's plausible range and
            triangulated over at least `carry_min_parallax_px` of parallax
            (module docstring, step 1); `carry_frames` 0 disables. The margin lets in an object the
            camera nears, which crosses the range's end gradually.
        carry_smooth_rel: the pixels that carried points free extend over the flagged pixels without
            valid depth that their implied inverse depth continues into, neighbour to neighbour within
            this relative step (module docstring, step 1); 0 disables.
    """

    residual_abs_px: float = 1.0
    residual_rel: float = 0.05
    parallax_percentile: float = 90.0
    parallax_margin: float = 1.5
    view_gaps: tuple[int, ...] = (1, 2, 4, 8)
    max_hops: int = 6
    key_view_multiples: tuple[int, ...] = (2, 4)
    min_dynamic_views: int = 2
    min_dynamic_fraction: float = 0.25
    open_radius_px: int = 1
    close_radius_px: int = 2
    fill_holes: bool = True
    min_area_fraction: float = 0.001
    occlusion_rel_tol: float = 0.05
    min_depth_fraction: float = 0.01
    min_prior_rel_tol: float = 0.05
    depth_sigmas: float = 2.0
    min_isotropy: float = STRIPE_MAX_ISOTROPY
    isotropy_window_px: int = STRIPE_WINDOW_PX
    max_period_px: int = 12
    period_window_px: int = 15
    period_min_zncc: float = 0.7
    period_min_dip: float = 0.3
    guided_radius_px: int = 6
    guided_eps: float = 1e-3
    grabcut_ring_px: int = 15
    grabcut_iterations: int = 3
    grabcut_min_keep: float = 0.5
    refit_min_ratio: float = 2.0
    refit_depth_stride_px: int = 2
    refit_depth_min_pixels: int = 200
    longer_view_min_score: float = 0.5
    confirm_max_snr: float = 4.0
    confirm_window_px: int = 9
    last_from_previous: bool = True
    from_neighbours: bool = True
    neighbour_min_score: float = 0.2
    seed_min_snr: float = 1.0
    seed_min_share: float = 0.01
    seed_min_px: int = 20
    grow_min_score: float = 0.4
    grow_radius_px: int = 8
    grow_max_ratio: float = 1.5
    grow_into_triangulated: bool = True
    colour_ring_px: int = 12
    colour_margin: float = 1.0
    carry_frames: int = 48
    carry_rel_tol: float = 0.03
    carry_clear_px: int = 8
    carry_min_parallax_px: float = 8.0
    carry_range_margin: float = 1.1
    carry_smooth_rel: float = 0.01

    def __post_init__(self) -> None:
        if self.residual_abs_px <= 0 or self.residual_rel < 0:
            raise ValueError("need residual_abs_px > 0 and residual_rel >= 0")
        if not 0 < self.parallax_percentile <= 100 or self.parallax_margin < 1:
            raise ValueError("need 0 < parallax_percentile <= 100 and parallax_margin >= 1")
        if not self.view_gaps or min(self.view_gaps) < 1 or self.max_hops < 1:
            raise ValueError(f"need positive view_gaps and max_hops >= 1, got {self.view_gaps}, {self.max_hops}")
        if any(m < 2 for m in self.key_view_multiples):
            raise ValueError(f"key_view_multiples must be >= 2, got {self.key_view_multiples}")
        if self.min_dynamic_views < 1 or not 0 <= self.min_dynamic_fraction <= 1:
            raise ValueError("need min_dynamic_views >= 1 and min_dynamic_fraction in [0, 1]")
        if self.open_radius_px < 0 or self.close_radius_px < 0 or not 0 <= self.min_area_fraction < 1:
            raise ValueError("radii must be >= 0 and min_area_fraction in [0, 1)")
        if self.occlusion_rel_tol < 0 or not 0 <= self.min_depth_fraction <= 1:
            raise ValueError("need occlusion_rel_tol >= 0 and min_depth_fraction in [0, 1]")
        if not 0 <= self.min_isotropy < 1 or self.isotropy_window_px < 3:
            raise ValueError(f"need min_isotropy in [0, 1) and isotropy_window_px >= 3, got {self.min_isotropy}, "
                             f"{self.isotropy_window_px}")
        if not (self.max_period_px == 0 or self.max_period_px >= 3) or self.period_window_px < 3:
            raise ValueError(f"need max_period_px 0 or >= 3 and period_window_px >= 3, got {self.max_period_px}, "
                             f"{self.period_window_px}")
        if self.guided_radius_px < 0 or not self.guided_eps > 0:
            raise ValueError(f"need guided_radius_px >= 0 and guided_eps > 0, got {self.guided_radius_px}, "
                             f"{self.guided_eps}")
        if self.grabcut_ring_px < 0 or self.grabcut_iterations < 1 or not 0 <= self.grabcut_min_keep <= 1:
            raise ValueError(f"need grabcut_ring_px >= 0, grabcut_iterations >= 1 and grabcut_min_keep in [0, 1], got "
                             f"{self.grabcut_ring_px}, {self.grabcut_iterations}, {self.grabcut_min_keep}")
        if not 0 <= self.longer_view_min_score <= 1:
            raise ValueError(f"longer_view_min_score must be in [0, 1], got {self.longer_view_min_score}")
        if self.confirm_max_snr < 0 or self.confirm_window_px < 3:
            raise ValueError(f"need confirm_max_snr >= 0 and confirm_window_px >= 3, got {self.confirm_max_snr}, "
                             f"{self.confirm_window_px}")
        if not 0 <= self.neighbour_min_score <= 1:
            raise ValueError(f"neighbour_min_score must be in [0, 1], got {self.neighbour_min_score}")
        if self.seed_min_snr < 0 or not 0 <= self.seed_min_share <= 1 or self.seed_min_px < 0:
            raise ValueError(f"need seed_min_snr >= 0, seed_min_share in [0, 1] and seed_min_px >= 0, got "
                             f"{self.seed_min_snr}, {self.seed_min_share}, {self.seed_min_px}")
        if not 0 <= self.grow_min_score < 1 or self.grow_radius_px < 0 or not self.grow_max_ratio >= 1:
            raise ValueError(f"need grow_min_score in [0, 1), grow_radius_px >= 0 and grow_max_ratio >= 1, got "
                             f"{self.grow_min_score}, {self.grow_radius_px}, {self.grow_max_ratio}")
        if self.colour_ring_px < 0 or not self.colour_margin >= 0:
            raise ValueError(f"need colour_ring_px >= 0 and colour_margin >= 0, got {self.colour_ring_px}, "
                             f"{self.colour_margin}")
        if self.carry_frames < 0 or not self.carry_rel_tol >= 0 or self.carry_clear_px < 0 \
                or not self.carry_min_parallax_px >= 0 or not self.carry_range_margin >= 1 \
                or not self.carry_smooth_rel >= 0:
            raise ValueError(f"need carry_frames >= 0, carry_rel_tol >= 0, carry_clear_px >= 0, "
                             f"carry_min_parallax_px >= 0, carry_range_margin >= 1 and carry_smooth_rel >= 0, got "
                             f"{self.carry_frames}, {self.carry_rel_tol}, {self.carry_clear_px}, "
                             f"{self.carry_min_parallax_px}, {self.carry_range_margin}, {self.carry_smooth_rel}")
        if self.refit_min_ratio != 0 and self.refit_min_ratio < 1:
            raise ValueError(f"refit_min_ratio must be 0 (off) or >= 1, got {self.refit_min_ratio}")
        if self.refit_depth_stride_px < 1 or self.refit_depth_min_pixels < 0:
            raise ValueError(f"need refit_depth_stride_px >= 1 and refit_depth_min_pixels >= 0, got "
                             f"{self.refit_depth_stride_px}, {self.refit_depth_min_pixels}")
        if self.min_prior_rel_tol < 0 or self.depth_sigmas < 0:
            raise ValueError(f"need min_prior_rel_tol >= 0 and depth_sigmas >= 0, got {self.min_prior_rel_tol}, "
                             f"{self.depth_sigmas}")


def residual_threshold(flow_px: np.ndarray, abs_px: float, rel: float) -> np.ndarray:
    """tau (H, W) = abs_px + rel * |flow|, in pixels."""
    return abs_px + rel * np.hypot(flow_px[..., 0], flow_px[..., 1])


def rigidity_residual(
    flow_px: np.ndarray,
    flow_valid: np.ndarray,
    K_src: np.ndarray,
    c2w_src: np.ndarray,
    K_dst: np.ndarray,
    c2w_dst: np.ndarray,
    depth_src: np.ndarray | None = None,
    depth_dst: np.ndarray | None = None,
    config: DynamicMaskConfig | None = None,
    prior_depth_src: np.ndarray | None = None,
    depth_rel_tol_src: np.ndarray | None = None,
    prior_rel_tol: float = 0.15,
    stripe_normal_src: np.ndarray | None = None,
    period_src: np.ndarray | None = None,
    carried_inv_depth_src: np.ndarray | None = None,
) -> np.ndarray:
    """How far (pixels) each flow target lies from where a static point could be (module docstring).

    Args:
        flow_px: (H, W, 2) F_{src->dst}; flow_valid: (H, W) bool.
        K_src, K_dst: (3, 3); c2w_src, c2w_dst: (4, 4) in one world frame and scale.
        depth_src: optional (H, W) z-depth of the source frame in the scale of c2w, 0 where
            invalid (as the `depth` label).
        depth_dst: optional (H, W) z-depth of the static surfaces of dst (0 elsewhere):
            source pixels that they hide in dst (z-buffer test) get no residual, since their
            flow cannot be measured. Moving surfaces must be left out: a moving object
            would "hide" its own rigidly projected pixels.
        config: thresholds (`DynamicMaskConfig` defaults if None).
        prior_depth_src: optional (H, W) z-depth of a dense prior, 0 where undefined; used
            where `depth_src` is invalid (module docstring).
        depth_rel_tol_src: optional (H, W) relative tolerance of `depth_src` (static points lie
            within a factor 1 + tol of it); exact rigid flow if None.
        prior_rel_tol: relative tolerance of the prior.
        stripe_normal_src: optional (H, W, 2) unit vectors across the stripes of the source
            pixels whose flow is measured across them only (`stripe_normals`), NaN elsewhere:
            there the residual is the distance across the stripes alone.
        period_src: optional (H, W, 2, 2) repeat vectors of the source pixels' texture
            (`labelers.flow.texture_periods`, 0 where none): there the flow is known up to
            them, and the residual is that of the alias (the flow plus -1, 0 or 1 times each)
            nearest a static point, if smaller. Without depth and without translation (no
            epipolar line) no alias is tried.
        carried_inv_depth_src: optional (H, W) inverse depth of a static point that other frames
            put on the pixel (`carried_inv_depth`; 0 or NaN: none): the depth-free residual also
            accepts it, within a factor 1 + `carry_rel_tol`, beside the frame's plausible range.

    Returns:
        (H, W) float64 residual; NaN where the flow is invalid or the geometry undefined.
    """
    cfg = config or DynamicMaskConfig()
    if stripe_normal_src is not None and stripe_normal_src.shape != (*flow_px.shape[:2], 2):
        raise ValueError(f"stripe_normal_src must be {(*flow_px.shape[:2], 2)}, got {stripe_normal_src.shape}")
    for name, depth in (("depth_src", depth_src), ("depth_dst", depth_dst), ("prior_depth_src", prior_depth_src)):
        if depth is not None and depth.shape != flow_px.shape[:2]:
            raise ValueError(f"{name} must be {flow_px.shape[:2]}, got {depth.shape}")
    if flow_valid.shape != flow_px.shape[:2]:
        raise ValueError(f"flow_valid must be {flow_px.shape[:2]}, got {flow_valid.shape}")
    src_to_dst = relative_pose(c2w_src, c2w_dst)
    tri = triangulate_flow(flow_px, K_src, K_dst, src_to_dst)
    known = flow_valid & np.isfinite(tri.offset_px)
    across = None
    if stripe_normal_src is not None:
        across = _across_stripes(flow_px, K_src, K_dst, src_to_dst, stripe_normal_src)
    src_valid = depth_src > 0 if depth_src is not None else np.zeros(known.shape, bool)
    if src_valid.mean() >= cfg.min_depth_fraction:
        static_inv_depth = 1.0 / depth_src[src_valid]
    else:
        # Negative values stay in: without real parallax they are half of the noise, and
        # dropping them would let moving pixels set the upper percentile.
        with np.errstate(invalid="ignore"):
            candidates = known & tri.ok & (np.abs(tri.epipolar_px) <= cfg.residual_abs_px)
        static_inv_depth = tri.inv_depth[candidates]
    far, near = _plausible_inv_depths(static_inv_depth, cfg)
    no_line = tri.offset_px if across is None else np.where(across.stripes, across.offset_px, tri.offset_px)
    residual = np.where(tri.line_scale > 0, _segment_residual(tri, far, near, across), no_line)
    if carried_inv_depth_src is not None:
        if carried_inv_depth_src.shape != flow_px.shape[:2]:
            raise ValueError(f"carried_inv_depth_src must be {flow_px.shape[:2]}, got {carried_inv_depth_src.shape}")
        has_carried = carried_inv_depth_src > 0  # NaN compares False
        carried = np.where(has_carried, carried_inv_depth_src, 1.0)  # finite: a NaN end would unbound all
        margin = 1.0 + cfg.carry_rel_tol
        with np.errstate(invalid="ignore"):
            at_carried = _segment_residual(tri, carried / margin, carried * margin, across)
            closer = has_carried & (tri.line_scale > 0) & (at_carried < residual)
        residual = np.where(closer, at_carried, residual)
    if prior_depth_src is not None:
        has_prior = (prior_depth_src > 0) & ~src_valid & (tri.line_scale > 0) & ~_near_depth_edge(prior_depth_src, cfg)
        prior_inv = 1.0 / np.where(has_prior, prior_depth_src, 1.0)
        margin = 1.0 + prior_rel_tol
        residual = np.where(has_prior, _segment_residual(tri, prior_inv / margin, prior_inv * margin, across), residual)
    if src_valid.any():
        rigid, z_dst = rigid_flow(np.where(src_valid, depth_src, 1.0), K_src, c2w_src, K_dst, c2w_dst)
        with np.errstate(invalid="ignore"):
            use_depth = src_valid & np.isfinite(rigid).all(axis=-1) & (z_dst > 0)
        rigid_residual = np.linalg.norm(flow_px - np.nan_to_num(rigid), axis=-1)
        if across is not None:
            normal_part = np.abs(np.einsum("hwc,hwc->hw", flow_px - np.nan_to_num(rigid), across.normal))
            rigid_residual = np.where(across.stripes, normal_part, rigid_residual)
        if depth_rel_tol_src is not None:
            inv = 1.0 / np.where(src_valid, depth_src, 1.0)
            widen = 1.0 + np.where(src_valid & np.isfinite(depth_rel_tol_src), depth_rel_tol_src, 0.0)
            tolerant = _segment_residual(tri, inv / widen, inv * widen, across)
            rigid_residual = np.where((tri.line_scale > 0) & np.isfinite(tolerant), tolerant, rigid_residual)
        residual = np.where(use_depth, rigid_residual, residual)
        if depth_dst is not None:
            known &= ~(use_depth & _hidden(np.nan_to_num(rigid), z_dst, depth_dst, cfg.occlusion_rel_tol))
    residual = np.where(known, residual, np.nan)
    if period_src is None or not period_src.any():
        return residual
    if period_src.shape != (*flow_px.shape[:2], 2, 2):
        raise ValueError(f"period_src must be {(*flow_px.shape[:2], 2, 2)}, got {period_src.shape}")
    # a pixel within residual_abs_px is never dynamic (tau >= residual_abs_px): no alias needed
    with np.errstate(invalid="ignore"):
        candidates = np.any(period_src[..., 0, :] != 0, axis=-1) & (residual > cfg.residual_abs_px)
    if not candidates.any():
        return residual
    rigid_error = (flow_px - np.nan_to_num(rigid))[candidates] if src_valid.any() else None
    shift = np.zeros(flow_px.shape, np.float32)
    shift[candidates] = _static_alias_shift(period_src[candidates], tri.epipolar_px[candidates],
                                            tri.line_direction[candidates], rigid_error,
                                            use_depth[candidates] if src_valid.any() else None)
    if not shift.any():
        return residual
    alias = rigidity_residual(flow_px + shift, flow_valid, K_src, c2w_src, K_dst, c2w_dst, depth_src, depth_dst, cfg,
                              prior_depth_src, depth_rel_tol_src, prior_rel_tol, stripe_normal_src,
                              carried_inv_depth_src=carried_inv_depth_src)
    with np.errstate(invalid="ignore"):
        return np.where(alias < residual, alias, residual)  # NaN on either side keeps the residual


def _static_alias_shift(
    period: np.ndarray,
    epipolar_px: np.ndarray,
    line_direction: np.ndarray,
    rigid_error: np.ndarray | None,
    use_depth: np.ndarray | None,
) -> np.ndarray:
    """(N, 2) the shift a p1 + b p2 (a, b in {-1, 0, 1}; p = `period`, (N, 2, 2)) that brings each
    of N flow targets nearest a static point: to the rigid flow where depth is used (`rigid_error`
    = flow - rigid flow), else to the epipolar line (whose signed distance `epipolar_px` changes by
    the shift's component across it); 0 where none does."""
    normal = np.stack([line_direction[:, 1], -line_direction[:, 0]], axis=-1)
    best_shift = np.zeros((len(period), 2))
    with np.errstate(invalid="ignore"):
        best_cost = np.abs(epipolar_px)
        if rigid_error is not None:
            best_cost = np.where(use_depth, np.linalg.norm(rigid_error, axis=-1), best_cost)
        for a in (-1, 0, 1):
            for b in (-1, 0, 1):
                if a == b == 0:
                    continue
                shift = a * period[:, 0] + b * period[:, 1]
                cost = np.abs(epipolar_px + np.einsum("nc,nc->n", shift, normal))
                if rigid_error is not None:
                    cost = np.where(use_depth, np.linalg.norm(rigid_error + shift, axis=-1), cost)
                better = cost < best_cost
                best_cost = np.where(better, cost, best_cost)
                best_shift[better] = shift[better]
    return best_shift


def _near_depth_edge(depth: np.ndarray, cfg: DynamicMaskConfig) -> np.ndarray:
    """(H, W) bool: within a pixel of a jump of more than 4 * `occlusion_rel_tol` in depth
    (flow is smeared across such occlusion boundaries)."""
    kernel = np.ones((3, 3), np.uint8)
    defined = np.where(depth > 0, depth, np.nan).astype(np.float32)
    highest = cv2.dilate(np.nan_to_num(defined, nan=0.0), kernel)
    lowest = cv2.erode(np.nan_to_num(defined, nan=np.inf), kernel)
    with np.errstate(invalid="ignore", over="ignore"):
        edge = ~(highest <= (1.0 + 4 * cfg.occlusion_rel_tol) * lowest)
    return grow_mask(edge, 1)


def _plausible_inv_depths(static_inv_depth: np.ndarray, cfg: DynamicMaskConfig) -> tuple[float, float]:
    """Farthest and nearest plausible static inverse depth of a frame (module docstring): the
    far end is at most 0 (infinity); (-inf, inf), no bound, without samples."""
    if not static_inv_depth.size:
        return -np.inf, np.inf
    low, high = np.percentile(static_inv_depth, [100.0 - cfg.parallax_percentile, cfg.parallax_percentile])
    margin = cfg.parallax_margin
    return min(low * margin, 0.0), (high * margin if high > 0 else high / margin)


def _implied_inv_depth(
    views: dict[int, tuple[np.ndarray, np.ndarray, int]], t: int, c2w: np.ndarray, K: np.ndarray,
    shape: tuple[int, int], cfg: DynamicMaskConfig,
) -> tuple[np.ndarray, np.ndarray]:
    """(H, W) = `shape` inverse depth of frame t's pixels as a static point (NaN where undetermined),
    from its longest view on each side, weighted by their sensitivity squared, where the flow lies
    within `residual_abs_px` of its epipolar line; and the parallax behind it, (H, W) pixels (the
    root sum of squares of the views' image motion between infinity and that depth: the inverse
    depth is known to about the flow's noise over it)."""
    sides = [[dst for dst in views if (dst - t) * sign > 0] for sign in (-1, 1)]
    longest = [max(side, key=lambda dst: abs(dst - t)) for side in sides if side]
    weighted, weights = np.zeros(shape), np.zeros(shape)
    for dst in longest:
        flow_px, flow_valid, _ = views[dst]
        tri = triangulate_flow(flow_px, K[t], K[dst], relative_pose(c2w[t], c2w[dst]))
        with np.errstate(invalid="ignore"):
            use = flow_valid & tri.ok & (np.abs(tri.epipolar_px) <= cfg.residual_abs_px) & (tri.inv_depth > 0)
        weight = np.where(use, np.nan_to_num(tri.sensitivity) ** 2, 0.0)
        weighted += weight * np.where(use, tri.inv_depth, 0.0)
        weights += weight
    with np.errstate(invalid="ignore", divide="ignore"):
        inv_depth = np.where(weights > 0, weighted / weights, np.nan)
        return inv_depth.astype(np.float32), (inv_depth * np.sqrt(weights)).astype(np.float32)


def carried_inv_depth(
    static_inv_depth: np.ndarray, c2w: np.ndarray, K: np.ndarray, t: int, max_gap: int, cell_px: int = 4
) -> np.ndarray:
    """The nearest static point (largest inverse depth) that frames within `max_gap` of frame t put
    on each of its pixels through the cameras, 0 where none (module docstring, step 1).

    Args:
        static_inv_depth: (T, H, W) inverse depth of each frame's static pixels, NaN elsewhere.
        c2w: (T, 4, 4); K: (T, 3, 3).
        cell_px: points land on cells of this size (a point seen nearer in frame t than in its
            own frame covers more pixels there); an empty cell takes its neighbours' nearest.

    Returns:
        (H, W) float32 inverse depth in frame t's camera, in the scale of c2w.
    """
    num_frames, height, width = static_inv_depth.shape
    rows, cols = -(-height // cell_px), -(-width // cell_px)
    nearest = np.zeros(rows * cols)
    grid = pixel_grid(height, width)[::2, ::2]  # every other pixel: cells hold several per side
    world_to_t = np.linalg.inv(c2w[t])
    for src in range(max(0, t - max_gap), min(num_frames, t + max_gap + 1)):
        inv_depth = static_inv_depth[src, ::2, ::2]
        keep = inv_depth > 0  # NaN compares False
        if src == t or not keep.any():
            continue
        rays = np.linalg.solve(K[src], np.concatenate([grid[keep], np.ones((keep.sum(), 1))], axis=1).T)
        src_to_t = world_to_t @ c2w[src]
        points = src_to_t[:3, :3] @ (rays / inv_depth[keep]) + src_to_t[:3, 3:]
        image = K[t] @ points
        with np.errstate(divide="ignore", invalid="ignore"):
            x, y = image[0] / image[2], image[1] / image[2]
            inside = (points[2] > 0) & (x >= 0) & (x < width) & (y >= 0) & (y < height)
        cell = (y[inside] // cell_px).astype(np.int64) * cols + (x[inside] // cell_px).astype(np.int64)
        if not cell.size:
            continue
        order = np.argsort(cell, kind="stable")
        cell, inv_depth_t = cell[order], 1.0 / points[2][inside][order]
        starts = np.flatnonzero(np.r_[True, cell[1:] != cell[:-1]])
        nearest[cell[starts]] = np.fmax(nearest[cell[starts]], np.maximum.reduceat(inv_depth_t, starts))
    cells = nearest.reshape(rows, cols).astype(np.float32)
    cells = np.where(cells > 0, cells, cv2.dilate(cells, np.ones((3, 3), np.uint8)))  # holes between points
    return np.repeat(np.repeat(cells, cell_px, axis=0), cell_px, axis=1)[:height, :width]


def smooth_continuation(
    seeds: np.ndarray, allowed: np.ndarray, inv_depth: np.ndarray, max_rel_step: float
) -> np.ndarray:
    """The pixels of `allowed` that `seeds` reach through 4-neighbours whose inverse depth changes by
    at most a factor 1 + `max_rel_step` per step (module docstring, step 1): one smooth surface.

    Args:
        seeds, allowed: (H, W) bool; inv_depth: (H, W), NaN or <= 0 where undetermined (never reached).

    Returns:
        (H, W) bool, within `allowed` (all False if `max_rel_step` is 0).
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        log_inv = np.log(np.where(inv_depth > 0, inv_depth, np.nan))
    nodes = (seeds | allowed) & np.isfinite(log_inv)
    if not max_rel_step or not (seeds & nodes).any() or not (allowed & nodes).any():
        return np.zeros(allowed.shape, bool)
    index = np.full(allowed.shape, -1, np.int64)
    index[nodes] = np.arange(nodes.sum())
    step = np.log1p(max_rel_step)
    rows, cols = [], []
    for a, b in ((np.s_[:, :-1], np.s_[:, 1:]), (np.s_[:-1, :], np.s_[1:, :])):
        with np.errstate(invalid="ignore"):
            edge = nodes[a] & nodes[b] & (np.abs(log_inv[a] - log_inv[b]) <= step)
        rows.append(index[a][edge])
        cols.append(index[b][edge])
    count = int(nodes.sum())
    graph = scipy.sparse.coo_matrix((np.ones(sum(map(len, rows))), (np.concatenate(rows), np.concatenate(cols))),
                                    shape=(count, count))
    _, component = scipy.sparse.csgraph.connected_components(graph, directed=False)
    seeded = np.zeros(component.max() + 1, bool)
    seeded[component[index[seeds & nodes]]] = True
    reached = np.zeros(allowed.shape, bool)
    reached[nodes] = seeded[component]
    return reached & allowed


@dataclass(frozen=True)
class _AcrossStripes:
    """Where the source texture is stripes: the residual measured across them only.

    Attributes:
        stripes: (H, W) bool, pixels with a stripe normal.
        normal: (H, W, 2) unit vectors across the stripes (0 elsewhere).
        along_dot, epipolar_dot: (H, W) the normal's components on the epipolar line's direction
            and on its normal (the axes of `TwoViewTriangulation.along_px` and `epipolar_px`).
        offset_px: (H, W) |(target - vanishing point) . normal|, the residual without translation.
    """

    stripes: np.ndarray
    normal: np.ndarray
    along_dot: np.ndarray
    epipolar_dot: np.ndarray
    offset_px: np.ndarray


def _across_stripes(
    flow_px: np.ndarray, K_src: np.ndarray, K_dst: np.ndarray, src_to_dst: np.ndarray, stripe_normal: np.ndarray
) -> _AcrossStripes:
    """The epipolar geometry of `labelers.depth.triangulate_flow` seen across the stripes."""
    lines = EpipolarPlanes.of(K_src, K_dst, src_to_dst, *flow_px.shape[:2])
    stripes = np.isfinite(stripe_normal).all(axis=-1)
    normal = np.where(stripes[..., None], stripe_normal, 0.0)
    normal_x, normal_y = normal[..., 0], normal[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        line_norm = np.hypot(lines.h_x, lines.h_y)
        dir_x, dir_y = lines.h_x / line_norm, lines.h_y / line_norm
        offset_x = lines.u + flow_px[..., 0] - lines.a_x / lines.a_z
        offset_y = lines.v + flow_px[..., 1] - lines.a_y / lines.a_z
    along_dot = dir_x * normal_x + dir_y * normal_y
    epipolar_dot = dir_y * normal_x - dir_x * normal_y
    offset_px = np.abs(offset_x * normal_x + offset_y * normal_y)
    return _AcrossStripes(stripes, normal, along_dot, epipolar_dot, offset_px)


def _segment_residual(
    tri: TwoViewTriangulation,
    far_inv_depth: np.ndarray | float,
    near_inv_depth: np.ndarray | float,
    across: _AcrossStripes | None = None,
) -> np.ndarray:
    """Distance of the flow target from the segment of its epipolar line between the static
    points at the two inverse depths (scalars or (H, W)); only the epipolar distance when unbounded.

    On stripes (`across`) the target is known across them only: the distance, measured across
    the stripes, from the line through the target along them to the segment (0 where they cross).
    """
    along_near = tri.along_at(near_inv_depth) if np.all(np.isfinite(near_inv_depth)) else np.inf
    along_far = tri.along_at(far_inv_depth) if np.all(np.isfinite(far_inv_depth)) else -np.inf
    with np.errstate(invalid="ignore"):
        outside = np.maximum(along_far - tri.along_px, 0.0) + np.maximum(tri.along_px - along_near, 0.0)
        euclidean = np.hypot(tri.epipolar_px, outside)
    if across is None:
        return euclidean
    # (p(lambda) - target) . normal for the static point at line position lambda, at both ends
    constant = -tri.epipolar_px * across.epipolar_dot
    with np.errstate(invalid="ignore"):
        ends = [(end - tri.along_px) * across.along_dot + constant for end in (along_far, along_near)]
    ends = [np.where(np.isnan(e) & np.isfinite(constant), constant, e) for e in ends]  # an infinite end, parallel
    with np.errstate(invalid="ignore"):
        crossing = ends[0] * ends[1] <= 0
        normal_part = np.where(crossing, 0.0, np.minimum(np.abs(ends[0]), np.abs(ends[1])))
    return np.where(across.stripes, normal_part, euclidean)


def _hidden(rigid_px: np.ndarray, z_dst: np.ndarray, depth_dst: np.ndarray, rel_tol: float) -> np.ndarray:
    """Source points behind the nearest valid dst surface around their rigid target (z-buffer test)."""
    height, width = z_dst.shape
    nearest = cv2.erode(np.where(depth_dst > 0, depth_dst, np.inf).astype(np.float32), np.ones((3, 3), np.uint8))
    target = np.rint(pixel_grid(height, width) + rigid_px).astype(np.int64)
    inside = (target[..., 0] >= 0) & (target[..., 0] < width) & (target[..., 1] >= 0) & (target[..., 1] < height)
    occluder = np.full((height, width), np.inf)
    occluder[inside] = nearest[target[..., 1][inside], target[..., 0][inside]]
    with np.errstate(invalid="ignore"):
        return z_dst > (1.0 + rel_tol) * occluder


def _refit_fits_static(
    flow_px: np.ndarray,
    static_valid: np.ndarray,
    K_src: np.ndarray,
    K_dst: np.ndarray,
    given: np.ndarray,
    refit: np.ndarray,
) -> bool:
    """Whether the refitted relative pose (4, 4) leaves the flow (H, W, 2) of the static pixels
    `static_valid` (H, W) no farther from its epipolar lines (median, on `refit_to_background`'s grid)
    than the given pose does. A refit that the fundamental matrix took from a mover explains the mover,
    not the static pixels. Fewer than 8 samples (what a fundamental matrix needs) are no evidence."""
    xy, target = grid_samples(flow_px, static_valid, SfmConfig().mover_flow_samples)
    if len(xy) < 8:
        return True
    return bool(np.median(pose_distance_px(xy, target, K_src, K_dst, refit))
                <= np.median(pose_distance_px(xy, target, K_src, K_dst, given)))


def seeded_regions(dynamic: np.ndarray, seeds: np.ndarray, config: DynamicMaskConfig) -> np.ndarray:
    """The 8-connected regions of `dynamic` (H, W) bool that hold at least `seed_min_share` of their
    pixels, and `seed_min_px`, on `seeds` (H, W) bool, texture that determines the flow."""
    count, regions = cv2.connectedComponents(dynamic.astype(np.uint8), connectivity=8)
    if count <= 1:
        return dynamic
    size = np.bincount(regions.ravel(), minlength=count)
    seeded = np.bincount(regions[dynamic & seeds], minlength=count)
    keep = seeded >= np.maximum(config.seed_min_px, config.seed_min_share * size)
    keep[0] = False
    return keep[regions]


def grown_into(
    dynamic: np.ndarray, score: np.ndarray, min_score: float, radius_px: int, max_ratio: float = np.inf
) -> np.ndarray:
    """`dynamic` (H, W) bool grown, through pixels of `score` (H, W; NaN: no verdict) >= `min_score`,
    by up to `radius_px` 8-connected steps; a grown region more than `max_ratio` times the size of
    the flags it holds keeps those flags alone."""
    with np.errstate(invalid="ignore"):
        weak = (score >= min_score).astype(np.uint8)
    grown = dynamic.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    for _ in range(radius_px):
        grown = cv2.dilate(grown, kernel) & (weak | grown)
    if not np.isfinite(max_ratio):
        return grown.astype(bool)
    count, regions = cv2.connectedComponents(grown, connectivity=8)
    size = np.bincount(regions.ravel(), minlength=count)
    held = np.bincount(regions[dynamic], minlength=count)
    flooded = size > max_ratio * held
    flooded[0] = False
    return np.where(flooded[regions], dynamic, grown.astype(bool))


def grown_regions(
    dynamic: np.ndarray,
    score: np.ndarray,
    depth_valid: np.ndarray | None,
    depth_triangulated: bool,
    config: DynamicMaskConfig,
) -> np.ndarray:
    """A key frame's cleaned regions `dynamic` (H, W) bool grown by `grown_into` with the `grow_*`
    settings through pixels of key-pair `score` (H, W) without `depth_valid` (H, W; None: no depth);
    with `depth_triangulated` and `grow_into_triangulated` through the depth-valid ones as well,
    except where that floods a region: there the growth without them stands (module docstring,
    step 3)."""
    free = score if depth_valid is None else np.where(depth_valid, np.nan, score)
    grown = grown_into(dynamic, free, config.grow_min_score, config.grow_radius_px, config.grow_max_ratio)
    if depth_triangulated and config.grow_into_triangulated and depth_valid is not None:
        grown |= grown_into(dynamic, score, config.grow_min_score, config.grow_radius_px, config.grow_max_ratio)
    return grown


# Colour variance floor (CIELAB as 8-bit OpenCV stores it, squared units): a flat region's
# Gaussian would otherwise be as narrow as its quantisation.
_COLOUR_VAR_FLOOR = 4.0
_COLOUR_MIN_PX = 10


def colour_consistent(flags: np.ndarray, added: np.ndarray, rgb: np.ndarray, config: DynamicMaskConfig) -> np.ndarray:
    """The pixels of `added` (H, W) bool, each joined to a region of `flags` (H, W) bool, whose colour
    in `rgb` (H, W, 3) uint8 is at least as likely under a Gaussian of their region's flagged pixels
    as under one of the pixels within `colour_ring_px` around the region (CIELAB), up to
    `colour_margin` in -2 log-likelihood (module docstring, step 3). A region with fewer than a few
    flags or ring pixels keeps what it adds."""
    if not config.colour_ring_px or not added.any():
        return added
    lab = cv2.cvtColor(rgb, cv2.COLOR_RGB2LAB).astype(np.float64)
    _, regions = cv2.connectedComponents((flags | added).astype(np.uint8), connectivity=8)
    kept = np.zeros_like(added)
    for r in np.unique(regions[added]):
        region = regions == r
        core, new = region & flags, region & added
        ring = grow_mask(region, config.colour_ring_px) & ~region
        if core.sum() < _COLOUR_MIN_PX or ring.sum() < _COLOUR_MIN_PX:
            kept |= new
            continue
        x = lab[new]
        own, around = (_neg2_log_likelihood(x, lab[m]) for m in (core, ring))
        kept[new] = own <= around + config.colour_margin
    return kept


def _neg2_log_likelihood(x: np.ndarray, sample: np.ndarray) -> np.ndarray:
    """-2 log-likelihood (up to a constant) of colours x (N, 3) under a Gaussian fitted to `sample` (M, 3)."""
    mean = sample.mean(axis=0)
    cov = np.cov(sample.T) + _COLOUR_VAR_FLOOR * np.eye(3)
    d = x - mean
    return np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d) + np.log(np.linalg.det(cov))


_GRABCUT_MIN_PX = 50


def colour_cut(mask: np.ndarray, rgb: np.ndarray, config: DynamicMaskConfig) -> np.ndarray:
    """`mask` (H, W) bool with each region cut by OpenCV's GrabCut on `rgb` (H, W, 3) uint8 from the
    pixels within `grabcut_ring_px` around it: the region is probable foreground, its ring (and any
    other region there) probable background, the rest of a crop around it background. A region the
    cut would leave with less than `grabcut_min_keep` of its pixels stays whole (module docstring,
    step 3)."""
    if not config.grabcut_ring_px or not mask.any():
        return mask
    out = mask.copy()
    height, width = mask.shape
    ring_px = config.grabcut_ring_px
    count, regions, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    for r in range(1, count):
        x, y, w, h = stats[r, :4]
        crop = (slice(max(y - 2 * ring_px, 0), min(y + h + 2 * ring_px, height)),
                slice(max(x - 2 * ring_px, 0), min(x + w + 2 * ring_px, width)))
        region = regions[crop] == r
        labels = np.full(region.shape, cv2.GC_BGD, np.uint8)
        labels[grow_mask(region, ring_px) | mask[crop]] = cv2.GC_PR_BGD
        labels[region] = cv2.GC_PR_FGD
        if (labels != cv2.GC_PR_FGD).sum() < _GRABCUT_MIN_PX or region.sum() < _GRABCUT_MIN_PX:
            continue  # too few pixels on one side for its colour mixtures
        cv2.setRNGSeed(0)  # GrabCut's k-means start draws from OpenCV's RNG: the same labels on every run
        cv2.grabCut(np.ascontiguousarray(rgb[crop]), labels, None, np.zeros((1, 65)), np.zeros((1, 65)),
                    config.grabcut_iterations, cv2.GC_INIT_WITH_MASK)
        kept = region & ((labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD))
        if kept.sum() >= config.grabcut_min_keep * region.sum():
            out[crop] &= ~(region & ~kept)
    return out


def clean_mask(dynamic: np.ndarray, config: DynamicMaskConfig) -> np.ndarray:
    """Opening, closing, hole filling and small-component removal of a (H, W) bool mask."""
    mask = dynamic.astype(np.uint8)
    if config.open_radius_px:
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, disk(config.open_radius_px))
    if config.close_radius_px:
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, disk(config.close_radius_px))
    if config.fill_holes:
        mask = _fill_holes(mask)
    if config.min_area_fraction:
        _, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        small = stats[:, cv2.CC_STAT_AREA] < config.min_area_fraction * mask.size
        small[0] = True  # background label
        mask = (~small[labels]).astype(np.uint8)
    return mask.astype(bool)


def snap_to_edges(masks: np.ndarray, frames: np.ndarray, config: DynamicMaskConfig) -> np.ndarray:
    """Masks (S, H, W) bool with their borders moved to the edges of their frames (S, H, W, 3)
    uint8 RGB: colour-guided filter (`kornia.filters.guided_blur`), thresholded at 0.5."""
    if not config.guided_radius_px or not masks.any():
        return masks
    import torch
    from kornia.filters import guided_blur

    guide = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float() / 255.0
    soft = guided_blur(guide, torch.from_numpy(masks.astype(np.float32))[:, None],
                       2 * config.guided_radius_px + 1, config.guided_eps)
    return soft[:, 0].numpy() > 0.5


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """Set background components that do not touch the image border."""
    count, labels = cv2.connectedComponents((mask == 0).astype(np.uint8), connectivity=4)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    hole = np.ones(count, bool)
    hole[border] = False
    hole[0] = False  # label 0 is the mask itself
    return (mask.astype(bool) | hole[labels]).astype(np.uint8)


def stripe_normals(frames: np.ndarray, config: DynamicMaskConfig) -> np.ndarray | None:
    """(T, H, W, 2) unit vectors across the texture where it is stripes or an edge
    (`labelers.flow.texture_isotropy` below `config.min_isotropy`), NaN where it determines the
    flow in both directions (module docstring); None when `config.min_isotropy` is 0.

    Args:
        frames: (T, H, W, 3) uint8 RGB.
    """
    check_frames(frames)
    if not config.min_isotropy:
        return None
    return np.stack([
        aperture_normals(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), config.isotropy_window_px, config.min_isotropy)
        for frame in frames
    ])


@dataclass(frozen=True)
class SourceTexture:
    """What the texture of each frame lets the flow measure (module docstring).

    Attributes:
        stripe_normals: optional (T, H, W, 2) (`stripe_normals`): on stripes the residual is
            measured across them only.
        periods: optional (T, H, W, 2, 2) repeat vectors (`labelers.flow.texture_periods`, 0
            where none): on repeated texture the flow is known up to them.
        weak: optional (T, H, W) bool, texture too weak to trust one key-frame view's flag
            there (`DynamicMaskConfig.confirm_max_snr`).
        seeds: optional (T, H, W) bool, texture that determines the flow: a region of flags
            needs some of them there (`DynamicMaskConfig.seed_min_snr`).
    """

    stripe_normals: np.ndarray | None = None
    periods: np.ndarray | None = None
    weak: np.ndarray | None = None
    seeds: np.ndarray | None = None

    @classmethod
    def of(
        cls, frames: np.ndarray, config: DynamicMaskConfig, period_frames: Sequence[int] | None = None
    ) -> SourceTexture:
        """Stripes (`stripe_normals`), periods, weak texture and seed texture of the frames, (T, H, W, 3)
        uint8 RGB, as `config` asks for (`min_isotropy`, `max_period_px`, `confirm_max_snr`,
        `seed_min_snr`; 0 leaves one out); all but the stripes of `period_frames` only (all if
        None), 0 and False elsewhere."""
        normals = stripe_normals(frames, config)
        only = range(len(frames)) if period_frames is None else period_frames
        periods = weak = None
        if config.max_period_px:
            periods = np.zeros(frames.shape[:3] + (2, 2), np.float32)
            for t in only:
                periods[t] = texture_periods(cv2.cvtColor(frames[t], cv2.COLOR_RGB2GRAY), config.period_window_px,
                                             config.max_period_px, config.period_min_zncc, config.period_min_dip)
            if normals is not None:
                periods[np.isfinite(normals[..., 0])] = 0.0  # measured across the stripes already
        weak = np.zeros(frames.shape[:3], bool) if config.confirm_max_snr else None
        seeds = np.zeros(frames.shape[:3], bool) if config.seed_min_snr else None
        if weak is not None or seeds is not None:
            for t in only:
                gray = cv2.cvtColor(frames[t], cv2.COLOR_RGB2GRAY)
                snr = texture_snr(gray, max(image_noise_sigma(gray), NOISE_FLOOR_LEVELS), config.confirm_window_px)
                if weak is not None:
                    weak[t] = snr < config.confirm_max_snr
                if seeds is not None:
                    seeds[t] = snr >= config.seed_min_snr
        return cls(normals, periods, weak, seeds)

    def without_periods(self) -> SourceTexture:
        """The same stripes, no periods nor weak texture (the frame masks' views are many already)."""
        return SourceTexture(self.stripe_normals)

    def at(self, t: int) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Stripe normals and periods of frame t."""
        return (None if self.stripe_normals is None else self.stripe_normals[t],
                None if self.periods is None else self.periods[t])


class FlowRigidityMasks:
    """Dynamic masks from the flow residual against a static world (CPU, no weights).

    Example:
        >>> masks = FlowRigidityMasks()
        >>> frame_masks = masks.frame_masks(flows, c2w, K)                 # (T, H, W), no depth
        >>> dynamic_mask = masks.key_masks(flows, c2w, K, key_frames, depth)  # (S, H, W)
    """

    name = "flow_rigidity"
    # 2: longer key views (key_view_multiples), depth prior; 3: static range reaches infinity;
    # 4: on stripes and edges the residual is measured across them only (min_isotropy);
    # 5: on repeated texture up to its periods (max_period_px); 6: borders snapped to the frame's edges (guided_radius_px);
    # 7: key-frame views refitted to their background where the cameras explain it worse (refit_min_ratio),
    # longer views only where the key pair hints at motion (longer_view_min_score);
    # 8: flags on weak texture confirmed by the mirror view (confirm_max_snr);
    # 9: the last key frame completed from M_{S-2} (last_from_previous);
    # 10: regions of flags need texture that determines the flow (seed_min_snr);
    # 11: regions grow into neighbours that score just below the threshold (grow_min_score);
    # 12: frame masks accept static points carried from other frames (carry_frames);
    # 13: carried points may lie a little nearer than their frame's range (carry_range_margin);
    # 14: what carried points free extends over the smooth surface around it (carry_smooth_rel);
    # 15: regions also grow into pixels whose depth was triangulated from the flows (grow_into_triangulated);
    # 16: the frame masks' flags on weak texture, where the key flow is invalid, confirmed by the mirror view too;
    # 17: key masks completed from their neighbours' regions (from_neighbours);
    # 18: what growth and the neighbours add must match its region's colour better than the ring's (colour_ring_px);
    # 19: each region of a key mask is cut from the ring around it by GrabCut (grabcut_ring_px)
    # 20: with depth not triangulated under the cameras, a view's refit must leave more of the flow rigid than they do
    # (refit_depth_min_pixels); 21: with frame masks, a view's refit must explain their static pixels as well as the cameras
    version = "21"

    def __init__(self, config: DynamicMaskConfig | None = None) -> None:
        self.config = config or DynamicMaskConfig()

    @property
    def params(self) -> dict[str, Any]:
        return asdict(self.config)

    def pair_score(
        self,
        flow_px: np.ndarray,
        flow_valid: np.ndarray,
        src: int,
        dst: int,
        c2w: np.ndarray,
        K: np.ndarray,
        depth: np.ndarray | None = None,
        static_mask: np.ndarray | None = None,
        prior_depth: np.ndarray | None = None,
        depth_rel_tol: np.ndarray | None = None,
        prior_rel_tol: float = 0.15,
        texture: SourceTexture | None = None,
        carried_inv_depth_src: np.ndarray | None = None,
    ) -> np.ndarray:
        """Residual (H, W) of F_{src->dst} over its threshold tau: > 1 dynamic, NaN unknown.

        Args:
            depth: optional (T, H, W) depth of all frames, 0 where invalid.
            static_mask: optional (T, H, W) bool, pixels believed static; enables the
                z-buffer test against the static surfaces of dst.
            prior_depth: optional (T, H, W) dense depth prior, 0 where undefined.
            depth_rel_tol: optional (T, H, W) relative tolerance of `depth`.
            prior_rel_tol: relative tolerance of `prior_depth`.
            texture: optional `SourceTexture`: stripes and periods of the frames.
            carried_inv_depth_src: optional (H, W) inverse depth of static points carried to src
                from other frames (`rigidity_residual`).
        """
        cfg = self.config
        stripe_normal_src, period_src = (None, None) if texture is None else texture.at(src)
        residual = rigidity_residual(
            flow_px,
            flow_valid,
            K[src],
            c2w[src],
            K[dst],
            c2w[dst],
            None if depth is None else depth[src],
            None if depth is None or static_mask is None else np.where(static_mask[dst], depth[dst], 0.0),
            cfg,
            None if prior_depth is None else prior_depth[src],
            None if depth_rel_tol is None else depth_rel_tol[src],
            prior_rel_tol,
            stripe_normal_src,
            period_src,
            carried_inv_depth_src,
        )
        return residual / residual_threshold(flow_px, cfg.residual_abs_px, cfg.residual_rel)

    def frame_masks(
        self,
        flows: PairFlows,
        c2w: np.ndarray,
        K: np.ndarray,
        depth: np.ndarray | None = None,
        texture: SourceTexture | None = None,
    ) -> np.ndarray:
        """Dynamic mask (T, H, W) bool of every frame (module docstring, step 1).

        Args:
            flows: flows of frame pairs, both directions (`PairFlows.lookup`).
            c2w: (T, 4, 4); K: (T, 3, 3).
            depth: optional (T, H, W) depth in the scale of c2w, 0 where invalid.
            texture: optional `SourceTexture` of the frames.
        """
        num_frames, height, width = _check_mask_inputs(flows, c2w, K, depth, texture)
        cfg = self.config
        c2w = np.asarray(c2w, np.float64)
        masks = np.zeros((num_frames, height, width), bool)
        implied_inv_depth = np.full((num_frames, height, width), np.nan, np.float32)
        static_inv_depth = np.full((num_frames, height, width), np.nan, np.float32)
        near = np.full(num_frames, np.inf)
        for t in range(num_frames):
            views = self._frame_views(flows, t)
            masks[t] = self._frame_mask(views, t, c2w, K, (height, width), depth, texture)
            if cfg.carry_frames:
                implied_inv_depth[t], parallax_px = _implied_inv_depth(views, t, c2w, K, (height, width), cfg)
                static_inv_depth[t], near[t] = self._static_points(implied_inv_depth[t], parallax_px, masks[t])
        if not cfg.carry_frames:
            return masks
        # from the first pass's static points alone: carrying the second pass's ones as well
        # chained a mover's unflagged frames into all its others (module docstring, step 1)
        static_inv_depth.flags.writeable = False
        least = cfg.min_area_fraction * height * width  # fewer freed flags would not survive the clean-up
        for t in np.flatnonzero(masks.any(axis=(1, 2))):
            with np.errstate(invalid="ignore"):
                candidates = masks[t] & (implied_inv_depth[t] > near[t])
            if depth is not None:
                candidates &= ~(depth[t] > 0)  # where depth is valid the rigid residual decides
            if candidates.sum() < least:
                continue
            carried = carried_inv_depth(static_inv_depth, c2w, K, t, cfg.carry_frames)
            with np.errstate(invalid="ignore", divide="ignore"):
                matches = np.abs(np.log(implied_inv_depth[t] / carried)) <= np.log1p(cfg.carry_rel_tol)
            if (candidates & matches).sum() < least:
                continue
            views = self._frame_views(flows, t)
            rescored = self._frame_mask(views, t, c2w, K, (height, width), depth, texture, carried)
            without_depth = rescored if depth is None else rescored & ~(depth[t] > 0)
            masks[t] = rescored & ~smooth_continuation(masks[t] & ~rescored, without_depth, implied_inv_depth[t],
                                                       cfg.carry_smooth_rel)
        return masks

    def _static_points(
        self, implied_inv_depth: np.ndarray, parallax_px: np.ndarray, dynamic: np.ndarray
    ) -> tuple[np.ndarray, float]:
        """(H, W) `implied_inv_depth` of the pixels clear of `dynamic`'s flags (`_clear_of`), at most
        `carry_range_margin` times nearer than the frame's plausible range and with `parallax_px`
        (H, W) of at least `carry_min_parallax_px` (NaN elsewhere; module docstring, step 1), and the
        range's nearest inverse depth."""
        clear = self._clear_of(dynamic) & np.isfinite(implied_inv_depth)
        near = _plausible_inv_depths(implied_inv_depth[clear], self.config)[1]
        with np.errstate(invalid="ignore"):
            nearest = near * self.config.carry_range_margin if near > 0 else near / self.config.carry_range_margin
            keep = clear & (implied_inv_depth <= nearest) & (parallax_px >= self.config.carry_min_parallax_px)
            return np.where(keep, implied_inv_depth, np.nan), near

    def _clear_of(self, dynamic: np.ndarray) -> np.ndarray:
        """(H, W) bool, pixels more than `carry_clear_px` from a flag of `dynamic` (H, W): a mover's
        unflagged part beside its flags would carry the mover as a static object."""
        if not self.config.carry_clear_px:
            return ~dynamic
        return ~grow_mask(dynamic, self.config.carry_clear_px)

    def _frame_views(self, flows: PairFlows, t: int) -> dict[int, tuple[np.ndarray, np.ndarray, int]]:
        """Flows from frame t to frames t -+ g, g in `view_gaps`, composed along given pairs."""
        cfg = self.config
        paths = flow_paths(flows.directed_pairs(), t, max(cfg.view_gaps), cfg.max_hops)
        wanted = {t + sign * gap for gap in cfg.view_gaps for sign in (-1, 1)}
        return correspondences_along(flows, {dst: path for dst, path in paths.items() if dst in wanted})

    def _frame_mask(
        self,
        views: dict[int, tuple[np.ndarray, np.ndarray, int]],
        t: int,
        c2w: np.ndarray,
        K: np.ndarray,
        shape: tuple[int, int],
        depth: np.ndarray | None,
        texture: SourceTexture | None,
        carried_inv_depth_src: np.ndarray | None = None,
    ) -> np.ndarray:
        """Frame t's mask (H, W) = `shape` bool from the votes of its views (module docstring, step 1)."""
        cfg = self.config
        dynamic_votes, known_votes = np.zeros(shape), np.zeros(shape)
        for dst, (flow_px, flow_valid, _) in views.items():
            score = self.pair_score(flow_px, flow_valid, t, dst, c2w, K, depth, texture=texture,
                                    carried_inv_depth_src=carried_inv_depth_src)
            known = np.isfinite(score)
            known_votes += known
            dynamic_votes += known & (np.nan_to_num(score) > 1.0)
        raw = (dynamic_votes >= cfg.min_dynamic_views) & (dynamic_votes >= cfg.min_dynamic_fraction * known_votes)
        return clean_mask(raw, cfg)

    def key_masks(
        self,
        flows: PairFlows,
        c2w: np.ndarray,
        K: np.ndarray,
        key_frames: Sequence[int],
        depth: np.ndarray | None = None,
        frame_masks: np.ndarray | None = None,
        prior_depth: np.ndarray | None = None,
        depth_rel_tol: np.ndarray | None = None,
        prior_rel_tol: float = 0.15,
        texture: SourceTexture | None = None,
        frames: np.ndarray | None = None,
        depth_triangulated: bool = False,
    ) -> np.ndarray:
        """M_k (S, H, W) bool for the key frames (module docstring, step 3).

        Uses F_{k->k+1} of consecutive key frames (and F_{S-1 -> S-2} for the last), given
        directly in `flows` or composed from given pairs.

        Args:
            key_frames: increasing frame indices of the S >= 2 key frames.
            depth: optional (T, H, W) depth of all frames in the scale of c2w, 0 where invalid.
            frame_masks: optional (T, H, W) bool from `frame_masks`: they decide the pixels
                whose key-pair flow is invalid, and their static pixels enable the z-buffer test.
            prior_depth: optional (T, H, W) dense depth prior (`DepthResult.prior_depth`), used
                where `depth` is invalid.
            depth_rel_tol: optional (T, H, W) relative tolerance of `depth` (exact if None).
            prior_rel_tol: relative tolerance of `prior_depth`.
            texture: optional `SourceTexture` of the frames.
            frames: optional (T, H, W, 3) uint8 RGB frames: the masks' borders follow their edges
                (`snap_to_edges`).
            depth_triangulated: `depth` was triangulated from these flows under a static scene (a
                `DepthEstimator` with `dense` False), so a surface moving along its epipolar lines has
                a consistent wrong depth there: regions also grow into its valid pixels
                (`grow_into_triangulated`).
        """
        num_frames, height, width = _check_mask_inputs(flows, c2w, K, depth, texture)
        if frames is not None and np.shape(frames) != (num_frames, height, width, 3):
            raise ValueError(f"frames must be (T, H, W, 3) = {(num_frames, height, width, 3)}, got {np.shape(frames)}")
        if prior_depth is not None and np.shape(prior_depth) != (num_frames, height, width):
            expected = (num_frames, height, width)
            raise ValueError(f"prior_depth must be (T, H, W) = {expected}, got {np.shape(prior_depth)}")
        if frame_masks is not None and np.shape(frame_masks) != (num_frames, height, width):
            expected = (num_frames, height, width)
            raise ValueError(f"frame_masks must be (T, H, W) = {expected}, got {np.shape(frame_masks)}")
        keys = [int(k) for k in key_frames]
        if len(keys) < 2 or any(b <= a for a, b in zip(keys[:-1], keys[1:])) or keys[0] < 0 or keys[-1] >= num_frames:
            raise ValueError(f"key_frames must be >= 2 increasing indices in [0, {num_frames}), got {keys}")
        c2w = np.asarray(c2w, np.float64)
        pairs = list(zip(keys[:-1], keys[1:])) + [(keys[-1], keys[-2])]
        static = None if frame_masks is None else ~frame_masks
        geometry = dict(c2w=c2w, K=K, depth=depth, static_mask=static, prior_depth=prior_depth,
                        depth_rel_tol=depth_rel_tol, prior_rel_tol=prior_rel_tol, texture=texture)
        # longer views go without the prior: a longer baseline magnifies its errors as much as the motion
        far_geometry = dict(geometry, prior_depth=None)
        # depth triangulated under these cameras cannot testify against them
        refit_depth = None if depth_triangulated else depth
        masks = np.zeros((len(keys), height, width), bool)
        scores = np.full((len(keys), height, width), np.nan, np.float32)
        for n, (src, dst) in enumerate(pairs):
            flow_px, flow_valid = self._flow(flows, src, dst)
            view_c2w = self._view_cameras(flow_px, flow_valid, src, dst, c2w, K, refit_depth, static)
            scores[n] = score = self.pair_score(flow_px, flow_valid, src, dst, **dict(geometry, c2w=view_c2w))
            weak = None if texture is None or texture.weak is None else texture.weak[src]
            dynamic = np.nan_to_num(score) > 1.0
            if frame_masks is not None:
                dynamic |= np.isnan(score) & frame_masks[src]
            dynamic = self._confirmed(dynamic, flows, src, dst, weak, geometry, refit_depth)
            with np.errstate(invalid="ignore"):
                hinted = score >= self.config.longer_view_min_score
            for far, (far_flow_px, far_valid, _) in self._longer_views(flows, src, dst, num_frames).items():
                view_c2w = self._view_cameras(far_flow_px, far_valid, src, far, c2w, K, refit_depth, static)
                far_score = self.pair_score(far_flow_px, far_valid, src, far, **dict(far_geometry, c2w=view_c2w))
                far_dynamic = (np.nan_to_num(far_score) > 1.0) & (hinted | np.isnan(score))
                dynamic |= self._confirmed(far_dynamic, flows, src, far, weak, far_geometry, refit_depth)
            if texture is not None and texture.seeds is not None:
                dynamic = seeded_regions(dynamic, texture.seeds[src], self.config)
            masks[n] = clean_mask(dynamic, self.config)
            if self.config.grow_min_score:
                depth_valid = None if depth is None else depth[src] > 0
                grown = grown_regions(masks[n], score, depth_valid, depth_triangulated, self.config)
                if frames is not None:
                    grown = masks[n] | colour_consistent(masks[n], grown & ~masks[n], np.asarray(frames[src]), self.config)
                masks[n] = clean_mask(grown, self.config)
        key_rgb = None if frames is None else np.asarray(frames)[keys]
        if self.config.from_neighbours:
            masks = self._completed_by_neighbours(masks, scores, flows, keys, key_rgb)
        if key_rgb is not None:
            masks = snap_to_edges(masks, key_rgb, self.config)
        if self.config.last_from_previous:
            masks[-1] = self._completed_from(masks[-1], masks[-2], self._flow(flows, keys[-1], keys[-2]))
        if key_rgb is not None and self.config.grabcut_ring_px:
            masks = np.stack([clean_mask(colour_cut(mask, rgb, self.config), self.config)
                              for mask, rgb in zip(masks, key_rgb)])
        return masks

    def _completed_by_neighbours(
        self,
        masks: np.ndarray,
        scores: np.ndarray,
        flows: PairFlows,
        keys: list[int],
        key_rgb: np.ndarray | None = None,
    ) -> np.ndarray:
        """`masks` (S, H, W) with each but the last completed from its neighbours' (`_completed_from`) on
        its pixels whose key-pair score in `scores` (S, H, W) is at least `neighbour_min_score` or
        unknown: from the next key frame's, from the end back, then from the previous one's, onwards,
        so that a region passes along the key frames that hold part of it (module docstring, step 3).
        With the key frames' RGB `key_rgb` (S, H, W, 3) uint8, a neighbour's mask is read with its
        borders on its own frame's edges (`snap_to_edges`), and what the neighbours add to a key
        frame keeps its region's colours (`colour_consistent`)."""
        out = masks.copy()
        with np.errstate(invalid="ignore"):
            score_allows = ~(scores < self.config.neighbour_min_score)  # NaN (no key-pair score) allows
        order = [(n, n + 1) for n in range(len(keys) - 2, -1, -1)] + [(n, n - 1) for n in range(1, len(keys) - 1)]
        for n, other in order:
            neighbour = out[other]
            if key_rgb is not None:
                neighbour = snap_to_edges(neighbour[None], key_rgb[other][None], self.config)[0]
            completed = self._completed_from(out[n], neighbour, self._flow(flows, keys[n], keys[other]))
            out[n] |= completed & score_allows[n]
        if key_rgb is not None:
            for n in range(len(keys)):
                out[n] = masks[n] | colour_consistent(masks[n], out[n] & ~masks[n], key_rgb[n], self.config)
        return out

    @staticmethod
    def _completed_from(
        mask: np.ndarray, other: np.ndarray, flow_to_other: tuple[np.ndarray, np.ndarray]
    ) -> np.ndarray:
        """A key frame's `mask` (H, W) with the regions of `other`, another key frame's mask, read
        along its valid flow to that key frame, that it already holds part of (module docstring,
        step 3): the last key frame's from M_{S-2}, and each other from its neighbours'."""
        flow_px, flow_valid = flow_to_other
        read = warp_by_flow(other.astype(np.float32), np.nan_to_num(flow_px).astype(np.float32), outside=0.0)
        carried = (read >= 0.5) & flow_valid
        _, regions = cv2.connectedComponents(carried.astype(np.uint8), connectivity=8)
        seeded = np.unique(regions[carried & mask])
        return mask | np.isin(regions, seeded[seeded > 0])

    def _confirmed(
        self,
        dynamic: np.ndarray,
        flows: PairFlows,
        src: int,
        dst: int,
        weak: np.ndarray | None,
        geometry: dict[str, Any],
        refit_depth: np.ndarray | None = None,
    ) -> np.ndarray:
        """`dynamic` (H, W) of the view src -> dst, less its weak-texture pixels that the mirror view,
        from src to 2 src - dst (as far the other way), finds static (score below 1; no score, or
        no such view within the clip and `max_hops`, is no verdict); `refit_depth` as in `_view_cameras`."""
        if weak is None:
            return dynamic
        where, mirror = dynamic & weak, 2 * src - dst
        if not where.any() or not 0 <= mirror < len(geometry["c2w"]):
            return dynamic
        view = self._view_flow(flows, src, mirror)
        if view is None:
            return dynamic
        flow_px, flow_valid = view
        view_c2w = self._view_cameras(flow_px, flow_valid, src, mirror, geometry["c2w"], geometry["K"], refit_depth,
                                      geometry["static_mask"])
        score = self.pair_score(flow_px, flow_valid, src, mirror, **dict(geometry, c2w=view_c2w))
        with np.errstate(invalid="ignore"):
            return dynamic & ~(where & (score < 1.0))

    def _view_cameras(
        self,
        flow_px: np.ndarray,
        flow_valid: np.ndarray,
        src: int,
        dst: int,
        c2w: np.ndarray,
        K: np.ndarray,
        depth: np.ndarray | None = None,
        static_mask: np.ndarray | None = None,
    ) -> np.ndarray:
        """c2w (T, 4, 4) for the view src -> dst: the given cameras, or, where they explain the background
        of its flow `refit_min_ratio` times worse than the pose refitted to it, a copy whose dst camera
        holds the refit (module docstring). Cameras that do not translate between src and dst keep
        their pose: a fixed or turning camera was decided from the background's own evidence, and
        without parallax a large mover could hold the fit's consensus. With `static_mask` (T, H, W)
        bool (the frame masks' static pixels), the refit must explain the flow of src's static pixels
        at least as well as the cameras do (`_refit_fits_static`). With `depth` (T, H, W), 0 where
        invalid, the refit must also explain more of the flow where src has depth (`_refit_explains_more`);
        `key_masks` gives it only depth not triangulated under these cameras (an import's, a network's)."""
        ratio = self.config.refit_min_ratio
        given = relative_pose(c2w[src], c2w[dst])
        if not ratio or not np.linalg.norm(given[:3, 3]) > 0:
            return c2w
        refit = refit_to_background(flow_px, flow_valid, K[src], K[dst], given)
        if refit is None or refit.given_px <= ratio * max(refit.refit_px, REFIT_FLOOR_PX):
            return c2w
        if static_mask is not None and not _refit_fits_static(
            flow_px, flow_valid & static_mask[src], K[src], K[dst], given, refit.src_to_dst
        ):
            return c2w
        view_c2w = c2w.copy()
        view_c2w[dst] = c2w[src] @ np.linalg.inv(refit.src_to_dst)
        if depth is not None and not self._refit_explains_more(flow_px, flow_valid, depth[src], src, dst, c2w, view_c2w, K):
            return c2w
        return view_c2w

    def _refit_explains_more(
        self,
        flow_px: np.ndarray,
        flow_valid: np.ndarray,
        depth_src: np.ndarray,
        src: int,
        dst: int,
        c2w: np.ndarray,
        view_c2w: np.ndarray,
        K: np.ndarray,
    ) -> bool:
        """Whether the refit view cameras leave more of the valid flow of the pixels with depth (H, W)
        within tau of the rigid flow than the given cameras do.

        The fundamental matrix that picks the refit's background is the flow's dominant motion: a
        mover that fills most of the frame (a large object approaching the lens) holds it, and its
        refit then turned the view by 0.2-57 deg and flagged a third to two thirds of the static pixels
        (exact cameras and depth, `bench_scene_flow.py --masks estimated`; docs/benchmarks.md,
        "Session 37"). The depth and the cameras together separate the two: under the clip's
        cameras the static surfaces' flow is their rigid flow, while a mover's is rigid under no
        pose with the camera's travel length. Without `refit_depth_min_pixels` such pixels the
        refit stands as before."""
        cfg = self.config
        tolerance_px = residual_threshold(flow_px, cfg.residual_abs_px, cfg.residual_rel)
        given, refit = (
            rigid_flow_support(flow_px, flow_valid, depth_src, K[src], K[dst], relative_pose(cams[src], cams[dst]),
                               tolerance_px, cfg.refit_depth_stride_px)
            for cams in (c2w, view_c2w)
        )
        usable = given[1]
        return usable < cfg.refit_depth_min_pixels or refit[0] > given[0]

    def _longer_views(
        self, flows: PairFlows, src: int, dst: int, num_frames: int
    ) -> dict[int, tuple[np.ndarray, np.ndarray, int]]:
        """Flows from src to the frames `key_view_multiples` times as far as dst, in its direction
        or, past the clip's end, in the other."""
        step = dst - src
        wanted = set()
        for m in self.config.key_view_multiples:
            ahead, behind = src + m * step, src - m * step
            wanted |= {ahead} if 0 <= ahead < num_frames else {behind} if 0 <= behind < num_frames else set()
        if not wanted:
            return {}
        paths = flow_paths(flows.directed_pairs(), src, max(abs(w - src) for w in wanted), self.config.max_hops)
        return correspondences_along(flows, {w: paths[w] for w in wanted if w in paths})

    def _flow(self, flows: PairFlows, src: int, dst: int) -> tuple[np.ndarray, np.ndarray]:
        view = self._view_flow(flows, src, dst)
        if view is None:
            hops = self.config.max_hops
            raise ValueError(f"no flow from frame {src} to {dst}, and no chain of given pairs within {hops} hops")
        return view

    def _view_flow(self, flows: PairFlows, src: int, dst: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Flow and validity from src to dst, given or composed along given pairs; None without a chain."""
        if (src, dst) in flows.directed_pairs():
            flow_px, valid = flows.lookup(src, dst)
            return np.asarray(flow_px, np.float32), np.asarray(valid, bool)
        path = flow_paths(flows.directed_pairs(), src, abs(dst - src), self.config.max_hops).get(dst)
        if path is None:
            return None
        flow_px, valid, _ = correspondences_along(flows, {dst: path})[dst]
        return flow_px, valid


def _check_mask_inputs(
    flows: PairFlows, c2w: np.ndarray, K: np.ndarray, depth: np.ndarray | None, texture: SourceTexture | None = None
) -> tuple[int, int, int]:
    num_frames = np.shape(c2w)[0] if np.ndim(c2w) == 3 else -1
    if np.shape(c2w) != (num_frames, 4, 4) or np.shape(K) != (num_frames, 3, 3):
        raise ValueError(f"c2w must be (T, 4, 4) and K (T, 3, 3), got {np.shape(c2w)} and {np.shape(K)}")
    if not isinstance(flows, PairFlows):
        raise TypeError(f"flows must be labelers.flow.PairFlows, got {type(flows).__name__}")
    if np.ndim(flows.valid_fwd) != 3:
        raise ValueError(f"flows.valid_fwd must be (P, H, W), got {np.shape(flows.valid_fwd)}")
    height, width = np.shape(flows.valid_fwd)[1:]
    check_pair_flows(flows, num_frames, height, width)
    if depth is not None and np.shape(depth) != (num_frames, height, width):
        raise ValueError(f"depth must be (T, H, W) = {(num_frames, height, width)}, got {np.shape(depth)}")
    if texture is not None:
        for name, shape in (("stripe_normals", (2,)), ("periods", (2, 2)), ("weak", ())):
            given = getattr(texture, name)
            if given is not None and np.shape(given) != (num_frames, height, width, *shape):
                expected = (num_frames, height, width, *shape)
                raise ValueError(f"texture.{name} must be {expected}, got {np.shape(given)}")
    return num_frames, height, width


@dataclass(frozen=True)
class DepthAndMasks:
    """Outcome of `label_depth_and_masks`.

    Attributes:
        depth: `DepthResult` (T, H, W); from a backend with `dense = False`, invalid on every
            pixel of a key frame found dynamic.
        frame_masks: (T, H, W) bool depth-free masks of step 1.
        dynamic_mask: (S, H, W) bool M_k of the key frames (the `dynamic_mask` label).
        key_flows: the key pairs' flows (k_n, k_n+1) estimated again from the labelled depth
            and cameras (`labelers.guided_flow`), which the key-frame masks used, with the
            direct flow on the pixels those masks call moving (which the depth does not hold);
            None without a guide.
    """

    depth: DepthResult
    frame_masks: np.ndarray
    dynamic_mask: np.ndarray
    key_flows: PairFlows | None = None


def label_depth_and_masks(
    frames: np.ndarray,
    flows: PairFlows,
    c2w: np.ndarray,
    K: np.ndarray,
    key_frames: Sequence[int],
    depth_estimator: DepthEstimator,
    masks: FlowRigidityMasks | None = None,
    guide: GuidedKeyFlows | None = None,
) -> DepthAndMasks:
    """Masks without depth, then depth, then key-frame masks with depth (module docstring, steps 1-4).

    Args:
        frames: (T, H, W, 3) uint8; flows: flows of frame pairs (e.g. consecutive and key pairs,
            `PairFlows.merged`); c2w: (T, 4, 4); K: (T, 3, 3).
        key_frames: the S key-frame indices.
        depth_estimator: any `DepthEstimator` (e.g. `labelers.depth.MultiViewDepth`).
        masks: the mask labeler (default settings if None).
        guide: with `MultiViewDepth`, the key pairs' flows are estimated again from the depth and
            cameras before step 3 (`labelers.guided_flow`), and every frame's depth again from
            them; `flows` must then hold every key pair. Not with a network's depth: not measured,
            and under a fixed camera, its main use here, the rigid flow is zero and the pass would
            repeat the direct one.
    """
    check_depth_inputs(frames, flows, c2w, K, None)
    masks = masks or FlowRigidityMasks()
    # periods for the key-frame masks only: module docstring
    texture = SourceTexture.of(frames, masks.config, period_frames=key_frames)
    frame_masks = masks.frame_masks(flows, c2w, K, texture=texture.without_periods())
    depth = depth_estimator.estimate(frames, flows, c2w, K, frame_masks)
    cfg = masks.config
    depth_rel_tol = cfg.depth_sigmas * depth.rel_sigma
    measured = float(np.median(depth.rel_sigma[depth.depth_valid])) if depth.depth_valid.any() else np.inf
    prior_rel_tol = max(cfg.min_prior_rel_tol, cfg.depth_sigmas * measured)
    key_flows, direct, prior_depth_valid = None, flows, depth.depth_valid
    if guide is not None and isinstance(depth_estimator, MultiViewDepth):
        key_flows = guide.refine(frames, flows, key_frames, depth.depth, depth.depth_valid, c2w, K)
        flows = flows.merged(key_flows)
        # every frame's depth from the better flow: on the key frames the first pass's disagrees
        # with it where it was triangulated from the flow now corrected, and the masks would read
        # that as motion; the frames between them compose their views through the key pairs too
        depth = depth_estimator.reestimate(depth, range(len(frames)), frames, flows, c2w, K, frame_masks)
        depth_rel_tol = cfg.depth_sigmas * depth.rel_sigma
    dynamic = masks.key_masks(
        flows, c2w, K, key_frames, depth.depth, frame_masks, depth.prior_depth, depth_rel_tol, prior_rel_tol, texture,
        frames, depth_triangulated=not depth_estimator.dense,
    )
    keys = list(key_frames)
    if key_flows is not None:
        direct_key = direct.select(list(zip(keys[:-1], keys[1:])))
        key_flows = direct_flow_on_movers(key_flows, direct_key, dynamic, prior_depth_valid[keys])
    if depth_estimator.dense:
        if depth.prior_depth is None:
            return DepthAndMasks(depth, frame_masks, dynamic, key_flows)
        return DepthAndMasks(_with_prior_on_moving(depth, keys, dynamic, prior_rel_tol), frame_masks, dynamic, key_flows)
    depth_valid = depth.depth_valid.copy()
    depth_valid[keys] &= ~dynamic
    refined = DepthResult(
        np.where(depth_valid, depth.depth, 0.0).astype(np.float32),
        depth_valid,
        np.where(depth_valid, depth.rel_sigma, np.inf).astype(np.float32),
        depth.prior_depth,
    )
    return DepthAndMasks(refined, frame_masks, dynamic, key_flows)


def label_masks_given_depth(
    flows: PairFlows,
    c2w: np.ndarray,
    K: np.ndarray,
    key_frames: Sequence[int],
    depth: np.ndarray,
    masks: FlowRigidityMasks | None = None,
    frames: np.ndarray | None = None,
) -> np.ndarray:
    """Key-frame masks M_k (S, H, W) bool of a clip whose depth is known: frame masks, then
    key-frame masks, both with that depth (module docstring, last paragraph).

    Args:
        flows: flows of frame pairs; c2w: (T, 4, 4); K: (T, 3, 3).
        key_frames: the S key-frame indices.
        depth: (T, H, W) z-depth in the scale of c2w, 0 where invalid.
        masks: the mask labeler (default settings if None).
        frames: optional (T, H, W, 3) uint8 RGB: with them, the residual on stripes and edges is
            measured across them only, and on repeated texture up to its periods (`SourceTexture`).
    """
    masks = masks or FlowRigidityMasks()
    texture = None if frames is None else SourceTexture.of(frames, masks.config, period_frames=key_frames)
    frame_masks = masks.frame_masks(flows, c2w, K, depth, None if texture is None else texture.without_periods())
    return masks.key_masks(flows, c2w, K, key_frames, depth, frame_masks, texture=texture, frames=frames)


def _with_prior_on_moving(
    depth: DepthResult, key_frames: list[int], dynamic: np.ndarray, prior_rel_tol: float
) -> DepthResult:
    """Key-frame pixels found moving, without depth but with a prior, take the prior's depth (step 4)."""
    prior = depth.prior_depth
    adopt = np.zeros(depth.depth_valid.shape, bool)
    adopt[key_frames] = dynamic & ~depth.depth_valid[key_frames] & (prior[key_frames] > 0)
    return DepthResult(
        np.where(adopt, prior, depth.depth).astype(np.float32),
        depth.depth_valid | adopt,
        np.where(adopt, np.float32(prior_rel_tol), depth.rel_sigma).astype(np.float32),
        prior,
    )
