"""Camera labeler benchmark: ms per frame of the weight-free SfM backend on CPU, and its errors.

Data: synthetic clips (pipelines.synthetic, exact cameras) with moving cameras (dolly, orbit;
two moving objects), T = 49 frames, at 240x360 and 480x720, each labelled with the true
intrinsics given and without them (focal estimated). Per cell: the median wall time of
`--repeats` runs in ms per frame, the split into tracking / motion analysis / SfM, the
motion class, the mean relative rotation error between consecutive frames (deg), the
Sim(3)-aligned camera-centre RMSE in percent of the path length, and the focal error.
Ceres runs on one thread (`SfmConfig.num_threads`), as in a Ray worker.

    python bench/bench_camera.py [--quick] [--repeats N] [--motions dolly,orbit] [--cache DIR] [--rendered]

The frames are written as MP4 and decoded back, as the pipeline sees them (`--rendered`: the
rendered frames). `--cache DIR` keeps the clips (rendering 480x720x49 takes minutes) for later runs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from labelers.camera import CameraFailure, trajectory_errors  # noqa: E402
from labelers.sfm import SfmCamera  # noqa: E402
from pipelines.synthetic import SceneConfig, render_clip  # noqa: E402
from pipelines.video_io import decode_sequential, write_video  # noqa: E402


def load_clip(cfg: SceneConfig, cache: Path | None, decoded: bool = True) -> dict[str, np.ndarray]:
    """Frames and ground-truth cameras of a synthetic clip (rendered, or read from the cache).

    With `decoded` the frames are written as the synthetic set's MP4 and decoded back, as the
    pipeline sees them: SfM on rendered frames hid a 32 deg camera error that the codec's
    noise caused (docs/benchmarks.md, session 11). The cache name says which frames it holds.
    """
    path = None
    if cache is not None:
        origin = "decoded" if decoded else "rendered"
        path = cache / f"{cfg.camera}_{cfg.height}x{cfg.width}_T{cfg.num_frames}_seed{cfg.seed}_{origin}.npz"
        if path.exists():
            with np.load(path) as data:
                return dict(data)
    start = time.perf_counter()
    clip = render_clip(cfg)
    seconds = time.perf_counter() - start
    print(f"# rendered {cfg.camera} {cfg.height}x{cfg.width} T={cfg.num_frames} in {seconds:.0f} s", flush=True)
    frames = clip.frames
    if decoded:
        with tempfile.TemporaryDirectory() as tmp:
            video = write_video(Path(tmp) / "clip.mp4", frames, cfg.fps)
            frames = decode_sequential(video, np.arange(cfg.num_frames))
    arrays = {"frames": frames, "c2w": clip.labels["c2w"], "K": clip.labels["K"]}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(path, **arrays)
    return arrays


def measure(estimator: SfmCamera, clip: dict[str, np.ndarray], given_K: bool, repeats: int) -> dict:
    num_frames = len(clip["frames"])
    walls, stages = [], []
    for _ in range(repeats):
        start = time.perf_counter()
        result = estimator.estimate(clip["frames"], clip["K"] if given_K else None)
        walls.append(time.perf_counter() - start)
        stages.append(result.diagnostics["seconds"])
    errors = trajectory_errors(result.c2w, clip["c2w"])
    split = {k: 1e3 * statistics.median(s[k] for s in stages) / num_frames for k in ("tracking", "analysis", "solve")}
    return {
        "ms_per_frame": 1e3 * statistics.median(walls) / num_frames,
        "split": split,
        "motion": result.motion,
        "rre": errors["rre_mean_deg"],
        "ate": errors.get("ate_percent_of_path", float("nan")),
        "focal_err": 100 * abs(result.K[0, 0, 0] / clip["K"][0, 0, 0] - 1),
        "reproj": result.reproj_px["median"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="240x360 only, T=17, one repeat (a smoke run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--motions", default="dolly,orbit")
    parser.add_argument("--cache", type=Path, help="folder keeping rendered clips between runs")
    parser.add_argument("--rendered", action="store_true", help="the rendered frames, not decoded from MP4")
    args = parser.parse_args()
    num_frames = 17 if args.quick else 49
    repeats = 1 if args.quick else args.repeats
    sizes = ((240, 360),) if args.quick else ((240, 360), (480, 720))
    estimator = SfmCamera()
    print(f"camera benchmark: {estimator.name} v{estimator.version}, T={num_frames}, median of {repeats} runs, CPU")
    print(
        f"{'size':>8} {'motion':>6} {'K':>5} {'ms/frame':>8} {'track':>6} {'anal.':>6} {'sfm':>6} "
        f"{'class':>8} {'RRE deg':>8} {'ATE %':>6} {'f err %':>7} {'reproj px':>9}"
    )
    for height, width in sizes:
        for motion in args.motions.split(","):
            cfg = SceneConfig(seed=0, height=height, width=width, num_frames=num_frames, stride=4, camera=motion)
            clip = load_clip(cfg, args.cache, decoded=not args.rendered)
            for given_K in (True, False):
                label = "given" if given_K else "est."
                try:
                    m = measure(estimator, clip, given_K, repeats)
                except CameraFailure as failure:
                    print(f"{height}x{width:<4} {motion:>6} {label:>5} rejected: {failure}")
                    continue
                s = m["split"]
                print(
                    f"{height}x{width:<4} {motion:>6} {label:>5} {m['ms_per_frame']:8.0f} {s['tracking']:6.0f} "
                    f"{s['analysis']:6.0f} {s['solve']:6.0f} {m['motion']:>8} {m['rre']:8.4f} {m['ate']:6.3f} "
                    f"{m['focal_err']:7.2f} {m['reproj']:9.3f}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
