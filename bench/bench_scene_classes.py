"""Label quality per synthetic scene class: the weight-free default labels against exact ground truth.

For each class of `pipelines.synthetic_set.SCENE_CLASSES` (open yards under a far sky, fixed
cameras with a large mover, panning, textureless and repeated-texture surfaces, degraded
frames, and today's room mix) N clips are rendered and written as videos with a manifest
WITHOUT intrinsics (`--with-intrinsics`: with the true ones), read at their native 8 fps, and
labelled by `pipelines.labeling.label_clip` with the default `LabelConfig` at the clip's size.
Per clip, against the exact labels:

- masks: IoU on clips whose key frames see a mover; false alarms = labelled dynamic /
  ground-truth static pixels over all key frames, and the same on the sky of open scenes;
- flow: mean EPE of our consecutive and key-pair flows and of plain OpenCV DIS-medium
  (forward, on the same decoded frames) on the SAME pixels (ours valid and ground truth
  valid), and the share of those pixels more than 3 px off; coverage = ours valid / ground-truth visible;
- cameras and depth: RRE (mean, degrees), ATE (% of the path, moving cameras), RTA (largest
  angle between the true and estimated direction of travel, degrees, moving cameras), depth
  delta < 1.25 on valid pixels and the share of static pixels with valid depth;
- scene-flow validity precision (`scene_flow_within_5pct`) and coverage (ours valid / truth valid);
- accepted, or the rejection reasons (QA gates still give arrays, so metrics too;
  `ClipRejected` gives none); seconds of labeling per clip.

Each class's table ends with the issue's targets that accepted clips miss (`TARGETS`: how many,
and the worst value). `--tables-from JSON` prints the tables of an earlier `--out` again;
`--compare JSON` adds, clip by clip, what changed against an earlier `--out` of the same clips
(before and after a change to the labelers, run on the same seeds).

    python bench/bench_scene_classes.py --clips 2 --size 240x360 --frames 17 --out scene_classes.json
    python bench/bench_scene_classes.py --classes open_sky pan --clips 4
    python bench/bench_scene_classes.py --classes room open_sky --clips 8 --cameras dolly \
        --fovs 50 60 70 85 --unknown-focal prior     # the prior focal's tests on dollies
    python bench/bench_scene_classes.py --tables-from after.json --compare before.json
    python bench/bench_scene_classes.py --frames 49 --seed 150 --no-key-flow-guided --out before.json  # a baseline
    python bench/bench_scene_classes.py --frames 49 --clips 3 --seed 130 --with-intrinsics   # the label default's T

The default T = 17 keeps a sweep to minutes; `LabelConfig`'s default is T = 49, where dollies
end near surfaces with larger flows (docs/benchmarks.md, "Session 18").
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import image_size  # noqa: E402
from labelers.sfm import SfmCamera  # noqa: E402
from pipelines.clips import ClipRejected  # noqa: E402
from pipelines.decode import decode_clip  # noqa: E402
from pipelines.label_eval import compare_labels  # noqa: E402
from pipelines.labeling import LabelConfig, build_backends, label_clip  # noqa: E402
from pipelines.manifests import read_manifest  # noqa: E402
from pipelines.synthetic import SKY_ID, SyntheticClip  # noqa: E402
from pipelines.synthetic_set import SCENE_CLASSES, SyntheticSetRow, class_configs, write_synthetic_set  # noqa: E402

# (key, column title, how a class summarises it, format)
COLUMNS = (
    ("dynamic_iou", "IoU", "min", "{:.2f}"),
    ("false_alarm_static", "FA static", "max", "{:.2%}"),
    ("false_alarm_sky", "FA sky", "max", "{:.2%}"),
    ("flow_epe_ratio", "flow EPE / DIS", "max", "{:.2f}"),
    ("flow_coverage", "flow cov", "min", "{:.2f}"),
    ("key_flow_epe_ratio", "key EPE / DIS", "max", "{:.2f}"),
    ("key_flow_coverage", "key cov", "min", "{:.2f}"),
    ("key_flow_over_3px", "key > 3 px", "max", "{:.2%}"),
    ("rre_mean_deg", "RRE deg", "max", "{:.3f}"),
    ("ate_percent_of_path", "ATE %", "max", "{:.2f}"),
    ("rta_max_deg", "RTA deg", "max", "{:.2f}"),
    ("depth_delta125", "d1.25", "min", "{:.3f}"),
    ("depth_coverage_static", "depth cov", "min", "{:.2f}"),
    ("scene_flow_within_5pct", "SF prec", "min", "{:.3f}"),
    ("scene_flow_coverage", "SF cov", "min", "{:.2f}"),
    ("seconds", "s/clip", "max", "{:.1f}"),
)


def dis_medium(frames: np.ndarray, pairs: list[tuple[int, int]]) -> np.ndarray:
    """Plain OpenCV DIS-medium forward flow (N, H, W, 2) of frame pairs, as anyone would run it."""
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    return np.stack([cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM).calc(gray[a], gray[b], None)
                     for a, b in pairs])


def flow_against_dis(ours: np.ndarray, ours_valid: np.ndarray, dis: np.ndarray, truth: np.ndarray,
                     truth_valid: np.ndarray) -> dict[str, float]:
    """EPE of our flow and of DIS on the same pixels (ours valid and truth valid), our coverage, and the
    share of those pixels more than 3 px off (issue 13's measure of flow validity)."""
    same = ours_valid & truth_valid
    ours_epe = np.linalg.norm(ours - truth, axis=-1)[same]
    dis_epe = np.linalg.norm(dis - truth, axis=-1)[same]
    out = {"coverage": float(same.sum() / max(truth_valid.sum(), 1))}
    if same.any():
        out.update(epe=float(ours_epe.mean()), dis_epe=float(dis_epe.mean()),
                   ratio=float(ours_epe.mean() / max(dis_epe.mean(), 1e-9)), over_3px=float(np.mean(ours_epe > 3)))
    return out


def clip_metrics(arrays: dict, truth: SyntheticClip, frames: np.ndarray) -> dict[str, float]:
    labels, cfg = truth.labels, truth.config
    out = compare_labels(arrays, labels)
    key = list(range(0, cfg.num_frames, cfg.stride))
    static = ~labels["dynamic_mask"]
    flagged = np.asarray(arrays["dynamic_mask"])
    out["false_alarm_static"] = float((flagged & static).sum() / max(static.sum(), 1))
    if cfg.scene == "open":
        sky = static & (truth.object_ids[key] == SKY_ID)
        out["false_alarm_sky"] = float((flagged & sky).sum() / max(sky.sum(), 1))
        # the sky's depth must stay invalid: static coverage is scored off it
        sky_all = truth.object_ids == SKY_ID
        dynamic_all = np.repeat(labels["dynamic_mask"], cfg.stride, axis=0)[: cfg.num_frames]
        static_ground = ~dynamic_all & labels["depth_valid"] & ~sky_all
        out["depth_coverage_static"] = float(np.mean(np.asarray(arrays["depth_valid"])[static_ground]))
        out["depth_valid_sky"] = float(np.mean(np.asarray(arrays["depth_valid"])[sky_all]))
    if not labels["dynamic_mask"].any():
        out["dynamic_iou"] = float("nan")  # IoU is scored on clips whose key frames see a mover only
    truth_sf = labels["scene_flow_valid"]
    # NaN where nothing moves: the truth's scene flow is valid on the movers only
    covered = (arrays["scene_flow_valid"] & truth_sf).sum()
    out["scene_flow_coverage"] = float(covered / truth_sf.sum()) if truth_sf.any() else float("nan")
    consecutive = [(i, i + 1) for i in range(cfg.num_frames - 1)]
    for name, pairs in (("flow", consecutive), ("key_flow", list(zip(key[:-1], key[1:])))):
        cmp = flow_against_dis(arrays[name], arrays[f"{name}_valid"], dis_medium(frames, pairs), labels[name],
                               labels[f"{name}_valid"])
        out[f"{name}_coverage"] = cmp["coverage"]
        out[f"{name}_epe_ours"] = cmp.get("epe", float("nan"))
        out[f"{name}_epe_dis"] = cmp.get("dis_epe", float("nan"))
        out[f"{name}_epe_ratio"] = cmp.get("ratio", float("nan"))
        out[f"{name}_over_3px"] = cmp.get("over_3px", float("nan"))
    return out


def run_class(name: str, args: argparse.Namespace, root: Path) -> list[dict]:
    height, width = args.size
    truth: dict[str, SyntheticClip] = {}

    def keep(row: SyntheticSetRow, clip: SyntheticClip) -> None:
        truth[row.clip_id] = clip

    configs = class_configs(name, args.clips, height, width, args.seed, args.frames, args.fps)
    if args.cameras:
        configs = [c for c in configs if c.camera in args.cameras]
    if args.fovs:
        configs = [replace(c, fov_x_deg=args.fovs[i % len(args.fovs)]) for i, c in enumerate(configs)]
    configs = [replace(c, camera_speed=c.camera_speed * args.camera_speed, mover_speed=c.mover_speed * args.mover_speed)
               for c in configs]
    if not configs:
        return []
    write_synthetic_set(root / name, configs, with_intrinsics=args.with_intrinsics, on_render=keep)
    specs = read_manifest(root / name / "manifest.csv", fps_target=None).specs  # native rate: 8 fps
    cfg = LabelConfig(height=height, width=width, num_frames=args.frames, unknown_focal=args.unknown_focal,
                      key_flow_guided=not args.no_key_flow_guided, uncertain_focal_max_std=args.uncertain_focal_max_std,
                      key_flow_geometry_px=None if args.no_key_flow_geometry else LabelConfig.key_flow_geometry_px,
                      key_flow_chain_start=args.key_flow_chain_start, depth_near_views=args.depth_near_views)
    backends = build_backends(cfg)
    if args.dense_limit is not None:  # calibration: label clips the prior's dense test would reject
        backends.camera = SfmCamera(replace(backends.camera.config, min_prior_dense_agreement=args.dense_limit))
    results = []
    for spec, scene in zip(specs, configs):
        clip = truth[spec.clip_id]
        record: dict = {"class": name, "clip_id": spec.clip_id, "caption": clip.caption,
                        "config": {k: v for k, v in clip.metadata["config"].items()}}
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        try:
            arrays, attrs, reasons = label_clip(spec, cfg, backends, seconds)
        except ClipRejected as e:
            record.update(status="rejected", reasons=[f"{e.reason}: {e.message}"], metrics={},
                          seconds=time.perf_counter() - start)
            results.append(record)
            print(f"  {name} seed {scene.seed} ({scene.camera}, {scene.scene}): rejected, no labels: {e.reason}",
                  flush=True)
            continue
        record["seconds"] = time.perf_counter() - start
        frames = decode_clip(spec, cfg.decode)
        if not np.array_equal(frames.frame_index, clip.labels["frame_index"]):
            raise RuntimeError(f"{spec.clip_id}: decoded frames {frames.frame_index} are not the rendered 0..T-1")
        metrics = clip_metrics(arrays, clip, frames.frames)
        metrics["seconds"] = record["seconds"]
        metrics.update({k: v for k, v in attrs["qa"].items() if k.startswith("camera_")})
        record.update(status="rejected" if reasons else "accepted", reasons=list(reasons), metrics=metrics,
                      stage_seconds=seconds)
        results.append(record)
        print(f"  {name} seed {scene.seed} ({scene.camera}, {scene.scene}): {record['status']} "
              f"IoU {metrics['dynamic_iou']:.2f} FA {metrics['false_alarm_static']:.2%} "
              f"flow/DIS {metrics['flow_epe_ratio']:.2f} key/DIS {metrics['key_flow_epe_ratio']:.2f} "
              f"RRE {metrics['rre_mean_deg']:.3f} RTA {metrics.get('rta_max_deg', float('nan')):.2f} "
              f"d1.25 {metrics['depth_delta125']:.3f} "
              f"cov {metrics['depth_coverage_static']:.2f} fov {scene.fov_x_deg:g} "
              f"prior {metrics.get('camera_intrinsics_prior', 0):g} "
              f"dense {metrics.get('camera_focal_prior_dense_agreement', float('nan')):.3f} "
              f"{record['seconds']:.0f} s {'; '.join(reasons)}", flush=True)
    return results


# Issue 13's targets for accepted clips: key -> (limit, "min" if the value must reach it, "max" if not exceed it)
TARGETS = {
    "dynamic_iou": (0.6, "min"),
    "false_alarm_static": (0.01, "max"),
    "false_alarm_sky": (0.01, "max"),
    "flow_epe_ratio": (1.0, "max"),
    "flow_coverage": (0.95, "min"),
    "key_flow_epe_ratio": (1.0, "max"),
    "key_flow_coverage": (0.85, "min"),
    "rre_mean_deg": (0.1, "max"),
    "ate_percent_of_path": (1.0, "max"),
    "depth_delta125": (0.95, "min"),
    "depth_coverage_static": (0.70, "min"),
    "scene_flow_within_5pct": (0.95, "min"),
}


def missed_targets(records: list[dict]) -> dict[str, tuple[int, float]]:
    """Per target metric (`TARGETS`) that accepted clips miss: how many miss it and the worst value."""
    missed: dict[str, tuple[int, float]] = {}
    for key, (limit, how) in TARGETS.items():
        values = [r["metrics"].get(key) for r in records if r["status"] == "accepted"]
        bad = [v for v in values if v is not None and np.isfinite(v) and (v < limit if how == "min" else v > limit)]
        if bad:
            missed[key] = (len(bad), min(bad) if how == "min" else max(bad))
    return missed


def _summary(values: list[float], how: str, fmt: str) -> str:
    values = [v for v in values if v is not None and np.isfinite(v)]
    if not values:
        return "-"
    extreme = min(values) if how == "min" else max(values)
    median = fmt.format(float(np.median(values)))
    return median if len(values) == 1 else f"{median} ({how} {fmt.format(extreme)})"


def print_table(title: str, records: list[dict]) -> None:
    labelled = [r for r in records if r["metrics"]]
    accepted = sum(r["status"] == "accepted" for r in records)
    print(f"\n### {title}: {accepted}/{len(records)} accepted, {len(labelled)} with labels")
    print("| " + " | ".join(c[1] for c in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    print("| " + " | ".join(_summary([r["metrics"].get(k) for r in labelled], how, fmt)
                             for k, _, how, fmt in COLUMNS) + " |")
    reasons = Counter(reason.split(":")[0] for r in records for reason in r["reasons"])
    if reasons:
        print("rejection reasons: " + ", ".join(f"{k} x{n}" for k, n in reasons.most_common()))
    missed = missed_targets(records)
    if missed:
        print("accepted clips below target: " + ", ".join(
            f"{key} {'>=' if TARGETS[key][1] == 'min' else '<='} {TARGETS[key][0]:g}: {n} (worst {worst:.3g})"
            for key, (n, worst) in missed.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", nargs="+", choices=sorted(SCENE_CLASSES), default=list(SCENE_CLASSES))
    parser.add_argument("--clips", type=int, default=4, help="clips per class")
    parser.add_argument("--size", type=image_size, default="240x360")
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--fps", type=float, default=8.0, help="frame rate of the rendered videos")
    parser.add_argument("--seed", type=int, default=0, help="first seed of every class")
    parser.add_argument("--out", type=Path, help="write every clip's record as JSON here")
    parser.add_argument("--cameras", nargs="+", help="keep only these camera paths (dolly, orbit, static, pan)")
    parser.add_argument("--fovs", nargs="+", type=float, help="true horizontal fields of view, cycled over the clips")
    parser.add_argument("--camera-speed", type=float, default=1.0,
                        help="scales every clip's camera motion per frame (SceneConfig.camera_speed)")
    parser.add_argument("--mover-speed", type=float, default=1.0,
                        help="scales the moving objects' velocity and spin (SceneConfig.mover_speed)")
    parser.add_argument("--unknown-focal", choices=("reject", "prior"), default=LabelConfig.unknown_focal,
                        help="LabelConfig.unknown_focal")
    parser.add_argument("--dense-limit", type=float, help="SfmConfig.min_prior_dense_agreement (default: its own)")
    parser.add_argument("--uncertain-focal-max-std", type=float, default=LabelConfig.uncertain_focal_max_std,
                        help="LabelConfig.uncertain_focal_max_std (0: no uncertain estimated focal is kept)")
    parser.add_argument("--with-intrinsics", action="store_true",
                        help="write the true intrinsics into the manifest (default: none, the focal is estimated)")
    parser.add_argument("--no-key-flow-guided", action="store_true",
                        help="without the second key-pair flow pass (LabelConfig.key_flow_guided): the baseline")
    parser.add_argument("--no-key-flow-geometry", action="store_true",
                        help="without the key flow's check against the labelled depth (LabelConfig.key_flow_geometry_px)")
    parser.add_argument("--key-flow-chain-start", action="store_true",
                        help="key-pair flow started from the composed consecutive flows, not searched from zero "
                        "motion (LabelConfig.key_flow_chain_start)")
    parser.add_argument("--depth-near-views", type=int, default=LabelConfig.depth_near_views,
                        help="of each frame's multi-view depth views, this many are its nearest frames "
                        "(LabelConfig.depth_near_views)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 clip of room and open_sky at 120x180, T=9")
    parser.add_argument("--tables-from", type=Path, metavar="JSON",
                        help="print the tables of a sweep written with --out, labelling nothing")
    parser.add_argument("--compare", type=Path, metavar="JSON",
                        help="also print, clip by clip, how this sweep differs from an earlier --out of the same clips")
    args = parser.parse_args()
    if args.tables_from:
        records = json.loads(args.tables_from.read_text())["clips"]
        print_tables(records)
        if args.compare:
            print_comparison(json.loads(args.compare.read_text())["clips"], records)
        return
    if args.quick:
        args.classes, args.clips, args.size, args.frames = ["room", "open_sky"], 1, (120, 180), 9
    cv2.setNumThreads(1)
    root = Path(tempfile.mkdtemp(prefix="bench_scene_classes_"))
    print(f"{args.clips} clips per class, {args.size[0]}x{args.size[1]}, T={args.frames}, {args.fps:g} fps native, "
          f"{'true' if args.with_intrinsics else 'no'} intrinsics, weight-free defaults; videos under {root}",
          flush=True)
    records: list[dict] = []
    recorded_args = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    for name in args.classes:
        records += run_class(name, args, root)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(json.dumps({"args": recorded_args, "clips": records}, indent=1, default=float))
    print_tables(records)
    if args.compare:
        print_comparison(json.loads(args.compare.read_text())["clips"], records)


def print_comparison(before: list[dict], after: list[dict]) -> None:
    """Clip by clip (matched by clip id: the same seed, class and size give the same video), the
    outcome and the `TARGETS` metrics before -> after; then, per metric, on how many clips labelled
    by both it got better or worse by more than a hundredth of its target."""
    earlier = {r["clip_id"]: r for r in before}
    pairs = [(earlier[r["clip_id"]], r) for r in after if r["clip_id"] in earlier]
    print(f"\n### compared with the earlier sweep: {len(pairs)} clips in both")
    moved: dict[str, Counter] = {key: Counter() for key in TARGETS}
    for old, new in pairs:
        cells = []
        for key, (limit, how) in TARGETS.items():
            a, b = old["metrics"].get(key), new["metrics"].get(key)
            if a is None or b is None or not (np.isfinite(a) and np.isfinite(b)):
                continue
            if abs(b - a) > 0.01 * limit:
                moved[key]["better" if (b > a) == (how == "min") else "worse"] += 1
                cells.append(f"{key} {a:.3g} -> {b:.3g}")
        status = f"{old['status']} -> {new['status']}" if old["status"] != new["status"] else new["status"]
        reasons = "; ".join(r.split(":")[0] for r in new["reasons"]) if new["status"] != old["status"] else ""
        print(f"{new['clip_id']} ({new['class']}): {status}" + (f" ({reasons})" if reasons else "")
              + (": " + ", ".join(cells) if cells else ""))
    changed = [f"{key} {c['better']}/{c['worse']}" for key, c in moved.items() if c]
    print("better / worse: " + (", ".join(changed) if changed else "no target metric moved"))


def print_tables(records: list[dict]) -> None:
    """One table per scene class (in the records' order), then one over all of them."""
    for name in dict.fromkeys(r["class"] for r in records):
        print_table(name, [r for r in records if r["class"] == name])
    print_table("all classes", records)


if __name__ == "__main__":
    main()
