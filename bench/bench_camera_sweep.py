"""Camera labeler sweep without given intrinsics: is an accepted focal length a trustworthy one?

The SfM backend estimates the focal length when no intrinsics are given and rejects a clip
(`intrinsics_unobservable`) when the motion does not determine it. A wrong focal that passes
that gate is a silent bad label; this sweep measures how often that happens.

Data: synthetic clips (pipelines.synthetic, exact cameras, one moving object) with moving
cameras (dolly, orbit) at each size, `--seeds` scenes each. One clip of the longest T is
rendered per (camera, size, seed) and its first T frames make the shorter clips (rendering
dominates otherwise: a 240x360x49 clip takes about a minute). Per (camera, size, T):

    n        clips; acc / rej: accepted / rejected (rejection reasons below the table)
    f err %  |estimated / true focal - 1| of the accepted clips: median and max
    >5%      accepted clips with an ESTIMATED focal more than 5 % off (silent bad labels)
    prior    accepted clips labelled with the prior focal (`intrinsics_source` "prior": the
             tracks did not determine the focal; its error is recorded, not silent)
    RRE      mean relative rotation error between consecutive frames (deg): mean over
             accepted clips and the worst clip (target < 0.1)
    ATE %    Sim(3)-aligned camera-centre RMSE in percent of the path: median, max (target < 1)
    RTA deg  largest angle between the true and estimated direction of travel seen from the
             cameras (`labelers.camera.relative_translation_angles_deg`): median, max
    std %    the focal_rel_std the labeler reported for ESTIMATED focals: median, max
    err/std  max over clips with an estimated focal of (focal error / reported std): calibration
             of the gate

    python bench/bench_camera_sweep.py [--quick] [--seeds N] [--sizes 120x180,240x360]
        [--frames 17,25,49] [--cameras dolly,orbit] [--cache DIR] [--clips]
        [--unknown-focal reject|prior] [--prior-fov DEG] [--fovs 70] [--scenes room] [--rendered]
        [--flows] [--uncertain-max-std STD]

`--flows` gives the camera the pipeline's dense key-pair flows, as `worldreel label` does: the
mover screen, the background's rotation and the uncertain estimated focal
(`labelers.sfm.focal_prior`) need them; `--uncertain-max-std 0` turns the last off.

The frames are written as MP4 and decoded back, as the pipeline sees them (`--rendered`: the
rendered frames, as before session 12).

`--fovs 55,70,85 --scenes room,open` varies the true field of view and the scene class per
seed (seed i takes fovs[i % n] and scenes[(i // n) % m]); the focal-prior measurement:
    python bench/bench_camera_sweep.py --sizes 240x360 --frames 17 --cameras dolly --seeds 8 \
        --fovs 55,62,70,78,85 --scenes room,open --clips

`--cache DIR` keeps the rendered clips for later runs (default bench_out/camera_clips);
`--clips` prints one line per clip. On a (busy) 2-core machine the default sweep (96 clips)
labels in about 9 minutes; rendering its 32 clips the first time adds about 20 minutes.
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_camera import load_clip  # noqa: E402
from bench.common import image_sizes  # noqa: E402
from labelers.camera import CameraFailure, trajectory_errors  # noqa: E402
from labelers.flow import PairFlows  # noqa: E402
from labelers.sfm import SfmCamera, SfmConfig  # noqa: E402
from pipelines.labeling import LabelConfig, build_backends, pair_flows  # noqa: E402
from pipelines.synthetic import SceneConfig  # noqa: E402

FOCAL_BOUND = 0.05  # the guarantee the sweep checks: accepted => focal within 5 %


def key_flows(frames: np.ndarray) -> PairFlows:
    """The labeling pipeline's key-pair flows (default `LabelConfig`: DIS, stride 4, chains) of (T, H, W, 3) frames."""
    cfg = LabelConfig(height=frames.shape[1], width=frames.shape[2], num_frames=len(frames))
    return pair_flows(frames, cfg, build_backends(cfg))[1]


def run_clip(estimator: SfmCamera, frames: np.ndarray, c2w_gt: np.ndarray, focal_gt: float,
             flows: PairFlows | None = None) -> dict:
    """One estimate without intrinsics (with the dense key-pair `flows`, as the pipeline gives
    them, where given): its rejection reason, or its errors."""
    start = time.perf_counter()
    try:
        result = estimator.estimate(frames, None, flows)
    except CameraFailure as failure:
        return {"reason": failure.reason, "seconds": time.perf_counter() - start}
    errors = trajectory_errors(result.c2w, c2w_gt)
    return {
        "reason": None,
        "seconds": time.perf_counter() - start,
        "motion": result.motion,
        "focal_err": abs(result.K[0, 0, 0] / focal_gt - 1),
        "source": result.intrinsics_source,
        "focal_std": result.diagnostics.get("focal_rel_std", float("nan")),
        "uncertain": result.intrinsics_source == "estimated" and bool(result.focal_alternatives),
        "rre": errors["rre_mean_deg"],
        "ate": errors.get("ate_percent_of_path", float("nan")),
        "rta": errors.get("rta_max_deg", float("nan")),
    }


def summary_row(key: tuple, rows: list[dict]) -> str:
    camera, size, num_frames = key
    acc = [r for r in rows if r["reason"] is None]
    head = f"{camera:>6} {size:>8} {num_frames:>3} {len(rows):>3} {len(acc):>4} {len(rows) - len(acc):>4}"
    if not acc:
        return head
    err = 100 * np.array([r["focal_err"] for r in acc])
    std = 100 * np.array([r["focal_std"] for r in acc])
    rre = np.array([r["rre"] for r in acc])
    ate = np.array([r["ate"] for r in acc])
    rta = np.array([r["rta"] for r in acc])
    estimated = np.array([r["source"] == "estimated" for r in acc])
    over = int((estimated & (err > 100 * FOCAL_BOUND)).sum())
    # the std is the estimate's: it calibrates estimated focals only, not a prior's error
    calibration = (
        f"{np.median(std[estimated]):6.2f} {std[estimated].max():6.2f} {np.max(err[estimated] / std[estimated]):7.1f}"
        if estimated.any() else f"{'-':>6} {'-':>6} {'-':>7}"
    )
    return (
        f"{head} {np.median(err):6.2f} {err.max():6.2f} {over:4d} {int((~estimated).sum()):5d} {rre.mean():7.4f} "
        f"{rre.max():7.4f} {np.median(ate):6.3f} {ate.max():6.3f} {np.median(rta):6.2f} {rta.max():6.2f} {calibration}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="120x180, T=17,25, 3 seeds (a smoke run)")
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--sizes", type=image_sizes, default="120x180,240x360")
    parser.add_argument("--frames", default="17,25,49")
    parser.add_argument("--cameras", default="dolly,orbit")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench_out" / "camera_clips")
    parser.add_argument("--clips", action="store_true", help="print one line per clip")
    parser.add_argument("--unknown-focal", choices=("reject", "prior"), default=SfmConfig.unknown_focal)
    parser.add_argument("--prior-fov", type=float, default=SfmConfig.prior_fov_x_deg, help="prior_fov_x_deg")
    parser.add_argument("--fovs", default="70", help="true horizontal fields of view (deg), one per seed in turn")
    parser.add_argument("--scenes", default="room", help="scene classes (room, open), per seed in turn")
    parser.add_argument("--rendered", action="store_true", help="the rendered frames, not decoded from MP4")
    parser.add_argument("--flows", action="store_true",
                        help="give the camera the pipeline's dense key-pair flows (flow time not counted)")
    parser.add_argument("--uncertain-max-std", type=float, default=SfmConfig.uncertain_focal_max_rel_std,
                        help="uncertain_focal_max_rel_std (0: no uncertain estimated focal is kept)")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.sizes, args.frames = 3, [(120, 180)], "17,25"
    sizes = args.sizes
    frame_counts = sorted(int(t) for t in args.frames.split(","))
    estimator = SfmCamera(SfmConfig(unknown_focal=args.unknown_focal, prior_fov_x_deg=args.prior_fov,
                                    uncertain_focal_max_rel_std=args.uncertain_max_std))
    fovs = [float(v) for v in args.fovs.split(",")]
    scenes = args.scenes.split(",")
    print(
        f"camera sweep without intrinsics: {estimator.name} v{estimator.version}, max_focal_rel_std "
        f"{estimator.config.max_focal_rel_std}, unknown focal {args.unknown_focal} (prior {args.prior_fov:g} deg), "
        f"uncertain focal max std {args.uncertain_max_std} {'with' if args.flows else 'without'} dense flows, "
        f"true fov {args.fovs}, scenes {args.scenes}, seeds 0..{args.seeds - 1}, one moving object"
    )
    results: dict[tuple, list[dict]] = collections.defaultdict(list)
    start = time.perf_counter()
    for camera in args.cameras.split(","):
        for height, width in sizes:
            for seed in range(args.seeds):
                cfg = SceneConfig(
                    seed=seed, height=height, width=width, num_frames=max(frame_counts), stride=4, camera=camera,
                    num_moving=1, fov_x_deg=fovs[seed % len(fovs)], scene=scenes[(seed // len(fovs)) % len(scenes)],
                )
                # load_clip's cache name knows camera, size, T and seed only
                cache = args.cache if (cfg.scene, cfg.fov_x_deg) == ("room", 70.0) else (
                    args.cache / f"{cfg.scene}_fov{cfg.fov_x_deg:g}")
                clip = load_clip(cfg, cache, decoded=not args.rendered)
                for num_frames in frame_counts:
                    frames = clip["frames"][:num_frames]
                    flows = key_flows(frames) if args.flows else None
                    row = run_clip(estimator, frames, clip["c2w"][:num_frames], clip["K"][0, 0, 0], flows)
                    key = (camera, f"{height}x{width}", num_frames)
                    results[key].append(row)
                    if args.clips:
                        detail = row["reason"] or (
                            f"{row['motion']} {row['source']}{' (uncertain)' if row['uncertain'] else ''} "
                            f"f err {100 * row['focal_err']:.2f} % "
                            f"std {100 * row['focal_std']:.2f} % RRE {row['rre']:.4f} ATE {row['ate']:.3f} % "
                            f"RTA {row['rta']:.2f}"
                        )
                        print(f"# {camera} {cfg.scene} fov {cfg.fov_x_deg:g} {height}x{width} T={num_frames} "
                              f"seed {seed}: {detail} ({row['seconds']:.1f} s)", flush=True)
    print(
        f"{'camera':>6} {'size':>8} {'T':>3} {'n':>3} {'acc':>4} {'rej':>4} {'f err %':>13} {'>5%':>4} "
        f"{'prior':>5} {'RRE deg':>15} {'ATE %':>13} {'RTA deg':>13} {'std %':>13} {'err/std':>7}"
    )
    print(f"{'':>31} {'med':>6} {'max':>6} {'':>4} {'':>5} {'mean':>7} {'max':>7} {'med':>6} {'max':>6} {'med':>6} "
          f"{'max':>6} {'med':>6} {'max':>6}")
    for key, rows in results.items():
        print(summary_row(key, rows))
    reasons = collections.Counter(r["reason"] for rows in results.values() for r in rows if r["reason"])
    accepted = [r for rows in results.values() for r in rows if r["reason"] is None]
    bad = sum(r["focal_err"] > FOCAL_BOUND and r["source"] == "estimated" for r in accepted)
    prior = sum(r["source"] == "prior" for r in accepted)
    uncertain = sum(r["uncertain"] for r in accepted)
    total = sum(len(rows) for rows in results.values())
    labelling = sum(r["seconds"] for rows in results.values() for r in rows)
    print(f"rejections: {dict(reasons) or 'none'}")
    print(
        f"total: {len(accepted)} of {total} accepted ({prior} with the prior focal, {uncertain} with an uncertain "
        f"estimated one), {bad} with an estimated focal "
        f"more than {100 * FOCAL_BOUND:.0f} % off; labelling took {labelling:.0f} s "
        f"(wall {time.perf_counter() - start:.0f} s with rendering)"
    )


if __name__ == "__main__":
    main()
