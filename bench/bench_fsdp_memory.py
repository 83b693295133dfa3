"""Peak host memory (RSS) per rank of multi-process training start-up and checkpointing.

2-process gloo jobs on CPU (`torch.distributed.run --nproc-per-node 2`), each phase a fresh job,
so a process's peak RSS (`ru_maxrss`) is that phase's. Nothing is downloaded.

Trainer phases run `model.train.Trainer` with `--strategy fsdp` on a mid-size DiT: the tiny
configuration's code path widened to hidden 1024 (16 heads x 64) and `--layers` blocks (8:
~390 MB of fp32 DiT + DPT head weights):

- fresh:     start-up with random initial weights (the stand-in for a pretrained load);
- resume:    start-up that resumes a 1-step checkpoint (weights + AdamW state), then a save;
- init-from: start-up of a new run from that checkpoint's weights (`--init-from`).

Reported per rank: the growth of peak RSS over the process's RSS before the Trainer builds
its models (imports, process group, a first clip read), in MB, medians over `--repeats`
jobs, and that growth as a multiple of the model's fp32 weight bytes ("x model"); "held": the
growth of the RSS start-up leaves resident (what the run carries on with). Ranks > 0 grow by
about their shard (0.5 x model on 2 ranks; on resume plus their AdamW moment shards and zero
gradient shards, 1.5 x model more), rank 0 by its full copy plus its shards. On resume and
init-from rank 0 builds the DiT and head from the checkpoint's files (one copy, not the
initial weights as well); on resume its peak is reading the AdamW state (2 x model, memory-
mapped) next to its shards, and afterwards no view of that map may stay alive.

The encoders phase builds the frozen encoders of a "cogvideox-5b-i2v" run in bf16 from a
local folder, as `model.train` does: a mid-size T5 encoder (vocab 32128, d_model 1024, 8
layers: 136M parameters, a bf16 file) and CogVideoX VAE (block channels 64-256: 43M, an fp32
file), ~340 MB in bf16. Two variants: "every rank" loads them on every rank (what `model.train`
did before), "rank 0" loads them on rank 0 and builds them empty on rank 1, which receives them
by broadcast (`replicate_from_rank0`; what it does now). Reported per rank: peak RSS growth
after building them and reading every byte once, as the copy to a GPU does ("load": the host
memory a GPU rank holds before its encoders move to the GPU), split into private memory (the
VAE, cast to bf16 at load) and mapped file pages (the T5: a bf16 file loaded in bf16 is mapped,
not copied, and its pages are page cache that ranks mapping the same file share), and growth
after the broadcast (on CPU the device is host memory, so there the replica lands in RSS too);
"x enc" is a multiple of their bf16 bytes.

    .venv/bin/python bench/bench_fsdp_memory.py [--quick] [--layers 8] [--repeats 3] [--phases ...]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HIDDEN = dict(num_attention_heads=16, attention_head_dim=64)
H, W, T = 32, 64, 9
PHASES = ("fresh", "resume", "init-from", "encoders")
TRAINER_PHASES = PHASES[:3]
ENCODER_VARIANTS = ("every rank", "rank 0")
T5 = dict(vocab_size=32128, d_model=1024, d_kv=64, d_ff=2816, num_layers=8, num_heads=16, feed_forward_proj="gated-gelu")
VAE = dict(block_out_channels=(64, 128, 128, 256), layers_per_block=2, norm_num_groups=32)


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _rss_split_mb() -> dict[str, float]:
    """This process's resident memory now: private (anonymous) and file-backed (mapped files)."""
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {key: int(status[key].split()[0]) / 1024 for key in ("RssAnon", "RssFile")}


def _model_bytes(trainer) -> int:
    """fp32 bytes of the DiT and head weights and buffers (global sizes, also when sharded)."""
    modules = [trainer.models.dit, trainer.models.head]
    return sum(t.numel() * t.element_size() for m in modules for t in [*m.parameters(), *m.buffers()])


def worker(phase: str, config: dict, layers: int, out: Path) -> None:
    """One rank of a job: build the Trainer for `phase`, record peak RSS before it builds the
    models, after start-up and (resume) after one more checkpoint save."""
    import torch
    import torch.distributed.checkpoint.state_dict  # noqa: F401  (imported lazily by the trainer)
    import torch.distributed.fsdp  # noqa: F401
    from diffusers import AutoencoderKLCogVideoX  # noqa: F401

    import model.train as train
    from model.data import LabelClipDataset
    from model.distributed import init_distributed

    torch.set_num_threads(1)
    tiny = train.tiny_transformer_config
    # the tiny code path at mid size: every rank builds it exactly as the trainer does
    train.tiny_transformer_config = lambda **kw: tiny(**kw, **HIDDEN, num_layers=layers)
    init_distributed("cpu")
    LabelClipDataset(config["stores"])[0]  # the trainer reads a first clip before building models
    baseline, baseline_now = _max_rss_mb(), sum(_rss_split_mb().values())  # imports, process group, data readers
    trainer = train.Trainer(train.TrainConfig(**config))
    record = {"baseline_mb": baseline, "startup_mb": _max_rss_mb(), "model_bytes": _model_bytes(trainer)}
    record["held_mb"] = sum(_rss_split_mb().values()) - baseline_now  # what start-up leaves resident
    if phase == "fresh":
        trainer.run()  # one step and its checkpoint: what resume and init-from start from
    elif phase == "resume":
        record["resumed_step"] = trainer.step
        trainer.save()
        record["save_mb"] = _max_rss_mb()
    (out / f"rank{trainer.dist.rank}.json").write_text(json.dumps(record))
    torch.distributed.destroy_process_group()


def encoder_worker(config: dict, out: Path) -> None:
    """One rank of an encoders job: build the VAE and T5 encoder as `model.train` does for a
    "cogvideox-5b-i2v" run (rank 1 empty in the "rank 0" variant, then a broadcast) and record
    peak RSS before, after building and after the broadcast."""
    import torch
    from transformers import T5EncoderModel  # noqa: F401  (imported lazily by T5TextEncoder)

    from model.distributed import init_distributed, replicate_from_rank0
    from model.encoders import T5TextEncoder, VideoLatentEncoder, load_vae

    torch.set_num_threads(1)
    ctx = init_distributed("cpu")
    baseline, split = _max_rss_mb(), _rss_split_mb()
    empty = config["variant"] == "rank 0" and ctx.rank > 0
    vae = VideoLatentEncoder(load_vae(config["base"], torch_dtype=torch.bfloat16, empty=empty))
    text = T5TextEncoder(config["base"], torch_dtype=torch.bfloat16, empty=empty)
    tensors = [t for m in (vae, text) for t in [*m.parameters(), *m.buffers()]]
    with torch.no_grad():  # read every byte, as the copy to a GPU does (a mapped file is paged in)
        for t in tensors if not empty else ():
            t.sum()
    record = {"baseline_mb": baseline, "load_mb": _max_rss_mb()}
    record.update({f"{k}_mb": v - split[k] for k, v in _rss_split_mb().items()})
    if config["variant"] == "rank 0":
        for module in (vae, text):
            replicate_from_rank0(module, torch.device("cpu"), ctx)
    record["replicated_mb"] = _max_rss_mb()
    record["encoder_bytes"] = sum(t.numel() * t.element_size() for t in tensors)
    (out / f"rank{ctx.rank}.json").write_text(json.dumps(record))
    torch.distributed.destroy_process_group()


def _write_encoders(root: Path) -> str:
    """A local folder with a random mid-size CogVideoX VAE (fp32 file) and T5 encoder (bf16 file) and a
    sentencepiece tokenizer."""
    import sentencepiece as spm
    import torch
    from diffusers import AutoencoderKLCogVideoX
    from transformers import T5Config, T5EncoderModel

    from model.encoders import tiny_vae_config

    base = root / "base"
    torch.manual_seed(0)
    AutoencoderKLCogVideoX(**{**tiny_vae_config(H, W), **VAE}).save_pretrained(base / "vae")  # fp32: cast at load
    T5EncoderModel(T5Config(**T5)).to(torch.bfloat16).save_pretrained(base / "text_encoder")
    (base / "tokenizer").mkdir()
    (root / "corpus.txt").write_text("a dolly shot of a textured room with still and moving objects\n" * 20)
    spm.SentencePieceTrainer.train(input=str(root / "corpus.txt"), model_prefix=str(base / "tokenizer" / "spiece"),
                                   vocab_size=30, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)  # fmt: skip
    (base / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 0}))
    return str(base)


def _job(phase: str, config: dict, layers: int, out: Path) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", __file__]
    command += ["--worker", phase, "--layers", str(layers), "--out", str(out), "--config", json.dumps(config)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"{phase} job failed:\n{result.stderr[-3000:]}")
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]


def _write_store(root: Path) -> str:
    from pipelines.synthetic_set import scene_configs, write_synthetic_set
    from storage import LabelStore

    store = LabelStore.create(root / "store", precision="float32")
    write_synthetic_set(root / "set", scene_configs(2, H, W, seed=5, num_frames=T), store)
    return str(root / "store")


def bench(layers: int, repeats: int, phases: list[str]) -> dict[str, list[list[dict]]]:
    """Per phase (per encoders variant), `repeats` jobs of two rank records each."""
    results: dict[str, list[list[dict]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        trainer_phases = [p for p in TRAINER_PHASES if p in phases]
        if trainer_phases:
            common = dict(config="tiny", stage="2", stores=[_write_store(root)], device="cpu", strategy="fsdp", seed=3,
                          gradient_checkpointing=False, keep_checkpoints=1)  # fmt: skip
        base = _write_encoders(root) if "encoders" in phases else None
        for i in range(repeats):
            run = root / f"run{i}"
            if trainer_phases:  # resume and init-from start from the fresh run's checkpoint
                fresh = _job("fresh", {**common, "output_dir": str(run), "steps": 1}, layers, root / f"f{i}")
                results.setdefault("fresh", []).append(fresh)
            if "resume" in phases:
                resume = {**common, "output_dir": str(run), "steps": 2}
                results.setdefault("resume", []).append(_job("resume", resume, layers, root / f"r{i}"))
            if "init-from" in phases:
                init = {**common, "output_dir": str(root / f"init{i}"), "steps": 1,
                        "init_from": str(run / "checkpoints" / "step_00000001")}  # fmt: skip
                results.setdefault("init-from", []).append(_job("init-from", init, layers, root / f"i{i}"))
            for variant in ENCODER_VARIANTS if base else ():
                job = _job("encoders", {"base": base, "variant": variant}, layers, root / f"e{i}{variant[0]}")
                results.setdefault(f"encoders: {variant}", []).append(job)
    return results


def _growth(jobs: list[list[dict]], rank: int, key: str) -> float:
    return statistics.median(job[rank][key] - job[rank]["baseline_mb"] for job in jobs)


def _report(results: dict[str, list[list[dict]]]) -> None:
    trainer = {phase: jobs for phase, jobs in results.items() if phase in TRAINER_PHASES}
    if trainer:
        model_mb = next(iter(trainer.values()))[0][0]["model_bytes"] / 2**20
        print(f"model (DiT + head, fp32): {model_mb:.0f} MB; 2 ranks, gloo, CPU; peak RSS growth over the pre-model RSS")
        print(f"{'phase':<10} {'rank':>4} {'start-up MB':>12} {'x model':>8} {'held MB':>8} {'x model':>8} "
              f"{'save MB':>9} {'x model':>8}")  # fmt: skip
        for phase, jobs in trainer.items():
            for rank in range(2):
                growth = _growth(jobs, rank, "startup_mb")
                held = statistics.median(job[rank]["held_mb"] for job in jobs)
                line = f"{phase:<10} {rank:>4} {growth:>12.0f} {growth / model_mb:>8.2f} {held:>8.0f} {held / model_mb:>8.2f}"
                if "save_mb" in jobs[0][rank]:
                    save = _growth(jobs, rank, "save_mb")
                    line += f" {save:>9.0f} {save / model_mb:>8.2f}"
                print(line)
        for phase, jobs in trainer.items():
            ranks = [_growth(jobs, r, "startup_mb") for r in range(2)]
            print(f"{phase}: rank 1 / rank 0 start-up growth = {ranks[1] / ranks[0]:.2f}")
    encoders = {phase: jobs for phase, jobs in results.items() if phase.startswith("encoders")}
    if encoders:
        enc_mb = next(iter(encoders.values()))[0][0]["encoder_bytes"] / 2**20
        print(f"frozen encoders (VAE + T5, bf16): {enc_mb:.0f} MB; peak RSS growth over the pre-encoder RSS")
        print(f"{'variant':<22} {'rank':>4} {'load MB':>8} {'x enc':>6} {'private':>8} {'mapped':>7} "
              f"{'+ broadcast MB':>15} {'x enc':>6}")  # fmt: skip
        for phase, jobs in encoders.items():
            for rank in range(2):
                load, replicated = _growth(jobs, rank, "load_mb"), _growth(jobs, rank, "replicated_mb")
                private, mapped = (statistics.median(job[rank][key] for job in jobs) for key in ("RssAnon_mb", "RssFile_mb"))
                print(f"{phase:<22} {rank:>4} {load:>8.0f} {load / enc_mb:>6.2f} {private:>8.0f} {mapped:>7.0f} "
                      f"{replicated:>15.0f} {replicated / enc_mb:>6.2f}")  # fmt: skip
        if len(encoders) == 2:
            before, after = (sum(_growth(jobs, r, "load_mb") for r in range(2)) for jobs in encoders.values())
            print(f"encoders: load growth summed over ranks, rank 0 / every rank = {after / before:.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="4 blocks, 1 repeat")
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    p.add_argument("--worker", choices=PHASES, help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker == "encoders":
        encoder_worker(json.loads(args.config), Path(args.out))
        return
    if args.worker:
        worker(args.worker, json.loads(args.config), args.layers, Path(args.out))
        return
    layers, repeats = (4, 1) if args.quick else (args.layers, args.repeats)
    _report(bench(layers, repeats, args.phases))


if __name__ == "__main__":
    main()
