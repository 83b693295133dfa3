"""Read clip manifests (SpatialVID `clips_info.csv` or release metadata, Panda-70M, plain CSV) into `ClipSpec`s.

A malformed row never stops the others: it becomes a `RowError` naming the file, the row
number (spreadsheet numbering: the header is row 1, the first data row is row 2) and the
cause, and the caller records it. Problems with the whole file (missing, unknown format,
missing columns) raise `ManifestError`.

Formats (`format="auto"` picks one from the header):

- ``spatialvid``: SpatialVID's `clips_info.csv`, columns `video_path,id,num_frames,height,
  width,aspect_ratio,fps,resolution,timestamp_start,timestamp_end,frame_start,frame_end,
  id_ori`; timestamps are PySceneDetect timecodes (`00:00:01.234`) into the source video.
  With `annotation_root`, a clip's annotations are `annotation_root/<id>/` (SpatialVID
  annotates the cut clip, so their frame 0 is the source frame `frame_start`).
- ``spatialvid-hq``: the public release's `data/train/SpatialVID_HQ_metadata.csv`, one row
  per clip video `videos/group_XXXX/<id>.mp4` (UUID ids) annotated in
  `annotations/group_XXXX/<id>/` (depth in `depths/group_XXXX/<id>.zip`). Columns are found
  by name in the header, case-insensitive with `_` and ` ` alike; needed: `id`, `group id`,
  `num frames`, `fps`. A clip is its whole video: 0 s to `num frames / fps`, annotation frame
  offset 0. `video_root` is the folder of the `group_XXXX/` video folders, default
  `<release>/videos`; `annotation_root` that of the annotation folders, default
  `<release>/annotations` when it exists (`<release>` = three levels above the CSV, as laid
  out on the dataset card). docs/datasets.md ("SpatialVID") lists what is assumed.
- ``panda70m``: one row per source video, `videoID,url,timestamp,caption,matching_score`
  (later releases add columns); `timestamp` is a list literal of `[start, end]` pairs like
  `"0:00:15.982"` and `caption` a parallel list: one clip per entry. Expects whole source
  videos on disk: a `video_path` column, or `video_root/<videoID>.<mp4|mkv|webm|mov>`.
  (Per-clip files cut by video2dataset start at 0 s: list them in the plain format.)
- ``plain``: `clip_id,video_path,start_sec,end_sec,caption[,annotations][,dataset]
  [,fx,fy,cx,cy]`; an empty `clip_id` is derived with `make_clip_id`; `annotations` is
  `vipe:<dir>` or `spatialvid:<dir>`; intrinsics are in pixels of the source video.

Relative video paths resolve against `video_root` when given, else the manifest's folder.
Clip ids are derived from the path as written in the manifest, so moving the data keeps them.
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import math
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from pipelines.clips import DEFAULT_FPS, Annotations, ClipSpec, make_clip_id
from pipelines.remote_video import is_remote

__all__ = [
    "FORMATS",
    "ManifestError",
    "ManifestResult",
    "RowError",
    "detect_format",
    "iter_manifest",
    "parse_fps",
    "parse_timecode",
    "read_manifest",
]

FORMATS = ("spatialvid", "spatialvid-hq", "panda70m", "plain")
_REQUIRED = {
    "spatialvid": ("video_path", "id", "timestamp_start", "timestamp_end"),
    "spatialvid-hq": ("id", "group id", "num frames", "fps"),
    "panda70m": ("videoID", "timestamp"),
    "plain": ("video_path", "start_sec", "end_sec"),
}
_PANDA_VIDEO_EXTS = (".mp4", ".mkv", ".webm", ".mov")
_TIMECODE = re.compile(r"^(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d+)?)$")
_INTRINSICS = ("fx", "fy", "cx", "cy")
_NAME_MATCHED = ("spatialvid-hq",)  # formats whose columns match by normalised name (`_column_key`)


class ManifestError(ValueError):
    """The manifest as a whole cannot be read (missing file, unknown format, missing columns)."""


@dataclass(frozen=True)
class RowError:
    """A rejected manifest row (or one clip entry of a Panda-70M row).

    Attributes:
        path: manifest file.
        row: spreadsheet row number (header = 1).
        message: the cause.
        entry: index of the clip inside a Panda-70M row, or None for the whole row.
    """

    path: str
    row: int
    message: str
    entry: int | None = None

    def __str__(self) -> str:
        where = f"{self.path} row {self.row}" + (f" clip {self.entry}" if self.entry is not None else "")
        return f"{where}: {self.message}"


@dataclass
class ManifestResult:
    """Clips read from one manifest and the rows that were rejected."""

    path: str
    format: str
    specs: list[ClipSpec] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)


class _RowProblem(ValueError):
    """A cause for rejecting the current row."""


def parse_timecode(text: str | float | int) -> float:
    """Seconds from `H:MM:SS.fff`, `MM:SS.fff` (PySceneDetect, Panda-70M) or a plain number.

    Raises:
        ValueError: unparseable, negative or not finite.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        seconds = float(text)
    else:
        s = str(text).strip()
        match = _TIMECODE.match(s)
        if match:
            hours, minutes, secs = match.groups()
            if int(minutes) >= 60 or float(secs) >= 60:
                raise ValueError(f"bad timecode {s!r}: minutes and seconds must be < 60")
            seconds = int(hours or 0) * 3600 + int(minutes) * 60 + float(secs)
        else:
            try:
                seconds = float(s)
            except ValueError:
                raise ValueError(f"bad time {s!r}: expected seconds or H:MM:SS.fff") from None
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"bad time {text!r}: must be finite and >= 0")
    return seconds


def parse_fps(text: str | float | None) -> float | None:
    """Target fps from a CLI value: a positive number, or "native"/None for the source rate."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "native"):
        return None
    fps = float(text)
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be > 0 or 'native', got {text!r}")
    return fps


def _column_key(name: str) -> str:
    """Header name as matched for name-matched formats: case and `_`/` ` spelling do not matter."""
    return " ".join(name.replace("_", " ").lower().split())


def detect_format(columns: list[str]) -> str:
    """Manifest format from its header columns."""
    cols = set(columns)
    if {"timestamp_start", "timestamp_end", "id"} <= cols:
        return "spatialvid"
    if set(_REQUIRED["spatialvid-hq"]) <= {_column_key(c) for c in columns}:
        return "spatialvid-hq"
    if {"videoID", "timestamp"} <= cols:
        return "panda70m"
    if {"video_path", "start_sec", "end_sec"} <= cols:
        return "plain"
    raise ManifestError(
        f"cannot tell the manifest format from columns {columns}: expected SpatialVID clips_info.csv "
        "(timestamp_start, timestamp_end, id), SpatialVID-HQ metadata (id, group id, num frames, fps), "
        "Panda-70M (videoID, timestamp) or plain (video_path, start_sec, end_sec)"
    )


def read_manifest(
    path: str | os.PathLike,
    format: str = "auto",
    *,
    fps_target: float | None = DEFAULT_FPS,
    video_root: str | os.PathLike | None = None,
    annotation_root: str | os.PathLike | None = None,
    dataset: str | None = None,
) -> ManifestResult:
    """Read a whole manifest: the good clips and the rejected rows.

    Args:
        path: CSV file.
        format: "auto", "spatialvid", "spatialvid-hq", "panda70m" or "plain".
        fps_target: label fps written into every spec; None keeps the source rate.
        video_root: folder that relative video paths (and Panda-70M videoIDs) resolve against;
            default the manifest's folder; for spatialvid-hq the folder of `group_XXXX/`
            video folders, default `<release>/videos`.
        annotation_root: SpatialVID only: folder holding one annotation folder per clip id
            (spatialvid-hq: `group_XXXX/<id>/` folders, default `<release>/annotations`).
        dataset: dataset name for the specs; default the format name ("custom" for plain
            manifests without a `dataset` column).

    Raises:
        ManifestError: the file is missing, has no header, an unknown format or lacks columns.
    """
    fmt = _detected_format(path, format)
    result = ManifestResult(path=str(path), format=fmt)
    for item in iter_manifest(
        path, fmt, fps_target=fps_target, video_root=video_root, annotation_root=annotation_root, dataset=dataset
    ):
        (result.errors if isinstance(item, RowError) else result.specs).append(item)
    return result


def iter_manifest(
    path: str | os.PathLike,
    format: str = "auto",
    *,
    fps_target: float | None = DEFAULT_FPS,
    video_root: str | os.PathLike | None = None,
    annotation_root: str | os.PathLike | None = None,
    dataset: str | None = None,
) -> Iterator[ClipSpec | RowError]:
    """Stream a manifest as `ClipSpec`s and `RowError`s, in file order (see `read_manifest`).

    A clip whose id was already seen in this manifest is reported as a `RowError` naming the
    first row, and dropped.
    """
    manifest = Path(path)
    fmt = _detected_format(manifest, format)
    if annotation_root is not None and fmt not in ("spatialvid", "spatialvid-hq"):
        raise ManifestError(f"annotation_root applies to SpatialVID manifests only, not {fmt}")
    if fmt == "spatialvid-hq":
        video_root, annotation_root = _release_roots(manifest, video_root, annotation_root)
    base = os.path.abspath(video_root if video_root is not None else manifest.parent)
    ctx = _Context(
        path=str(manifest),
        manifest_dir=os.path.abspath(manifest.parent),
        video_base=base,
        fps_target=fps_target,
        annotation_root=os.path.abspath(annotation_root) if annotation_root is not None else None,
        dataset=dataset,
    )
    row_reader = {
        "spatialvid": _spatialvid_row,
        "spatialvid-hq": _spatialvid_hq_row,
        "panda70m": _panda_row,
        "plain": _plain_row,
    }[fmt]
    first_row: dict[str, int] = {}
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, skipinitialspace=True)
        reader.fieldnames = [c.strip() for c in reader.fieldnames or []]
        if fmt in _NAME_MATCHED:
            reader.fieldnames = [_column_key(c) for c in reader.fieldnames]
        for row_number, row in enumerate(reader, start=2):
            if None in row:
                yield RowError(ctx.path, row_number, f"{len(row[None])} more fields than the header's columns")
                continue
            try:
                parsed = row_reader(ctx, row, row_number)
            except ValueError as e:  # _RowProblem, or a ClipSpec/Annotations field check
                yield RowError(ctx.path, row_number, str(e))
                continue
            items = [(None, parsed)] if isinstance(parsed, ClipSpec) else parsed
            for entry, item in items:
                if isinstance(item, _RowProblem):
                    yield RowError(ctx.path, row_number, str(item), entry)
                elif item.clip_id in first_row:
                    yield RowError(
                        ctx.path,
                        row_number,
                        f"duplicate clip id {item.clip_id} (first at row {first_row[item.clip_id]})",
                        entry,
                    )
                else:
                    first_row[item.clip_id] = row_number
                    yield item


@dataclass(frozen=True)
class _Context:
    path: str
    manifest_dir: str
    video_base: str
    fps_target: float | None
    annotation_root: str | None
    dataset: str | None


def _detected_format(path: str | os.PathLike, format: str) -> str:
    if format not in ("auto", *FORMATS):
        raise ManifestError(f"unknown manifest format {format!r}; use auto or one of {FORMATS}")
    manifest = Path(path)
    if not manifest.is_file():
        raise ManifestError(f"manifest {manifest} does not exist or is not a file")
    with open(manifest, newline="", encoding="utf-8-sig") as f:
        header = next(csv.reader(f, skipinitialspace=True), None)
    if not header:
        raise ManifestError(f"manifest {manifest} is empty (no header row)")
    columns = [c.strip() for c in header]
    fmt = detect_format(columns) if format == "auto" else format
    present = {_column_key(c) for c in columns} if fmt in _NAME_MATCHED else set(columns)
    missing = [c for c in _REQUIRED[fmt] if c not in present]
    if missing:
        raise ManifestError(f"manifest {manifest} ({fmt}) lacks columns {missing}; it has {columns}")
    return fmt


def _field(row: Mapping[str, str | None], name: str) -> str:
    return (row.get(name) or "").strip()


def _required(row: Mapping[str, str | None], name: str) -> str:
    value = _field(row, name)
    if not value:
        raise _RowProblem(f"empty {name}")
    return value


def _time(row: Mapping[str, str | None], name: str) -> float:
    text = _required(row, name)
    try:
        return parse_timecode(text)
    except ValueError as e:
        raise _RowProblem(f"{name}: {e}") from None


def _resolve(base: str, raw: str) -> str:
    """A video path as decode reads it: object-storage URLs as given, local paths absolute."""
    if is_remote(raw):
        return raw
    return os.path.normpath(os.path.join(base, os.path.expanduser(raw)))


def _spatialvid_row(ctx: _Context, row: Mapping[str, str | None], row_number: int) -> ClipSpec:
    raw_path = _required(row, "video_path")
    native_id = _required(row, "id")
    start, end = _time(row, "timestamp_start"), _time(row, "timestamp_end")
    frame_start = _optional_int(row, "frame_start")
    fps = _optional_float(row, "fps")
    if frame_start is not None and fps is not None and fps > 0:
        # Both columns come from the same scene cut: a disagreement means shifted columns.
        if abs(frame_start / fps - start) > 1.0 / fps + 1e-3:
            raise _RowProblem(f"timestamp_start {start:.3f}s disagrees with frame_start/fps = {frame_start / fps:.3f}s")
    annotations = None
    if ctx.annotation_root is not None:
        annotations = Annotations(
            "spatialvid", os.path.join(ctx.annotation_root, native_id), native_id, frame_start or 0
        )
    return ClipSpec(
        clip_id=make_clip_id(raw_path, start, end),
        uri=_resolve(ctx.video_base, raw_path),
        start_sec=start,
        end_sec=end,
        dataset=ctx.dataset or "spatialvid",
        fps_target=ctx.fps_target,
        annotations=annotations,
        native_id=native_id,
        source_ref=f"{ctx.path} row {row_number}",
    )


def _release_roots(
    manifest: Path, video_root: str | os.PathLike | None, annotation_root: str | os.PathLike | None
) -> tuple[str | os.PathLike, str | os.PathLike | None]:
    """SpatialVID-HQ defaults: `<release>/videos` and `<release>/annotations` (when there), where the
    metadata CSV is `<release>/data/train/SpatialVID_HQ_metadata.csv`."""
    release = manifest.resolve().parents[2] if len(manifest.resolve().parents) > 2 else manifest.resolve().parent
    if video_root is None:
        video_root = release / "videos"
    if annotation_root is None and (release / "annotations").is_dir():
        annotation_root = release / "annotations"
    return video_root, annotation_root


def _spatialvid_hq_row(ctx: _Context, row: Mapping[str, str | None], row_number: int) -> ClipSpec:
    """One release clip: the whole video `group_XXXX/<id>.mp4`, annotations `group_XXXX/<id>/`."""
    clip = _required(row, "id")
    if "/" in clip or "\\" in clip or clip in (".", ".."):
        raise _RowProblem(f"id {clip!r} is not a folder name")
    group = _optional_int(row, "group id")
    if group is None:
        raise _RowProblem("empty group id")
    frames = _optional_int(row, "num frames")
    fps = _optional_float(row, "fps")
    if not frames or fps is None or not (math.isfinite(fps) and fps > 0):
        raise _RowProblem(f"num frames ({frames}) and fps ({fps}) must be > 0")
    group_dir = f"group_{group:04d}"
    raw_path = f"{group_dir}/{clip}.mp4"
    annotations = None
    if ctx.annotation_root is not None:
        annotations = Annotations("spatialvid", os.path.join(ctx.annotation_root, group_dir, clip), clip, 0)
    return ClipSpec(
        clip_id=make_clip_id(raw_path, 0.0, frames / fps),
        uri=_resolve(ctx.video_base, raw_path),
        start_sec=0.0,
        end_sec=frames / fps,
        dataset=ctx.dataset or "spatialvid-hq",
        fps_target=ctx.fps_target,
        annotations=annotations,
        native_id=clip,
        source_ref=f"{ctx.path} row {row_number}",
    )


def _panda_row(
    ctx: _Context, row: Mapping[str, str | None], row_number: int
) -> list[tuple[int, ClipSpec | _RowProblem]]:
    """One (entry index, spec or problem) per clip of a Panda-70M row."""
    video_id = _required(row, "videoID")
    spans = _literal_list(row, "timestamp")
    captions = _literal_list(row, "caption") if _field(row, "caption") else [""] * len(spans)
    if len(captions) != len(spans):
        raise _RowProblem(f"caption has {len(captions)} entries but timestamp has {len(spans)}")
    if _field(row, "matching_score"):
        scores = _literal_list(row, "matching_score")
        if len(scores) != len(spans):
            raise _RowProblem(f"matching_score has {len(scores)} entries but timestamp has {len(spans)}")
    uri = _panda_video(ctx, row, video_id)
    items: list[tuple[int, ClipSpec | _RowProblem]] = []
    for i, (span, caption) in enumerate(zip(spans, captions)):
        try:
            if not (isinstance(span, (list, tuple)) and len(span) == 2):
                raise ValueError(f"timestamp entry must be a [start, end] pair, got {span!r}")
            start, end = parse_timecode(span[0]), parse_timecode(span[1])
            if not isinstance(caption, str):
                raise ValueError(f"caption entry must be a string, got {type(caption).__name__}")
            spec = ClipSpec(
                clip_id=make_clip_id(video_id, start, end),
                uri=uri,
                start_sec=start,
                end_sec=end,
                caption=caption.strip(),
                dataset=ctx.dataset or "panda70m",
                fps_target=ctx.fps_target,
                native_id=f"{video_id}_{i}",
                source_ref=f"{ctx.path} row {row_number} clip {i}",
            )
            items.append((i, spec))
        except ValueError as e:
            items.append((i, _RowProblem(str(e))))
    return items


def _panda_video(ctx: _Context, row: Mapping[str, str | None], video_id: str) -> str:
    raw = _field(row, "video_path")
    if raw:
        return _resolve(ctx.video_base, raw)
    for ext in _PANDA_VIDEO_EXTS:
        candidate = os.path.join(ctx.video_base, video_id + ext)
        if os.path.isfile(candidate):
            return candidate
    return os.path.join(ctx.video_base, video_id + _PANDA_VIDEO_EXTS[0])


def _literal_list(row: Mapping[str, str | None], name: str) -> list:
    text = _required(row, name)
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        if name == "caption":
            return [text]
        raise _RowProblem(f"{name} is not a Python list literal: {text[:60]!r}") from None
    if isinstance(value, str) and name == "caption":
        return [value]
    if not isinstance(value, (list, tuple)):
        raise _RowProblem(f"{name} must be a list, got {type(value).__name__}")
    return list(value)


def _plain_row(ctx: _Context, row: Mapping[str, str | None], row_number: int) -> ClipSpec:
    raw_path = _required(row, "video_path")
    start, end = _time(row, "start_sec"), _time(row, "end_sec")
    clip_id = _field(row, "clip_id") or make_clip_id(raw_path, start, end)
    return ClipSpec(
        clip_id=clip_id,
        uri=_resolve(ctx.video_base, raw_path),
        start_sec=start,
        end_sec=end,
        caption=_field(row, "caption"),
        dataset=ctx.dataset or _field(row, "dataset") or "custom",
        fps_target=ctx.fps_target,
        annotations=_plain_annotations(ctx, _field(row, "annotations"), raw_path),
        intrinsics=_plain_intrinsics(row),
        source_ref=f"{ctx.path} row {row_number}",
    )


def _plain_annotations(ctx: _Context, text: str, raw_video: str) -> Annotations | None:
    if not text:
        return None
    kind, sep, folder = text.partition(":")
    kind, folder = kind.strip().lower(), folder.strip()
    if not sep or kind not in ("vipe", "spatialvid") or not folder:
        raise _RowProblem(f"annotations must be 'vipe:<dir>' or 'spatialvid:<dir>', got {text!r}")
    folder = _resolve(ctx.manifest_dir, folder)
    # ViPE names its outputs after the stem of the video it ran on; SpatialVID after the clip id,
    # which is also the name of the clip's annotation folder.
    name = Path(raw_video.replace("\\", "/")).stem if kind == "vipe" else os.path.basename(folder)
    return Annotations(kind, folder, name)


def _plain_intrinsics(row: Mapping[str, str | None]) -> tuple[float, float, float, float] | None:
    values = [_field(row, name) for name in _INTRINSICS]
    if not any(values):
        return None
    if not all(values):
        raise _RowProblem("give all of fx, fy, cx, cy or none")
    try:
        return tuple(float(v) for v in values)  # type: ignore[return-value]
    except ValueError:
        raise _RowProblem(f"intrinsics must be numbers, got {values}") from None


def _optional_int(row: Mapping[str, str | None], name: str) -> int | None:
    text = _field(row, name)
    if not text:
        return None
    try:
        value = int(float(text))
    except ValueError:
        raise _RowProblem(f"{name} must be an integer, got {text!r}") from None
    if value < 0:
        raise _RowProblem(f"{name} must be >= 0, got {value}")
    return value


def _optional_float(row: Mapping[str, str | None], name: str) -> float | None:
    text = _field(row, name)
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise _RowProblem(f"{name} must be a number, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    """`python -m pipelines.manifests MANIFEST`: check a manifest, optionally write specs as JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("manifest")
    parser.add_argument("--format", default="auto", choices=("auto", *FORMATS))
    parser.add_argument("--fps", default=str(DEFAULT_FPS), help="label fps, or 'native' for the source rate")
    parser.add_argument("--video-root", default=None)
    parser.add_argument(
        "--annotation-root",
        default=None,
        help="SpatialVID: folder of per-clip annotation folders (spatialvid-hq: of group_XXXX/)",
    )
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--out", default=None, help="write one JSON object per clip to this file")
    args = parser.parse_args(argv)
    try:
        result = read_manifest(
            args.manifest,
            args.format,
            fps_target=parse_fps(args.fps),
            video_root=args.video_root,
            annotation_root=args.annotation_root,
            dataset=args.dataset,
        )
    except (ManifestError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for error in result.errors:
        print(f"rejected: {error}", file=sys.stderr)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            for spec in result.specs:
                f.write(json.dumps(spec.to_dict()) + "\n")
    print(f"{result.path} ({result.format}): {len(result.specs)} clips, {len(result.errors)} rejected rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
