"""Overfit one synthetic clip with the tiny model: every loss term of stages 1a, 1b and 2 falls.

Losses are compared with `Trainer.evaluate_losses` (fixed seeds: the same posterior samples,
noise and timesteps before and after training), not with the noisy per-step logs.

Two properties of the tiny model shape what can fall, and the test works with them:
- the tiny random VAE has a posterior std of ~1, so its "latent of the clip" is mostly fresh
  noise every step and no model can fit it; a trained VAE's posterior is nearly a point, so
  `_sharp_posterior` gives the tiny one that property (weights untouched, log-variance -12);
- the tiny DiT is 32 wide: a 2x2 patch token cannot carry the 64 noise values per stream that
  the v target needs at low noise (v ~ eps). At high noise (v ~ -x0, the clip itself) the
  target is what overfitting one clip learns, so the diffusion terms are compared there.
"""

import pytest
import torch

from model.camera import encode_camera
from model.data import collate_samples, targets_from_batch
from model.dpt_head import DPTOutput
from model.losses import stage2_regularisers
from model.train import TrainConfig, Trainer
from pipelines.synthetic_set import scene_configs, write_synthetic_set
from storage import LabelStore

H, W, T = 32, 64, 9
STEPS = {"1a": 100, "1b": 60, "2": 60}
HIGH_NOISE_T = (750, 900, 999)  # abar_t = 0.033, 0.003, 0


def _sharp_posterior(trainer: Trainer, logvar: float = -12.0) -> None:
    """Make the VAE posterior a near point (std e^-6), as a trained VAE's is."""
    conv = trainer.models.vae.vae.encoder.conv_out.conv  # rows: [mean (16) | log-variance (16)]
    half = conv.out_channels // 2
    with torch.no_grad():
        conv.weight[half:] = 0.0
        conv.bias[half:] = logvar


def _trainer(store, out, stage, init_from=None, **kw):
    cfg = TrainConfig(
        config="tiny",
        stage=stage,
        stores=[store],
        output_dir=str(out),
        init_from=init_from,
        resume=False,
        device="cpu",
        warmup_steps=0,
        gradient_checkpointing=False,
        **kw,
    )
    trainer = Trainer(cfg)
    _sharp_posterior(trainer)
    return trainer


def _train(trainer, batch, steps, eval_kw):
    """Losses before and after `steps` optimiser steps on the one clip (decoded once: the loader
    would decode the same clip every step)."""
    before = trainer.evaluate_losses(batch, **eval_kw)
    for _ in range(steps):
        trainer.train_step(batch)
    return before, trainer.evaluate_losses(batch, **eval_kw)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the conftest's one-thread fixture is per test; this fixture runs before it
    try:
        yield _overfit(tmp_path_factory.mktemp("overfit"))
    finally:
        torch.set_num_threads(threads)


def _overfit(root):
    store = LabelStore.create(root / "store", precision="float32")
    write_synthetic_set(root / "set", scene_configs(1, H, W, seed=3, num_frames=T), store)
    store = str(root / "store")
    out = {}

    t1a = _trainer(store, root / "1a", "1a", lr=3e-3)
    batch = collate_samples([t1a.dataset[0]])
    out["1a"] = _train(t1a, batch, STEPS["1a"], dict(seeds=range(4), timesteps=HIGH_NOISE_T))

    t1b = _trainer(store, root / "1b", "1b", init_from=str(t1a.save()), head_lr=1e-3)
    out["1b"] = _train(t1b, batch, STEPS["1b"], dict(seeds=range(8)))

    t2 = _trainer(store, root / "2", "2", init_from=str(t1b.save()), lr=1e-4, head_lr=1e-3)
    out["2"] = _train(t2, batch, STEPS["2"], dict(seeds=range(8)))

    targets = targets_from_batch(batch)
    exact = DPTOutput(  # the labels themselves as a prediction: the regularisers' values on the truth
        depth=targets.depth,
        points=targets.points,
        camera=encode_camera(targets.c2w, targets.K, H, W),
        scene_flow=targets.scene_flow,
        mask_logits=torch.where(targets.dynamic_mask, 10.0, -10.0),
    )
    out["truth"] = {k: float(v) for k, v in stage2_regularisers(exact, targets, (H, W)).items()}
    return out


def _ratios(before, after, names):
    return {k: after[k] / before[k] for k in names}


def test_stage_1a_diffusion_losses_fall(runs):
    before, after = runs["1a"]
    ratios = _ratios(before, after, ("diff_rgb", "diff_gm", "loss"))
    assert ratios["diff_rgb"] < 0.4, ratios
    assert ratios["diff_gm"] < 0.75, ratios  # starts lower: zero-initialised gm columns and rows
    assert ratios["loss"] < 0.5, ratios


def test_stage_1b_every_dpt_term_falls(runs):
    before, after = runs["1b"]
    assert "diff_rgb" not in after
    ratios = _ratios(before, after, ("depth", "points", "camera", "mask", "flow", "dpt"))
    for name in ("depth", "mask", "flow", "dpt"):
        assert ratios[name] < 0.6, (name, ratios)
    assert ratios["points"] < 0.8, ratios
    assert ratios["camera"] < 0.1, ratios


def test_stage_2_regularisers(runs):
    before, after = runs["2"]
    truth = runs["truth"]
    # static-background reprojection: the prediction starts far less consistent than the exact
    # labels and moves most of the way to their value
    assert truth["reg_depth"] < before["reg_depth"]
    assert after["reg_depth"] < 0.5 * before["reg_depth"], (before, after)
    assert abs(after["reg_depth"] - truth["reg_depth"]) < 0.5 * abs(before["reg_depth"] - truth["reg_depth"])
    # foreground smoothness: the head's scene flow is already smoother than the true one, so
    # lowering it further is no fitting goal; the prior must stay satisfied
    assert after["reg_flow"] <= truth["reg_flow"], (after, truth)
    assert after["reg"] < 0.5 * before["reg"]
    assert all(v == v for v in after.values())  # no NaN

