"""SfM time and camera errors: one `SfmConfig` field at its default against a baseline value, same process.

Held-out clips of the moving-camera scene classes (`pipelines.synthetic_set.class_configs`),
seeds 40-42 (fields of view 50, 65, 80) and 50-52 (55, 70, 85), 240x360, T = 17; each clip
with and without its true intrinsics. Per clip and setting: `SfmCamera.estimate` seconds, and
for accepted clips RTA max, RRE mean, ATE (% of path) and the focal's relative error; then
the total and median seconds and their ratio to the baseline.

    python bench/bench_sfm_config.py --field robust_function_tolerance --baseline 1e-9
    python bench/bench_sfm_config.py --field min_tri_angle_deg --baseline 0.5 [--value V] [--cache DIR]

`--value` defaults to the field's default.

Rendering the 27 clips the first time takes about 10 minutes on 2 busy cores (cached in
`--cache`, default bench_out/sfm_held_out_clips.pkl); the labelling about 7 minutes.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labelers.camera import trajectory_errors  # noqa: E402
from labelers.sfm import SfmCamera, SfmConfig  # noqa: E402
from pipelines.synthetic import render_clip  # noqa: E402
from pipelines.synthetic_set import class_configs  # noqa: E402

SEEDS_AND_FOVS = ((40, (50, 65, 80)), (50, (55, 70, 85)))
CLASSES = ("room", "open_sky", "textureless", "repeated", "degraded")


def held_out_clips(cache: Path) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, frames, K, c2w) of the moving-camera clips, rendered once into `cache`."""
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    clips = []
    for seed, fovs in SEEDS_AND_FOVS:
        for name in CLASSES:
            for i, cfg in enumerate(class_configs(name, 3, 240, 360, seed, 17, 8.0)):
                if cfg.camera in ("dolly", "orbit"):
                    clip = render_clip(replace(cfg, fov_x_deg=float(fovs[i % 3])))
                    clips.append((f"{name}{seed + i}{cfg.camera}", clip.frames, clip.labels["K"], clip.labels["c2w"]))
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_bytes(pickle.dumps(clips))
    return clips


def run_one(frames, K_true, c2w_true, K_given, cfg: SfmConfig) -> tuple[float, str]:
    start = time.perf_counter()
    try:
        result = SfmCamera(cfg).estimate(frames, K_given)
    except Exception as e:  # noqa: BLE001 - a rejection is a result here
        return time.perf_counter() - start, str(e)[:34]
    seconds = time.perf_counter() - start
    e = trajectory_errors(result.c2w, c2w_true)
    focal = result.K[0, 0, 0] / K_true[0, 0, 0] - 1
    return seconds, (f"rta {e['rta_max_deg']:5.2f} rre {e['rre_mean_deg']:.3f} ate {e['ate_percent_of_path']:.2f} "
                     f"f{focal:+.3f} {result.intrinsics_source}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--field", default="robust_function_tolerance", help="a float field of SfmConfig")
    parser.add_argument("--baseline", type=float, required=True)
    parser.add_argument("--value", type=float, help="default: the field's default")
    parser.add_argument("--cache", type=Path, default=ROOT / "bench_out" / "sfm_held_out_clips.pkl")
    args = parser.parse_args()
    value = getattr(SfmConfig(), args.field) if args.value is None else args.value
    configs = [SfmConfig(**{args.field: args.baseline}), SfmConfig(**{args.field: value})]
    clips = held_out_clips(args.cache)
    seconds: list[list[float]] = [[], []]
    print(f"{len(clips)} clips; columns: {args.field} {args.baseline:g} (baseline) | {value:g}")
    for name, frames, K, c2w in clips:
        for K_given in (K, None):
            cells = []
            for n, cfg in enumerate(configs):
                s, outcome = run_one(frames, K, c2w, K_given, cfg)
                seconds[n].append(s)
                cells.append(f"{s:5.1f} s {outcome}")
            print(f"{name:20s} {'K  ' if K_given is not None else 'noK'} | " + " | ".join(cells), flush=True)
    base, new = (np.array(v) for v in seconds)
    print(f"total {base.sum():.1f} -> {new.sum():.1f} s (ratio {new.sum() / base.sum():.2f}); "
          f"median {np.median(base):.2f} -> {np.median(new):.2f} s (ratio {np.median(new) / np.median(base):.2f})")


if __name__ == "__main__":
    main()
