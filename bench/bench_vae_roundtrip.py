"""VAE round trip of geometry-motion videos: how much depth and flow survive the video VAE.

For synthetic clips (exact labels; camera motions in turn, moving objects), build each
clip's gm video (`model.gm_video.encode_gm_video`), encode it with `AutoencoderKLCogVideoX`
and decode it (posterior mean; `--sample-posterior` for a training-like sample), then report
in label units: depth mean relative error on valid pixels, flow end-point error in pixels
on valid pixels, PSNR of the normalised video (all, depth, flow), and the seconds per round
trip.

Meaningful numbers need the real weights: `--vae DIR` loads a local CogVideoX VAE folder
(a diffusers `vae/` folder, or a model folder holding one), at the production clip size
49 x 480 x 720 by default, with tiling on a GPU. Without `--vae` the script runs the tiny
random-weight VAE of the CPU tests (plumbing check: its numbers are meaningless).

    .venv/bin/python bench/bench_vae_roundtrip.py [--vae DIR] [--size 49x480x720] [--clips 3]
        [--device auto] [--dtype bf16|fp32] [--sample-posterior] [--quick] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from model.encoders import load_vae, tiny_vae_config
from model.gm_video import vae_round_trip
from pipelines.synthetic import CAMERA_MOTIONS, SceneConfig, render_clip


def _load(vae_dir: str | None, height: int, width: int, device: torch.device, dtype: torch.dtype, tiling: bool):
    if vae_dir is None:
        from diffusers import AutoencoderKLCogVideoX

        torch.manual_seed(0)
        vae = AutoencoderKLCogVideoX(**tiny_vae_config(height, width))
        vae = vae if dtype == torch.float32 else vae.to(dtype=dtype)
    else:
        folder = Path(vae_dir)
        vae = load_vae(folder, subfolder=None if (folder / "config.json").exists() else "vae", torch_dtype=dtype)
    vae = vae.to(device).eval()
    if tiling:
        vae.enable_tiling()
    return vae


def _parse_size(text: str) -> tuple[int, int, int]:
    frames, height, width = (int(x) for x in text.lower().split("x"))
    if (frames - 1) % 4 or height % 8 or width % 8:
        raise argparse.ArgumentTypeError(f"size {text}: frames must be 1 + 4k, height and width multiples of 8")
    return frames, height, width


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vae", default=None, help="local CogVideoX VAE folder (vae/ or a model folder with vae/)")
    parser.add_argument("--size", type=_parse_size, default=None, help="TxHxW (default 49x480x720 with --vae, else 17x64x128)")
    parser.add_argument("--clips", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", choices=("bf16", "fp32"), default=None, help="default bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--tiling", action=argparse.BooleanOptionalAction, default=None, help="default: on with --vae")
    parser.add_argument("--sample-posterior", action="store_true", help="decode a posterior sample, not the mean")
    parser.add_argument("--quick", action="store_true", help="one clip, 9x64x128 without --vae")
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    args = parser.parse_args()

    real = args.vae is not None
    frames, height, width = args.size or ((49, 480, 720) if real else ((9, 64, 128) if args.quick else (17, 64, 128)))
    clips = 1 if args.quick else args.clips
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device)
    dtype_name = args.dtype or ("bf16" if device.type == "cuda" else "fp32")
    dtype = torch.bfloat16 if dtype_name == "bf16" else torch.float32
    tiling = real if args.tiling is None else args.tiling
    vae = _load(args.vae, height, width, device, dtype, tiling)

    what = f"VAE {args.vae}" if real else "tiny RANDOM-weight VAE: plumbing check only, these numbers are MEANINGLESS"
    print(f"{what}; clips {frames}x{height}x{width}, {device.type} {dtype_name}, tiling {tiling}, "
          f"{'posterior sample' if args.sample_posterior else 'posterior mean'}")  # fmt: skip
    rows = []
    generator = torch.Generator(device).manual_seed(0)
    for i in range(clips):
        camera = CAMERA_MOTIONS[i % len(CAMERA_MOTIONS)]
        clip = render_clip(SceneConfig(seed=i, height=height, width=width, num_frames=frames, camera=camera, num_moving=2))
        labels = {k: torch.from_numpy(clip.labels[k]) for k in ("depth", "depth_valid", "flow", "flow_valid")}
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        err = vae_round_trip(vae, *labels.values(), sample_posterior=args.sample_posterior, generator=generator)
        if device.type == "cuda":
            torch.cuda.synchronize()
        rows.append({"clip": i, "camera": camera, **err.to_dict(), "seconds": time.perf_counter() - start})

    print("| clip | camera | depth range | max flow px | depth abs rel | flow EPE px | PSNR dB | PSNR depth | PSNR flow | s |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        n = r["norm"]
        print(
            f"| {r['clip']} | {r['camera']} | {n['depth_min']:.2f}-{n['depth_max']:.2f} | {n['flow_max']:.2f} "
            f"| {r['depth_abs_rel']:.4f} | {r['flow_epe_px']:.3f} | {r['psnr_db']:.2f} | {r['psnr_depth_db']:.2f} "
            f"| {r['psnr_flow_db']:.2f} | {r['seconds']:.2f} |"
        )
    summary = {k: statistics.median(r[k] for r in rows) for k in ("depth_abs_rel", "flow_epe_px", "psnr_db", "seconds")}
    medians = ", ".join(f"{k} {v:.4g}" for k, v in summary.items())
    print(f"median: {medians}" + ("" if real else "  (meaningless: random weights)"))
    if args.out:
        report = {"vae": args.vae, "meaningful": real, "size": [frames, height, width], "rows": rows, "median": summary}
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
