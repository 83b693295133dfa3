"""Real-footage regression sweep: the clips of `pipelines.regression_footage`, labelled end to end.

For every clip of the set that is installed: the camera labeler's verdict (motion class,
rotation over the clip), the labeling outcome with the weight-free defaults and with a
parallax-free depth (a tiny random-weight Depth Anything: its values are meaningless, but
fixed-camera clips only need it to exist, and masks come from flow), the dynamic-mask
fraction, and, for fixed cameras, the mask's precision and recall against the image change between key
frames (`reference_movers`). Checks each clip's expectation and prints PASS/FAIL per clip.

    python bench/bench_real_footage.py [--size 240x360] [--frames 17] [--clips NAME,...] [--out JSON]
        [--unknown-focal reject|prior]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "labelers"))

from common import image_size  # noqa: E402
from labelers.camera import CameraFailure, rotation_angle_deg  # noqa: E402
from pipelines.clips import ClipRejected, ClipSpec  # noqa: E402
from pipelines.decode import DecodeConfig, decode_clip  # noqa: E402
from pipelines.labeling import LabelConfig, build_backends, label_clip, pair_flows  # noqa: E402
from pipelines.regression_footage import REGRESSION_CLIPS, absurd_numbers, locate, reference_movers  # noqa: E402


def spec_of(clip, path: Path, frames: int) -> ClipSpec:
    return ClipSpec(clip.name, str(path), clip.start_sec, clip.start_sec + 60.0, dataset="regression", fps_target=None)


def camera_verdict(frames: np.ndarray, cfg: LabelConfig, backends) -> dict:
    """The camera labeler's verdict on the pipeline's inputs: the frames and their key-frame flows."""
    try:
        result = backends.camera.estimate(frames, None, pair_flows(frames, cfg, backends)[1])
    except CameraFailure as e:
        return {"motion": f"failure:{e.reason}", "rotation_deg": float("nan")}
    rotation = max(rotation_angle_deg(result.c2w[t][:3, :3]) for t in range(len(result.c2w)))
    return {"motion": result.motion, "rotation_deg": float(rotation)}


def mask_vs_reference(dynamic_mask: np.ndarray, frames: np.ndarray, stride: int) -> dict:
    reference = reference_movers(frames[::stride])
    labelled = dynamic_mask.astype(bool)
    inter = float((labelled & reference).sum())
    return {
        "mask_fraction": float(labelled.mean()),
        "reference_fraction": float(reference.mean()),
        "mask_precision": inter / labelled.sum() if labelled.any() else float("nan"),
        "mask_recall": inter / reference.sum() if reference.any() else float("nan"),
    }


def run_clip(clip, path: Path, cfg: LabelConfig, backends) -> dict:
    spec = spec_of(clip, path, cfg.num_frames)
    start = time.perf_counter()
    row: dict = {"clip": clip.name, "expected_camera": clip.expected_camera, "depth": cfg.depth}
    try:
        decoded = decode_clip(spec, DecodeConfig(cfg.num_frames, cfg.height, cfg.width, 1))
    except ClipRejected as e:
        row.update(status="rejected", reasons=[f"{e.reason}: {e.message}"], seconds=time.perf_counter() - start)
        row["expectation"] = expectation(clip, row)
        return row
    row.update(camera_verdict(decoded.frames, cfg, backends))
    try:
        arrays, _, reasons = label_clip(spec, cfg, backends)
        row.update(status="rejected" if reasons else "accepted", reasons=reasons)
        row.update(mask_vs_reference(arrays["dynamic_mask"], decoded.frames, cfg.stride))
    except ClipRejected as e:
        row.update(status="rejected", reasons=[f"{e.reason}: {e.message}"])
    row["seconds"] = time.perf_counter() - start
    row["expectation"] = expectation(clip, row)
    return row


def expectation(clip, row: dict) -> str:
    """PASS/FAIL of the clip's stated behaviour (module docstring of pipelines.regression_footage)."""
    problems = [f"absurd number in {r!r}" for r in row.get("reasons", []) if absurd_numbers(r)]
    if clip.expected_camera == "static":
        if row.get("motion") != "static" or not row.get("rotation_deg", 99) <= 1.0:
            problems.append(f"camera {row.get('motion')} rotating {row.get('rotation_deg', float('nan')):.2f} deg")
        codes = {r.split(":")[0] for r in row.get("reasons", [])}
        if row["depth"] == "mvs" and codes != {"camera_static"}:
            problems.append(f"reasons {sorted(codes)} instead of camera_static")
        if row["depth"] != "mvs" and clip.movers and not row.get("mask_precision", 0) >= 0.5:
            problems.append(f"mask precision {row.get('mask_precision', float('nan')):.2f} < 0.5")
    return "PASS" if not problems else "FAIL: " + "; ".join(problems)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=image_size, default=(240, 360))
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--clips", default="", help="comma-separated clip names (default: all)")
    parser.add_argument("--no-neural", action="store_true", help="skip the parallax-free depth run")
    parser.add_argument("--unknown-focal", choices=("reject", "prior"), default=LabelConfig.unknown_focal,
                        help="LabelConfig.unknown_focal")
    parser.add_argument("--key-flow-chain-start", action="store_true",
                        help="key-pair flow started from the composed consecutive flows (LabelConfig.key_flow_chain_start)")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON")
    parser.add_argument("--quick", action="store_true", help="smoke run: two clips at 120x180, T=9, weight-free only")
    args = parser.parse_args()
    if args.quick:
        args.size, args.frames, args.clips, args.no_neural = (120, 180), 9, "vtest_pedestrians,box_hand", True
    wanted = set(filter(None, args.clips.split(",")))
    height, width = args.size
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        shared = dict(height=height, width=width, num_frames=args.frames, unknown_focal=args.unknown_focal,
                      key_flow_chain_start=args.key_flow_chain_start)
        configs = [LabelConfig(**shared)]
        if not args.no_neural:
            from depth_anything_writer import save_depth_anything

            weights = save_depth_anything(Path(tmp) / "depth_tiny")
            configs.append(LabelConfig(**shared, depth="neural", depth_weights=str(weights)))
        for cfg in configs:
            backends = build_backends(cfg)
            for clip in REGRESSION_CLIPS:
                if wanted and clip.name not in wanted:
                    continue
                path = locate(clip, tmp)
                if path is None:
                    print(f"{clip.name}: not installed ({clip.package}), skipped")
                    continue
                row = run_clip(clip, path, cfg, backends)
                rows.append(row)
                print(json.dumps(row, default=float), flush=True)
    print("\n| clip | depth | camera | rotation deg | status | mask precision / recall vs change | s | expectation |")
    print("| --- | --- | --- | ---: | --- | --- | ---: | --- |")
    for r in rows:
        pr = f"{r.get('mask_precision', float('nan')):.2f} / {r.get('mask_recall', float('nan')):.2f}"
        status = r["status"] if r["status"] == "accepted" else "rejected: " + "; ".join(x.split(":")[0] for x in r["reasons"])
        print(f"| {r['clip']} | {r['depth']} | {r.get('motion', '-')} | {r.get('rotation_deg', float('nan')):.2f} | "
              f"{status} | {pr} | {r['seconds']:.1f} | {r.get('expectation', '-')} |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
