"""SEA-RAFT: checkpoint layouts (strict, against the reference manifests), parity numbers,
shapes, padding, determinism, uncertainty maths and checkpoint files, all on CPU."""

import hashlib
import json
import math
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from labelers.flow import FlowEstimator
from labelers.sea_raft import (
    SEA_RAFT_VARIANTS,
    SeaRaft,
    SeaRaftFlow,
    expected_epe_from_info,
    infer_variant,
    laplace_pair_epe,
)

REPO = Path(__file__).resolve().parents[2]
MANIFEST_DIRS = [
    Path(os.environ.get("SEA_RAFT_MANIFEST_DIR", REPO / "tests" / "labelers" / "data" / "sea_raft")),
    Path("/work/shared/reference/sea_raft"),
]


def manifest(variant: str) -> dict:
    for folder in MANIFEST_DIRS:
        path = folder / f"state_dict_{variant}.json"
        if path.is_file():
            return json.loads(path.read_text())
    pytest.skip(f"state_dict_{variant}.json not found in {[str(d) for d in MANIFEST_DIRS]} (set SEA_RAFT_MANIFEST_DIR)")


_DTYPES = {"float32": torch.float32, "int64": torch.int64}


def manifest_state_dict(variant: str, layout: str) -> dict[str, torch.Tensor]:
    """Random tensors with exactly the keys, shapes and dtypes of an official checkpoint.

    layout "pth": every key of the manifest, the aliased BatchNorm names sharing one tensor;
    layout "safetensors": the de-duplicated file (the `downsample.1.*` aliases dropped).
    """
    info = manifest(variant)
    generator = torch.Generator().manual_seed(0)
    state = {}
    for key, shape, dtype in info["state_dict"]:
        if _DTYPES[dtype] == torch.int64:
            state[key] = torch.randint(0, 1000, shape, generator=generator)
        else:
            state[key] = torch.randn(shape, generator=generator)
    for alias, kept in info["aliased_keys"]["pairs"]:
        if layout == "pth":
            state[alias] = state[kept]
        else:
            del state[alias]
    if layout == "pth":
        assert len(state) == info["state_dict_num_keys"]
    else:
        assert len(state) == info["checkpoint_notes"]["safetensors_expected_num_keys"]
    return state


@pytest.mark.parametrize("variant", ["S", "M", "L"])
@pytest.mark.parametrize("layout", ["pth", "safetensors"])
def test_official_layouts_load_strictly(variant, layout):
    state = manifest_state_dict(variant, layout)
    model = SeaRaft(SEA_RAFT_VARIANTS[variant])
    model.load_state_dict(state, strict=True)
    loaded = model.state_dict()
    for key, value in loaded.items():
        torch.testing.assert_close(value, state[key], rtol=0, atol=0)
    assert sum(p.numel() for p in model.parameters()) == manifest(variant)["num_parameters"]


@pytest.mark.parametrize("layout", ["pth", "safetensors"])
def test_strict_loading_rejects_missing_unexpected_and_misshaped_keys(layout):
    model = SeaRaft(SEA_RAFT_VARIANTS["S"])
    state = manifest_state_dict("S", layout)
    missing = dict(state)
    del missing["update_block.refine.1.gamma"]
    with pytest.raises(RuntimeError, match="Missing key.*refine.1.gamma"):
        model.load_state_dict(missing, strict=True)
    unexpected = dict(state, **{"update_block.extra.weight": torch.zeros(1)})
    with pytest.raises(RuntimeError, match="Unexpected key.*update_block.extra.weight"):
        model.load_state_dict(unexpected, strict=True)
    misshaped = dict(state, **{"flow_head.2.weight": torch.zeros(4, 256, 3, 3)})
    with pytest.raises(RuntimeError, match="size mismatch for flow_head.2.weight"):
        model.load_state_dict(misshaped, strict=True)
    other_variant = manifest_state_dict("M", layout)
    with pytest.raises(RuntimeError, match="Unexpected key"):
        model.load_state_dict(other_variant, strict=True)


def test_inconsistent_bn_alias_is_rejected():
    state = manifest_state_dict("S", "pth")
    state["fnet.layer3.0.downsample.1.running_var"] = state["fnet.layer3.0.bn3.running_var"] + 1
    with pytest.raises(ValueError, match="fnet.layer3.0.bn3.running_var.*differ"):
        SeaRaft(SEA_RAFT_VARIANTS["S"]).load_state_dict(state, strict=True)


def test_structure_matches_the_published_counts():
    """Counts from reference/sea_raft/ARCHITECTURE.md section 1 (no manifest needed)."""
    expected_by_module = {
        "S": {"cnet": 2860224, "fnet": 2850816},
        "M": {"cnet": 8250432, "fnet": 8241024},
    }
    shared = {"init_conv": 590080, "flow_head": 308998, "upsample_weight": 443200, "update_block": 1830142}
    for variant, total, keys in (("S", 8883460, 256), ("M", 19663876, 452), ("L", 19663876, 452)):
        model = SeaRaft(SEA_RAFT_VARIANTS[variant])
        assert sum(p.numel() for p in model.parameters()) == total
        assert len(model.state_dict()) == keys
        by_module = {name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()}
        assert by_module == {**expected_by_module["M" if variant == "L" else variant], **shared}
    assert SEA_RAFT_VARIANTS["L"].iters == 12 and SEA_RAFT_VARIANTS["M"].iters == 4


# ----------------------------------------------------------------------------- parity
def parity_weight(key: str, shape: tuple[int, ...]) -> torch.Tensor:
    """Deterministic, well-scaled weights keyed by name (so module order does not matter)."""
    generator = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.long)
    if key.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=generator)
    if key.endswith("gamma"):
        return 0.5 * torch.randn(shape, generator=generator)
    if key.endswith(("running_mean", "bias")):
        return 0.1 * torch.randn(shape, generator=generator)
    if len(shape) == 1:
        return 1.0 + 0.1 * torch.randn(shape, generator=generator)
    return torch.randn(shape, generator=generator) * math.sqrt(0.5 / math.prod(shape[1:]))


def parity_images() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    base = torch.rand(1, 3, 34, 37, generator=generator) * 255
    image1 = torch.nn.functional.interpolate(base, size=(128, 140), mode="bicubic", align_corners=False)
    image1 = image1.clamp(0, 255).round()
    return image1, torch.roll(image1, shifts=(2, -3), dims=(2, 3))


# Recorded from the upstream implementation (princeton-vl/SEA-RAFT core/ at 086ab3b, with
# the layer module as ported in hmorimitsu/ptlflow) run in a scratch environment on the same
# weights and images; our outputs matched all iters + 1 predictions to < 2e-5 px.
# Per entry: prediction index -> (mean flow (dx, dy), mean |flow|, flow at (row 60, col 70),
# raw info at (60, 70)).
PARITY = {
    "S": {
        4: (
            (-2.487786293029785, 7.8473381996154785),
            5.178916931152344,
            (-3.868241310119629, 7.985828399658203),
            (-0.06752702593803406, -0.09629485756158829, 0.0405673123896122, -0.17024458944797516),
        ),
    },
    "L": {
        4: (  # = the M variant, whose 4 iterations are L's first 4
            (-3.1029250621795654, 11.116689682006836),
            7.135718822479248,
            (-3.8096373081207275, 12.753850936889648),
            (0.08697182685136795, -0.2400621920824051, 0.40581512451171875, -0.1617373824119568),
        ),
        12: (
            (-8.81979751586914, 26.566312789916992),
            17.815258026123047,
            (-12.026345252990723, 29.517375946044922),
            (0.04955049976706505, -0.16409683227539062, 0.378574937582016, -0.17528036236763),
        ),
    },
}


@pytest.mark.parametrize("variant", ["S", "L"])
def test_matches_upstream_outputs(variant):
    model = SeaRaft(SEA_RAFT_VARIANTS[variant]).eval()
    model.load_state_dict({k: parity_weight(k, tuple(v.shape)) for k, v in model.state_dict().items()}, strict=True)
    image1, image2 = parity_images()
    with torch.inference_mode():
        out = model(image1, image2, return_all=True)
    assert len(out.flow_predictions) == model.config.iters + 1
    for index, (mean, abs_mean, flow_px, info_px) in PARITY[variant].items():
        flow, info = out.flow_predictions[index], out.info_predictions[index]
        np.testing.assert_allclose(flow.mean((0, 2, 3)).numpy(), mean, atol=2e-4)
        assert flow.abs().mean().item() == pytest.approx(abs_mean, abs=2e-4)
        np.testing.assert_allclose(flow[0, :, 60, 70].numpy(), flow_px, atol=2e-4)
        np.testing.assert_allclose(info[0, :, 60, 70].numpy(), info_px, atol=2e-5)


# ----------------------------------------------------------------------------- tiny forward
def tiny_images(n: int = 2, height: int = 64, width: int = 96, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, height // 4 + 2, width // 4 + 2, 3)).astype(np.float32)
    images = np.kron(coarse, np.ones((1, 4, 4, 1)))[:, :height, :width]
    return images.astype(np.uint8), np.roll(images, (1, 2), axis=(1, 2)).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, SeaRaft]:
    torch.manual_seed(0)
    return {variant: SeaRaft(cfg).eval() for variant, cfg in SEA_RAFT_VARIANTS.items()}


@pytest.mark.parametrize("variant", ["S", "M"])
def test_tiny_forward_shapes_determinism_and_uncertainty(tiny_models, variant):
    # Iterations cut to 2 to keep the CPU test fast; the loop is the same for any count.
    flow = SeaRaftFlow(tiny_models[variant], device="cpu", iters=2, batch_size=2)
    assert isinstance(flow, FlowEstimator)
    json.dumps(flow.params)
    src, dst = tiny_images(2)
    first = flow.estimate(src, dst)
    second = flow.estimate(src, dst)
    assert first.flow_px.shape == (2, 64, 96, 2) and first.uncertainty_px.shape == (2, 64, 96)
    np.testing.assert_array_equal(first.flow_px, second.flow_px)
    np.testing.assert_array_equal(first.uncertainty_px, second.uncertainty_px)
    assert np.isfinite(first.flow_px).all()
    assert np.isfinite(first.uncertainty_px).all() and (first.uncertainty_px >= 1.6232).all()
    # Batching and the bidirectional call must not change the answer.
    fwd, bwd = SeaRaftFlow(tiny_models[variant], device="cpu", iters=2, batch_size=1).estimate_bidirectional(src, dst)
    np.testing.assert_allclose(fwd.flow_px, first.flow_px, atol=1e-4)
    np.testing.assert_allclose(bwd.flow_px[:1], flow.estimate(dst[:1], src[:1]).flow_px, atol=1e-4)


def test_tiny_forward_of_l_runs_twelve_iterations(tiny_models):
    flow = SeaRaftFlow(tiny_models["L"], device="cpu")
    assert flow.iters == 12 and flow.params["iters"] == 12
    src, dst = tiny_images(2)
    first, second = flow.estimate(src, dst), flow.estimate(src, dst)
    assert first.flow_px.shape == (2, 64, 96, 2)
    np.testing.assert_array_equal(first.flow_px, second.flow_px)
    assert np.isfinite(first.flow_px).all()
    assert np.isfinite(first.uncertainty_px).all() and (first.uncertainty_px >= 1.6232).all()


def test_prediction_count_follows_iterations(tiny_models):
    image1, image2 = (torch.from_numpy(x).permute(0, 3, 1, 2).float() for x in tiny_images(1))
    with torch.inference_mode():
        out = tiny_models["S"](image1, image2, iters=3, return_all=True)
        final_only = tiny_models["S"](image1, image2, iters=3)
        initial = tiny_models["S"](image1, image2, iters=0)
    assert len(out.flow_predictions) == len(out.info_predictions) == 4
    assert out.info.shape == (1, 4, 64, 96)
    torch.testing.assert_close(final_only.flow, out.flow_predictions[-1])
    torch.testing.assert_close(initial.flow, out.flow_predictions[0])
    assert final_only.flow_predictions == []


def test_padding_is_replicate_split_and_cropped_back(tiny_models):
    """A 61x90 input equals the crop of a 64x96 input padded by hand (top 1, bottom 2, left/right 3)."""
    src, dst = tiny_images(1, 61, 90, seed=3)
    pad = ((0, 0), (1, 2), (3, 3), (0, 0))
    flow = SeaRaftFlow(tiny_models["S"], device="cpu", iters=1)
    small = flow.estimate(src, dst)
    padded = flow.estimate(np.pad(src, pad, mode="edge"), np.pad(dst, pad, mode="edge"))
    assert small.flow_px.shape == (1, 61, 90, 2)
    np.testing.assert_allclose(small.flow_px, padded.flow_px[:, 1:62, 3:93], atol=1e-5)
    np.testing.assert_allclose(small.uncertainty_px, padded.uncertainty_px[:, 1:62, 3:93], atol=1e-5)


def test_too_small_input_is_refused(tiny_models):
    src, dst = tiny_images(1, 56, 96)
    with pytest.raises(ValueError, match="56x96 is too small.*64x64"):
        SeaRaftFlow(tiny_models["S"], device="cpu").estimate(src, dst)
    with pytest.raises(TypeError, match="uint8"):
        SeaRaftFlow(tiny_models["S"], device="cpu").estimate(src.astype(np.float32), dst)


# ----------------------------------------------------------------------------- uncertainty
def test_laplace_pair_epe_matches_monte_carlo():
    rng = np.random.default_rng(0)
    x, y = rng.laplace(size=(2, 2_000_000))
    assert laplace_pair_epe(torch.tensor(1.0), torch.tensor(1.0)).item() == pytest.approx(1.62323, abs=1e-5)
    for b1, b2 in ((1.0, 1.0), (3.0, 1.0), (1.0, 20.0), (1.0, math.exp(10))):
        monte_carlo = np.sqrt((b1 * x) ** 2 + (b2 * y) ** 2).mean()
        exact = laplace_pair_epe(torch.tensor(b1, dtype=torch.float64), torch.tensor(b2, dtype=torch.float64)).item()
        assert exact == pytest.approx(monte_carlo, rel=3e-3), (b1, b2)


def test_expected_epe_of_the_mixture_matches_sampling():
    rng = np.random.default_rng(1)
    n = 1_000_000
    # [logit_A, logit_B, raw log b_A, raw log b_B]; b_B is clamped to exp(0) = 1.
    for info in ((0.3, -0.2, 1.5, 0.7), (-2.0, 0.5, 3.0, -1.0), (2.0, 0.0, 0.5, 0.0)):
        logits = np.array(info[:2])
        pi_a = np.exp(logits[0]) / np.exp(logits).sum()
        b_a, b_b = math.exp(info[2]), 1.0
        scales = [np.where(rng.random(n) < pi_a, b_a, b_b) for _ in range(2)]  # x and y independent
        monte_carlo = np.hypot(scales[0] * rng.laplace(size=n), scales[1] * rng.laplace(size=n)).mean()
        exact = expected_epe_from_info(torch.tensor(info, dtype=torch.float32).view(1, 4, 1, 1)).item()
        assert exact == pytest.approx(monte_carlo, rel=5e-3), info


def test_mixture_scales_are_clamped_like_upstream():
    def epe(info):
        return expected_epe_from_info(torch.tensor(info, dtype=torch.float32).view(1, 4, 1, 1)).item()

    assert epe((0.0, 0.0, 14.0, 0.0)) == epe((0.0, 0.0, 10.0, 0.0))  # log b_A <= var_max = 10
    assert epe((0.0, 0.0, -3.0, 0.0)) == epe((0.0, 0.0, 0.0, 0.0))  # log b_A >= 0
    assert epe((0.0, 0.0, 2.0, 5.0)) == epe((0.0, 0.0, 2.0, -5.0)) == epe((0.0, 0.0, 2.0, 0.0))  # b_B = 1
    assert epe((-30.0, 30.0, 5.0, 0.0)) == pytest.approx(1.62323, abs=1e-5)  # all weight on b_B = 1 px
    assert epe((30.0, -30.0, 2.0, 0.0)) == pytest.approx(1.62323 * math.exp(2.0), rel=1e-5)


# ----------------------------------------------------------------------------- checkpoint files
def official_layout(model: SeaRaft) -> dict[str, torch.Tensor]:
    """Our state dict plus the `.pth` aliases `downsample.1.*` of every shortcut BatchNorm."""
    state = dict(model.state_dict())
    for key in [k for k in state if ".bn3." in k]:
        state[key.replace(".bn3.", ".downsample.1.")] = state[key]
    return state


def test_checkpoint_files_round_trip(tmp_path, tiny_models):
    model = tiny_models["S"]
    pth, safetensors = tmp_path / "Tartan-S.pth", tmp_path / "model.safetensors"
    torch.save(official_layout(model), pth)
    save_file(model.state_dict(), str(safetensors))
    src, dst = tiny_images(1)
    reference = SeaRaftFlow(model, device="cpu", iters=1).estimate(src, dst)
    for path in (pth, safetensors):
        loaded = SeaRaftFlow.from_checkpoint(path, device="cpu", iters=1)
        assert loaded.model.config.variant == "S"
        assert loaded.params["weights_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
        result = loaded.estimate(src, dst)
        np.testing.assert_array_equal(result.flow_px, reference.flow_px)
        np.testing.assert_array_equal(result.uncertainty_px, reference.uncertainty_px)


def test_variant_is_inferred_and_l_shares_m_weights(tmp_path, tiny_models):
    path = tmp_path / "model.safetensors"
    save_file(tiny_models["M"].state_dict(), str(path))
    assert SeaRaftFlow.from_checkpoint(path, device="cpu").model.config.variant == "M"
    as_l = SeaRaftFlow.from_checkpoint(path, variant="L", device="cpu")
    assert as_l.model.config.variant == "L" and as_l.iters == 12
    assert infer_variant(tiny_models["S"].state_dict()) == "S"


def test_checkpoint_errors_name_the_path_and_the_problem(tmp_path, tiny_models):
    missing = tmp_path / "absent.pth"
    with pytest.raises(FileNotFoundError, match="absent.pth"):
        SeaRaftFlow.from_checkpoint(missing)

    garbage = tmp_path / "notes.pth"
    garbage.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="notes.pth.*not a readable SEA-RAFT checkpoint"):
        SeaRaftFlow.from_checkpoint(garbage)

    foreign = tmp_path / "other.safetensors"
    save_file({"encoder.weight": torch.zeros(2, 2)}, str(foreign))
    with pytest.raises(ValueError, match="other.safetensors.*not a SEA-RAFT checkpoint"):
        SeaRaftFlow.from_checkpoint(foreign)

    lightning = tmp_path / "sea_raft_s-things.ckpt"
    torch.save({"state_dict": tiny_models["S"].state_dict(), "hyper_parameters": {}}, lightning)
    with pytest.raises(ValueError, match="sea_raft_s-things.ckpt.*'hyper_parameters', 'state_dict'.*not tensors"):
        SeaRaftFlow.from_checkpoint(lightning)

    small = tmp_path / "Tartan-S.safetensors"
    save_file(tiny_models["S"].state_dict(), str(small))
    with pytest.raises(ValueError, match="Tartan-S.safetensors.*holds SEA-RAFT S weights.*'M'"):
        SeaRaftFlow.from_checkpoint(small, variant="M")
    with pytest.raises(ValueError, match="variant must be one of"):
        SeaRaftFlow.from_checkpoint(small, variant="XL")

    truncated = tmp_path / "truncated.pth"
    state = official_layout(tiny_models["S"])
    del state["upsample_weight.2.bias"]
    torch.save(state, truncated)
    with pytest.raises(ValueError, match="(?s)truncated.pth.*do not fit SEA-RAFT S.*upsample_weight.2.bias"):
        SeaRaftFlow.from_checkpoint(truncated)
