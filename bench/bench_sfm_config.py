"""SfM time and camera errors: one `SfmConfig` field at its default against a baseline value, same process.

Held-out clips of the moving-camera scene classes (`pipelines.synthetic_set.class_configs`),
seeds 40-42 (fields of view 50, 65, 80) and 50-52 (55, 70, 85), 240x360, T = 17; each clip
with and without its true intrinsics. Per clip and setting: `SfmCamera.estimate` seconds, and
for accepted clips RTA max, RRE mean, ATE (% of path) and the focal's relative error; then
the total and median seconds and their ratio to the baseline.

    python bench/bench_sfm_config.py --field robust_function_tolerance --baseline 1e-9
    python bench/bench_sfm_config.py --field min_tri_angle_deg --baseline 0.1 [--value V] [--cache FILE] [--rendered]
    python bench/bench_sfm_config.py --quick     # `make bench`: the first 3 clips, with the quick cache

`--value` defaults to the field's default; `--baseline` to the alternative measured for the field
(`BASELINES`). `--quick` makes and labels only the first 3 clips (cached apart from the full set).

The clips are written as MP4 and decoded as the pipeline decodes them (`--rendered`: the
rendered frames, which hid a 32 deg camera error in session 10). Making the 27 clips the first
time takes about 10 minutes on 2 busy cores (cached in `--cache`); the labelling about 7 minutes.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from labelers.camera import trajectory_errors  # noqa: E402
from labelers.sfm import SfmCamera, SfmConfig  # noqa: E402
from pipelines.decode import DecodeConfig, decode_clip  # noqa: E402
from pipelines.manifests import read_manifest  # noqa: E402
from pipelines.synthetic_set import class_configs, write_synthetic_set  # noqa: E402

SEEDS_AND_FOVS = ((40, (50, 65, 80)), (50, (55, 70, 85)))
CLASSES = ("room", "open_sky", "textureless", "repeated", "degraded")
# the values each field's default was measured against (docs/benchmarks.md, sessions 10 and 11)
BASELINES = {"robust_function_tolerance": 1e-9, "min_tri_angle_deg": 0.1}
QUICK_CLIPS = 3


def held_out_clips(
    cache: Path, decoded: bool = True, limit: int | None = None
) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(name, frames, K, c2w) of the moving-camera clips, made once into `cache`: written as MP4
    videos and decoded as the pipeline decodes them (the codec's noise turned a repeated-texture
    dolly's cameras 32 deg where the rendered frames gave 0.1 deg), or the rendered frames."""
    if cache.exists():
        return pickle.loads(cache.read_bytes())
    clips = []
    groups = [(name, seed, fovs) for seed, fovs in SEEDS_AND_FOVS for name in CLASSES]
    with tempfile.TemporaryDirectory() as tmp:
        for name, seed, fovs in groups:
            if limit is not None and len(clips) >= limit:
                break
            configs = [replace(cfg, fov_x_deg=float(fovs[i % 3]))
                       for i, cfg in enumerate(class_configs(name, 3, 240, 360, seed, 17, 8.0))]
            configs = [cfg for cfg in configs if cfg.camera in ("dolly", "orbit")]
            rendered = []
            root = Path(tmp) / f"{name}{seed}"
            write_synthetic_set(root, configs, on_render=lambda row, clip: rendered.append(clip))
            specs = read_manifest(root / "manifest.csv", fps_target=None).specs
            for cfg, clip, spec in zip(configs, rendered, specs):
                frames = decode_clip(spec, DecodeConfig(17, 240, 360, 1)).frames if decoded else clip.frames
                clips.append((f"{name}{cfg.seed}{cfg.camera}", frames, clip.labels["K"], clip.labels["c2w"]))
    clips = clips[:limit]
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
    parser.add_argument("--baseline", type=float, help="default: BASELINES[field]")
    parser.add_argument("--value", type=float, help="default: the field's default")
    parser.add_argument("--cache", type=Path, help="default: bench_out/sfm_held_out_clips_{decoded,rendered}.pkl")
    parser.add_argument("--rendered", action="store_true", help="the rendered frames, not decoded from MP4")
    parser.add_argument("--quick", action="store_true", help=f"the first {QUICK_CLIPS} clips only (a smoke run)")
    args = parser.parse_args()
    if args.baseline is None:
        if args.field not in BASELINES:
            parser.error(f"--baseline is needed for {args.field} (defaults exist for {', '.join(BASELINES)})")
        args.baseline = BASELINES[args.field]
    value = getattr(SfmConfig(), args.field) if args.value is None else args.value
    configs = [SfmConfig(**{args.field: args.baseline}), SfmConfig(**{args.field: value})]
    # the frames' origin is in the name, so an older cache of rendered frames is never read as decoded
    origin = "rendered" if args.rendered else "decoded"
    cache = args.cache or ROOT / "bench_out" / f"sfm_held_out_clips_{origin}{'_quick' if args.quick else ''}.pkl"
    clips = held_out_clips(cache, decoded=not args.rendered, limit=QUICK_CLIPS if args.quick else None)
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
