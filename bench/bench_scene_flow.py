"""Scene-flow validity against ground truth, given exact depth and cameras and the pipeline's own flow.

Issue 13, item 7: with exact depth and cameras (as a ViPE-format import gives them), at least
95 % of the pixels marked `scene_flow_valid` must be within max(5 %, 1 cm) of the true motion.
For each synthetic clip this renders the ground truth, estimates flow as
`pipelines.labeling.label_clip` does on an import (DIS on consecutive and key pairs, the key pairs
searched from zero motion as for any depth but multi-view depth, repaired from the chains, then estimated again from the given depth and cameras, with the first
pass's flow back on the movers the masks find where the depth does not hold them: `labelers.guided_flow`; `--no-key-flow-guided`: the
first pass only), takes depth, `depth_valid`,
K, c2w and the dynamic masks from the truth
(`--masks estimated`: the masks the pipeline's `FlowRigidityMasks` estimates from that flow
and the exact depth and cameras), and runs the scene-flow stage (`pipelines.labeling.label_scene_flow`:
`_scene_flow_support`, `key_flow_error_px` and `scene_flow` with the LabelConfig's settings) (`--old`: the pre-issue
rules, footprint and flow checks only).

Per clip: precision (share of valid pixels within tolerance), coverage (valid pixels / pixels
the truth can observe: dynamic with visible key flow), and where the wrong valid pixels lie
(within 3 px of the mask's edge, key flow > 1 px off, target hidden in the truth); the key flow
on static pixels (`key_static_off_1px`: share of its valid pixels more than 1 px off;
`key_static_cov`: valid / visible); with `--masks estimated`, the masks' IoU and false alarms.

    python bench/bench_scene_flow.py --seeds 0-5 --cameras dolly,orbit,static
    python bench/bench_scene_flow.py --seeds 10-15 --classes open,large_mover --masks estimated
    python bench/bench_scene_flow.py --scene-classes room,open_sky,degraded --seeds 160-161 --frames 49 --masks estimated

`--scene-classes` takes the sweep's classes (`pipelines.synthetic_set.SCENE_CLASSES`, each with
its own cameras, one clip per seed) instead of `--classes` x `--cameras`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from common import image_size  # noqa: E402
from labelers.dis_flow import DisFlow  # noqa: E402
from labelers.dynamic_mask import label_masks_given_depth  # noqa: E402
from labelers.guided_flow import GuidedKeyFlows, direct_flow_on_movers  # noqa: E402
from pipelines.labeling import Backends, LabelConfig, label_scene_flow, pair_flows  # noqa: E402
from pipelines.synthetic import SceneConfig, render_clip  # noqa: E402
from pipelines.synthetic_set import SCENE_CLASSES, class_configs  # noqa: E402

# Scene classes as SceneConfig overrides; a class whose fields this SceneConfig lacks is skipped.
CLASSES = {
    "room": {},
    "open": {"scene": "open"},
    "large_mover": {"large_mover": True},
    "repeated": {"texture": "repeated"},
    "low_texture": {"texture": "low"},
    "noise": {"noise_std": 2.0},
}


def pipeline_flows(frames: np.ndarray, stride: int, cfg: LabelConfig, labels: dict, seconds: dict[str, float]):
    """Consecutive and key-pair flows exactly as `label_clip` computes them on an import (`pair_flows`, then
    the key pairs estimated again from the given depth and cameras, `labels`', with `cfg.key_flow_guided`)
    and the key pairs' first-pass flows; the seconds of the first pass and of the guided one are put in
    `seconds`."""
    estimator = DisFlow()
    start = time.perf_counter()
    flows, key_flows = pair_flows(frames, cfg, Backends(flow=estimator, depth=None, camera=None, masks=None))
    seconds["flow"] = time.perf_counter() - start
    start = time.perf_counter()
    direct = key_flows
    if cfg.key_flow_guided:
        depth_valid = labels["depth_valid"]
        depth = np.where(depth_valid, labels["depth"], 0.0).astype(np.float64)
        guide = GuidedKeyFlows(estimator, cfg.max_flow_uncertainty_px, cfg.key_flow_chains)
        key_flows = guide.refine(frames, flows.merged(key_flows), list(range(0, len(frames), stride)), depth,
                                 depth_valid, labels["c2w"].astype(np.float64), labels["K"].astype(np.float64))
    seconds["guided"] = time.perf_counter() - start
    return flows, key_flows, direct


def estimated_masks(labels: dict, flows, key_flows, stride: int, frames: np.ndarray) -> np.ndarray:
    """Key-frame dynamic masks the pipeline estimates from the flow, exact depth and cameras (as for an import)."""
    c2w, K = labels["c2w"].astype(np.float64), labels["K"].astype(np.float64)
    depth = np.where(labels["depth_valid"], labels["depth"], 0.0)
    return label_masks_given_depth(flows.merged(key_flows), c2w, K, list(range(0, len(c2w), stride)), depth,
                                   frames=frames)


def scene_flow_stage(labels: dict, flows, key_flows, dynamic_key: np.ndarray, cfg: LabelConfig, frames: np.ndarray | None = None,
                     old: bool = False):
    """The scene-flow stage of `label_clip` on given depth, cameras, flows and masks (`old`: without the
    flow-error and rigidity rules)."""
    if old:
        cfg = dataclasses.replace(cfg, scene_flow_max_error_fraction=None, scene_flow_max_rigid_residual=None)
    depth = labels["depth"].astype(np.float64)
    c2w, K = labels["c2w"].astype(np.float64), labels["K"].astype(np.float64)
    return label_scene_flow(depth, labels["depth_valid"], K, c2w, key_flows, flows, frames, dynamic_key, cfg)


def score(labels: dict, key_flows, flow3d: np.ndarray, valid: np.ndarray, masks: np.ndarray) -> dict:
    """Precision, coverage and where the wrong valid pixels lie; the key flow on static pixels; the masks."""
    key_flow = key_flows.flow_fwd_px
    truth = labels["scene_flow"].astype(np.float64)
    motion = np.linalg.norm(truth, axis=-1)
    right = np.linalg.norm(flow3d - truth, axis=-1) <= np.maximum(0.05 * motion, 0.01)
    wrong = valid & ~right
    observable = labels["scene_flow_valid"]
    true_masks = labels["dynamic_mask"]
    edge = np.stack([cv2.distanceTransform(m.astype(np.uint8), cv2.DIST_L2, 3) <= 3 for m in true_masks[:-1]])
    flow_off = np.linalg.norm(key_flow - labels["key_flow"], axis=-1) > 1.0
    static_visible = labels["key_flow_valid"] & ~true_masks[:-1]
    key_static = key_flows.valid_fwd & static_visible
    n_wrong = max(int(wrong.sum()), 1)
    static = ~true_masks
    return {
        "valid": int(valid.sum()),
        "wrong": int(wrong.sum()),
        "precision": float(right[valid].mean()) if valid.any() else float("nan"),
        "coverage": float((valid & observable).sum() / max(observable.sum(), 1)),
        "outside_mask_nonzero": int((flow3d[~true_masks[:-1]] != 0).any(axis=-1).sum()),
        "wrong_at_mask_edge": float((wrong & edge).sum() / n_wrong),
        "wrong_flow_off_1px": float((wrong & flow_off).sum() / n_wrong),
        "wrong_target_hidden": float((wrong & ~labels["key_flow_valid"]).sum() / n_wrong),
        "key_static_off_1px": float(flow_off[key_static].mean()) if key_static.any() else float("nan"),
        "key_static_cov": float(key_static.sum() / max(static_visible.sum(), 1)),
        "mask_iou": float((masks & true_masks).sum() / max((masks | true_masks).sum(), 1)) if true_masks.any() else float("nan"),
        "mask_fa": float((masks & static).sum() / max(static.sum(), 1)),
    }


def clip_configs(args: argparse.Namespace, height: int, width: int):
    """(class, camera, seed, SceneConfig) of every clip the arguments name."""
    if args.scene_classes:
        for name in args.scene_classes.split(","):
            for seed in args.seeds:
                (config,) = class_configs(name, 1, height, width, seed, args.frames)
                yield name, config.camera, seed, config
        return
    scene_fields = {f.name for f in dataclasses.fields(SceneConfig)}
    for name in args.classes.split(","):
        overrides = CLASSES[name]
        if not set(overrides) <= scene_fields:
            print(f"class {name}: skipped (SceneConfig has no {sorted(set(overrides) - scene_fields)})")
            continue
        for camera in args.cameras.split(","):
            for seed in args.seeds:
                yield name, camera, seed, SceneConfig(seed=seed, height=height, width=width, num_frames=args.frames,
                                                      camera=camera, **overrides)


def parse_seeds(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=parse_seeds, default=parse_seeds("0-2"), help="e.g. 0-5 or 10,12")
    parser.add_argument("--cameras", default="dolly,orbit,static")
    parser.add_argument("--classes", default="room", help=f"comma-separated of {sorted(CLASSES)}")
    parser.add_argument("--scene-classes", default="", help=f"comma-separated of {sorted(SCENE_CLASSES)} (replaces "
                        "--classes and --cameras)")
    parser.add_argument("--size", type=image_size, default=(240, 360))
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--masks", choices=("truth", "estimated"), default="truth")
    parser.add_argument("--old", action="store_true", help="the pre-issue validity rules, for comparison")
    parser.add_argument("--no-key-flow-guided", dest="key_flow_guided", action="store_false",
                        help="key flows from the first pass only (the baseline of the guided pass)")
    parser.add_argument("--quick", action="store_true", help="smoke run: one orbit seed at 120x180, T=9")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.cameras, args.size, args.frames = parse_seeds("0"), "orbit", (120, 180), 9
    height, width = args.size
    cfg = LabelConfig(height=height, width=width, num_frames=args.frames, camera="import", depth="import",
                      key_flow_guided=args.key_flow_guided)
    totals = {"valid": 0, "wrong": 0, "coverage": []}
    for name, camera, seed, config in clip_configs(args, height, width):
        start = time.perf_counter()
        clip = render_clip(config)
        labels = clip.labels
        seconds: dict[str, float] = {}
        flows, key_flows, direct = pipeline_flows(clip.frames, cfg.stride, cfg, labels, seconds)
        masks = labels["dynamic_mask"] if args.masks == "truth" else estimated_masks(
            labels, flows, key_flows, cfg.stride, clip.frames)
        if cfg.key_flow_guided:  # as the pipeline: the direct flow on the movers the masks find
            key_flows = direct_flow_on_movers(key_flows, direct, masks, labels["depth_valid"][::cfg.stride])
        flow3d, valid = scene_flow_stage(labels, flows, key_flows, masks, cfg, clip.frames, old=args.old)
        result = score(labels, key_flows, flow3d, valid, masks)
        totals["valid"] += result["valid"]
        totals["wrong"] += result["wrong"]
        if labels["scene_flow_valid"].any():
            totals["coverage"].append(result["coverage"])
        result.update({f"{stage}_s": round(value, 2) for stage, value in seconds.items()})
        cells = " ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items())
        print(f"{name:12s} {camera:7s} seed {seed:3d}  {cells}  ({time.perf_counter() - start:.0f} s)", flush=True)
    pooled = 1 - totals["wrong"] / totals["valid"] if totals["valid"] else float("nan")
    print(f"pooled precision {pooled:.4f} over {totals['valid']} valid pixels; "
          f"median coverage {np.median(totals['coverage']) if totals['coverage'] else float('nan'):.3f}")


if __name__ == "__main__":
    main()
