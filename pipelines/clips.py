"""What one clip is (`ClipSpec`), its stable id, and the error a clip is rejected with.

A clip is a time span [start_sec, end_sec] of one source video. Its id is derived from the
source and the span only (`make_clip_id`), so a re-run over the same manifest, on any
machine, finds the same ids again (LABELS.md "Attributes of one clip").
"""

from __future__ import annotations

import hashlib
import math
import posixpath
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = [
    "ANNOTATION_KINDS",
    "Annotations",
    "ClipRejected",
    "ClipSpec",
    "DEFAULT_FPS",
    "check_clip_id",
    "make_clip_id",
]

DEFAULT_FPS = 8.0
ANNOTATION_KINDS = ("vipe", "spatialvid")
AnnotationKind = Literal["vipe", "spatialvid"]

_MAX_CLIP_ID_LEN = 200
_MAX_STEM_LEN = 64
_HASH_CHARS = 12
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_REASON = re.compile(r"^[a-z][a-z0-9_.:]*$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)$")


@dataclass(frozen=True)
class Annotations:
    """Where the outside annotations of a clip live.

    Attributes:
        kind: "vipe" or "spatialvid".
        dir: for ViPE, the output folder holding `pose/`, `intrinsics/`, `depth/`, ...; for
            SpatialVID, the per-clip folder holding `poses.npy`, `intrinsics.npy`, ...
        name: the file name stem inside `dir`: ViPE names its files after the stem of the
            video it ran on (`pose/<name>.npz`); for SpatialVID, the clip's SpatialVID id
            (its depth archive is `depths/<group>/<name>.zip`).
        frame_offset: source-video frame number of the annotations' frame 0. SpatialVID
            annotates the cut clip, which starts at `frame_start` of the source video; ViPE
            run on the source video itself has offset 0.
    """

    kind: AnnotationKind
    dir: str
    name: str
    frame_offset: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ANNOTATION_KINDS:
            raise ValueError(f"annotation kind must be one of {ANNOTATION_KINDS}, got {self.kind!r}")
        if not self.dir:
            raise ValueError("annotation dir is empty")
        if self.frame_offset < 0:
            raise ValueError(f"annotation frame_offset must be >= 0, got {self.frame_offset}")


@dataclass(frozen=True)
class ClipSpec:
    """One clip to label: a time span of a source video plus what is known about it.

    Attributes:
        clip_id: stable id, safe as a file or directory name (see `check_clip_id`).
        uri: the source video: a local path (absolute once read from a manifest) or an object-storage
            URL (s3://, gs://, az://; decoded through a local cache, `pipelines.remote_video`).
        start_sec, end_sec: span in seconds of the source video, measured from its first
            frame (the convention of PySceneDetect timecodes used by SpatialVID and Panda-70M).
        caption: text caption ("" when none).
        dataset: dataset name, e.g. "spatialvid", "panda70m".
        fps_target: label frame rate; None keeps the source rate (consecutive frames).
        annotations: outside annotations to import instead of running labelers, or None.
        intrinsics: (fx, fy, cx, cy) in pixels of the source video, LABELS.md pixel-centre
            convention; None when unknown.
        native_id: the dataset's own key for the clip (SpatialVID `id`, Panda-70M
            `videoID_index`), for tracing back; "" when none.
        source_ref: where the clip came from, e.g. "clips.csv row 12", for error messages.
    """

    clip_id: str
    uri: str
    start_sec: float
    end_sec: float
    caption: str = ""
    dataset: str = ""
    fps_target: float | None = DEFAULT_FPS
    annotations: Annotations | None = None
    intrinsics: tuple[float, float, float, float] | None = None
    native_id: str = ""
    source_ref: str = ""

    def __post_init__(self) -> None:
        check_clip_id(self.clip_id)
        if not self.uri:
            raise ValueError(f"clip {self.clip_id}: empty video uri")
        if not (math.isfinite(self.start_sec) and math.isfinite(self.end_sec)):
            raise ValueError(f"clip {self.clip_id}: start/end must be finite, got {self.start_sec}, {self.end_sec}")
        if self.start_sec < 0 or self.end_sec <= self.start_sec:
            raise ValueError(
                f"clip {self.clip_id}: need 0 <= start_sec < end_sec, got start {self.start_sec} end {self.end_sec}"
            )
        if self.fps_target is not None and not (math.isfinite(self.fps_target) and self.fps_target > 0):
            raise ValueError(f"clip {self.clip_id}: fps_target must be > 0 or None, got {self.fps_target}")
        if self.intrinsics is not None:
            object.__setattr__(self, "intrinsics", tuple(float(x) for x in self.intrinsics))
            if len(self.intrinsics) != 4 or not all(math.isfinite(x) for x in self.intrinsics):
                raise ValueError(f"clip {self.clip_id}: intrinsics must be 4 finite numbers (fx, fy, cx, cy)")
            if self.intrinsics[0] <= 0 or self.intrinsics[1] <= 0:
                raise ValueError(f"clip {self.clip_id}: focal lengths must be > 0, got {self.intrinsics[:2]}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form; `from_dict` inverts it."""
        out = asdict(self)
        out["intrinsics"] = list(self.intrinsics) if self.intrinsics is not None else None
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "ClipSpec":
        fields = dict(data)
        if fields.get("annotations") is not None:
            fields["annotations"] = Annotations(**fields["annotations"])
        return cls(**fields)

    def source_attrs(self) -> dict[str, Any]:
        """The `source` attribute of the stored clip (LABELS.md "Attributes of one clip")."""
        return {
            "dataset": self.dataset,
            "uri": self.uri,
            "start_sec": self.start_sec,
            "end_sec": self.end_sec,
            "caption": self.caption,
            "native_id": self.native_id,
        }


class ClipRejected(Exception):
    """A clip that cannot be labelled, with a machine-readable reason code.

    `reason` is a short lowercase code (e.g. "missing_file", "too_short"); reports group
    rejected clips by it. The exception pickles with its fields, so it crosses process
    boundaries (Ray workers) intact.
    """

    def __init__(self, clip_id: str, reason: str, message: str) -> None:
        if not _REASON.match(reason):
            raise ValueError(f"reason must be a lowercase code like 'too_short', got {reason!r}")
        self.clip_id = clip_id
        self.reason = reason
        self.message = message
        super().__init__(f"clip {clip_id}: {reason}: {message}")

    def __reduce__(self):
        return (type(self), (self.clip_id, self.reason, self.message))

    def to_dict(self) -> dict[str, str]:
        return {"clip_id": self.clip_id, "reason": self.reason, "message": self.message}


def check_clip_id(clip_id: str) -> None:
    """Raise ValueError unless `clip_id` is usable as one file or directory name everywhere."""
    if not isinstance(clip_id, str) or not clip_id:
        raise ValueError(f"clip id must be a non-empty string, got {clip_id!r}")
    if len(clip_id) > _MAX_CLIP_ID_LEN:
        raise ValueError(f"clip id longer than {_MAX_CLIP_ID_LEN} characters: {clip_id[:40]!r}...")
    if clip_id.startswith(".") or _UNSAFE.search(clip_id):
        raise ValueError(
            f"clip id {clip_id!r} is not a safe directory name: use letters, digits, '.', '_', '-' "
            "and do not start with '.'"
        )


def make_clip_id(uri: str, start_sec: float, end_sec: float) -> str:
    """Stable id of a clip: `<sanitised stem>-<12 hex of sha1(normalised uri, start ms, end ms)>`.

    Depends only on the arguments (no file system access), so it is the same across runs
    and machines. Pass the uri as the manifest writes it (a relative path, a URL, a dataset
    key), not a machine-specific absolute path, so moving the data does not change ids.
    Times are rounded to whole milliseconds.

    Args:
        uri: source video identifier.
        start_sec, end_sec: clip span in seconds.

    Returns:
        An id matching [A-Za-z0-9._-]+, not starting with '.', at most 77 characters.
    """
    if not isinstance(uri, str) or not uri.strip():
        raise ValueError("uri must be a non-empty string")
    if not (math.isfinite(start_sec) and math.isfinite(end_sec)):
        raise ValueError(f"start/end must be finite, got {start_sec}, {end_sec}")
    norm = _normalise_uri(uri)
    key = f"{norm}|{round(start_sec * 1000)}|{round(end_sec * 1000)}"
    digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:_HASH_CHARS]
    return f"{_stem(norm)}-{digest}"


def _normalise_uri(uri: str) -> str:
    """Spelling-independent form: lower-case scheme and host, '/' separators, no './' or '//'."""
    uri = uri.strip()
    match = _SCHEME.match(uri)
    if match:
        scheme, host, rest = match.group(1).lower(), match.group(2).lower(), match.group(3)
        if scheme == "file":
            return posixpath.normpath(rest)
        return f"{scheme}://{host}{rest}"
    path = posixpath.normpath(uri.replace("\\", "/"))
    return path


def _stem(norm_uri: str) -> str:
    """Readable part of the id: the last path component without its extension, sanitised."""
    path = norm_uri.split("://", 1)[-1].split("?", 1)[0].split("#", 1)[0]
    base = path.rstrip("/").rsplit("/", 1)[-1]
    stem = base.rsplit(".", 1)[0] if "." in base.lstrip(".") else base
    stem = _UNSAFE.sub("_", stem).strip("._-")[:_MAX_STEM_LEN].rstrip("._-")
    return stem or "clip"
