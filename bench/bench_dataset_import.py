"""Import benchmark: `worldreel import` throughput beside labeling of the same clips, and the
unknown-motion choice measured.

1. The same synthetic scenes are written twice: as Kubric MOVi scene folders
   (tests/pipelines/kubric_writer.py, kubric's own file formats) and as videos plus a manifest.
   Importing the scene folders (`pipelines.dataset_import.import_tasks`, what each Ray worker
   runs) and labeling the videos (`pipelines.labeling.label_clips`, weight-free labelers) run in
   this one process: clips/min and MB/s of input read, and the ratio.
2. `unknown_motion`: the Kubric scenes read as a set without dense motion (no flow, no object
   poses, only masks of the movers, like PointOdyssey or BEDLAM): share of moving pixels with
   valid flow, and their end-point error against the exact flow, for "invalid" and "estimate"
   (DIS flow labeler), with the seconds per clip of each.

    python bench/bench_dataset_import.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "pipelines"))

from kubric_writer import NoDenseMotion, write_kubric_scene  # noqa: E402
from pipelines.dataset_import import ImportConfig, build_estimator, import_tasks, import_window, plan_imports  # noqa: E402
from pipelines.datasets import list_sequences  # noqa: E402
from pipelines.labeling import LabelConfig, label_clips  # noqa: E402
from pipelines.manifests import read_manifest  # noqa: E402
from pipelines.synthetic import SceneConfig  # noqa: E402
from pipelines.synthetic_set import write_synthetic_set  # noqa: E402
from storage import LabelStore  # noqa: E402


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def write_sets(root: Path, n: int, height: int, width: int, frames: int) -> tuple[Path, Path, dict]:
    configs = [SceneConfig(seed=20 + i, height=height, width=width, num_frames=frames, fps=12.0,
                           camera=("orbit", "dolly")[i % 2], num_moving=1 + i % 2) for i in range(n)]
    fixtures = {}

    def on_render(row, clip) -> None:
        name = f"scene_{clip.config.seed:03d}"
        fixtures[name] = write_kubric_scene(root / "movi" / name, clip.config, clip)

    write_synthetic_set(root / "videos", configs, on_render=on_render)
    return root / "movi", root / "videos" / "manifest.csv", fixtures


def throughput(movi: Path, manifest: Path, work: Path, height: int, width: int, frames: int) -> None:
    cfg = ImportConfig(format="kubric-movi", root=str(movi), store=str(work / "imported.zarr"), height=height,
                       width=width, num_frames=frames, stride=4, fps=None)
    tasks = plan_imports(cfg)
    start = time.perf_counter()
    store = LabelStore.create(cfg.store)
    outcomes = import_tasks(tasks, cfg, store)
    import_s = time.perf_counter() - start
    stored_mb = sum(r["nbytes"] for r in store.index().to_pylist()) / 1e6
    assert all(o.status == "accepted" for o in outcomes), [o.reasons for o in outcomes]
    import_mb = _folder_bytes(movi) / 1e6

    specs = read_manifest(manifest, fps_target=None).specs
    label_cfg = LabelConfig(height=height, width=width, num_frames=frames, stride=4)
    start = time.perf_counter()
    labelled = label_clips(specs, label_cfg, LabelStore.create(work / "labelled.zarr"))
    label_s = time.perf_counter() - start
    video_mb = sum(Path(s.uri).stat().st_size for s in specs) / 1e6
    accepted = sum(o.status == "accepted" for o in labelled)

    n = len(tasks)
    print(f"\n== throughput, {n} clips of {frames} frames at {height}x{width} (one process)")
    print(f"{'path':<10}{'s/clip':>9}{'clips/min':>11}{'MB/s in':>9}")
    print(f"{'import':<10}{import_s / n:>9.3f}{n / import_s * 60:>11.1f}{import_mb / import_s:>9.2f}")
    print(f"{'label':<10}{label_s / len(specs):>9.3f}{len(specs) / label_s * 60:>11.1f}{video_mb / label_s:>9.2f}"
          f"   ({accepted}/{len(specs)} accepted by the quality gates)")
    for o in labelled:
        if o.status != "accepted":
            print(f"  label rejected {o.clip_id}: {'; '.join(o.reasons)[:160]}")
    print(f"import is {label_s / import_s:.1f}x faster than labeling per clip; input {import_mb / n:.2f} MB/clip "
          f"(scene folders), label store {stored_mb / n:.2f} MB/clip (float16)")


def unknown_motion(movi: Path, fixtures: dict, work: Path, height: int, width: int, frames: int) -> None:
    cfg = ImportConfig(format="kubric-movi", root=str(movi), store=str(work / "unused.zarr"), height=height,
                       width=width, num_frames=frames, stride=4, fps=None)
    rows = {}
    for mode in ("invalid", "estimate"):
        mode_cfg = ImportConfig(**{**cfg.to_dict(), "unknown_motion": mode})
        estimator = build_estimator(mode_cfg)
        coverage, errors, static_errors, seconds = [], [], [], []
        for name, fixture in fixtures.items():
            if not fixture.movers:
                continue
            (reader,) = list_sequences("kubric-movi", movi, None, [name])
            no_motion = NoDenseMotion(reader, fixture.movers)
            start = time.perf_counter()
            arrays, _ = import_window(no_motion, list(range(frames)), mode_cfg, estimator)
            seconds.append(time.perf_counter() - start)
            gt = fixture.clip.labels
            moving = np.stack([no_motion.read_dynamic_mask(t) for t in range(frames - 1)]) & gt["flow_valid"]
            valid = arrays["flow_valid"]
            coverage.append((valid & moving).sum() / max(moving.sum(), 1))
            epe = np.linalg.norm(arrays["flow"] - gt["flow"], axis=-1)
            errors.append(epe[valid & moving])
            static_errors.append(epe[valid & ~moving & gt["flow_valid"]])
        err = np.concatenate(errors) if errors else np.zeros(0)
        static = np.concatenate(static_errors)
        rows[mode] = (statistics.mean(coverage), err, static, statistics.median(seconds))
    print(f"\n== unknown motion: moving pixels of sets without dense motion ({len(fixtures)} scenes, {frames} frames, "
          f"{height}x{width})")
    print(f"{'mode':<10}{'moving valid':>13}{'EPE med':>9}{'EPE p90':>9}{'>1px':>7}{'static EPE max':>16}{'s/clip':>8}")
    for mode, (cov, err, static, s) in rows.items():
        med = f"{np.median(err):.2f}" if err.size else "-"
        p90 = f"{np.percentile(err, 90):.2f}" if err.size else "-"
        over = f"{(err > 1).mean():.2f}" if err.size else "-"
        print(f"{mode:<10}{cov:>13.2f}{med:>9}{p90:>9}{over:>7}{static.max():>16.4f}{s:>8.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    args = parser.parse_args()
    n, (height, width), frames = (2, (64, 96), 9) if args.quick else (4, (192, 256), 17)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        movi, manifest, fixtures = write_sets(work, n, height, width, frames)
        throughput(movi, manifest, work, height, width, frames)
        unknown_motion(movi, fixtures, work, height, width, frames)


if __name__ == "__main__":
    main()
