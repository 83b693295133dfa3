"""Training step time of the WorldReel model.

1. CPU, tiny config: end-to-end `model.train.Trainer` steps (decode + VAE encode + DiT
   + DPT head + losses + AdamW) on a small synthetic label store, for stages 1a, 1b and 2;
   median step time over the steps after two warm-up steps, and stage ratios.
2. CUDA (when available): one training step of the full-size CogVideoX-5B-I2V architecture
   widened for geometry-motion latents (48 in / 32 out channels) with random weights, bf16
   parameters and autocast, gradient checkpointing, latents of a 49 x 480 x 720 clip
   (13 x 60 x 90 x 16 per stream, 226 text tokens), fused AdamW; stage 1a (DiT only) and
   stage 2 (DiT + temporal DPT head at 480 x 720 + every loss and regulariser). Frozen
   encoders (VAE, T5) are not included: with cached latents they are not in the step.
   Reported: median step time and peak memory. Anchor: ~8 s/step for 5B-I2V SFT on an H100
   (CogVideo SAT; reference/training_anchors.md). `--full-config tiny` runs the same code
   path at tiny size (also on CPU) to check it.
3. Data loader (`bench_loader`): samples/s of `LabelClipDataset` + the trainer's DataLoader
   (decode RGB from the source video, read labels, build the gm video; or, with a latent
   cache, frame 0 and labels only) against the tiny training step on a ready batch, in the
   same process, as "loader is N x faster than the step", for num_workers 0 and 2; then
   (not with --quick) the same loader at 49 x 480 x 720 against the 5B-I2V step anchor.

    .venv/bin/python bench/bench_model.py [--quick] [--steps 8] [--threads 1] [--skip-cpu] [--skip-loader]
        [--loader-samples 24] [--loader-workers 0 2] [--full-steps 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from model.dit import COGVIDEOX_5B_I2V_CONFIG, GeoMotionDiT, GMAugmentationConfig, tiny_transformer_config
from model.dpt_head import DPTHeadConfig, TemporalDPTHead
from model.losses import (
    DPTTargets,
    LossWeights,
    cogvideox_scheduler,
    diffusion_loss,
    dpt_losses,
    noisy_latents_and_target,
    stage2_regularisers,
)

WARMUP_STEPS = 2


def _write_store(root: Path, clips: int, height: int, width: int, frames: int) -> str:
    from pipelines.synthetic_set import scene_configs, write_synthetic_set
    from storage import LabelStore

    store = LabelStore.create(root / "store", precision="float32")
    write_synthetic_set(root / "set", scene_configs(clips, height, width, seed=0, num_frames=frames), store)
    return str(root / "store")


def bench_cpu_tiny(steps: int, height: int, width: int, frames: int) -> dict:
    from model.train import TrainConfig, Trainer

    results, cpu_results = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = _write_store(root, 2, height, width, frames)
        for stage in ("1a", "1b", "2"):
            cfg = TrainConfig(
                config="tiny",
                stage=stage,
                stores=[store],
                output_dir=str(root / f"run_{stage}"),
                steps=steps,
                save_every=10**9,
                device="cpu",
                resume=False,
            )
            trainer = Trainer(cfg)
            trainer.save = lambda: None  # time steps, not checkpoint writes
            batches = trainer._batches()
            times, cpu_times = [], []
            while trainer.step < steps:
                start, cpu_start = time.perf_counter(), time.process_time()
                trainer.train_step(next(batches))
                times.append(time.perf_counter() - start)
                cpu_times.append(time.process_time() - cpu_start)
            # the first steps pay one-off oneDNN kernel set-up for every new shape
            keep = slice(WARMUP_STEPS, None) if len(times) > WARMUP_STEPS else slice(-1, None)
            results[stage] = statistics.median(times[keep])
            cpu_results[stage] = statistics.median(cpu_times[keep])
    return {
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "clip": f"{frames}x{height}x{width}",
        "median_step_s": results,
        # process CPU seconds (all threads): steadier than wall time on a shared machine
        "median_step_cpu_s": cpu_results,
        "ratio_2_over_1a": results["2"] / results["1a"],
        "ratio_1b_over_1a": results["1b"] / results["1a"],
        "cpu_ratio_2_over_1a": cpu_results["2"] / cpu_results["1a"],
    }


def _loader_samples_per_s(trainer, samples: int) -> float:
    """Steady-state samples/s of the trainer's own data loader (`Trainer._batches`), nothing else."""
    batches = trainer._batches()
    next(batches)  # starts the workers and pays one-off set-up
    start = time.perf_counter()
    for _ in range(samples):
        next(batches)
    elapsed = time.perf_counter() - start
    del batches  # shuts the workers down
    return samples * trainer.cfg.batch_size / elapsed


def bench_loader(
    steps: int, samples: int, workers: list[int], height: int, width: int, frames: int, clips: int = 4, stage: str = "1a"
) -> list[dict]:
    """Data pipeline throughput against the training step, in one process, for both data paths.

    Loader: `LabelClipDataset` + the trainer's DataLoader (`num_workers` as given): online, it
    decodes the clip's RGB frames from the source video, reads the labels and builds the gm
    video; with a latent cache it decodes frame 0 only and reads the labels. Step: the median
    `train_step` on a ready batch (VAE encoding, DiT, losses, AdamW; no loading) of the same
    path, stage `stage` (1a, the cheapest step, is the strictest comparison). The ratio
    "loader x" = step seconds per sample * loader samples/s: above 1 the loader keeps up with
    the step even without overlap (num_workers 0 loads in line with the steps).
    """
    from model.train import TrainConfig, Trainer

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = _write_store(root, clips, height, width, frames)
        for path in ("videos", "latent cache"):
            step_s = None
            for n_workers in workers:
                cfg = TrainConfig(
                    config="tiny",
                    stage=stage,
                    stores=[store],
                    output_dir=str(root / "run"),
                    latent_cache=str(root / "cache") if path == "latent cache" else None,
                    steps=10**9,
                    device="cpu",
                    resume=False,
                    num_workers=n_workers,
                )
                trainer = Trainer(cfg)
                if step_s is None:  # the step does not depend on the loader's workers
                    batch = next(trainer._batches())
                    times = []
                    for _ in range(steps):
                        start = time.perf_counter()
                        trainer.train_step(batch)
                        times.append(time.perf_counter() - start)
                    step_s = statistics.median(times[WARMUP_STEPS:] if len(times) > WARMUP_STEPS else times)
                loader = _loader_samples_per_s(trainer, samples)
                rows.append(
                    {
                        "path": path,
                        "num_workers": n_workers,
                        "loader_samples_per_s": loader,
                        f"step_{stage}_s_per_sample": step_s / cfg.batch_size,
                        "loader_x_faster_than_step": loader * step_s / cfg.batch_size,
                    }
                )
    return rows


def bench_loader_full_size(samples: int, workers: list[int], frames: int = 49, height: int = 480, width: int = 720) -> list[dict]:
    """The trainer's dataset, sampler and collation (batch 1) at the production clip size,
    against the full model's step.

    The tiny step is no yardstick at this size; the comparison is the 5B-I2V anchor of
    ~8 s per step at batch 1 on an H100 (CogVideo SAT), or 4 s per sample, the derived
    target (reference/training_anchors.md), per GPU, each GPU with its own loader.
    """
    from torch.utils.data import DataLoader

    from model.data import LabelClipDataset, MixtureSampler, collate_samples

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        store = _write_store(Path(tmp), 1, height, width, frames)  # rendering one costs ~45 s
        for path, load_videos in (("videos", True), ("latent cache", False)):
            dataset = LabelClipDataset([store], load_videos=load_videos)
            for n_workers in workers:
                loader = DataLoader(
                    dataset,
                    batch_size=1,
                    sampler=MixtureSampler(dataset, seed=0),
                    collate_fn=collate_samples,
                    num_workers=n_workers,
                )
                batches = iter(loader)
                next(batches)
                start = time.perf_counter()
                for _ in range(samples):
                    next(batches)
                sps = samples / (time.perf_counter() - start)
                del batches
                rows.append(
                    {
                        "path": path,
                        "num_workers": n_workers,
                        "loader_samples_per_s": sps,
                        "loader_x_faster_than_8s_step": sps * 8.0,
                        "loader_x_faster_than_4s_target": sps * 4.0,
                    }
                )
    return rows


def _loader_table(rows: list[dict], clip: str, stage: str) -> str:
    lines = [
        f"data loader vs tiny training step (clip {clip}, stage {stage} step on a ready batch, "
        f"{torch.get_num_threads()} torch thread(s))",
        "| path | workers | loader samples/s | step s/sample | loader is N x faster than the step |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        step = r[f"step_{stage}_s_per_sample"]
        lines.append(
            f"| {r['path']} | {r['num_workers']} | {r['loader_samples_per_s']:.1f} | {step:.3f} "
            f"| {r['loader_x_faster_than_step']:.1f} |"
        )
    return "\n".join(lines)


def _full_size_loader_table(rows: list[dict], clip: str) -> str:
    lines = [
        f"data loader at {clip} vs the 5B-I2V step per GPU ({torch.get_num_threads()} torch thread(s) per process)",
        "| path | workers | loader samples/s | x faster than 8 s/step (H100 anchor) | x faster than 4 s/sample (target) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['path']} | {r['num_workers']} | {r['loader_samples_per_s']:.2f} | {r['loader_x_faster_than_8s_step']:.1f} "
            f"| {r['loader_x_faster_than_4s_target']:.1f} |"
        )
    return "\n".join(lines)


def _synthetic_targets(B: int, S: int, H: int, W: int, device: torch.device) -> DPTTargets:
    depth = 2.0 + torch.rand(B, S, H, W, device=device)
    c2w = torch.eye(4, device=device).repeat(B, S, 1, 1)
    c2w[..., :3, 3] = 0.05 * torch.arange(S, device=device, dtype=torch.float32)[None, :, None]
    K = torch.tensor([[W / 2, 0, (W - 1) / 2], [0, W / 2, (H - 1) / 2], [0, 0, 1.0]], device=device).repeat(B, S, 1, 1)
    dyn = torch.zeros(B, S, H, W, dtype=torch.bool, device=device)
    dyn[..., H // 3 : H // 2, W // 3 : W // 2] = True
    ones = torch.ones(B, dtype=torch.bool, device=device)
    return DPTTargets(
        depth=depth,
        depth_valid=torch.ones_like(dyn),
        points=torch.randn(B, S, H, W, 3, device=device),
        c2w=c2w,
        K=K,
        dynamic_mask=dyn,
        scene_flow=0.01 * torch.randn(B, S - 1, H, W, 3, device=device),
        scene_flow_valid=dyn[:, :-1],
        metric_scale=ones,
        has_depth=ones,
        has_points=ones,
        has_camera=ones,
        has_mask=ones,
        has_scene_flow=ones,
    )


def bench_full(full_config: str, steps: int, device: torch.device) -> dict:
    if full_config == "5b":
        tconf, aug = dict(COGVIDEOX_5B_I2V_CONFIG), GMAugmentationConfig()
        head_cfg = DPTHeadConfig(checkpoint_high_res=True)
        frames, H, W = 49, 480, 720
    else:
        tconf, aug = tiny_transformer_config(), GMAugmentationConfig(tap_blocks=[0, 1, 1, 1])
        head_cfg = DPTHeadConfig.tiny(tconf["num_attention_heads"] * tconf["attention_head_dim"])
        frames, H, W = 9, 64, 96
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    F_lat, h, w = (frames - 1) // 4 + 1, H // 8, W // 8
    with torch.device(device):
        dit = GeoMotionDiT.from_config(tconf, aug)
    dit = dit.to(dtype)
    dit.enable_gradient_checkpointing()
    dit.train()
    head = TemporalDPTHead.from_head_config(head_cfg).to(device)  # fp32 weights, bf16 autocast
    sched = cogvideox_scheduler()
    n_dit = sum(p.numel() for p in dit.parameters())
    n_head = sum(p.numel() for p in head.parameters())
    results = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "config": full_config,
        "clip": f"{frames}x{H}x{W}",
        "latents": [F_lat, 16, h, w],
        "dit_params": n_dit,
        "head_params": n_head,
    }
    fused = device.type == "cuda"
    for stage in ("1a", "2"):
        params = list(dit.parameters()) + (list(head.parameters()) if stage == "2" else [])
        opt = torch.optim.AdamW(params, lr=2e-5, betas=(0.9, 0.95), weight_decay=1e-4, fused=fused)
        targets = _synthetic_targets(1, F_lat, H, W, device)
        text = torch.randn(1, tconf["max_text_seq_length"], tconf["text_embed_dim"], device=device, dtype=dtype)
        times = []
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats(device)
        for _ in range(steps):
            start = time.perf_counter()
            rgb0 = torch.randn(1, F_lat, 16, h, w, device=device)
            gm0 = torch.randn_like(rgb0)
            image = torch.randn_like(rgb0)
            t = torch.randint(0, 1000, (1,), device=device)
            noisy_rgb, v_rgb = noisy_latents_and_target(sched, rgb0, torch.randn_like(rgb0), t)
            noisy_gm, v_gm = noisy_latents_and_target(sched, gm0, torch.randn_like(gm0), t)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out = dit(
                    noisy_rgb.to(dtype),
                    noisy_gm.to(dtype),
                    text,
                    t,
                    image_latents=image.to(dtype),
                    return_hidden_states=stage == "2",
                )
                loss = diffusion_loss(out.rgb, v_rgb) + diffusion_loss(out.gm, v_gm)
                if stage == "2":
                    pred = head(out.hidden_states, F_lat, (h // 2, w // 2), (H, W))
            if stage == "2":
                loss = (
                    loss
                    + 0.1 * dpt_losses(pred, targets)["dpt"]
                    + 0.5 * stage2_regularisers(pred, targets, (H, W), LossWeights())["reg"]
                )
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        entry = {
            "step_s": [round(x, 3) for x in times],
            "median_step_s": statistics.median(times[1:] if len(times) > 1 else times),
        }
        if device.type == "cuda":
            entry["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        results[f"stage_{stage}"] = entry
        del opt
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if "stage_2" in results and "stage_1a" in results:
        results["ratio_2_over_1a"] = results["stage_2"]["median_step_s"] / results["stage_1a"]["median_step_s"]
    results["anchor_h100_s_per_step"] = 8.0
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="tiny CPU steps per stage (median after 2 warm-up steps)")
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--frames", type=int, default=9)
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-loader", action="store_true")
    parser.add_argument("--loader-samples", type=int, default=24, help="samples timed per loader configuration")
    parser.add_argument("--full-loader-samples", type=int, default=4, help="samples per configuration at 49x480x720")
    parser.add_argument("--loader-workers", type=int, nargs="+", default=[0, 2], help="DataLoader num_workers to time")
    parser.add_argument("--full-steps", type=int, default=3)
    parser.add_argument("--full-config", choices=("5b", "tiny"), default="5b")
    parser.add_argument("--quick", action="store_true", help="smoke run: 4 steps, 6 loader samples, no 49x480x720 loader")
    parser.add_argument("--out", type=str, default=None, help="also write the results as JSON here")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: steady numbers; spinning threads swamp a busy 2-core box)"
    )
    args = parser.parse_args()
    if args.quick:
        args.steps, args.loader_samples, args.full_steps = 4, 6, 1
    torch.set_num_threads(args.threads)
    clip = f"{args.frames}x{args.height}x{args.width}"
    report = {}
    if not args.skip_cpu:
        report["cpu_tiny"] = bench_cpu_tiny(args.steps, args.height, args.width, args.frames)
        print(json.dumps(report["cpu_tiny"], indent=2), flush=True)
    if not args.skip_loader:
        rows = bench_loader(args.steps, args.loader_samples, args.loader_workers, args.height, args.width, args.frames)
        report["loader"] = {"clip": clip, "threads": torch.get_num_threads(), "rows": rows}
        print(_loader_table(rows, clip, "1a"), flush=True)
        if not args.quick:
            full_rows = bench_loader_full_size(args.full_loader_samples, args.loader_workers)
            report["loader_full_size"] = {"clip": "49x480x720", "rows": full_rows}
            print(_full_size_loader_table(full_rows, "49x480x720"), flush=True)
    if torch.cuda.is_available():
        report["full"] = bench_full(args.full_config, args.full_steps, torch.device("cuda"))
    elif args.full_config == "tiny":
        report["full"] = bench_full("tiny", args.full_steps, torch.device("cpu"))
    else:
        report["full"] = "skipped: no CUDA device"
    print(json.dumps(report.get("full"), indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
