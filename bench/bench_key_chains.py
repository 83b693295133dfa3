"""Key-frame flow: the direct DIS estimate against the same repaired from consecutive flows.

    python bench/bench_key_chains.py [--seeds 4] [--size 240x360] [--quick]

For dolly and orbit clips with two moving objects (17 frames, key stride 4), the key-pair
flows are estimated directly and then repaired (`labelers.flow.fill_from_chains`, as
`pipelines.labeling` does by default): `filled` fills only invalid pixels where the direct
estimate lost the motion (the rule before chain-fill version 2), `repaired` also replaces
valid pixels the chain contradicts by more than 8 px and invalidates those it contradicts by
3-8 px (chain-fill version 3). Reports, over ground-truth-visible
pixels: coverage (share valid), coverage on moving objects, median end-point error on static
and moving pixels, the share of valid pixels more than 3 and 8 px off, and the median time
of the repair per clip.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import image_size  # noqa: E402
from labelers.dis_flow import DisFlow  # noqa: E402
from labelers.flow import (  # noqa: E402
    PairFlows,
    compute_pair_flows,
    consecutive_pairs,
    fill_from_chains,
    key_frame_pairs,
)
from pipelines.synthetic import SceneConfig, render_clip  # noqa: E402


def key_flow_scores(flows: PairFlows, labels: dict) -> dict[str, float]:
    truth, visible, moving = labels["key_flow"], labels["key_flow_valid"], labels["dynamic_mask"][:-1]
    error = np.linalg.norm(flows.flow_fwd_px - truth, axis=-1)
    valid = flows.valid_fwd & visible
    return {
        "coverage": float(valid.sum() / visible.sum()),
        "coverage_moving": float((valid & moving).sum() / max((visible & moving).sum(), 1)),
        "epe_static": float(np.median(error[valid & ~moving])),
        "epe_moving": float(np.median(error[valid & moving])) if (valid & moving).any() else float("nan"),
        "over_3px": float(np.mean(error[valid] > 3.0)),
        "over_8px": float(np.mean(error[valid] > 8.0)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--size", type=image_size, default="240x360")
    parser.add_argument("--quick", action="store_true", help="smoke run: one seed at 120x180")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.size = 1, (120, 180)
    height, width = args.size
    scores: dict[str, list[dict[str, float]]] = {"direct": [], "filled": [], "repaired": []}
    fill_seconds = []
    for camera in ("dolly", "orbit"):
        for seed in range(args.seeds):
            cfg = SceneConfig(seed=seed, height=height, width=width, num_frames=17, stride=4, camera=camera)
            clip = render_clip(cfg)
            consecutive = compute_pair_flows(DisFlow(), clip.frames, consecutive_pairs(17))
            direct = compute_pair_flows(DisFlow(), clip.frames, key_frame_pairs(17, 4))
            filled = fill_from_chains(direct, consecutive, replace_gap_px=None, disagree_gap_px=None)
            start = time.perf_counter()
            repaired = fill_from_chains(direct, consecutive)
            fill_seconds.append(time.perf_counter() - start)
            for name, flows in (("direct", direct), ("filled", filled), ("repaired", repaired)):
                scores[name].append(key_flow_scores(flows, clip.labels))
            print(f"{camera} seed {seed}: moving coverage {scores['direct'][-1]['coverage_moving']:.3f} -> "
                  f"{scores['repaired'][-1]['coverage_moving']:.3f}, valid > 8 px off "
                  f"{scores['direct'][-1]['over_8px']:.4f} -> {scores['repaired'][-1]['over_8px']:.4f}", flush=True)
    print(f"\n{len(fill_seconds)} clips, {height}x{width}, T = 17, DIS; means over clips (EPE: median of clip medians)")
    print("| key flow | coverage | coverage on movers | EPE static px | EPE movers px | valid > 3 px off "
          "| valid > 8 px off |")
    print("|---|---|---|---|---|---|---|")
    for name, rows in scores.items():
        mean = {key: np.mean([r[key] for r in rows]) for key in ("coverage", "coverage_moving", "over_3px", "over_8px")}
        epe_static = np.median([r["epe_static"] for r in rows])
        epe_moving = np.nanmedian([r["epe_moving"] for r in rows])
        print(f"| {name} | {mean['coverage']:.3f} | {mean['coverage_moving']:.3f} | {epe_static:.3f} | "
              f"{epe_moving:.3f} | {mean['over_3px']:.4f} | {mean['over_8px']:.4f} |")
    fill_ms = statistics.median(fill_seconds) * 1000
    print(f"fill_from_chains (repaired): median {fill_ms:.0f} ms per clip (4 key pairs, both directions)")


if __name__ == "__main__":
    main()
