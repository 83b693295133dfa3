"""Label-store benchmark: bytes per clip and write/read MB/s per codec and resolution.

Data: a rendered synthetic clip (exact labels), the same labels with labeler-like noise
(pseudo-labels: flow noise, depth noise, ragged validity), and the exact labels with the
flows, their validity and uncertainty from the DIS labeler (`dis`: real labeler noise, which
is smooth, unlike the white noise of `pseudo`), T = 49 frames by default. float16
blosc-zstd is also measured with the store's `compact` mantissa rounding. MB/s
counts the raw (uncompressed, stored-dtype) bytes of the arrays. Each number is the median
of `--repeats` commits / reads, in this process.

    python bench/bench_storage.py [--quick]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipelines.synthetic import SceneConfig, render_clip  # noqa: E402
from pipelines.synthetic_set import synthetic_attrs  # noqa: E402
from storage import STORED_FIELDS, LabelStore  # noqa: E402
from storage.store import CODECS  # noqa: E402
from labelers.dis_flow import DisFlow  # noqa: E402
from labelers.flow import compute_pair_flows, consecutive_pairs, key_frame_pairs  # noqa: E402


def dis_labels(arrays: dict, frames: np.ndarray, stride: int) -> dict:
    """Exact labels with the flow fields of the weight-free DIS labeler."""
    out = dict(arrays)
    T = len(frames)
    flows = compute_pair_flows(DisFlow(), frames, consecutive_pairs(T) + key_frame_pairs(T, stride))
    out["flow"], out["flow_valid"] = flows.flow_fwd_px[: T - 1], flows.valid_fwd[: T - 1]
    out["flow_uncertainty"] = flows.uncertainty_fwd_px[: T - 1]
    out["key_flow"], out["key_flow_valid"] = flows.flow_fwd_px[T - 1 :], flows.valid_fwd[T - 1 :]
    out["scene_flow_valid"] = out["scene_flow_valid"] & out["key_flow_valid"]
    return out


def pseudo_label(arrays: dict, seed: int = 0) -> dict:
    """Labels as a labeler would give them: noisy values and ragged validity."""
    rng = np.random.default_rng(seed)
    out = {k: np.array(v, copy=True) for k, v in arrays.items()}
    out["depth"] = out["depth"] * (1 + rng.normal(0, 0.01, out["depth"].shape)).astype(np.float32)
    out["depth_valid"] &= rng.random(out["depth_valid"].shape) > 0.15
    out["flow"] = out["flow"] + rng.normal(0, 0.2, out["flow"].shape).astype(np.float32)
    out["flow_valid"] &= rng.random(out["flow_valid"].shape) > 0.1
    out["flow_uncertainty"] = np.abs(rng.normal(0.3, 0.2, out["flow_uncertainty"].shape)).astype(np.float32)
    out["key_flow"] = out["key_flow"] + rng.normal(0, 0.4, out["key_flow"].shape).astype(np.float32)
    out["scene_flow"] = out["scene_flow"] + rng.normal(0, 0.005, out["scene_flow"].shape).astype(np.float32)
    out["scene_flow"][~out["dynamic_mask"][:-1]] = 0
    return out


def measure(arrays: dict, attrs: dict, codec: str, precision: str, repeats: int, rounding: str = "none") -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_storage_"))
    try:
        store = LabelStore.create(tmp / "s.zarr", precision=precision, codec=codec, rounding=rounding)
        write_s, read_s, nbytes = [], [], 0
        for r in range(repeats):
            t0 = time.perf_counter()
            result = store.commit(f"clip-{r}", arrays, attrs)
            write_s.append(time.perf_counter() - t0)
            nbytes = result.nbytes
            t0 = time.perf_counter()
            store.read(f"clip-{r}", fields=list(STORED_FIELDS))
            read_s.append(time.perf_counter() - t0)
        raw = sum(np.asarray(store.read("clip-0", fields=[f])[f]).nbytes for f in STORED_FIELDS)
        return {
            "bytes": nbytes,
            "ratio": raw / nbytes,
            "write_mb_s": raw / 1e6 / statistics.median(write_s),
            "read_mb_s": raw / 1e6 / statistics.median(read_s),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T=17 and 2 repeats (a smoke run)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    frames = 17 if args.quick else 49
    repeats = 2 if args.quick else args.repeats
    print(f"label store benchmark: T={frames}, median of {repeats} commits/reads per cell")
    print(f"{'size':>8} {'labels':>7} {'precision':>9} {'codec':>10} {'rounding':>8} {'MB/clip':>8} {'ratio':>6} "
          f"{'write MB/s':>10} {'read MB/s':>9}")
    for height, width in ((240, 360), (480, 720)):
        t0 = time.perf_counter()
        clip = render_clip(SceneConfig(seed=1, height=height, width=width, num_frames=frames, camera="orbit"))
        print(f"# rendered {height}x{width} clip in {time.perf_counter() - t0:.1f} s")
        exact = {k: clip.labels[k] for k in STORED_FIELDS}
        attrs = synthetic_attrs(clip, "bench://clip")
        kinds = [("exact", exact), ("pseudo", pseudo_label(exact)), ("dis", dis_labels(exact, clip.frames, 4))]
        for kind, arrays in kinds:
            for precision in ("float16", "float32"):
                for codec in CODECS:
                    if precision == "float32" and codec not in ("blosc-zstd", "none"):
                        continue
                    roundings = ("none", "compact") if (precision, codec) == ("float16", "blosc-zstd") else ("none",)
                    for rounding in roundings:
                        m = measure(arrays, attrs, codec, precision, repeats, rounding)
                        print(
                            f"{height}x{width:<4} {kind:>7} {precision:>9} {codec:>10} {rounding:>8} "
                            f"{m['bytes'] / 1e6:8.2f} {m['ratio']:6.2f} {m['write_mb_s']:10.0f} {m['read_mb_s']:9.0f}",
                            flush=True,
                        )


if __name__ == "__main__":
    main()
