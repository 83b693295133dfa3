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

    .venv/bin/python bench/bench_model.py [--steps 8] [--threads 1] [--skip-cpu] [--full-steps 3]
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


def bench_cpu_tiny(steps: int, height: int, width: int, frames: int) -> dict:
    from model.train import TrainConfig, Trainer
    from pipelines.synthetic_set import scene_configs, write_synthetic_set
    from storage import LabelStore

    results, cpu_results = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = LabelStore.create(root / "store", precision="float32")
        write_synthetic_set(root / "set", scene_configs(2, height, width, seed=0, num_frames=frames), store)
        for stage in ("1a", "1b", "2"):
            cfg = TrainConfig(
                model="tiny",
                stage=stage,
                data=[str(root / "store")],
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
    head = TemporalDPTHead(head_cfg).to(device)  # fp32 weights, bf16 autocast
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
    parser.add_argument("--full-steps", type=int, default=3)
    parser.add_argument("--full-config", choices=("5b", "tiny"), default="5b")
    parser.add_argument("--out", type=str, default=None, help="also write the results as JSON here")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1: steady numbers; spinning threads swamp a busy 2-core box)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report = {}
    if not args.skip_cpu:
        report["cpu_tiny"] = bench_cpu_tiny(args.steps, args.height, args.width, args.frames)
        print(json.dumps(report["cpu_tiny"], indent=2), flush=True)
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
