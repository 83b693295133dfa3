"""Import benchmark: `worldreel import` throughput of each data set beside labeling of the same clips,
and the unknown-motion choice measured.

1. The same synthetic scenes (`pipelines.synthetic`) are written in all five layouts by the test
   writers, which follow the upstream writers (tests/pipelines/writers_po_dr.py,
   writers_omni_bedlam.py, kubric_writer.py), and as videos plus a manifest. Each set is imported
   clip by clip (`pipelines.dataset_import.import_tasks` on one task: what a Ray worker runs,
   sequence listing included); the videos are labeled with the weight-free labelers
   (`pipelines.labeling.label_and_commit`), in this one process. Per clip: seconds, and bytes
   read (`/proc/self/io` rchar: every read() of the process, so the files the reader opens, on a
   warm page cache); medians over clips give clips/min and MB/s, and import speed over labeling
   speed. One clip of each path is imported or labeled once before, untimed, so module loading
   counts neither as time nor as bytes read.
2. `unknown_motion`: the Kubric scenes read as a set without dense motion (no flow, no object
   poses, only masks of the movers, like PointOdyssey or BEDLAM): share of moving pixels with
   valid flow, and their end-point error against the exact flow, for "invalid" and "estimate"
   (DIS flow labeler), with the seconds per clip of each.

    python bench/bench_dataset_import.py [--quick] [--scenes N] [--size HxW] [--frames T]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "pipelines"))

from common import image_size  # noqa: E402
from kubric_writer import KubricFixture, NoDenseMotion, write_kubric_scene  # noqa: E402
from writers_omni_bedlam import write_bedlam_scene, write_omniworld_scene  # noqa: E402
from writers_po_dr import (  # noqa: E402
    object_motions, world_from_first, write_dynamic_replica, write_index, write_pointodyssey,
)

from pipelines.dataset_import import (  # noqa: E402
    ImportConfig, build_estimator, import_tasks, import_window, plan_imports,
)
from pipelines.datasets import list_sequences  # noqa: E402
from pipelines.labeling import LabelConfig, build_backends, label_and_commit  # noqa: E402
from pipelines.manifests import read_manifest  # noqa: E402
from pipelines.synthetic import SceneConfig, SyntheticClip, render_clip  # noqa: E402
from pipelines.synthetic_set import write_synthetic_set  # noqa: E402
from storage import LabelStore  # noqa: E402

STRIDE = 4
# format -> (folder under the work dir, reader options)
SETS = {
    "pointodyssey": ("po", []),
    "dynamic-replica": ("dr", []),
    "omniworld-game": ("omni", []),
    "bedlam": ("bedlam", ["depth_type=z"]),  # BEDLAM's depth type is an option (not settled upstream)
    "kubric-movi": ("movi", []),
}


def _bytes_read() -> int:
    """Bytes this process has read through read() so far (Linux)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no rchar")


def _folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def pick_scenes(n: int, height: int, width: int, frames: int) -> list[SceneConfig]:
    """`n` scenes whose movers stay in view every frame (the PointOdyssey and Dynamic Replica writers
    recover each mover's motion from its pixels), alternating orbit and dolly cameras."""
    configs = []
    for seed in range(20, 20 + 20 * n):
        cfg = SceneConfig(seed=seed, height=height, width=width, num_frames=frames, stride=1, fps=12.0,
                          num_static=2, num_moving=2, camera=("orbit", "dolly")[len(configs) % 2])
        try:
            object_motions(render_clip(cfg))
        except ValueError:
            continue
        configs.append(cfg)
        if len(configs) == n:
            return configs
    raise RuntimeError(f"found only {len(configs)} usable scenes of {n} at {height}x{width}")


def write_sets(work: Path, configs: list[SceneConfig]) -> tuple[Path, dict[str, KubricFixture]]:
    """Every scene in the five layouts and as a video; returns the manifest and the Kubric fixtures."""
    kubric: dict[str, KubricFixture] = {}
    dr_entries: list[dict] = []

    def on_render(row, clip: SyntheticClip) -> None:
        cfg = clip.config
        name = f"scene_{cfg.seed:03d}"
        write_pointodyssey(work / "po" / "train" / name, clip, world_from_first(cfg.seed))
        entries, _ = write_dynamic_replica(work / "dr" / "valid", name, clip, world_from_first(cfg.seed + 1))
        dr_entries.extend(entries)
        write_omniworld_scene(work / "omni" / f"{cfg.seed:012d}", cfg, [list(range(cfg.num_frames))], seed=cfg.seed)
        write_bedlam_scene(work / "bedlam" / f"20230101_1_250_{name}", cfg, seed=cfg.seed)
        kubric[name] = write_kubric_scene(work / "movi" / name, cfg, clip)

    write_synthetic_set(work / "videos", configs, on_render=on_render)
    write_index(work / "dr" / "valid", "valid", dr_entries)
    return work / "videos" / "manifest.csv", kubric


@dataclass
class Run:
    """Per-clip seconds and bytes read of one path (import of one set, or labeling)."""

    seconds: list[float]
    bytes_read: list[int]
    accepted: int
    on_disk: float  # MB of input per clip as stored (set files, or video)

    @property
    def s_per_clip(self) -> float:
        return statistics.median(self.seconds)

    @property
    def mb_per_s(self) -> float:
        return statistics.median(b / 1e6 / s for b, s in zip(self.bytes_read, self.seconds))


def import_set(fmt: str, work: Path, height: int, width: int, frames: int) -> Run:
    folder, options = SETS[fmt]
    cfg = ImportConfig(format=fmt, root=str(work / folder), store=str(work / f"{folder}.zarr"), height=height,
                       width=width, num_frames=frames, stride=STRIDE, fps=None, dataset_options=options or None)
    tasks = plan_imports(cfg)
    # warm-up: the first clip loads the reader's modules (their files would count as read)
    import_tasks(tasks[:1], replace(cfg, store=cfg.store + ".warmup"), LabelStore.create(cfg.store + ".warmup"))
    store = LabelStore.create(cfg.store)
    seconds, read, accepted = [], [], 0
    for task in tasks:
        before, start = _bytes_read(), time.perf_counter()
        (outcome,) = import_tasks([task], cfg, store)
        seconds.append(time.perf_counter() - start)
        read.append(_bytes_read() - before)
        accepted += outcome.status == "accepted"
        if outcome.status != "accepted":
            print(f"  {fmt} rejected {outcome.clip_id}: {'; '.join(outcome.reasons)[:200]}")
    return Run(seconds, read, accepted, _folder_bytes(work / folder) / 1e6 / len(tasks))


def label_videos(manifest: Path, work: Path, height: int, width: int, frames: int) -> Run:
    specs = read_manifest(manifest, fps_target=None).specs
    cfg = LabelConfig(height=height, width=width, num_frames=frames, stride=STRIDE)
    backends = build_backends(cfg)
    label_and_commit(specs[0], cfg, LabelStore.create(work / "warmup.zarr"), backends)  # warm-up, as for imports
    store = LabelStore.create(work / "labelled.zarr")
    seconds, read, accepted = [], [], 0
    for spec in specs:
        before, start = _bytes_read(), time.perf_counter()
        outcome = label_and_commit(spec, cfg, store, backends)
        seconds.append(time.perf_counter() - start)
        read.append(_bytes_read() - before)
        accepted += outcome.status == "accepted"
        if outcome.status != "accepted":
            print(f"  label rejected {outcome.clip_id}: {'; '.join(outcome.reasons)[:200]}")
    return Run(seconds, read, accepted, sum(Path(s.uri).stat().st_size for s in specs) / 1e6 / len(specs))


def throughput(manifest: Path, work: Path, n: int, height: int, width: int, frames: int) -> None:
    runs = {fmt: import_set(fmt, work, height, width, frames) for fmt in SETS}
    label = label_videos(manifest, work, height, width, frames)
    print(f"\n== throughput, {n} clips per set of {frames} frames at {height}x{width} "
          "(one process, medians over clips)")
    print("| path | accepted | s/clip | clips/min | MB read/clip | MB/s read | input MB/clip | speed vs labeling |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, run in [*runs.items(), ("label (videos)", label)]:
        speedup = label.s_per_clip / run.s_per_clip
        print(f"| {name} | {run.accepted}/{len(run.seconds)} | {run.s_per_clip:.2f} | {60 / run.s_per_clip:.1f} "
              f"| {statistics.median(run.bytes_read) / 1e6:.1f} | {run.mb_per_s:.2f} | {run.on_disk:.1f} "
              f"| {speedup:.1f} |")


def unknown_motion(fixtures: dict[str, KubricFixture], work: Path, height: int, width: int, frames: int) -> None:
    cfg = ImportConfig(format="kubric-movi", root=str(work / "movi"), store=str(work / "unused.zarr"), height=height,
                       width=width, num_frames=frames, stride=STRIDE, fps=None)
    rows = {}
    for mode in ("invalid", "estimate"):
        mode_cfg = replace(cfg, unknown_motion=mode)
        estimator = build_estimator(mode_cfg)
        coverage, errors, static_errors, seconds = [], [], [], []
        for name, fixture in fixtures.items():
            if not fixture.movers:
                continue
            (reader,) = list_sequences("kubric-movi", work / "movi", None, [name])
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
        rows[mode] = (statistics.mean(coverage), np.concatenate(errors), np.concatenate(static_errors),
                      statistics.median(seconds))
    print(f"\n== unknown motion: moving pixels of sets without dense motion ({len(fixtures)} scenes, {frames} frames, "
          f"{height}x{width})")
    print("| mode | moving valid | EPE med | EPE p90 | > 1 px | static EPE max | s/clip |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for mode, (cov, err, static, s) in rows.items():
        med = f"{np.median(err):.2f}" if err.size else "-"
        p90 = f"{np.percentile(err, 90):.2f}" if err.size else "-"
        over = f"{(err > 1).mean():.2f}" if err.size else "-"
        print(f"| {mode} | {cov:.2f} | {med} | {p90} | {over} | {static.max():.4f} | {s:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (seconds)")
    parser.add_argument("--scenes", type=int, default=4, help="clips per set")
    parser.add_argument("--size", type=image_size, default=(144, 256), help="HxW, 16:9 (BEDLAM's sensor)")
    parser.add_argument("--frames", type=int, default=17, help="frames per clip (T - 1 a multiple of 4)")
    args = parser.parse_args()
    n, (height, width), frames = (1, (36, 64), 5) if args.quick else (args.scenes, args.size, args.frames)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        start = time.perf_counter()
        manifest, fixtures = write_sets(work, pick_scenes(n, height, width, frames))
        print(f"fixtures written in {time.perf_counter() - start:.1f} s")
        throughput(manifest, work, n, height, width, frames)
        unknown_motion(fixtures, work, height, width, frames)


if __name__ == "__main__":
    main()
