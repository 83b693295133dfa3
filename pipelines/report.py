"""Label-quality report: one self-contained HTML page per store, for auditors.

The page holds totals, rejection reasons and manifest row errors; the gates the clips were
labelled with; the distribution of every quality metric with those gates drawn in; a table of
clips that fits the page; for each labelled clip a gallery of key frames (RGB, depth, flow colour
wheel, dynamic mask, scene-flow magnitude, validity masks) with the reason of every missing field;
and for each rejected clip its first frame, its reasons and the metrics measured before it was
rejected. Images are inline PNG data URIs and plots inline SVG, so the page opens anywhere with
no server. `build_report` also writes `summary.json`: the same numbers, for Prefect artifacts.

Manifest row errors are not in the store's clips (a bad row has no clip): the labeling flow keeps
them beside the index with `save_manifest_errors`, and the page lists them.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import html
import json
import os
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping, Sequence

import cv2
import numpy as np

from pipelines.quality import QualityThresholds
from storage import LabelStore

__all__ = [
    "ReportOptions",
    "FieldGaps",
    "RunGates",
    "build_report",
    "report_summary",
    "field_gaps",
    "run_gates",
    "save_manifest_errors",
    "default_report_dir",
    "load_manifest_errors",
    "flow_to_rgb",
    "histogram_svg",
    "histogram_png",
    "png_data_uri",
    "clip_anchor",
]

MANIFEST_ERRORS_FILE = "manifest_errors.json"
"""Manifest row errors of the runs that wrote a store, in `<store>/index/` (`save_manifest_errors`)."""

FEW_VALUES = 6
"""A metric with at most this many distinct values is drawn as bars at its exact values."""

_ACCEPTED_RGB = (58, 157, 93)
_REJECTED_RGB = (217, 83, 79)
_GATE_RGB = (31, 78, 156)
_AXIS_RGB = (85, 85, 85)


@dataclass(frozen=True)
class ReportOptions:
    """What goes into the page.

    Attributes:
        max_gallery_clips: accepted clips with a picture gallery (the table lists every clip).
        max_rejected_clips: rejected clips with a section (first frame, reasons, metrics).
        max_measured_clips: accepted clips whose missing fields are measured and counted (each
            read costs its validity masks; the page says how many were left out).
        thumb_width: width of each gallery image in pixels.
        thresholds: gates to draw instead of those the clips were labelled with (None: the
            clips' own, from their `config.thresholds` attribute).
    """

    max_gallery_clips: int = 40
    max_rejected_clips: int = 200
    max_measured_clips: int = 5000
    thumb_width: int = 160
    thresholds: QualityThresholds | None = None


# ---------------------------------------------------------------------------- pictures
def png_data_uri(rgb: np.ndarray) -> str:
    """Inline PNG of an (H, W, 3) uint8 RGB or (H, W) uint8 image."""
    image = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buffer = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return "data:image/png;base64," + base64.b64encode(buffer.tobytes()).decode("ascii")


def flow_to_rgb(flow_px: np.ndarray, valid: np.ndarray | None = None, max_px: float | None = None) -> np.ndarray:
    """Colour-wheel picture of a flow field: hue = direction, saturation = magnitude; black where invalid."""
    flow = np.nan_to_num(np.asarray(flow_px, np.float32))
    magnitude, angle = cv2.cartToPolar(flow[..., 0], flow[..., 1], angleInDegrees=True)
    scale = max_px if max_px else max(float(np.percentile(magnitude, 99)), 1e-6)
    hsv = np.zeros(flow.shape[:2] + (3,), np.uint8)
    hsv[..., 0] = (angle / 2).astype(np.uint8)
    hsv[..., 1] = np.clip(magnitude / scale * 255, 0, 255).astype(np.uint8)
    hsv[..., 2] = 255
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if valid is not None:
        rgb[~valid] = 0
    return rgb


def _colormap(values: np.ndarray, valid: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Turbo colour map of valid values (robust range), black where invalid."""
    values = np.asarray(values, np.float32)
    out = np.zeros(values.shape + (3,), np.uint8)
    if not valid.any():
        return out
    v = 1.0 / np.maximum(values, 1e-6) if inverse else values
    lo, hi = np.percentile(v[valid], [2, 98])
    norm = np.clip((v - lo) / max(hi - lo, 1e-9), 0, 1)
    colored = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_TURBO)
    out[valid] = cv2.cvtColor(colored, cv2.COLOR_BGR2RGB)[valid]
    return out


def _mask_rgb(*masks: np.ndarray) -> np.ndarray:
    """Up to three masks as the red, green, blue channels."""
    out = np.zeros(masks[0].shape + (3,), np.uint8)
    for channel, mask in enumerate(masks):
        out[..., channel] = np.where(mask, 255, 0)
    return out


def _scene_flow_rgb(scene_flow: np.ndarray, valid: np.ndarray, dynamic: np.ndarray) -> np.ndarray:
    """|scene flow| colour map; moving pixels without valid scene flow dark grey, the rest black."""
    rgb = _colormap(np.linalg.norm(scene_flow.astype(np.float32), axis=-1), valid)
    rgb[dynamic & ~valid] = 70
    return rgb


def _scene_flow_caption(valid: np.ndarray, dynamic: np.ndarray) -> str:
    if not dynamic.any():
        return "|scene flow|: nothing moves"
    return "|scene flow|" if valid.any() else "|scene flow|: none valid"


def _thumb(image: np.ndarray, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------------------- plots
@dataclass(frozen=True)
class _Shape:
    """One drawing primitive of a plot, in plot pixels (SVG and PNG are drawn from the same list)."""

    kind: str  # "rect", "line", "dash" (dashed line) or "text"
    x: float
    y: float
    x2: float = 0.0  # rect: width; line: end x
    y2: float = 0.0  # rect: height; line: end y
    color: tuple[int, int, int] = _AXIS_RGB
    text: str = ""
    anchor: str = "start"  # text: "start", "middle" or "end"
    size: int = 10  # text: font size in pixels
    bold: bool = False
    cls: str = ""  # SVG class ("tick": an x-axis value, "gate": a gate line or its value)


def _fmt(value: float) -> str:
    return f"{value:.3g}"


def _histogram_shapes(
    values_accepted: np.ndarray,
    values_rejected: np.ndarray,
    bounds: Sequence[tuple[str, float]],
    title: str,
    width: int,
    height: int,
    bins: int,
) -> list[_Shape]:
    """Axes, bars (accepted green, rejected red, stacked), gate lines and labels of one metric.

    Many distinct values: a histogram over [min, max] of the values and gates, labelled at both
    ends. At most `FEW_VALUES` distinct values: one bar per exact value, in order, each labelled
    with its value (no invented range; the gates take their place in that order).
    """
    acc = np.asarray(values_accepted, np.float64)
    rej = np.asarray(values_rejected, np.float64)
    acc_f, rej_f = acc[np.isfinite(acc)], rej[np.isfinite(rej)]
    missing = acc.size + rej.size - acc_f.size - rej_f.size
    distinct = np.unique(np.concatenate([acc_f, rej_f]))
    gate_values = sorted({v for _, v in bounds})
    left, right, bottom_margin = 36, 10, 34
    top_margin = 24 + 11 * max(1, len(gate_values))  # room for one label per gate value
    plot_w, plot_h = width - left - right, height - top_margin - bottom_margin
    base = top_margin + plot_h
    shapes = [_Shape("text", width / 2, 13, text=title, anchor="middle", size=12, bold=True, color=(34, 34, 34))]
    if distinct.size == 0:
        shapes.append(_Shape("text", width / 2, base - plot_h / 2, text="no values", anchor="middle"))
        bars, ticks = [], []
        gate_x = {v: left + plot_w * (i + 1) / (len(gate_values) + 1) for i, v in enumerate(gate_values)}
    elif distinct.size <= FEW_VALUES:
        slots = sorted(set(distinct.tolist()) | set(gate_values))
        step = plot_w / len(slots)
        x_of = {v: left + step * (i + 0.5) for i, v in enumerate(slots)}
        bar_w = min(step * 0.6, 24.0)
        bars = [(x_of[v] - bar_w / 2, bar_w, int((acc_f == v).sum()), int((rej_f == v).sum())) for v in distinct]
        ticks = [(x_of[v], _fmt(v)) for v in distinct]
        gate_x = {v: x_of[v] for v in gate_values}
    else:
        lo, hi = float(min([distinct[0], *gate_values])), float(max([distinct[-1], *gate_values]))
        edges = np.linspace(lo, hi, bins + 1)
        counts_acc, counts_rej = np.histogram(acc_f, edges)[0], np.histogram(rej_f, edges)[0]
        step = plot_w / bins
        bars = [(left + i * step, step - 1, int(counts_acc[i]), int(counts_rej[i])) for i in range(bins)]
        ticks = [(left, _fmt(lo)), (left + plot_w, _fmt(hi))]
        gate_x = {v: left + (v - lo) / (hi - lo) * plot_w for v in gate_values}
    top_count = max([a + r for *_, a, r in bars] + [1])
    for x, w, n_acc, n_rej in bars:
        h_acc, h_rej = n_acc / top_count * plot_h, n_rej / top_count * plot_h
        if n_acc:
            shapes.append(_Shape("rect", x, base - h_acc, w, h_acc, _ACCEPTED_RGB))
        if n_rej:
            shapes.append(_Shape("rect", x, base - h_acc - h_rej, w, h_rej, _REJECTED_RGB))
        if distinct.size <= FEW_VALUES and n_acc + n_rej:
            shapes.append(_Shape("text", x + w / 2, base - h_acc - h_rej - 3, text=str(n_acc + n_rej), anchor="middle",
                                 size=9))
    # axes: x along the base, y with its count range and unit
    shapes.append(_Shape("line", left, base, left + plot_w, base))
    shapes.append(_Shape("line", left, base, left, base - plot_h))
    shapes.append(_Shape("text", left - 3, base, text="0", anchor="end", size=9))
    shapes.append(_Shape("text", left - 3, base - plot_h + 8, text=str(top_count), anchor="end", size=9))
    shapes.append(_Shape("text", 2, base - plot_h / 2, text="clips", size=9))
    for x, label in ticks:
        shapes.append(_Shape("line", x, base, x, base + 3))
        anchor = "start" if x <= left + 1 else "end" if x >= left + plot_w - 1 else "middle"
        shapes.append(_Shape("text", x, base + 13, text=label, anchor=anchor, size=9, cls="tick"))
    axis_label = "value" if distinct.size > FEW_VALUES or distinct.size == 0 else "exact values (not to scale)"
    if missing:
        axis_label += f"; {missing} clip{'s' if missing > 1 else ''} without a value"
    shapes.append(_Shape("text", left + plot_w / 2, height - 4, text=axis_label, anchor="middle", size=9))
    for kind, value in bounds:
        x = gate_x[value]
        shapes.append(_Shape("dash", x, base, x, top_margin - 6, _GATE_RGB, cls="gate"))
    for n, value in enumerate(gate_values):  # one label per gate value, stacked if several
        kinds = "/".join(sorted({k for k, v in bounds if v == value}))
        x = gate_x[value]
        anchor = "start" if x < left + plot_w * 0.3 else "end" if x > left + plot_w * 0.7 else "middle"
        shapes.append(_Shape("text", x, top_margin - 9 - 11 * n, text=f"{kinds} {_fmt(value)}", anchor=anchor,
                             size=10, color=_GATE_RGB, bold=True, cls="gate"))
    return shapes


def _svg(shapes: Iterable[_Shape], width: int, height: int, title: str) -> str:
    def rgb(c: tuple[int, int, int]) -> str:
        return "#%02x%02x%02x" % c

    parts = [f'<svg class="hist" width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}">']
    for s in shapes:
        cls = f' class="{s.cls}"' if s.cls else ""
        if s.kind == "rect":
            parts.append(f'<rect x="{s.x:.1f}" y="{s.y:.1f}" width="{s.x2:.1f}" height="{s.y2:.1f}" '
                         f'fill="{rgb(s.color)}"/>')
        elif s.kind in ("line", "dash"):
            dash = ' stroke-width="2" stroke-dasharray="4 2"' if s.kind == "dash" else ""
            parts.append(f'<line x1="{s.x:.1f}" y1="{s.y:.1f}" x2="{s.x2:.1f}" y2="{s.y2:.1f}" '
                         f'stroke="{rgb(s.color)}"{dash}{cls}/>')
        else:
            weight = ' font-weight="600"' if s.bold else ""
            parts.append(f'<text x="{s.x:.1f}" y="{s.y:.1f}" text-anchor="{s.anchor}" font-size="{s.size}" '
                         f'fill="{rgb(s.color)}"{weight}{cls}>{html.escape(s.text)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _png(shapes: Iterable[_Shape], width: int, height: int) -> np.ndarray:
    image = np.full((height, width, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for s in shapes:
        if s.kind == "rect":
            cv2.rectangle(image, (round(s.x), round(s.y)), (round(s.x + s.x2) - 1, round(s.y + s.y2)), s.color, -1)
        elif s.kind == "line":
            cv2.line(image, (round(s.x), round(s.y)), (round(s.x2), round(s.y2)), s.color, 1)
        elif s.kind == "dash":
            ys = np.arange(min(s.y, s.y2), max(s.y, s.y2), 6.0)
            for y in ys:
                cv2.line(image, (round(s.x), round(y)), (round(s.x), round(min(y + 4, max(s.y, s.y2)))), s.color, 2)
        else:
            scale = s.size / 26.0
            thickness = 2 if s.bold and s.size >= 12 else 1
            (tw, _), _ = cv2.getTextSize(s.text, font, scale, thickness)
            x = s.x - tw / 2 if s.anchor == "middle" else s.x - tw if s.anchor == "end" else s.x
            cv2.putText(image, s.text, (round(x), round(s.y)), font, scale, s.color, thickness, cv2.LINE_AA)
    return image


def _as_bounds(bound: tuple[str, float] | Sequence[tuple[str, float]] | None) -> list[tuple[str, float]]:
    if bound is None:
        return []
    if len(bound) == 2 and isinstance(bound[0], str):
        return [(bound[0], float(bound[1]))]
    return [(k, float(v)) for k, v in bound]


def histogram_svg(
    values_accepted: np.ndarray,
    values_rejected: np.ndarray,
    bound: tuple[str, float] | Sequence[tuple[str, float]] | None,
    title: str,
    width: int = 330,
    height: int = 170,
    bins: int = 20,
) -> str:
    """Inline SVG histogram with axes (accepted green, rejected red, stacked) and the gates as
    dashed lines labelled with their values. `bound`: one ("min" | "max", value) or several."""
    shapes = _histogram_shapes(values_accepted, values_rejected, _as_bounds(bound), title, width, height, bins)
    return _svg(shapes, width, height, title)


def histogram_png(
    values: np.ndarray,
    bound: tuple[str, float] | Sequence[tuple[str, float]] | None,
    width: int = 360,
    height: int = 170,
    bins: int = 16,
    title: str = "",
    values_rejected: np.ndarray | None = None,
) -> np.ndarray:
    """The same plot as `histogram_svg` as an RGB picture (Prefect markdown artifacts render PNG data URIs)."""
    rejected = np.zeros(0) if values_rejected is None else values_rejected
    shapes = _histogram_shapes(values, rejected, _as_bounds(bound), title, width, height, bins)
    return _png(shapes, width, height)


# ---------------------------------------------------------------------------- gates
@dataclass(frozen=True)
class RunGates:
    """The quality gates the clips of a store were labelled with.

    Attributes:
        bounds: metric -> every distinct ("min" | "max", value) among the clips (one when they agree).
        sets: each distinct gate set (metric -> bound) with the number of clips labelled with it.
        unrecorded: clips with no recorded gates (e.g. committed ground truth).
        given: the gates were given to the report (`ReportOptions.thresholds`), not read from the clips.
    """

    bounds: dict[str, list[tuple[str, float]]]
    sets: list[tuple[dict[str, tuple[str, float]], int]]
    unrecorded: int
    given: bool = False

    @property
    def differ(self) -> bool:
        return len(self.sets) > 1


def _thresholds_from_attrs(config: Mapping[str, Any] | None) -> QualityThresholds | None:
    stored = (config or {}).get("thresholds")
    if not isinstance(stored, Mapping):
        return None
    names = {f.name for f in dataclasses.fields(QualityThresholds)}
    return QualityThresholds(**{k: v for k, v in stored.items() if k in names})


def run_gates(store: LabelStore, clip_ids: Iterable[str], given: QualityThresholds | None = None) -> RunGates:
    """The gates of the clips (their `config.thresholds` attribute), or `given` for all of them."""
    if given is not None:
        bounds = given.bounds()
        return RunGates({m: [b] for m, b in bounds.items()}, [(bounds, 0)], 0, given=True)
    counts: Counter = Counter()
    unrecorded = 0
    for clip_id in clip_ids:
        thresholds = _thresholds_from_attrs(store.attrs(clip_id).get("config"))
        if thresholds is None:
            unrecorded += 1
            continue
        counts[json.dumps(thresholds.bounds(), sort_keys=True)] += 1
    sets = [({m: (k, float(v)) for m, (k, v) in json.loads(key).items()}, n) for key, n in counts.most_common()]
    bounds: dict[str, list[tuple[str, float]]] = {}
    for gate_set, _ in sets:
        for metric, bound in gate_set.items():
            if bound not in bounds.setdefault(metric, []):
                bounds[metric].append(bound)
    return RunGates(bounds, sets, unrecorded)


# ---------------------------------------------------------------------------- missing fields
@dataclass(frozen=True)
class FieldGaps:
    """Where an accepted clip's labels are missing, and why.

    Attributes:
        depth_valid: share of pixels with valid depth (all frames).
        key_flow_valid: share of key-pair pixels with valid key flow.
        moving_px: moving pixels of the key frames that have a scene-flow pair (frames 0 .. S-2).
        depth_on_movers: share of those with valid depth.
        scene_flow_on_movers: share of those with valid scene flow.
        scene_flow_cause: why scene flow is missing: "no_movers" (nothing moves: scene flow is
            defined on moving pixels only), "no_depth_on_movers", "scene_flow_tests", or None
            (scene flow present).
        notes: sentences for the page, one per missing field.
    """

    depth_valid: float
    key_flow_valid: float
    moving_px: int
    depth_on_movers: float
    scene_flow_on_movers: float
    scene_flow_cause: str | None
    notes: tuple[str, ...]


MISSING_BELOW = 0.01
"""A field covering less than this share of the pixels it is defined on counts as missing."""


def field_gaps(labels: Mapping[str, np.ndarray], attrs: Mapping[str, Any]) -> FieldGaps:
    """Coverage of depth, key flow and scene flow of one labelled clip, with the cause of each gap.

    Scene flow is defined on moving pixels and needs depth there at both ends; a depth backend
    that leaves moving pixels invalid (the weight-free multi-view depth triangulates only what
    the camera motion explains) gives no scene flow at all.
    """
    stride = int(attrs["stride"])
    depth_valid = np.asarray(labels["depth_valid"], bool)
    key_flow_valid = np.asarray(labels["key_flow_valid"], bool)
    dynamic = np.asarray(labels["dynamic_mask"], bool)[:-1]
    scene_flow_valid = np.asarray(labels["scene_flow_valid"], bool)
    depth_key = depth_valid[::stride][: dynamic.shape[0]]
    moving = int(dynamic.sum())
    depth_on_movers = float((depth_key & dynamic).sum() / moving) if moving else 0.0
    scene_flow_on_movers = float((scene_flow_valid & dynamic).sum() / moving) if moving else 0.0
    notes = []
    depth_share = float(depth_valid.mean())
    if depth_share < MISSING_BELOW:
        notes.append(f"depth: valid on {100 * depth_share:.1f} % of the pixels")
    flow_share = float(key_flow_valid.mean())
    if flow_share < MISSING_BELOW:
        notes.append(f"key flow: valid on {100 * flow_share:.1f} % of the pixels (forward-backward inconsistent or "
                     "leaving the image)")
    cause = None
    if not moving:
        cause = "no_movers"
        notes.append("scene flow: none, nothing moves (the dynamic mask is empty; scene flow is defined on moving "
                     "pixels only)")
    elif scene_flow_on_movers < MISSING_BELOW and depth_on_movers < 0.05:
        cause = "no_depth_on_movers"
        notes.append(f"scene flow: missing on the {moving} moving pixels: it needs depth there, and the depth is "
                     f"valid on only {100 * depth_on_movers:.1f} % of them. {_depth_advice(attrs)}")
    elif scene_flow_on_movers < MISSING_BELOW:
        cause = "scene_flow_tests"
        notes.append(f"scene flow: missing on the {moving} moving pixels although depth covers "
                     f"{100 * depth_on_movers:.0f} % of them: the key flow there fails the scene-flow tests "
                     "(flow uncertainty, distance from the mask border, expected error, rigid fit)")
    return FieldGaps(depth_share, flow_share, moving, depth_on_movers, scene_flow_on_movers, cause, tuple(notes))


def _depth_advice(attrs: Mapping[str, Any]) -> str:
    backend = str((attrs.get("config") or {}).get("depth", ""))
    name = str((attrs.get("labelers") or {}).get("depth", {}).get("name", backend or "unknown"))
    if backend == "mvs":
        return ("The weight-free multi-view depth (--depth mvs) triangulates only what the camera motion explains and "
                "leaves moving objects invalid; label with --depth neural --depth-weights DIR or imported depth for "
                "scene flow.")
    return f"The depth backend ({name}) left the moving pixels invalid."


# ---------------------------------------------------------------------------- manifest row errors
_ERRORS_RELPATH = f"index/{MANIFEST_ERRORS_FILE}"


def save_manifest_errors(store: LabelStore, manifest: str | Path, errors: Sequence[Any]) -> None:
    """Record the row errors of one manifest beside the store's index (replacing that manifest's
    earlier record: its rows are read again on every run). `errors`: `pipelines.manifests.RowError`s."""
    manifest = str(manifest) if "://" in str(manifest) else str(Path(manifest).resolve())
    kept = [e for e in load_manifest_errors(store) if e.get("manifest") != manifest]
    fresh = [
        {"manifest": manifest, "row": getattr(e, "row", None), "entry": getattr(e, "entry", None),
         "message": str(getattr(e, "message", e))}
        for e in errors
    ]
    store.put_file(_ERRORS_RELPATH, json.dumps(kept + fresh, indent=1).encode())


def load_manifest_errors(store: LabelStore) -> list[dict[str, Any]]:
    """The recorded manifest row errors of a store ([] when none were recorded)."""
    data = store.get_file(_ERRORS_RELPATH)
    return [] if data is None else list(json.loads(data))


def _store_name(store: LabelStore) -> str:
    return _location_name(store.location)


def _location_name(location: str) -> str:
    return PurePosixPath(str(location).rstrip("/")).name or str(location)


def default_report_dir(store_location: str) -> Path:
    """Where a run writes its store's report by default: `<store>_report` beside a local store, or in
    the working directory for a store in object storage (the page is read from a local disk)."""
    name = f"{_location_name(store_location)}_report"
    return Path(name) if "://" in str(store_location) else Path(store_location).resolve().parent / name


# ---------------------------------------------------------------------------- summary
def report_summary(store: LabelStore) -> dict[str, Any]:
    """Totals, rejection reasons, per-metric medians and manifest row errors of a store (index only)."""
    rows = store.index().to_pylist()
    reasons = Counter()
    for row in rows:
        for reason in row.get("reasons") or []:
            reasons[_reason_code(reason)] += 1
    metrics = sorted({k for row in rows for k in row if k.startswith("qa_")})
    medians = {}
    for m in metrics:
        vals = np.array([row[m] for row in rows if row.get(m) is not None], np.float64)
        medians[m[3:]] = float(np.nanmedian(vals)) if vals.size and np.isfinite(vals).any() else None
    return {
        "clips": len(rows),
        "accepted": sum(r["status"] == "accepted" for r in rows),
        "rejected": sum(r["status"] == "rejected" for r in rows),
        "rejected_by_reason": dict(reasons.most_common()),
        "manifest_row_errors": len(load_manifest_errors(store)),
        "metric_medians": medians,
    }


def _reason_code(reason: str) -> str:
    head = reason.split("=")[0] if reason.startswith("qa:") else reason.split(":")[0]
    return head.strip()


def clip_anchor(clip_id: str) -> str:
    """The page's element id of a clip's section (safe in a URL fragment)."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", clip_id)
    return f"clip-{safe}" if safe == clip_id else f"clip-{safe}-{hashlib.sha1(clip_id.encode()).hexdigest()[:8]}"


# ---------------------------------------------------------------------------- video frames
def _source_frames(
    uri: str, frame_index: Sequence[int] | None, start_sec: float | None
) -> tuple[np.ndarray | None, str]:
    """(N, h, w, 3) RGB source frames, by index, else the frame at `start_sec`; (None, why) if unreadable."""
    if not uri or not os.path.isfile(uri):
        return None, f"video not found at {uri or '(no uri)'}"
    try:
        import decord

        from pipelines.decode import frame_times

        reader = decord.VideoReader(uri, num_threads=1)
        if frame_index is None:
            times = frame_times(reader)
            start = float(start_sec) if start_sec is not None and np.isfinite(start_sec) else 0.0
            frame_index = [int(min(np.searchsorted(times, start - 1e-6), len(times) - 1))]
        return reader.get_batch([int(i) for i in frame_index]).asnumpy(), ""
    except Exception as e:  # the report must render whatever the video: say why there is no picture
        lines = str(e).strip().splitlines()
        return None, f"cannot decode {uri}: {lines[0] if lines else type(e).__name__}"


def _at_label_size(frames: np.ndarray, height: int | None, width: int | None) -> np.ndarray:
    from pipelines.decode import ResizeCrop

    if not height or not width:
        return frames
    return ResizeCrop.from_sizes(frames.shape[1], frames.shape[2], int(height), int(width)).apply_frames(frames)


# ---------------------------------------------------------------------------- page sections
def _figure(image: np.ndarray, caption: str, width: int, alt: str) -> str:
    return (f'<figure><img src="{png_data_uri(_thumb(image, width))}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _metrics_table(qa: Mapping[str, Any], gates: Mapping[str, tuple[str, float]]) -> str:
    """Metric | value | gate | verdict, failing gates marked."""
    rows = []
    for name, value in sorted(qa.items()):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            continue
        gate = gates.get(name)
        verdict = ""
        if gate is not None:
            kind, bound = gate
            ok = np.isfinite(value) and (value >= bound if kind == "min" else value <= bound)
            verdict = "ok" if ok else "fails"
        cls = ' class="fail"' if verdict == "fails" else ""
        gate_text = f"{gate[0]} {_fmt(gate[1])}" if gate else ""
        rows.append(f"<tr{cls}><td>{html.escape(name)}</td><td>{_fmt(float(value))}</td>"
                    f"<td>{gate_text}</td><td>{verdict}</td></tr>")
    if not rows:
        return '<p class="qa">No quality metric was measured before the rejection.</p>'
    return ('<table class="metrics"><thead><tr><th>metric</th><th>value</th><th>gate</th><th></th></tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def _gallery(store: LabelStore, clip_id: str, options: ReportOptions) -> tuple[str, FieldGaps]:
    labels = store.read(clip_id)
    attrs = labels.attrs
    gaps = field_gaps(labels, attrs)
    stride = int(attrs["stride"])
    S = labels["dynamic_mask"].shape[0]
    picks = sorted({0, S // 2, S - 2}) if S > 2 else [0]
    frame_index = labels["frame_index"][::stride][picks]
    raw, why = _source_frames(attrs["source"]["uri"], frame_index, None)
    rgb = _at_label_size(raw, attrs.get("height"), attrs.get("width")) if raw is not None else None
    rows = []
    for n, k in enumerate(picks):
        t = k * stride
        depth_valid, scene_flow_valid = labels["depth_valid"][t], labels["scene_flow_valid"][k]
        blank = np.full(depth_valid.shape + (3,), 40, np.uint8)
        panels = [
            ("RGB" if rgb is not None else "RGB: no video", rgb[n] if rgb is not None else blank),
            ("depth", _colormap(labels["depth"][t], depth_valid, inverse=True)),
            ("key flow", flow_to_rgb(labels["key_flow"][k], labels["key_flow_valid"][k])),
            ("dynamic mask", _mask_rgb(labels["dynamic_mask"][k])),
            (_scene_flow_caption(scene_flow_valid, labels["dynamic_mask"][k]),
             _scene_flow_rgb(labels["scene_flow"][k], scene_flow_valid, labels["dynamic_mask"][k])),
            ("valid: depth/flow/scene flow", _mask_rgb(depth_valid, labels["key_flow_valid"][k], scene_flow_valid)),
        ]
        cells = "".join(_figure(img, name, options.thumb_width, f"{name} key frame {k}") for name, img in panels)
        rows.append(f'<div class="krow"><div class="klabel">key frame {k}<br>(frame {t})</div>{cells}</div>')
    qa = attrs.get("qa", {})
    metrics = " · ".join(f"{html.escape(k)} {_fmt(v)}" for k, v in sorted(qa.items()) if isinstance(v, (int, float)))
    caption = html.escape(str(attrs["source"].get("caption", "")))
    coverage = (f"valid: depth {100 * gaps.depth_valid:.0f} %, key flow {100 * gaps.key_flow_valid:.0f} %, "
                f"scene flow {100 * gaps.scene_flow_on_movers:.0f} % of {gaps.moving_px} moving pixels "
                f"(depth on {100 * gaps.depth_on_movers:.0f} % of them)")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in gaps.notes)
    missing = f'<ul class="missing">{notes}</ul>' if notes else ""
    video = f'<p class="qa">{html.escape(why)}</p>' if rgb is None else ""
    section = (
        f'<section class="clip accepted" id="{clip_anchor(clip_id)}"><h3>{html.escape(clip_id)}</h3>'
        f'<p class="cap">{caption}</p><p class="qa">{html.escape(coverage)}</p>{missing}{video}'
        f'<p class="qa">{metrics}</p>{"".join(rows)}</section>'
    )
    return section, gaps


def _rejected_section(store: LabelStore, row: Mapping[str, Any], options: ReportOptions) -> str:
    clip_id = row["clip_id"]
    attrs = store.attrs(clip_id)
    source = attrs.get("source", {})
    config = attrs.get("config") or {}
    thresholds = options.thresholds or _thresholds_from_attrs(config)
    gates = thresholds.bounds() if thresholds is not None else {}
    frame_index = attrs.get("frame_index")
    raw, why = _source_frames(str(source.get("uri", "")), frame_index[:1] if frame_index else None,
                              source.get("start_sec"))
    if raw is not None:
        first = _at_label_size(raw, config.get("height"), config.get("width"))[0]
        when = f"frame {int(frame_index[0])}" if frame_index else f"at {float(source.get('start_sec') or 0):.3g} s"
        picture = _figure(first, f"first frame ({when})", 2 * options.thumb_width, f"first frame of {clip_id}")
    else:
        picture = f'<p class="noframe">No first frame: {html.escape(why)}</p>'
    reasons = "".join(f"<li>{html.escape(r)}</li>" for r in attrs.get("reasons", []))
    span = f"{source.get('start_sec', '?')}-{source.get('end_sec', '?')} s"
    return (
        f'<section class="clip rejected" id="{clip_anchor(clip_id)}"><h3>{html.escape(clip_id)} (rejected)</h3>'
        f'<p class="cap">{html.escape(str(source.get("uri", "")))}, {html.escape(span)}. '
        f'{html.escape(str(source.get("caption", "")))}</p>'
        f'<div class="rrow">{picture}<div><h4>Reasons</h4><ul class="reasons">{reasons}</ul>'
        f'<h4>Metrics measured before the rejection</h4>{_metrics_table(attrs.get("qa", {}), gates)}</div></div>'
        "</section>"
    )


def _gates_section(gates: RunGates) -> str:
    if not gates.sets:
        note = "No gates are recorded with these clips (they were not labelled by the gated pipeline): none is drawn."
        return f'<p id="gates-note">{note}</p>'
    if gates.given:
        note = "Gates given to the report (not read from the clips)."
    elif gates.differ:
        note = (f"The clips were labelled with {len(gates.sets)} different gate sets: every value is drawn, "
                "and the table gives the clips per set.")
    else:
        note = "The gates these clips were labelled with (their config.thresholds attribute)."
    if gates.unrecorded:
        note += f" {gates.unrecorded} clips have no recorded gates."
    metrics = sorted({m for s, _ in gates.sets for m in s})
    head = "".join(f"<th>set {i + 1} ({n} clips)</th>" if not gates.given else "<th>given</th>"
                   for i, (_, n) in enumerate(gates.sets))
    body = []
    for m in metrics:
        cells = "".join(f"<td>{s[m][0]} {_fmt(s[m][1])}</td>" if m in s else "<td>none</td>" for s, _ in gates.sets)
        body.append(f"<tr><td>{html.escape(m)}</td>{cells}</tr>")
    cls = "differ" if gates.differ else "same"
    return (f'<p id="gates-note" class="{cls}">{html.escape(note)}</p><table class="gates"><thead><tr><th>metric</th>'
            f'{head}</tr></thead><tbody>{"".join(body)}</tbody></table>')


def _manifest_errors_section(store: LabelStore, errors: list[dict[str, Any]]) -> str:
    if not errors:
        recorded = store.get_file(_ERRORS_RELPATH) is not None
        text = "none" if recorded else "none recorded (the store was not written by a labeling run that records them)"
        return f'<p id="manifest-errors">{text}</p>'
    rows = "".join(
        f"<tr><td>{html.escape(str(e.get('manifest', '')))}</td><td>{e.get('row', '')}</td>"
        f"<td>{'' if e.get('entry') is None else e['entry']}</td><td>{html.escape(str(e.get('message', '')))}</td></tr>"
        for e in errors
    )
    return ('<div class="tablebox"><table id="manifest-errors" class="wrap"><colgroup><col style="width:34%">'
            '<col style="width:6%"><col style="width:6%"><col></colgroup><thead><tr><th>manifest</th><th>row</th>'
            f"<th>clip</th><th>cause</th></tr></thead><tbody>{rows}</tbody></table></div>")


def _field_gaps_section(gaps: Mapping[str, FieldGaps], accepted: int) -> str:
    if not gaps:
        return "<p>No accepted clip to measure.</p>"
    causes = Counter(g.scene_flow_cause for g in gaps.values())
    measured = len(gaps)
    items = [
        f'<li id="n-sf-no-depth">{causes["no_depth_on_movers"]} of {measured} clips: moving pixels without scene flow '
        "because their depth is invalid there (scene flow needs depth on the moving pixels at both ends; the "
        "weight-free multi-view depth, --depth mvs, leaves moving objects invalid: use --depth neural or imported "
        "depth for scene-flow labels)</li>",
        f'<li id="n-sf-tests">{causes["scene_flow_tests"]} of {measured} clips: depth on the moving pixels, but the '
        "key flow there fails the scene-flow tests</li>",
        f'<li id="n-sf-no-movers">{causes["no_movers"]} of {measured} clips: nothing moves (no scene flow to '
        "label)</li>",
        f"<li>{causes[None]} of {measured} clips: scene flow present</li>",
    ]
    other = sum(any(not n.startswith("scene flow") for n in g.notes) for g in gaps.values())
    if other:
        items.append(f"<li>{other} of {measured} clips: depth or key flow missing (see their galleries)</li>")
    extra = "" if measured == accepted else f"<p>{accepted - measured} more accepted clips were not measured.</p>"
    return f'<ul id="field-gaps">{"".join(items)}</ul>{extra}'


# ---------------------------------------------------------------------------- page
def build_report(store_path: str | Path, out_dir: str | Path, options: ReportOptions = ReportOptions()) -> Path:
    """Write `out_dir/index.html` and `out_dir/summary.json` for the store; return the page's path."""
    store = LabelStore.open(store_path)
    rows = store.index().to_pylist()
    summary = report_summary(store)
    errors = load_manifest_errors(store)
    gates = run_gates(store, [r["clip_id"] for r in rows], options.thresholds)
    metrics = sorted({k[3:] for row in rows for k in row if k.startswith("qa_")})
    hists = []
    for m in metrics:
        acc = np.array([r.get(f"qa_{m}") for r in rows if r["status"] == "accepted"], dtype=np.float64)
        rej = np.array([r.get(f"qa_{m}") for r in rows if r["status"] == "rejected"], dtype=np.float64)
        hists.append(histogram_svg(acc, rej, gates.bounds.get(m), m))
    accepted_ids = [r["clip_id"] for r in rows if r["status"] == "accepted"]
    galleries, gaps = [], {}
    for n, clip_id in enumerate(accepted_ids):
        if n < options.max_gallery_clips:
            section, gaps[clip_id] = _gallery(store, clip_id, options)
            galleries.append(section)
        elif n < options.max_measured_clips:  # no pictures, but its missing fields are counted
            labels = store.read(clip_id, fields=["depth_valid", "key_flow_valid", "dynamic_mask", "scene_flow_valid"])
            gaps[clip_id] = field_gaps(labels, labels.attrs)
    rejected_rows = [r for r in rows if r["status"] == "rejected"][: options.max_rejected_clips]
    rejected = [_rejected_section(store, r, options) for r in rejected_rows]
    with_section = set(accepted_ids[: options.max_gallery_clips]) | {r["clip_id"] for r in rejected_rows}
    summary["scene_flow_missing"] = {
        cause: sum(g.scene_flow_cause == cause for g in gaps.values())
        for cause in ("no_depth_on_movers", "scene_flow_tests", "no_movers")
    } | {"clips_measured": len(gaps)}
    summary["gates"] = {m: [list(b) for b in bs] for m, bs in gates.bounds.items()}
    summary["gate_sets"] = len(gates.sets)
    page = _TEMPLATE.format(
        title=html.escape(f"Label quality: {_store_name(store)}"),
        store=html.escape(store.location),
        clips=summary["clips"],
        accepted=summary["accepted"],
        rejected=summary["rejected"],
        n_errors=len(errors),
        reasons="".join(f"<li>{html.escape(k)}: {v}</li>" for k, v in summary["rejected_by_reason"].items())
        or "<li>none</li>",
        errors=_manifest_errors_section(store, errors),
        field_gaps=_field_gaps_section(gaps, len(accepted_ids)),
        gates=_gates_section(gates),
        hists="".join(hists) or "<p>No quality metrics recorded.</p>",
        table=_clip_table(rows, metrics, with_section),
        n_gallery=len(galleries),
        galleries="".join(galleries) or "<p>No accepted clip to show.</p>",
        n_rejected=len(rejected),
        rejected_sections="".join(rejected) or "<p>No rejected clip.</p>",
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    tmp = out / ".index.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return path


def _clip_table(rows: list[dict], metrics: list[str], with_section: set[str]) -> str:
    """Clip, status, reasons and the first metrics; fixed layout so that it wraps to the page's width."""
    shown = metrics[:8]
    head = "".join(f'<th data-k="{i + 3}" title="{html.escape(m)}">{html.escape(m.replace("_", " "))}</th>'
                   for i, m in enumerate(shown))
    body = []
    for r in rows:
        name = html.escape(r["clip_id"])
        link = f'<a href="#{clip_anchor(r["clip_id"])}">{name}</a>' if r["clip_id"] in with_section else name
        cells = "".join(_num_cell(r.get(f"qa_{m}")) for m in shown)
        reasons = html.escape("; ".join(r.get("reasons") or []))
        body.append(f'<tr class="{r["status"]}"><td>{link}</td><td>{r["status"]}</td><td>{reasons}</td>{cells}</tr>')
    cols = '<col style="width:17%"><col style="width:6.5%"><col style="width:24%">' + "<col>" * len(shown)
    return (f'<div class="tablebox"><table id="clips" class="wrap"><colgroup>{cols}</colgroup><thead><tr>'
            f'<th data-k="0">clip</th><th data-k="1">status</th><th data-k="2">reasons</th>{head}</tr></thead>'
            f'<tbody>{"".join(body)}</tbody></table></div>')


def _num_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return '<td data-v="">–</td>'
    return f'<td data-v="{value:.6g}">{value:.3g}</td>'


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff;max-width:1600px}}
h1{{font-size:22px}} .tot span{{margin-right:18px;font-weight:600}} code{{overflow-wrap:anywhere}}
.hists{{display:flex;flex-wrap:wrap;gap:8px}} .hist{{border:1px solid #ddd;background:#fafafa}}
.tablebox{{max-width:100%;overflow-x:auto}}
table{{border-collapse:collapse;font-size:12px;margin:8px 0}}
th,td{{border:1px solid #ddd;padding:3px 6px;vertical-align:top}}
table.wrap{{table-layout:fixed;width:100%}} table.wrap td,table.wrap th{{overflow-wrap:anywhere;word-break:break-word}}
th{{background:#eef}} #clips th{{cursor:pointer;font-size:11px}} tr.rejected td{{background:#fdecea}}
tr.fail td{{background:#fdecea;font-weight:600}}
.clip{{border-top:1px solid #ccc;margin-top:16px}} .krow,.rrow{{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start}}
.rrow{{gap:16px;flex-wrap:nowrap}} .rrow>div{{flex:1 1 auto;min-width:0}} .rrow>figure,.rrow>.noframe{{flex:0 0 auto}}
.reasons{{font-size:13px;overflow-wrap:anywhere}} .klabel{{width:80px;font-size:12px}} figure{{margin:0}}
figcaption{{font-size:11px;text-align:center}}
.qa,.cap{{font-size:12px;color:#444;overflow-wrap:anywhere}} .missing{{font-size:12px;color:#8a4b00}}
.noframe{{font-size:12px;color:#8a4b00;width:320px;margin:0;overflow-wrap:anywhere}} h4{{margin:4px 0;font-size:13px}}
#gates-note.differ{{color:#8a4b00;font-weight:600}}
</style></head><body>
<h1>{title}</h1>
<p>Store: <code>{store}</code></p>
<p class="tot"><span id="n-clips">{clips} clips</span><span id="n-accepted">{accepted} accepted</span>
<span id="n-rejected">{rejected} rejected</span><span id="n-errors">{n_errors} manifest row errors</span></p>
<h2>Rejection reasons</h2><ul id="reasons">{reasons}</ul>
<h2>Manifest row errors</h2><p>Rows of the manifest that gave no clip (they are not in the clip table).</p>
{errors}
<h2>Missing labels</h2>
<p>Scene flow is defined on moving pixels and needs valid depth there, at both key frames of the pair.</p>
{field_gaps}
<h2>Gates</h2>
{gates}
<h2>Quality metrics</h2><p>Accepted clips in green, rejected in red; dashed blue lines are the gates, labelled with
their values. Metrics with few distinct values show one bar per exact value.</p>
<div class="hists">{hists}</div>
<h2>Clips</h2><p>Click a column header to sort; a linked clip has a section below (gallery or rejection).</p>
{table}
<h2>Galleries ({n_gallery} accepted clips)</h2>
<p>Per key frame: RGB, depth (near = warm), key flow (hue = direction), dynamic mask, scene-flow magnitude
(dark grey: moving pixels without valid scene flow), and validity (red depth, green flow, blue scene flow);
black = invalid. Under each clip: what is missing, and why.</p>
{galleries}
<h2 id="rejected">Rejected clips ({n_rejected} shown)</h2>
<p>First frame, reasons, and the quality metrics measured before the rejection (a clip rejected before labelling,
e.g. a missing video, has none).</p>
{rejected_sections}
<script>
document.querySelectorAll('#clips th').forEach(function(th) {{
  th.addEventListener('click', function() {{
    var k = +th.dataset.k, tbody = document.querySelector('#clips tbody');
    var asc = th.dataset.asc !== '1'; th.dataset.asc = asc ? '1' : '0';
    var rows = Array.from(tbody.rows);
    rows.sort(function(a, b) {{
      var x = a.cells[k].dataset.v !== undefined ? a.cells[k].dataset.v : a.cells[k].textContent;
      var y = b.cells[k].dataset.v !== undefined ? b.cells[k].dataset.v : b.cells[k].textContent;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return asc ? c : -c;
    }});
    rows.forEach(function(r) {{ tbody.appendChild(r); }});
  }});
}});
</script>
</body></html>
"""
