"""Label-quality report: one self-contained HTML page per store, for auditors.

The page holds totals and rejection reasons, the distribution of every quality metric with
its gating bounds drawn in, a sortable table of clips, and for each labelled clip a gallery
of key frames (RGB, depth, flow colour wheel, dynamic mask, scene-flow magnitude, validity
masks) with its metrics. Images are inline PNG data URIs and plots inline SVG, so the page
opens anywhere with no server. `report_summary` gives the same numbers for Prefect artifacts.
"""

from __future__ import annotations

import base64
import html
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pipelines.quality import QualityThresholds
from storage import LabelStore

__all__ = ["ReportOptions", "build_report", "report_summary", "flow_to_rgb", "histogram_svg", "png_data_uri"]


@dataclass(frozen=True)
class ReportOptions:
    """What goes into the page.

    Attributes:
        max_gallery_clips: clips with a picture gallery (the table lists every clip).
        thumb_width: width of each gallery image in pixels.
        thresholds: the gating bounds drawn on the metric distributions.
    """

    max_gallery_clips: int = 40
    thumb_width: int = 160
    thresholds: QualityThresholds = QualityThresholds()


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


def histogram_svg(
    values_accepted: np.ndarray,
    values_rejected: np.ndarray,
    bound: tuple[str, float] | None,
    title: str,
    width: int = 320,
    height: int = 150,
    bins: int = 20,
) -> str:
    """Inline SVG histogram (accepted green, rejected red, stacked) with the gating bound as a line."""
    values = np.concatenate([values_accepted, values_rejected])
    values = values[np.isfinite(values)]
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 1.0)
    if bound is not None:
        lo, hi = min(lo, bound[1]), max(hi, bound[1])
    if hi <= lo:
        hi = lo + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    acc = np.histogram(values_accepted[np.isfinite(values_accepted)], edges)[0]
    rej = np.histogram(values_rejected[np.isfinite(values_rejected)], edges)[0]
    top = max(int((acc + rej).max()), 1)
    left, bottom, plot_w, plot_h = 30, height - 28, width - 40, height - 50
    parts = [f'<svg class="hist" width="{width}" height="{height}" role="img" aria-label="{html.escape(title)}">']
    parts.append(f'<text x="{width / 2}" y="14" text-anchor="middle" class="ht">{html.escape(title)}</text>')
    bar_w = plot_w / bins
    for i in range(bins):
        x = left + i * bar_w
        h_acc, h_rej = acc[i] / top * plot_h, rej[i] / top * plot_h
        if h_acc:
            parts.append(f'<rect x="{x:.1f}" y="{bottom - h_acc:.1f}" width="{bar_w - 1:.1f}" height="{h_acc:.1f}" fill="#3a9d5d"/>')
        if h_rej:
            y = bottom - h_acc - h_rej
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w - 1:.1f}" height="{h_rej:.1f}" fill="#d9534f"/>')
    parts.append(f'<line x1="{left}" y1="{bottom}" x2="{left + plot_w}" y2="{bottom}" stroke="#555"/>')
    parts.append(f'<text x="{left}" y="{height - 12}" class="ax">{lo:.3g}</text>')
    parts.append(f'<text x="{left + plot_w}" y="{height - 12}" text-anchor="end" class="ax">{hi:.3g}</text>')
    parts.append(f'<text x="4" y="{bottom - plot_h + 8}" class="ax">{top}</text>')
    if bound is not None:
        bx = left + (bound[1] - lo) / (hi - lo) * plot_w
        parts.append(f'<line x1="{bx:.1f}" y1="{bottom - plot_h - 4}" x2="{bx:.1f}" y2="{bottom}" stroke="#1f4e9c" stroke-width="2" stroke-dasharray="4 2"/>')
        anchor = "start" if bx < width * 0.25 else "end" if bx > width * 0.75 else "middle"
        parts.append(f'<text x="{bx:.1f}" y="{height - 2}" text-anchor="{anchor}" class="bd">{bound[0]} {bound[1]:.3g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def report_summary(store: LabelStore) -> dict[str, Any]:
    """Totals, rejection reasons and per-metric medians of a store."""
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
        "metric_medians": medians,
    }


def _reason_code(reason: str) -> str:
    head = reason.split("=")[0] if reason.startswith("qa:") else reason.split(":")[0]
    return head.strip()


def _key_frame_rgb(attrs: dict, frame_index: np.ndarray, height: int, width: int) -> np.ndarray | None:
    """RGB of the given source frames at the label resolution, or None if the video is gone."""
    import decord

    from pipelines.decode import ResizeCrop

    try:
        reader = decord.VideoReader(attrs["source"]["uri"], num_threads=1)
        raw = reader.get_batch([int(i) for i in frame_index]).asnumpy()
    except Exception:  # the report must render even when a source video moved away
        return None
    return ResizeCrop.from_sizes(raw.shape[1], raw.shape[2], height, width).apply_frames(raw)


def _thumb(image: np.ndarray, width: int) -> np.ndarray:
    h, w = image.shape[:2]
    return cv2.resize(image, (width, max(1, round(h * width / w))), interpolation=cv2.INTER_AREA)


def _gallery(store: LabelStore, clip_id: str, options: ReportOptions) -> str:
    labels = store.read(clip_id)
    attrs = labels.attrs
    stride = int(attrs["stride"])
    S = labels["dynamic_mask"].shape[0]
    picks = sorted({0, S // 2, S - 2}) if S > 2 else [0]
    rgb = _key_frame_rgb(attrs, labels["frame_index"][::stride][picks], int(attrs["height"]), int(attrs["width"]))
    rows = []
    for n, k in enumerate(picks):
        t = k * stride
        depth_valid = labels["depth_valid"][t]
        panels = [
            ("RGB", rgb[n] if rgb is not None else np.zeros_like(_mask_rgb(depth_valid))),
            ("depth", _colormap(labels["depth"][t], depth_valid, inverse=True)),
            ("key flow", flow_to_rgb(labels["key_flow"][k], labels["key_flow_valid"][k])),
            ("dynamic mask", _mask_rgb(labels["dynamic_mask"][k])),
            ("|scene flow|", _colormap(np.linalg.norm(labels["scene_flow"][k].astype(np.float32), axis=-1), labels["scene_flow_valid"][k])),
            ("valid: depth/flow/scene flow", _mask_rgb(depth_valid, labels["key_flow_valid"][k], labels["scene_flow_valid"][k])),
        ]
        cells = "".join(
            f'<figure><img src="{png_data_uri(_thumb(img, options.thumb_width))}" alt="{name} key frame {k}">'
            f"<figcaption>{name}</figcaption></figure>"
            for name, img in panels
        )
        rows.append(f'<div class="krow"><div class="klabel">key frame {k}<br>(frame {t})</div>{cells}</div>')
    qa = attrs.get("qa", {})
    metrics = " · ".join(f"{html.escape(k)} {v:.3g}" for k, v in sorted(qa.items()) if isinstance(v, (int, float)))
    caption = html.escape(str(attrs["source"].get("caption", "")))
    return (
        f'<section class="clip" id="clip-{html.escape(clip_id)}"><h3>{html.escape(clip_id)}</h3>'
        f'<p class="cap">{caption}</p><p class="qa">{metrics}</p>{"".join(rows)}</section>'
    )


def build_report(store_path: str | Path, out_dir: str | Path, options: ReportOptions = ReportOptions()) -> Path:
    """Write `out_dir/index.html` for the store and return its path."""
    store = LabelStore.open(store_path)
    rows = store.index().to_pylist()
    summary = report_summary(store)
    metrics = sorted({k[3:] for row in rows for k in row if k.startswith("qa_")})
    bounds = options.thresholds.bounds()
    hists = []
    for m in metrics:
        acc = np.array([r.get(f"qa_{m}") for r in rows if r["status"] == "accepted"], dtype=np.float64)
        rej = np.array([r.get(f"qa_{m}") for r in rows if r["status"] == "rejected"], dtype=np.float64)
        hists.append(histogram_svg(acc, rej, bounds.get(m), m))
    gallery_ids = [r["clip_id"] for r in rows if r["status"] == "accepted"][: options.max_gallery_clips]
    galleries = [_gallery(store, clip_id, options) for clip_id in gallery_ids]
    page = _page(store, rows, summary, metrics, hists, galleries, len(gallery_ids))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    tmp = out / ".index.html.tmp"
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return path


def _page(store, rows, summary, metrics, hists, galleries, n_gallery) -> str:
    shown = metrics[:8]
    head = "".join(f'<th data-k="{i + 3}">{html.escape(m)}</th>' for i, m in enumerate(shown))
    body = []
    for r in rows:
        link = f'<a href="#clip-{html.escape(r["clip_id"])}">{html.escape(r["clip_id"])}</a>'
        cells = "".join(_num_cell(r.get(f"qa_{m}")) for m in shown)
        reasons = html.escape("; ".join(r.get("reasons") or []))
        body.append(f'<tr class="{r["status"]}"><td>{link}</td><td>{r["status"]}</td><td>{reasons}</td>{cells}</tr>')
    reasons = "".join(f"<li>{html.escape(k)}: {v}</li>" for k, v in summary["rejected_by_reason"].items()) or "<li>none</li>"
    return _TEMPLATE.format(
        title=html.escape(f"Label quality: {store.root.name}"),
        store=html.escape(str(store.root)),
        clips=summary["clips"],
        accepted=summary["accepted"],
        rejected=summary["rejected"],
        reasons=reasons,
        hists="".join(hists) or "<p>No quality metrics recorded.</p>",
        head=head,
        body="".join(body),
        n_gallery=n_gallery,
        galleries="".join(galleries) or "<p>No accepted clip to show.</p>",
    )


def _num_cell(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return '<td data-v="">–</td>'
    return f'<td data-v="{value:.6g}">{value:.3g}</td>'


_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body{{font-family:system-ui,sans-serif;margin:24px;color:#222;background:#fff}}
h1{{font-size:22px}} .tot span{{margin-right:18px;font-weight:600}}
.hists{{display:flex;flex-wrap:wrap;gap:8px}} .hist{{border:1px solid #ddd;background:#fafafa}}
.ht{{font-size:12px;font-weight:600}} .ax,.bd{{font-size:10px}} .bd{{fill:#1f4e9c}}
table{{border-collapse:collapse;font-size:12px;margin:8px 0}} th,td{{border:1px solid #ddd;padding:3px 6px}}
th{{cursor:pointer;background:#eef}} tr.rejected td{{background:#fdecea}}
.clip{{border-top:1px solid #ccc;margin-top:16px}} .krow{{display:flex;gap:6px;align-items:flex-start}}
.klabel{{width:80px;font-size:12px}} figure{{margin:0}} figcaption{{font-size:11px;text-align:center}}
.qa,.cap{{font-size:12px;color:#444}}
</style></head><body>
<h1>{title}</h1>
<p>Store: <code>{store}</code></p>
<p class="tot"><span id="n-clips">{clips} clips</span><span id="n-accepted">{accepted} accepted</span><span id="n-rejected">{rejected} rejected</span></p>
<h2>Rejection reasons</h2><ul id="reasons">{reasons}</ul>
<h2>Quality metrics</h2><p>Accepted clips in green, rejected in red; dashed blue lines are the gating bounds.</p>
<div class="hists">{hists}</div>
<h2>Clips</h2><p>Click a column header to sort.</p>
<table id="clips"><thead><tr><th data-k="0">clip</th><th data-k="1">status</th><th data-k="2">reasons</th>{head}</tr></thead>
<tbody>{body}</tbody></table>
<h2>Galleries ({n_gallery} clips)</h2>
<p>Per key frame: RGB, depth (near = warm), key flow (hue = direction), dynamic mask, scene-flow magnitude,
and validity (red depth, green flow, blue scene flow); black = invalid.</p>
{galleries}
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


def histogram_png(values: np.ndarray, bound: tuple[str, float] | None, width: int = 240, height: int = 90, bins: int = 16) -> np.ndarray:
    """A small RGB histogram picture (for Prefect markdown artifacts, which render PNG data URIs)."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    image = np.full((height, width, 3), 255, np.uint8)
    if not values.size:
        return image
    lo, hi = float(values.min()), float(values.max())
    if bound is not None:
        lo, hi = min(lo, bound[1]), max(hi, bound[1])
    hi = hi if hi > lo else lo + 1.0
    counts = np.histogram(values, np.linspace(lo, hi, bins + 1))[0]
    bar_w = (width - 8) / bins
    for i, c in enumerate(counts):
        h = int(round(c / max(counts.max(), 1) * (height - 12)))
        x0 = int(4 + i * bar_w)
        cv2.rectangle(image, (x0, height - 4 - h), (int(x0 + bar_w) - 1, height - 4), (58, 157, 93), -1)
    if bound is not None:
        bx = int(4 + (bound[1] - lo) / (hi - lo) * (width - 8))
        cv2.line(image, (bx, 2), (bx, height - 2), (31, 78, 156), 2)
    return image
