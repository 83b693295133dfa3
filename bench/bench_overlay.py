"""Static overlays (`labelers.overlay`): what is found on rendered moving-camera clips, and its cost.

Each clip of the scene classes (`pipelines.synthetic_set`) is written as H.264 at the given CRF,
as the synthetic sets are, and decoded, in several variants: as rendered (nothing may be
found), with opaque captions burned in (`pipelines.synthetic.burn_captions`) and with the same
captions blended in white at each alpha (`blend_captions`, a translucent mark). Per variant:
the share of the frame found (no captions), the recall of the captions' pixels and the share
of the frame found farther than 15 px from them, with and without the translucent step (1b);
and the median milliseconds of `static_overlay` with and without it on the same frames, in
this process.

    python bench/bench_overlay.py [--seed 200] [--clips 2] [--frames 49] [--crf 8] [--alphas 0.3,0.5]
        [--classes room,open_sky,...] [--size 240x360] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import image_size, timed  # noqa: E402
from labelers.overlay import StaticOverlayConfig, static_overlay  # noqa: E402
from pipelines.synthetic import blend_captions, burn_captions, render_clip  # noqa: E402
from pipelines.synthetic_set import SCENE_CLASSES, class_configs  # noqa: E402
from pipelines.video_io import decode_sequential, write_video  # noqa: E402

MOVING = [name for name in SCENE_CLASSES if name != "fixed_large_mover"]


def variants(frames: np.ndarray, alphas: list[float]) -> list[tuple[str, np.ndarray, np.ndarray | None]]:
    out = [("none", frames, None), ("opaque", *burn_captions(frames))]
    return out + [(f"alpha {alpha}", *blend_captions(frames, alpha)) for alpha in alphas]


def score(found: np.ndarray, truth: np.ndarray | None) -> dict[str, float]:
    if truth is None:
        return {"found": float(found.mean())}
    near = cv2.dilate(truth.astype(np.uint8), np.ones((31, 31), np.uint8)).astype(bool)
    return {"recall": float(found[truth].mean()), "far": float((found & ~near).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=200)
    parser.add_argument("--clips", type=int, default=2, help="clips per class")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--crf", type=int, default=8)
    parser.add_argument("--alphas", default="0.3,0.5")
    parser.add_argument("--classes", default=",".join(MOVING))
    parser.add_argument("--size", type=image_size, default=(240, 360))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one class, one clip, 17 frames")
    args = parser.parse_args()
    classes = args.classes.split(",")
    if args.quick:
        classes, args.clips, args.frames, args.repeats = ["open_sky"], 1, 17, 1
    alphas = [float(a) for a in args.alphas.split(",") if a]
    opaque_only = StaticOverlayConfig(translucent=False)
    rows, ms_on, ms_off = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name in classes:
            for config in class_configs(name, args.clips, *args.size, args.seed, args.frames, 8.0):
                rendered = render_clip(config).frames
                for variant, frames, truth in variants(rendered, alphas):
                    path = write_video(Path(tmp) / "clip.mp4", frames, 8.0, crf=args.crf)
                    decoded = decode_sequential(path, np.arange(len(frames)))
                    seconds_on, found = timed(lambda: static_overlay(decoded), args.repeats)
                    seconds_off, found_off = timed(lambda: static_overlay(decoded, opaque_only), args.repeats)
                    ms_on.append(1000 * seconds_on)
                    ms_off.append(1000 * seconds_off)
                    without = {f"{key} without 1b": value for key, value in score(found_off, truth).items()}
                    rows.append({"class": name, "seed": config.seed, "variant": variant, **score(found, truth), **without})
                    print(rows[-1], f"{ms_on[-1]:.0f} ms ({ms_off[-1]:.0f} ms without step 1b)", flush=True)
    print(f"\n{args.size[0]}x{args.size[1]}, T = {args.frames}, CRF {args.crf}, seeds from {args.seed}")
    print("| variant | clips | found on clips without captions | recall mean / min | found whole (>= 0.85) "
          "| far > 0 (max % of the frame) | without step 1b: recall mean, found whole |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for variant in dict.fromkeys(row["variant"] for row in rows):
        some = [row for row in rows if row["variant"] == variant]
        if variant == "none":
            print(f"| {variant} | {len(some)} | {sum(row['found'] > 0 for row in some)} "
                  f"({sum(row['found without 1b'] > 0 for row in some)} without step 1b) | | | | |")
            continue
        recall, recall_off = [row["recall"] for row in some], [row["recall without 1b"] for row in some]
        far = [row["far"] for row in some]
        print(f"| {variant} | {len(some)} | | {np.mean(recall):.2f} / {min(recall):.2f} | "
              f"{sum(r >= 0.85 for r in recall)} | {sum(f > 0 for f in far)} ({100 * max(far):.2f}) | "
              f"{np.mean(recall_off):.2f}, {sum(r >= 0.85 for r in recall_off)} |")
    print(f"static_overlay: median {statistics.median(ms_on):.0f} ms per clip, "
          f"{statistics.median(ms_off):.0f} ms without step 1b (x{statistics.median(ms_on) / statistics.median(ms_off):.2f})")


if __name__ == "__main__":
    main()
