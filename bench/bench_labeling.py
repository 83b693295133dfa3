"""Labeling benchmark: per-stage time per clip, and end-to-end clips/min through the flow on 1 and 2 Ray workers.

1. In-process (`pipelines.labeling.label_clips`, the code every Ray worker runs): median
   seconds per stage per clip (decode, flow, camera, depth+masks, scene flow, QA, write) at
   each resolution, on synthetic dolly/orbit clips.
2. Through the Prefect flow (ephemeral) and local Ray with 1 and 2 workers: clips per
   minute, scaling efficiency, and the orchestration overhead per clip (flow + Ray + commit
   wall time per clip minus the in-process labeling time per clip of step 1, same clips).

    python bench/bench_labeling.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline: no telemetry calls

from common import image_sizes  # noqa: E402
from pipelines.labeling import STAGES, LabelConfig, label_clips  # noqa: E402
from pipelines.manifests import read_manifest  # noqa: E402
from pipelines.synthetic import SceneConfig  # noqa: E402
from pipelines.synthetic_set import write_synthetic_set  # noqa: E402
from storage import LabelStore  # noqa: E402


def synth(root: Path, n: int, height: int, width: int, frames: int) -> Path:
    configs = [SceneConfig(seed=i, height=height, width=width, num_frames=frames, camera=("dolly", "orbit")[i % 2],
                           num_moving=1) for i in range(n)]
    write_synthetic_set(root, configs)
    return root / "manifest.csv"


def in_process(manifest: Path, store_path: Path, cfg: LabelConfig) -> tuple[float, list]:
    specs = read_manifest(manifest).specs
    start = time.perf_counter()
    outcomes = label_clips(specs, cfg, LabelStore.create(store_path))
    return time.perf_counter() - start, outcomes


def through_flow(manifest: Path, store_path: Path, height: int, width: int, frames: int, workers: int) -> float:
    import ray

    from flows.labeling import LabelRunParams, label_clips_flow

    if ray.is_initialized():
        ray.shutdown()
    params = LabelRunParams(manifest=str(manifest), store=str(store_path), height=height, width=width, frames=frames,
                            workers=workers, batch_size=1)
    start = time.perf_counter()
    label_clips_flow(params)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="120x180, 17 frames, 2 clips")
    parser.add_argument("--sizes", type=image_sizes, default="240x360,480x720",
                        help="per-stage sizes HxW, comma-separated")
    parser.add_argument("--flow-sizes", type=image_sizes, default="240x360",
                        help="sizes also run through the flow on 1 and 2 workers")
    parser.add_argument("--frames", type=int, default=49)
    parser.add_argument("--clips", type=int, default=2)
    args = parser.parse_args()
    sizes, flow_sizes = args.sizes, args.flow_sizes
    frames, n = args.frames, args.clips
    if args.quick:
        sizes, flow_sizes, frames, n = [(120, 180)], [(120, 180)], 17, 2
    tmp = Path(tempfile.mkdtemp(prefix="bench_labeling_"))
    for height, width in sizes:
        manifest = synth(tmp / f"synth_{height}", n, height, width, frames)
        cfg = LabelConfig(height=height, width=width, num_frames=frames)
        wall, outcomes = in_process(manifest, tmp / f"inproc_{height}.zarr", cfg)
        print(f"## {height}x{width}, T={frames}, {n} clips in-process: {wall:.1f} s, "
              f"{sum(o.status == 'accepted' for o in outcomes)} accepted")
        print(f"{'stage':>16} {'median s/clip':>14} {'share':>6}")
        medians = {s: statistics.median(o.seconds.get(s, 0.0) for o in outcomes) for s in STAGES}
        total = sum(medians.values())
        for stage, value in medians.items():
            print(f"{stage:>16} {value:14.2f} {100 * value / max(total, 1e-9):5.1f}%")
        if (height, width) not in flow_sizes:
            continue
        per_clip = wall / n
        flow_wall = {w: through_flow(manifest, tmp / f"flow_{height}_{w}.zarr", height, width, frames, w) for w in (1, 2)}
        rate = {w: 60 * n / s for w, s in flow_wall.items()}
        print(f"flow, 1 worker: {flow_wall[1]:.1f} s = {rate[1]:.2f} clips/min; 2 workers: {flow_wall[2]:.1f} s = "
              f"{rate[2]:.2f} clips/min; scaling efficiency {rate[2] / (2 * rate[1]):.2f}")
        print(f"orchestration overhead per clip (1 worker): {flow_wall[1] / n - per_clip:.2f} s "
              f"= {100 * (flow_wall[1] / n - per_clip) / per_clip:.0f} % of the labelers' {per_clip:.2f} s")


if __name__ == "__main__":
    main()
