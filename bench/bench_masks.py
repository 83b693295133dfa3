"""Dynamic-mask accuracy over many synthetic clips: the weight-free chain, and with a depth prior.

For each seed and camera (dolly, orbit), a clip with moving objects and one without is
rendered; DIS flow is computed as the labeling pipeline does (key pairs repaired with the consecutive flows,
unless --no-key-chains); `label_depth_and_masks` runs
with the ground-truth cameras (scaled by an arbitrary factor, as SfM would give) and
- `mvs`: the weight-free multi-view depth (no prior);
- `prior E`: the neural backend's alignment and masks fed a simulated network: the true
  inverse depth under an unknown affine map, times a smooth random error field of relative
  amplitude E (what a monocular network gets wrong: whole regions too near or too far),
  plus 2 % pixel noise.

Reports per chain: IoU with the true key-frame masks on clips with moving objects (mean,
minimum, share above the 0.6 target), the false-positive rate on the static pixels of clips
without (max) and with (mean) movers, and for `--scene open` (a ground plane under a textured
sky 80 m away, `pipelines.synthetic`) the largest share of sky pixels marked moving.

    python bench/bench_masks.py --seeds 8 --frames 17 --size 120x180 --prior-errors 0.05 0.1 0.2
    python bench/bench_masks.py --seeds 8 --size 480x720 --prior-errors 0.1 --cameras orbit  # one half
    python bench/bench_masks.py --seeds 3 --size 240x360 --prior-errors --scene open
    python bench/bench_masks.py --seeds 4 --size 240x360 --prior-errors --texture repeated --without-periods
    python bench/bench_masks.py --seeds 3 --size 240x360 --prior-errors --scene open --without-edge-snap

`--without-periods` adds the weight-free chain without the period rule (`DynamicMaskConfig`
`max_period_px` 0), `--without-edge-snap` without moving the mask borders to the frame's edges
(`guided_radius_px` 0), timed in the same process: baselines of `mvs`.
"""

from __future__ import annotations

import argparse
import time

import cv2
import numpy as np

from common import image_size
from labelers.depth import MultiViewDepth
from labelers.dis_flow import DisFlow
from labelers.dynamic_mask import DynamicMaskConfig, FlowRigidityMasks, label_depth_and_masks
from labelers.flow import PairFlows
from labelers.neural_depth import NeuralDepth, NeuralDepthConfig
from pipelines.labeling import Backends, LabelConfig, pair_flows
from pipelines.synthetic import SCENES, SKY_ID, TEXTURES, SceneConfig, render_clip

CAMERA_SCALE = 0.37  # the unknown per-clip scale of the cameras


class SimulatedNetworkDepth(NeuralDepth):
    """`NeuralDepth` (alignment, validation, prior) on a given prediction instead of a network."""

    def __init__(self, prediction: np.ndarray, config: NeuralDepthConfig | None = None) -> None:
        self.config = config or NeuralDepthConfig()
        self.reference = MultiViewDepth()
        self._prediction = prediction

    def predict_inverse_depth(self, frames: np.ndarray) -> np.ndarray:
        return self._prediction


def simulated_prediction(depth: np.ndarray, rel_error: float, seed: int) -> np.ndarray:
    """Affine-invariant inverse depth (T, H, W) with a smooth relative error field of amplitude `rel_error`."""
    rng = np.random.default_rng(seed)
    num_frames, height, width = depth.shape
    coarse = rng.uniform(-1.0, 1.0, (4, 6)).astype(np.float32)  # one field for the clip: a network is consistent
    field = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    inverse = 1.0 / depth * (1.0 + rel_error * np.clip(field, -1, 1))
    inverse = inverse * (1.0 + rng.normal(0, 0.02, depth.shape))
    return (2.7 * inverse + 0.04).astype(np.float32)


def pipeline_flows(frames: np.ndarray, stride: int, key_chains: bool = True) -> PairFlows:
    """Consecutive and key-pair DIS flows as `pipelines.labeling.pair_flows` makes them by default (without
    `key_chains`: key pairs not repaired from the consecutive flows)."""
    cfg = LabelConfig(stride=stride, key_flow_chains=key_chains)
    consecutive, key = pair_flows(frames, cfg, Backends(flow=DisFlow(), camera=None, depth=None, masks=None))
    return consecutive.merged(key)


WITHOUT_PERIODS = -1.0  # chain key: weight-free, no period rule
WITHOUT_EDGE_SNAP = -2.0  # chain key: weight-free, mask borders not moved to the frame's edges
BASELINES = {WITHOUT_PERIODS: DynamicMaskConfig(max_period_px=0), WITHOUT_EDGE_SNAP: DynamicMaskConfig(guided_radius_px=0)}


def run_chain(clip, flows, prior_error: float | None, seed: int) -> np.ndarray:
    c2w = clip.labels["c2w"].astype(np.float64)
    c2w[:, :3, 3] *= CAMERA_SCALE
    keys = list(range(0, clip.config.num_frames, clip.config.stride))
    masks = FlowRigidityMasks()
    if prior_error is None or prior_error in BASELINES:
        estimator = MultiViewDepth()
        if prior_error in BASELINES:
            masks = FlowRigidityMasks(BASELINES[prior_error])
    else:
        estimator = SimulatedNetworkDepth(simulated_prediction(clip.labels["depth"] * CAMERA_SCALE, prior_error, seed))
    return label_depth_and_masks(clip.frames, flows, c2w, clip.labels["K"], keys, estimator, masks).dynamic_mask


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--size", type=image_size, default="120x180")
    parser.add_argument("--cameras", nargs="+", choices=["dolly", "orbit"], default=["dolly", "orbit"],
                        help="camera motions to sweep (one per process splits a sweep over cores)")
    parser.add_argument("--prior-errors", type=float, nargs="*", default=[0.05, 0.1, 0.2])
    parser.add_argument("--no-key-chains", action="store_true",
                        help="key-pair flows as estimated directly (no repair from consecutive flows)")
    parser.add_argument("--scene", choices=SCENES, default="room",
                        help="background: a closed room, or open ground under a far textured sky")
    parser.add_argument("--texture", choices=TEXTURES, default="rich", help="surface texture of the scene")
    parser.add_argument("--without-periods", action="store_true",
                        help="also the weight-free chain without the period rule (max_period_px 0)")
    parser.add_argument("--without-edge-snap", action="store_true",
                        help="also the weight-free chain without moving mask borders to edges (guided_radius_px 0)")
    parser.add_argument("--quick", action="store_true", help="smoke run: one seed, one prior")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.prior_errors = 1, [0.1]
    height, width = args.size
    baselines = [WITHOUT_PERIODS] * args.without_periods + [WITHOUT_EDGE_SNAP] * args.without_edge_snap
    chains: list[float | None] = [None, *baselines, *args.prior_errors]
    iou = {c: [] for c in chains}
    fp = {c: [] for c in chains}
    fp_sky = {c: [] for c in chains}
    seconds = {c: [] for c in chains}
    for camera in args.cameras:
        for seed in range(args.seeds):
            for num_moving in (2, 0):
                cfg = SceneConfig(seed=seed, height=height, width=width, num_frames=args.frames, stride=4,
                                  camera=camera, num_moving=num_moving, scene=args.scene, texture=args.texture)
                clip = render_clip(cfg)
                flows = pipeline_flows(clip.frames, cfg.stride, not args.no_key_chains)
                truth = clip.labels["dynamic_mask"]
                keys = slice(None, None, cfg.stride)
                sky = clip.object_ids[keys] == SKY_ID if args.scene == "open" else np.zeros_like(truth)
                for chain in chains:
                    start = time.perf_counter()
                    mask = run_chain(clip, flows, chain, seed)
                    seconds[chain].append(time.perf_counter() - start)
                    fp[chain].append(float((mask & ~truth).sum() / (~truth).sum()))
                    fp_sky[chain].append(float((mask & sky).sum() / max(sky.sum(), 1)))
                    if num_moving:
                        iou[chain].append(float((mask & truth).sum() / max((mask | truth).sum(), 1)))
            print(f"{camera} seed {seed}: IoU " + "  ".join(f"{_name(c)} {iou[c][-1]:.2f}" for c in chains)
                  + "; FP with/without movers "
                  + "  ".join(f"{_name(c)} {fp[c][-2]:.4f}/{fp[c][-1]:.4f}" for c in chains)
                  + ("; sky FP " + "  ".join(f"{_name(c)} {max(fp_sky[c][-2:]):.4f}" for c in chains)
                     if args.scene == "open" else ""), flush=True)
    print(f"\n{len(iou[None])} clips with moving objects, {len(iou[None])} without; "
          f"{height}x{width}, T = {args.frames}, {args.scene} scenes, {args.texture} texture, DIS flow, "
          "true cameras (scaled)")
    print("| chain | IoU mean | IoU min | IoU > 0.6 | FP rate max (no movers) | FP rate mean (movers) | FP rate max "
          "| sky FP max | s/clip |")
    print("|---|---|---|---|---|---|---|---|---|")
    for chain in chains:
        movers = fp[chain][0::2]
        still = fp[chain][1::2]
        print(f"| {_name(chain)} | {np.mean(iou[chain]):.3f} | {np.min(iou[chain]):.3f} | "
              f"{sum(v > 0.6 for v in iou[chain])}/{len(iou[chain])} | {np.max(still):.4f} | "
              f"{np.mean(movers):.4f} | {np.max(fp[chain]):.4f} | {_sky(fp_sky[chain], args.scene)} | "
              f"{np.median(seconds[chain]):.2f} |")


def _sky(rates: list[float], scene: str) -> str:
    return f"{np.max(rates):.4f}" if scene == "open" else "-"


def _name(chain: float | None) -> str:
    if chain == WITHOUT_PERIODS:
        return "mvs without periods"
    if chain == WITHOUT_EDGE_SNAP:
        return "mvs without edge snap"
    return "mvs" if chain is None else f"prior {chain:.2f}"


if __name__ == "__main__":
    main()
