"""Price of the second key-pair flow pass (`LabelConfig.key_flow_guided`, `labelers.guided_flow`).

Renders synthetic clips, writes them as videos (with their intrinsics) and labels each with
`pipelines.labeling.label_clip` with the pass off and on, alternating, in one process; prints
the median seconds per clip and of the depth-and-masks stage (where the pass runs), and the
ratio on / off. Quality is measured by `bench_scene_classes.py` (`--no-key-flow-guided` for the
baseline); numbers in docs/benchmarks.md, "Session 20".

    python bench/bench_guided_key_flow.py [--frames 49] [--size 240x360] [--repeats 2]
        [--clips room:132 open_sky:131] [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common import image_size  # noqa: E402
from pipelines.labeling import LabelConfig, build_backends, label_clip  # noqa: E402
from pipelines.manifests import read_manifest  # noqa: E402
from pipelines.synthetic_set import SCENE_CLASSES, write_synthetic_set  # noqa: E402


def class_seed(text: str) -> tuple[str, int]:
    name, _, seed = text.partition(":")
    if name not in SCENE_CLASSES or not seed.isdigit():
        raise argparse.ArgumentTypeError(f"expected CLASS:SEED with CLASS in {sorted(SCENE_CLASSES)}, got {text!r}")
    return name, int(seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--size", type=image_size, default="240x360")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--clips", nargs="+", type=class_seed, default=[("room", 132), ("open_sky", 131)],
                        help="CLASS:SEED of `pipelines.synthetic_set.SCENE_CLASSES` (default: a dolly and an orbit)")
    parser.add_argument("--quick", action="store_true", help="smoke run: one room clip at 120x180, T = 9, once")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.size, args.repeats, args.clips = 9, (120, 180), 1, [("room", 132)]
    height, width = args.size
    root = Path(tempfile.mkdtemp(prefix="bench_guided_key_flow_"))
    configs = [replace(SCENE_CLASSES[name](seed, height, width, args.frames), fps=8.0) for name, seed in args.clips]
    write_synthetic_set(root, configs, with_intrinsics=True)
    specs = read_manifest(root / "manifest.csv", fps_target=None).specs
    runs: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    for _ in range(args.repeats):
        for guided in (False, True):
            cfg = LabelConfig(height=height, width=width, num_frames=args.frames, key_flow_guided=guided)
            backends = build_backends(cfg)
            for spec, (name, seed) in zip(specs, args.clips):
                seconds: dict[str, float] = {}
                start = time.perf_counter()
                label_clip(spec, cfg, backends, seconds)
                runs.setdefault((f"{name} {seed}", guided), []).append(
                    (time.perf_counter() - start, seconds["depth_and_masks"]))
    print(f"{height}x{width}, T = {args.frames}, {args.repeats} runs each, medians:")
    print("| clip | s/clip off | s/clip on | ratio | depth and masks off | on |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, seed in args.clips:
        clip = f"{name} {seed}"
        off, on = runs[(clip, False)], runs[(clip, True)]
        total = [statistics.median(r[0] for r in runs_) for runs_ in (off, on)]
        stage = [statistics.median(r[1] for r in runs_) for runs_ in (off, on)]
        print(f"| {clip} | {total[0]:.1f} | {total[1]:.1f} | {total[1] / total[0]:.2f} | {stage[0]:.1f} | {stage[1]:.1f} |")


if __name__ == "__main__":
    main()
