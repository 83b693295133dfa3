"""Importers of outside annotations (SpatialVID, ViPE) into the LABELS.md contract.

`import_spatialvid` / `import_vipe` read one clip's annotation folder and return its camera,
depth and dynamic masks at the clip's label frames and resolution (`ImportedAnnotations`).
docs/datasets.md ("Imported annotations") says what is read, the conventions and the assumptions.
Conventions, interpolation and resampling rules are in `labelers.importers.common`; each
format's files and conversions in its own module.
"""

from labelers.importers.common import (
    IMPORTER_VERSION,
    PARTS,
    AnnotationError,
    AnnotationSet,
    ImportedAnnotations,
    to_label_frames,
)
from labelers.importers.spatialvid import DEPTH_CLIP as SPATIALVID_DEPTH_CLIP
from labelers.importers.spatialvid import import_spatialvid, read_spatialvid, tracker_frame_size
from labelers.importers.vipe import VIPE_DEPTH_RANGE, VIPE_MOVABLE_PHRASES, import_vipe, read_vipe

__all__ = [
    "IMPORTER_VERSION",
    "PARTS",
    "SPATIALVID_DEPTH_CLIP",
    "VIPE_DEPTH_RANGE",
    "VIPE_MOVABLE_PHRASES",
    "AnnotationError",
    "AnnotationSet",
    "ImportedAnnotations",
    "import_spatialvid",
    "import_vipe",
    "read_spatialvid",
    "read_vipe",
    "to_label_frames",
    "tracker_frame_size",
]
