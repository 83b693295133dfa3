"""Fixed and rotating cameras: the weight-free camera labeler's verdict, behind large movers too.

Clips: OpenCV's sample videos (Debian opencv-doc: vtest.avi, box.mp4.gz, cup.mp4.gz, tree.avi;
fixed cameras), decoded with cv2.VideoCapture at several start frames, and synthetic clips
(pipelines.synthetic) with a large mover: static, pan (rotation in place), dolly and orbit, in
the room and the open scene. Per clip: the motion class, the largest rotation of the clip
(degrees; a fixed camera must stay under 1), the fixed-camera test's numbers (share of still
probes, pairs with still borders), the rotation error against ground truth where there is one,
the failure reason if any, and seconds.

    python bench/bench_camera_fixed.py [--size 240x360] [--frames 17] [--seeds 0,1] [--real-only]

`--sweep` runs the fixed-camera test alone (`labelers.sfm.fixed_camera_evidence`, no SfM) over
the scene classes of `pipelines.synthetic_set.SCENE_CLASSES` (seeds 0-3 each), slow pans,
dollies and orbits (`camera_speed` 0.05-0.25, rich and low texture), fixed cameras in front of a
textureless wall with a large mover, and the real regression clips as `bench_real_footage.py`
decodes them; it prints, per class, how many clips the test calls fixed: the false-static rate
over moving cameras and the recall over fixed ones.

    python bench/bench_camera_fixed.py --sweep [--size 120x180] [--frames 17]

`--slow-turns` labels slow pans, dollies and orbits in front of plain walls (texture "low", a
large textured mover) with the pipeline's camera step (`pipelines.labeling.pair_flows` key-pair
flows, `LabelConfig`'s prior focal, no intrinsics), once without and once with the rotation fitted
to the dense background (`SfmConfig.background_rotation`), and prints both verdicts per clip:
motion, largest rotation, RRE against the truth, intrinsics source, or the failure.

    python bench/bench_camera_fixed.py --slow-turns [--frames 17] [--seeds 0,1] [--cameras pan,dolly,orbit]
        [--speeds 0.06,0.15]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import image_size  # noqa: E402
from labelers.camera import CameraFailure, relative_rotation_errors_deg, rotation_angle_deg  # noqa: E402
from labelers.sfm import SfmCamera  # noqa: E402
from pipelines.regression_footage import REGRESSION_CLIPS, capture_frames, locate  # noqa: E402
from labelers.sfm import SfmConfig, fixed_camera_evidence  # noqa: E402
from pipelines.clips import ClipSpec  # noqa: E402
from pipelines.decode import DecodeConfig, decode_clip  # noqa: E402
from pipelines.synthetic import SceneConfig, render_clip  # noqa: E402
from pipelines.synthetic_set import SCENE_CLASSES  # noqa: E402

REAL = [  # (regression clip, start frames)
    ("vtest_pedestrians", (0, 40, 200, 400)),
    ("box_hand", (0, 60, 150, 300)),
    ("cup_hand", (0, 27, 80, 134)),
    ("tree_window", (0,)),
]


def verdict(frames: np.ndarray, c2w_truth: np.ndarray | None = None) -> dict:
    start = time.perf_counter()
    try:
        result = SfmCamera().estimate(frames, None)
    except CameraFailure as e:
        return {"motion": f"FAIL {e.reason}", "seconds": time.perf_counter() - start}
    out = {
        "motion": result.motion,
        "max_rotation_deg": float(rotation_angle_deg(result.c2w[:, :3, :3]).max()),
        "still_min": result.diagnostics.get("static_fraction_min", float("nan")),
        "pairs_fixed": result.diagnostics.get("static_pairs_fixed", float("nan")),
        "seconds": time.perf_counter() - start,
    }
    if c2w_truth is not None:
        out["rre_deg"] = float(relative_rotation_errors_deg(result.c2w, c2w_truth).mean())
    return out


def show(name: str, row: dict) -> None:
    fields = [f"{row['motion']:<32}"]
    for key in ("max_rotation_deg", "still_min", "pairs_fixed", "rre_deg", "seconds"):
        fields.append(f"{key}={row[key]:.3f}" if key in row else f"{key}=-")
    print(f"{name:<34} " + " ".join(fields), flush=True)


def sweep_configs(height: int, width: int, frames: int) -> list[tuple[str, bool, SceneConfig]]:
    """(class, camera truly fixed, config) of the sweep (module docstring)."""
    rows = []
    for name, make in SCENE_CLASSES.items():
        for seed in range(4):
            cfg = make(seed, height, width, frames)
            rows.append((name if cfg.camera != "static" or name == "fixed_large_mover" else f"{name}_static",
                         cfg.camera == "static", cfg))
    for camera in ("pan", "dolly", "orbit"):
        for speed in (0.05, 0.1, 0.25):
            for texture in ("rich", "low"):
                cfg = SceneConfig(seed=int(speed * 100), height=height, width=width, num_frames=frames, stride=4,
                                  camera=camera, camera_speed=speed, texture=texture, large_mover=True)
                rows.append((f"slow_{camera}", False, cfg))
    for seed in range(4):
        cfg = SceneConfig(seed=seed, height=height, width=width, num_frames=frames, stride=4, camera="static",
                          texture="low", large_mover=True, scene=("room", "open")[seed % 2])
        rows.append(("fixed_textureless_wall", True, cfg))
    return rows


def sweep(height: int, width: int, frames: int) -> None:
    counts: dict[str, list[int]] = {}
    moving_fixed = moving_total = 0
    for name, truly_fixed, cfg in sweep_configs(height, width, frames):
        evidence = fixed_camera_evidence(render_clip(cfg).frames, SfmConfig())
        tally = counts.setdefault(f"{name} ({'fixed' if truly_fixed else 'moving'})", [0, 0])
        tally[0] += int(evidence.fixed)
        tally[1] += 1
        if not truly_fixed:
            moving_fixed += int(evidence.fixed)
            moving_total += 1
    for key, (fixed, total) in counts.items():
        print(f"{key:<40} called fixed {fixed}/{total}", flush=True)
    print(f"false static over moving cameras: {moving_fixed}/{moving_total}")
    with tempfile.TemporaryDirectory() as tmp:
        for clip in REGRESSION_CLIPS:
            path = locate(clip, tmp)
            if path is None:
                print(f"{clip.name}: not installed ({clip.package}), skipped")
                continue
            spec = ClipSpec(clip.name, str(path), clip.start_sec, clip.start_sec + 60.0, fps_target=None)
            decoded = decode_clip(spec, DecodeConfig(frames, height, width, num_threads=1))
            evidence = fixed_camera_evidence(decoded.frames, SfmConfig())
            diag = evidence.diagnostics()
            print(f"{clip.name:<20} expected {clip.expected_camera:<6} called fixed {evidence.fixed!s:<5} "
                  f"pairs fixed {diag['static_pairs_fixed']:.2f} bottom {diag['static_pairs_bottom_still']:.2f}",
                  flush=True)


def slow_turns(
    height: int, width: int, frames: int, seeds: list[int], cameras: list[str], speeds: list[float]
) -> None:
    from dataclasses import replace

    from pipelines.labeling import LabelConfig, build_backends, pair_flows

    cfg = LabelConfig(height=height, width=width, num_frames=frames)
    backends = build_backends(cfg)
    with_background = backends.camera
    without = SfmCamera(replace(with_background.config, background_rotation=False))

    def outcome(camera: SfmCamera, clip, flows) -> str:
        try:
            result = camera.estimate(clip.frames, None, flows)
        except CameraFailure as e:
            return f"FAIL {e.reason}"
        rre = relative_rotation_errors_deg(result.c2w, clip.labels["c2w"]).mean()
        return (f"{result.motion} {rotation_angle_deg(result.c2w[:, :3, :3]).max():.2f} deg, RRE {rre:.3f}, "
                f"{result.intrinsics_source}")

    for camera in cameras:
        for scene in ("room", "open"):
            for speed in speeds:
                for seed in seeds:
                    clip = render_clip(SceneConfig(
                        seed=seed, height=height, width=width, num_frames=frames, stride=4, camera=camera,
                        camera_speed=speed, texture="low", large_mover=True, scene=scene,
                    ))
                    flows = pair_flows(clip.frames, cfg, backends)[1]
                    c2w = clip.labels["c2w"]
                    moved_cm = 100 * np.linalg.norm(c2w[-1, :3, 3])
                    truth = f"{rotation_angle_deg(c2w[-1, :3, :3]):.2f} deg, {moved_cm:.0f} cm"
                    print(f"| {camera} {scene} {speed} seed {seed} | {truth} | {outcome(without, clip, flows)} | "
                          f"{outcome(with_background, clip, flows)} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=image_size, default=(240, 360))
    parser.add_argument("--frames", type=int, default=17)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--real-only", action="store_true")
    parser.add_argument("--sweep", action="store_true", help="the fixed-camera test alone over every camera class")
    parser.add_argument("--slow-turns", action="store_true", help="slow turns before plain walls, without and "
                        "with the background rotation")
    parser.add_argument("--cameras", default="pan,dolly,orbit", help="--slow-turns: camera motions")
    parser.add_argument("--speeds", default="0.06,0.15", help="--slow-turns: camera_speed values")
    parser.add_argument("--quick", action="store_true", help="smoke run: seed 0 at 120x180, T=9")
    args = parser.parse_args()
    if args.quick:
        args.size, args.frames, args.seeds = (120, 180), 9, "0"
    if args.sweep:
        sweep(*args.size, args.frames)
        return
    if args.slow_turns:
        print("| clip | truth (rotation, translation) | without | with the background rotation |")
        print("| --- | --- | --- | --- |")
        slow_turns(*args.size, args.frames, [int(s) for s in args.seeds.split(",")], args.cameras.split(","),
                   [float(s) for s in args.speeds.split(",")])
        return
    with tempfile.TemporaryDirectory() as tmp:
        for name, starts in REAL:
            path = locate(next(c for c in REGRESSION_CLIPS if c.name == name), tmp)
            if path is None:
                print(f"{name}: not installed (opencv-doc), skipped")
                continue
            for start in starts:
                frames = capture_frames(path, start, args.frames, args.size)
                if len(frames) == args.frames:
                    show(f"{name}@{start}", verdict(frames))
    if args.real_only:
        return
    height, width = args.size
    for seed in (int(s) for s in args.seeds.split(",")):
        for scene in ("room", "open"):
            for camera in ("static", "pan", "dolly", "orbit"):
                cfg = SceneConfig(
                    seed=seed, height=height, width=width, num_frames=args.frames, stride=4, camera=camera,
                    scene=scene, large_mover=True,
                )
                clip = render_clip(cfg)
                show(f"{scene}-{camera}-large-mover seed {seed}", verdict(clip.frames, clip.labels["c2w"]))


if __name__ == "__main__":
    main()
