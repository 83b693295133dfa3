"""Supervision weighted by label provenance: closed forms against the per-sample losses."""

import dataclasses
import json

import pytest
import torch

from model.data import collate_samples, provenance
from model.dpt_head import DPTOutput
from model.losses import (
    GM_PARTS,
    TERM_PARTS,
    DPTTargets,
    LossWeights,
    ProvenanceWeights,
    diffusion_loss,
    dpt_losses,
    provenance_codes,
    stage2_regularisers,
)
from model.train import TrainConfig, Trainer, _job, _parser, main
from pipelines.synthetic_set import scene_configs, write_synthetic_set
from storage import LabelStore
from storage.schema import PROVENANCE_PARTS

B, S, H, W = 2, 3, 8, 12
TERMS = ("depth", "points", "camera", "mask", "flow")


def _all(value: str, **parts: str) -> dict[str, str]:
    return {part: parts.get(part, value) for part in PROVENANCE_PARTS}


def _batch(seed: int = 0):
    """Random labels and predictions of B samples (valid cameras, some invalid pixels)."""
    g = torch.Generator().manual_seed(seed)
    c2w = torch.eye(4).repeat(B, S, 1, 1)
    c2w[..., :3, 3] = 0.3 * torch.randn(B, S, 3, generator=g)
    c2w[:, 0, :3, 3] = 0
    K = torch.tensor([[10.0, 0, W / 2], [0, 10.0, H / 2], [0, 0, 1]]).repeat(B, S, 1, 1)
    depth = 1 + 4 * torch.rand(B, S, H, W, generator=g)
    dyn = torch.rand(B, S, H, W, generator=g) > 0.6
    targets = DPTTargets(
        depth=depth, depth_valid=torch.rand(B, S, H, W, generator=g) > 0.2,
        points=torch.randn(B, S, H, W, 3, generator=g), c2w=c2w, K=K, dynamic_mask=dyn,
        scene_flow=torch.randn(B, S - 1, H, W, 3, generator=g), scene_flow_valid=dyn[:, :-1].clone(),
        metric_scale=torch.tensor([True, False]),
        **{f: torch.ones(B, dtype=torch.bool) for f in ("has_depth", "has_points", "has_camera", "has_mask",
                                                         "has_scene_flow")},
    )
    pred = DPTOutput(
        depth=(depth * (1 + 0.2 * torch.randn(B, S, H, W, generator=g))).abs() + 0.1,
        points=torch.randn(B, S, H, W, 3, generator=g),
        camera=torch.randn(B, S, 9, generator=g),
        scene_flow=torch.randn(B, S - 1, H, W, 3, generator=g),
        mask_logits=torch.randn(B, S, H, W, generator=g),
    )
    for x in pred.__dict__.values():
        x.requires_grad_()
    return pred, targets


def _with(targets: DPTTargets, provenances) -> DPTTargets:
    return dataclasses.replace(targets, provenance=provenance_codes(provenances))


def _sample(pred: DPTOutput, targets: DPTTargets, i: int) -> tuple[DPTOutput, DPTTargets]:
    """Sample i alone, without provenance (counts as exact)."""
    fields = {k: v[i:i + 1] for k, v in targets.__dict__.items() if k != "provenance"}
    return DPTOutput(*(x[i:i + 1] for x in pred.__dict__.values())), DPTTargets(**fields)


def test_default_weights_leave_every_loss_and_gradient_bit_identical():
    pred, targets = _batch()
    sw = torch.tensor([0.7, 0.2])
    plain = dpt_losses(pred, targets, sample_weight=sw)
    plain["dpt"].backward()
    grads = [x.grad.clone() for x in pred.__dict__.values()]
    for x in pred.__dict__.values():
        x.grad = None
    mixed = _with(targets, [_all("exact"), _all("estimated", camera="derived", depth="exact")])
    weighted = dpt_losses(pred, mixed, LossWeights(), sample_weight=sw)
    weighted["dpt"].backward()
    assert plain.keys() == weighted.keys()
    for name in plain:
        assert torch.equal(plain[name], weighted[name]), name
    for a, x in zip(grads, pred.__dict__.values(), strict=True):
        assert torch.equal(a, x.grad)
    size = (H, W)
    assert all(torch.equal(a, b) for a, b in zip(stage2_regularisers(pred, targets, size).values(),
                                                   stage2_regularisers(pred, mixed, size).values(), strict=True))


def test_weight_zero_gives_the_exact_samples_loss_alone():
    pred, targets = _batch(1)
    sw = torch.tensor([0.6, 0.9])
    mixed = _with(targets, [_all("exact"), _all("estimated")])
    losses = dpt_losses(pred, mixed, LossWeights(provenance=ProvenanceWeights(estimated=0.0)), sample_weight=sw)
    losses["dpt"].backward()
    p0, t0 = _sample(pred, targets, 0)
    alone = dpt_losses(p0, t0, sample_weight=sw[:1])
    for name in (*TERMS, "dpt"):
        torch.testing.assert_close(losses[name], alone[name], rtol=1e-6, atol=0, msg=name)
        assert losses[name] > 0, name
    for x in pred.__dict__.values():
        assert (x.grad[1] == 0).all() and x.grad[0].abs().sum() > 0


def test_fractional_weights_mix_the_per_sample_losses_by_the_parts_each_term_reads():
    pred, targets = _batch(2)
    sw = torch.tensor([0.5, 0.8])
    # sample 1: exact camera and scene flow, estimated depth, derived mask
    mixed = _with(targets, [_all("exact"), _all("estimated", camera="exact", scene_flow="exact", dynamic_mask="derived")])
    weights = LossWeights(provenance=ProvenanceWeights(exact=1.0, derived=0.8, estimated=0.5))
    losses = dpt_losses(pred, mixed, weights, sample_weight=sw)
    per_sample = [dpt_losses(*_sample(pred, targets, i), weights)[name] for i in range(B) for name in TERMS]
    per_sample = {(i, name): per_sample[i * len(TERMS) + j] for i in range(B) for j, name in enumerate(TERMS)}
    # depth 0.5, points min(depth, camera) 0.5, camera 1, mask 0.8, flow min(scene flow, mask) 0.8
    w1 = {"depth": 0.5, "points": 0.5, "camera": 1.0, "mask": 0.8, "flow": 0.8}
    for name in TERMS:
        expected = (sw[0] * per_sample[0, name] + w1[name] * sw[1] * per_sample[1, name]) / 2
        torch.testing.assert_close(losses[name], expected, rtol=1e-6, atol=0, msg=name)
    expected_dpt = sum(losses[n] for n in TERMS[:4]) + weights.lambda_flow * losses["flow"]
    torch.testing.assert_close(losses["dpt"], expected_dpt)


def test_absent_parts_weigh_zero_and_regularisers_use_the_predicted_mask():
    pred, targets = _batch(3)
    absent_mask = _with(targets, [_all("exact"), _all("exact", dynamic_mask="absent", scene_flow="absent")])
    losses = dpt_losses(pred, absent_mask)
    p0, t0 = _sample(pred, targets, 0)
    alone, both = dpt_losses(p0, t0), dpt_losses(pred, targets)
    for name in ("mask", "flow"):
        torch.testing.assert_close(losses[name], alone[name], rtol=1e-6, atol=0)
    for name in ("depth", "points", "camera"):
        assert torch.equal(losses[name], both[name])
    no_mask = dataclasses.replace(targets, has_mask=torch.tensor([True, False]))
    for a, b in zip(stage2_regularisers(pred, absent_mask, (H, W)).values(),
                    stage2_regularisers(pred, no_mask, (H, W)).values(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_diffusion_loss_sample_weight():
    g = torch.Generator().manual_seed(4)
    v_pred, v_target = torch.randn(3, 2, 4, 3, 5, generator=g), torch.randn(3, 2, 4, 3, 5, generator=g)
    mse = (v_pred - v_target).square().flatten(1).mean(1)
    keep = torch.tensor([True, True, False])
    assert torch.equal(diffusion_loss(v_pred, v_target, keep, torch.ones(3)), diffusion_loss(v_pred, v_target, keep))
    torch.testing.assert_close(diffusion_loss(v_pred, v_target, keep, torch.tensor([0.0, 0.5, 1.0])), mse[1] * 0.5)
    torch.testing.assert_close(diffusion_loss(v_pred, v_target, None, torch.tensor([1.0, 0.5, 0.0])),
                               (mse[0] + 0.5 * mse[1]) / 2)
    assert diffusion_loss(v_pred, v_target, keep, torch.tensor([0.0, 0.0, 1.0])) == 0
    gm = ProvenanceWeights(derived=0.25, estimated=0.5).sample_weights(
        provenance_codes([_all("exact"), _all("exact", flow="estimated"), _all("derived", depth="absent")]), GM_PARTS)
    assert gm.tolist() == [1.0, 0.5, 0.0]


def test_codes_collate_and_the_provenance_of_clips():
    codes = provenance_codes([_all("exact"), _all("absent", depth="derived", camera="estimated")])
    assert codes.shape == (2, len(PROVENANCE_PARTS)) and codes.dtype == torch.int64
    w = ProvenanceWeights(exact=0.9, derived=0.6, estimated=0.3)
    expected = {"depth": [0.9, 0.6], "points": [0.9, 0.3], "camera": [0.9, 0.3], "mask": [0.9, 0.0], "flow": [0.9, 0.0]}
    for term, parts in TERM_PARTS.items():
        torch.testing.assert_close(w.sample_weights(codes, parts), torch.tensor(expected[term]))
    with pytest.raises(ValueError, match="lacks part"):
        provenance_codes([{"camera": "exact"}])
    with pytest.raises(ValueError, match="not one of"):
        provenance_codes([_all("guessed")])
    with pytest.raises(ValueError, match=r"estimated must be in \[0, 1\]"):
        ProvenanceWeights(estimated=1.5)
    batch = collate_samples([{"provenance": _all("exact"), "has_depth": True},
                             {"provenance": _all("estimated"), "has_depth": False}])
    assert torch.equal(batch["provenance"], provenance_codes([_all("exact"), _all("estimated")]))
    synthetic = {"labelers": {"camera": {"name": "synthetic-ground-truth"}}}
    assert provenance(synthetic) == _all("exact") and provenance({"labelers": {}}) == _all("estimated")
    assert provenance({**synthetic, "provenance": {"flow": "derived"}}) == _all("exact", flow="derived")


def test_cli_and_form_expose_the_option_with_help_and_bounds(capsys):
    from flows.training import TrainRunParams, train_command, train_config

    help_text = " ".join(_parser().format_help().split())
    assert "--provenance-weight NAME=VALUE" in help_text and "[0, 1]" in help_text
    assert "exact=1.0, derived=1.0, estimated=1.0" in help_text and "--provenance-weight-gm" in help_text
    job = _job()
    argv = ["--store", "s", "--provenance-weight", "estimated=0.5", "--provenance-weight", "derived=0.8",
            "--provenance-weight-gm"]
    (cfg,) = job.build(job.from_args(_parser().parse_args(argv)))
    assert cfg.provenance_weights == ProvenanceWeights(derived=0.8, estimated=0.5) and cfg.provenance_weight_gm
    assert cfg.loss_weights().provenance == cfg.provenance_weights
    assert TrainConfig().provenance_weights == ProvenanceWeights() and not TrainConfig().provenance_weight_gm
    assert main(["--store", "s", "--provenance-weight", "estimated=1.5"]) == 2
    assert capsys.readouterr().out.strip() == "error: provenance weight estimated must be in [0, 1], got 1.5"
    with pytest.raises(SystemExit):
        _parser().parse_args(["--provenance-weight", "absent=1"])

    schema = TrainRunParams.model_json_schema()["properties"]
    assert "[0, 1]" in schema["provenance_weight"]["description"] and schema["provenance_weight_gm"]["default"] is False
    form = TrainRunParams(stores=["s"], provenance_weight={"estimated": 0.25}, provenance_weight_gm=True)
    launched = job.build(job.from_args(_parser().parse_args(train_command(form)[4:])))[0]
    assert launched == train_config(form) and launched.provenance_weights == ProvenanceWeights(estimated=0.25)
    with pytest.raises(ValueError, match="must be in"):
        train_config(TrainRunParams(stores=["s"], provenance_weight={"exact": -1.0}))


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory):
    """One synthetic clip (exact, no provenance attribute) and its copy marked as pseudo-labelled."""
    root = tmp_path_factory.mktemp("provenance")
    store = LabelStore.create(root / "store", precision="float32")
    write_synthetic_set(root / "set", scene_configs(1, 32, 64, seed=3, num_frames=5), store)
    (clip_id,) = store.clip_ids()
    labels = store.read(clip_id)
    arrays = {k: v for k, v in labels.items() if k != "points"}
    kept = {k: v for k, v in labels.attrs.items() if k not in ("clip_id", "height", "width", "T", "status", "reasons")}
    store.commit(clip_id + "_est", arrays, {**kept, "provenance": _all("estimated")})
    return str(root / "store"), clip_id


def test_two_step_training_with_the_option_and_the_latent_cache(mixed_store, tmp_path, capsys):
    store, exact_id = mixed_store
    out, cache = tmp_path / "run", tmp_path / "cache"
    argv = ["--store", store, "--stage", "2", "--steps", "2", "--batch-size", "2", "--device", "cpu",
            "--output-dir", str(out), "--latent-cache", str(cache), "--no-gradient-checkpointing",
            "--provenance-weight", "estimated=0.5", "--provenance-weight-gm", "--dpt-weighting", "none"]
    assert main(argv) == 0
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2] and all(x["loss"] == x["loss"] and x["dpt"] > 0 for x in lines)
    saved = json.loads((out / "checkpoints" / "step_00000002" / "train_config.json").read_text())
    assert saved["provenance_weights"] == {"exact": 1.0, "derived": 1.0, "estimated": 0.5}
    capsys.readouterr()

    # the trained run resumed (no more steps): every term on one batch of both clips, same draws
    cfg = _job().build(_job().from_args(_parser().parse_args(argv)))[0]
    trainer = Trainer(cfg)
    ds = trainer.dataset
    order = sorted(range(len(ds)), key=lambda i: ds.entries[i].clip_id != exact_id)  # exact first
    batch = collate_samples([ds[i] for i in order])

    def terms(estimated: float) -> dict[str, float]:
        trainer.weights = dataclasses.replace(trainer.weights, provenance=ProvenanceWeights(estimated=estimated))
        return trainer.evaluate_losses(batch, seeds=(0,))

    one, zero, half = terms(1.0), terms(0.0), terms(0.5)
    assert zero["diff_rgb"] == one["diff_rgb"] == half["diff_rgb"]  # RGB is never weighted
    for name in (*TERMS, "diff_gm"):
        a = zero[name]  # the exact clip alone; b from the mean of both
        b = 2 * one[name] - a
        assert a > 0 and b > 0, name
        assert half[name] == pytest.approx((a + 0.5 * b) / 2, rel=1e-5), name


def test_a_batch_no_term_supervises_still_takes_a_step(mixed_store, tmp_path):
    store, exact_id = mixed_store
    cfg = TrainConfig(stores=[store], stage="1b", steps=1, output_dir=str(tmp_path / "run"), device="cpu",
                      gradient_checkpointing=False, provenance_weights=ProvenanceWeights(estimated=0.0))
    trainer = Trainer(cfg)
    ds = trainer.dataset
    (estimated,) = [i for i in range(len(ds)) if ds.entries[i].clip_id != exact_id]
    metrics = trainer.train_step(collate_samples([ds[estimated]]))
    assert metrics["loss"] == 0 and all(metrics[name] == 0 for name in (*TERMS, "dpt"))
    assert metrics["grad_norm"] == 0 and trainer.step == 1
