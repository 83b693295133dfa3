"""Weight-free structure from motion over one clip: KLT tracks, incremental SfM, pycolmap BA.

`SfmCamera` implements `labelers.camera.CameraEstimator` on CPU without weights, with the
settings of `SfmConfig`:

0. Fixed camera, tested first (`labelers.sfm.fixed`): still background regions on three of
   the four borders of the image, the bottom one among them, make the camera static (c2w = I).
1. Tracks (`labelers.sfm.tracks`): Shi-Tomasi corners moved by pyramidal Lucas-Kanade and
   refined by an affine fit against their first appearance. Given the clip's dense flows
   (the pipeline passes the key-frame pairs), tracks that contradict the epipolar geometry
   of the flow's dominant motion, counted by area rather than by corners, are left out
   (`labelers.sfm.background`): a textured mover on weakly textured ground holds many
   corners but little area.
2. Motion class (`labelers.sfm.motion`): robust homographies and fundamental matrices of many
   frame pairs (`labelers.sfm.pairs`) make the camera static, rotating or moving generally.
3. General motion (`labelers.sfm.general`): incremental SfM with pycolmap's estimators and
   bundle adjuster (`labelers.sfm.reconstruction`). An estimated focal is kept only as far
   as the tracks determine it (`labelers.sfm.focal`); otherwise the clip is rejected or, with
   `unknown_focal` "prior", labelled with a prior focal that the tracks do not contradict
   (`labelers.sfm.focal_prior`).
4. Pure rotation (`labelers.sfm.rotation`): rotation-only homographies, the focal fitted to
   them when not given, rotation averaging; translations are zero.
5. A slow rotation of the dense background (`labelers.sfm.dense_rotation`; with the flows):
   where the tracks fail with `intrinsics_unobservable`, or call the camera a pure rotation
   that turns away from the background's, and the background follows a rotation over every
   key pair and over the whole clip, the camera is that rotation (the prior focal's when none
   is given, while it turns slowly enough for it): a slow pan before plain walls leaves its
   corners on the mover in front.

Why not pycolmap's own incremental mapper: it starts from descriptor matches in a database
and tunes its thresholds for unordered photo collections (large initial triangulation
angles, focal priors from EXIF); here the frames are ordered and close, the tracks are
known, and the pure-rotation and static cases need their own answers. pycolmap provides the
robust estimators and the bundle adjuster, the parts that must be well kept; everything
runs in one process on one core by default (`num_threads`), as a Ray worker wants.

Scale: one per clip (`metric_scale = False`), the median z-depth of the points seen in frame 0
is 1. Pixels: LABELS.md conventions; COLMAP's +0.5 offset only at the pycolmap boundary.
Limits: pinhole cameras only (lens distortion is not modelled; a distorted pure rotation
may be classed as general motion), one focal per clip when estimated (no zoom).
Measured: docs/benchmarks.md, "Labeler design measurements", SfM camera.
"""

from labelers.sfm.config import SfmConfig
from labelers.sfm.estimator import SfmCamera
from labelers.sfm.fixed import FixedCameraEvidence, fixed_camera_evidence
from labelers.sfm.focal import FocalUncertainty
from labelers.sfm.motion import MotionAnalysis, analyse_motion
from labelers.sfm.pairs import PairGeometry
from labelers.sfm.tracks import Tracks, track_klt

__all__ = [
    "SfmConfig",
    "SfmCamera",
    "Tracks",
    "FocalUncertainty",
    "PairGeometry",
    "MotionAnalysis",
    "FixedCameraEvidence",
    "track_klt",
    "analyse_motion",
    "fixed_camera_evidence",
]
