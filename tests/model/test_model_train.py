import json

import pytest
import torch

from model.train import TrainConfig, Trainer, main
from pipelines.synthetic_set import scene_configs, write_synthetic_set
from storage import LabelStore

H, W, T = 32, 64, 9  # tiny model: multiples of 16; decord wants widths that are multiples of 64


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    store = LabelStore.create(root / "store", precision="float32")
    write_synthetic_set(root / "set", scene_configs(2, H, W, seed=7, num_frames=T), store)
    return str(root / "store")


def _cfg(store, out, **kw):
    base = dict(
        config="tiny",
        stores=[store],
        output_dir=str(out),
        steps=2,
        warmup_steps=2,
        save_every=1,
        lr=1e-3,
        head_lr=1e-3,
        device="cpu",
    )
    base.update(kw)
    return TrainConfig(**base)


def _state(trainer):
    state = {f"dit.{k}": v.clone() for k, v in trainer.models.dit.state_dict().items()}
    if trainer.models.head is not None:
        state.update({f"head.{k}": v.clone() for k, v in trainer.models.head.state_dict().items()})
    return state


def test_stage_1a_resume_is_exact(store, tmp_path):
    full = Trainer(_cfg(store, tmp_path / "full", steps=3))
    full.run()
    lines = [json.loads(x) for x in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2, 3]
    assert all(x["diff_rgb"] > 0 and x["diff_gm"] > 0 for x in lines)
    assert lines[0]["lr_dit"] == pytest.approx(5e-4) and lines[1]["lr_dit"] == pytest.approx(1e-3)  # warm-up
    ckpts = sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir())
    assert ckpts == ["step_00000002", "step_00000003"]  # keep_checkpoints = 2

    Trainer(_cfg(store, tmp_path / "split", steps=2)).run()
    resumed = Trainer(_cfg(store, tmp_path / "split", steps=3))
    assert resumed.step == 2 and resumed.samples_consumed == 2
    resumed.run()
    a, b = _state(full), _state(resumed)
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)


def test_stage_1b_freezes_dit_and_stage_2_trains_both(store, tmp_path):
    Trainer(_cfg(store, tmp_path / "s1a", steps=1)).run()
    init = str(tmp_path / "s1a" / "checkpoints" / "step_00000001")
    t1b = Trainer(_cfg(store, tmp_path / "s1b", stage="1b", steps=1, init_from=init, dpt_weighting="none"))
    before = _state(t1b)
    metrics = t1b.run()
    after = _state(t1b)
    assert {"depth", "points", "camera", "mask", "flow", "dpt"} <= metrics.keys() and "diff_rgb" not in metrics
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("dit."))
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("head."))

    t2 = Trainer(
        _cfg(store, tmp_path / "s2", stage="2", steps=1, init_from=str(tmp_path / "s1b" / "checkpoints" / "step_00000001"))
    )
    torch.testing.assert_close(_state(t2)["head.depth_head.2.weight"], after["head.depth_head.2.weight"])
    before = _state(t2)
    metrics = t2.run()
    after = _state(t2)
    assert {"reg_depth", "reg_flow", "diff_rgb", "dpt"} <= metrics.keys()
    assert all(metrics[k] == metrics[k] for k in metrics)  # no NaN
    for prefix in ("dit.", "head."):
        assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith(prefix))


def test_main_cli(store, tmp_path, capsys):
    code = main(
        [
            "--model",
            "tiny",
            "--data",
            store,
            "--output-dir",
            str(tmp_path / "cli"),
            "--steps",
            "1",
            "--device",
            "cpu",
            "--no-gradient-checkpointing",
        ]
    )
    assert code == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["step"] == 1
    assert main(["--model", "cogvideox-5b-i2v", "--data", store, "--output-dir", str(tmp_path / "x")]) == 2
    assert main(["--data", store, "--data-weights", "1", "2", "--output-dir", str(tmp_path / "y")]) == 2


def _tiny_pretrained_folder(root):
    """A local diffusers-style CogVideoX-I2V folder at tiny size: transformer/, vae/, scheduler/,
    text_encoder/ (T5) and tokenizer/ (sentencepiece model, as the real one ships)."""
    spm = pytest.importorskip("sentencepiece")
    from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel

    from model.dit import tiny_transformer_config
    from model.encoders import tiny_vae_config
    from model.losses import cogvideox_scheduler

    torch.manual_seed(0)
    config = tiny_transformer_config(sample_height=H // 8, sample_width=W // 8, sample_frames=T, max_text_seq_length=8)
    CogVideoXTransformer3DModel.from_config(config).save_pretrained(root / "transformer")
    AutoencoderKLCogVideoX(**tiny_vae_config(H, W)).save_pretrained(root / "vae")
    cogvideox_scheduler().save_pretrained(root / "scheduler")
    T5EncoderModel(
        T5Config(vocab_size=48, d_model=config["text_embed_dim"], d_kv=8, d_ff=32, num_layers=1, num_heads=2)
    ).save_pretrained(root / "text_encoder")
    (root / "tokenizer").mkdir()
    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(["a dolly shot of a textured room with still and moving objects"] * 20))
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(root / "tokenizer" / "spiece"),
        vocab_size=30,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    (root / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 0}))
    return root


def test_pretrained_folder_path_runs_on_cpu(store, tmp_path):
    """The production loading path (cogvideox-5b-i2v) on a tiny local folder: load, widen, train stage 2."""
    folder = _tiny_pretrained_folder(tmp_path / "pretrained")
    cfg = _cfg(
        store, tmp_path / "run", config="cogvideox-5b-i2v", weights=str(folder), stage="2", steps=1, mixed_precision="no"
    )
    trainer = Trainer(cfg)
    assert trainer.models.dit.config.in_channels == 48 and trainer.models.dit.aug.tap_blocks == [0, 1, 1, 1]
    metrics = trainer.run()
    assert metrics["step"] == 1 and all(v == v for v in metrics.values())
    with pytest.raises(ValueError, match="trains on 9x32x64 clips"):
        Trainer(_cfg(store, tmp_path / "bad", config="cogvideox-5b-i2v", weights=str(folder), num_frames=5))


def test_main_prints_one_console_line_per_logged_step(store, tmp_path, capsys):
    out = tmp_path / "console"
    argv = ["--data", store, "--output-dir", str(out), "--steps", "3", "--log-every", "2", "--device", "cpu"]
    assert main([*argv, "--stage", "1a", "--warmup-steps", "2", "--lr", "1e-3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and json.loads(lines[-1])["step"] == 3  # steps 2 and 3 (the last), then the summary
    logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for line, record in zip(lines[:2], logged, strict=True):
        fields = dict(token.split("=") for token in line.split())
        assert fields["step"] == f"{record['step']}/3" and fields["stage"] == "1a"
        assert fields.keys() == {"step", "stage", "loss", "diff_rgb", "diff_gm", "grad_norm", "lr_dit", "step_s"}
        for key in ("loss", "diff_rgb", "diff_gm", "grad_norm", "lr_dit"):
            assert float(fields[key]) == pytest.approx(record[key], rel=1e-3), key
        assert float(fields["step_s"]) == pytest.approx(record["step_time_s"], abs=1e-3)
    assert float(dict(t.split("=") for t in lines[1].split())["lr_dit"]) == pytest.approx(1e-3)

    assert main([*argv, "--output-dir", str(tmp_path / "console_2"), "--stage", "2", "--steps", "1"]) == 0
    fields = dict(token.split("=") for token in capsys.readouterr().out.splitlines()[0].split())
    assert {"diff_rgb", "diff_gm", "dpt", "reg", "lr_dit", "lr_dpt_head"} <= fields.keys()
    assert "depth" not in fields  # the JSONL log has every term, the console only the main ones


def test_evaluate_losses_is_paired_and_leaves_training_rng_alone(store, tmp_path):
    trainer = Trainer(_cfg(store, tmp_path / "eval", steps=1))
    batch = next(trainer._batches())
    state = trainer.generator.get_state()
    a = trainer.evaluate_losses(batch, seeds=[0, 1], timesteps=[10, 990])
    assert torch.equal(trainer.generator.get_state(), state)
    assert a == trainer.evaluate_losses(batch, seeds=[0, 1], timesteps=[10, 990])
    per_draw = [trainer.evaluate_losses(batch, seeds=[s], timesteps=[t]) for s in (0, 1) for t in (10, 990)]
    assert a["loss"] == pytest.approx(sum(d["loss"] for d in per_draw) / 4)
    assert per_draw[0]["diff_rgb"] != per_draw[1]["diff_rgb"]  # the timestep is honoured
    with pytest.raises(ValueError, match="timesteps must be"):
        trainer.compute_losses(batch, torch.zeros(2, dtype=torch.long))


@pytest.mark.parametrize("size, model, message", [
    ((9, 24, 48), "tiny", "has 9x24x48 clips (T x H x W); the tiny model needs H and W multiples of 16"),
    ((9, 32, 64), "cogvideox-5b-i2v", "has 9x32x64 clips (T x H x W); cogvideox-5b-i2v trains on 49x480x720"),
    (None, "tiny", "has no accepted clip to train on"),
])
def test_a_store_that_does_not_fit_the_model_stops_before_training(size, model, message, tmp_path, capsys):
    from clip_factory import random_clip

    from model.train import check_stores_fit

    store = LabelStore.create(tmp_path / "s")
    if size is not None:
        T, H, W = size
        store.commit("c", *random_clip(T=T, H=H, W=W))
    cfg = TrainConfig(config=model, stores=[str(tmp_path / "s")], output_dir=str(tmp_path / "out"), weights="x")
    with pytest.raises(ValueError, match="store .* " + message.replace("(", r"\(").replace(")", r"\)")):
        check_stores_fit(cfg)
    argv = ["--config", model, "--store", str(tmp_path / "s"), "--output-dir", str(tmp_path / "out"), "--weights", "x"]
    assert main(argv) == 2
    assert message in capsys.readouterr().out
    assert not (tmp_path / "out").exists()  # nothing was built or written
