import json
from types import SimpleNamespace

import pytest
import torch
from diffusers import CogVideoXTransformer3DModel
from diffusers.pipelines.cogvideo.pipeline_cogvideox_image2video import CogVideoXImageToVideoPipeline

from model.dit import GeoMotionDiT, GMAugmentationConfig, rotary_embeddings, tiny_transformer_config

B, L = 2, 4


def _base(config: dict, seed: int = 0) -> CogVideoXTransformer3DModel:
    torch.manual_seed(seed)
    model = CogVideoXTransformer3DModel.from_config(config).eval()
    with torch.no_grad():  # diffusers zero-inits some layers; make every weight informative
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _inputs(config: dict, frames: int, image: bool, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    h, w = config["sample_height"], config["sample_width"]
    return dict(
        rgb=torch.randn(B, frames, 16, h, w, generator=g),
        image=torch.randn(B, frames, 16, h, w, generator=g) if image else None,
        gm=torch.randn(B, frames, 16, h, w, generator=g),
        text=torch.randn(B, L, config["text_embed_dim"], generator=g),
        t=torch.tensor([10, 700]),
    )


CASES = {
    "i2v-1.0": (dict(image_conditioned=True), 3),
    "t2v-1.0": (dict(image_conditioned=False), 3),
    "i2v-1.5": (dict(image_conditioned=True, patch_size_t=2), 4),
    "t2v-1.5": (dict(image_conditioned=False, patch_size_t=2), 4),
}


@pytest.mark.parametrize("case", list(CASES))
def test_widened_rgb_output_equals_base(case, tmp_path):
    kwargs, frames = CASES[case]
    config = tiny_transformer_config(**kwargs)
    base = _base(config)
    base.save_pretrained(tmp_path / "base")
    aug = GMAugmentationConfig(image_cond_channels=16 if kwargs["image_conditioned"] else 0, tap_blocks=[0, 1])
    model = GeoMotionDiT.from_pretrained(tmp_path / "base", aug).eval()
    assert model.config.in_channels == (48 if kwargs["image_conditioned"] else 32)
    assert model.config.out_channels == 32

    x = _inputs(config, frames, kwargs["image_conditioned"])
    base_in = torch.cat([x["rgb"], x["image"]], dim=2) if x["image"] is not None else x["rgb"]
    rope = rotary_embeddings(base.config, frames, config["sample_height"], config["sample_width"])
    with torch.no_grad():
        expected = base(base_in, x["text"], x["t"], image_rotary_emb=rope, return_dict=False)[0]
        out = model(x["rgb"], x["gm"], x["text"], x["t"], image_latents=x["image"])
        out_other_gm = model(x["rgb"], 5 * x["gm"] + 1, x["text"], x["t"], image_latents=x["image"])
    assert expected.shape == out.rgb.shape
    assert expected.abs().mean() > 0.1
    torch.testing.assert_close(out.rgb, expected, atol=1e-5, rtol=1e-5)
    # zero-initialised gm output rows and input columns: gm prediction is 0, gm input is ignored
    assert torch.count_nonzero(out.gm) == 0
    torch.testing.assert_close(out_other_gm.rgb, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("patch_size_t,frames", [(None, 3), (2, 4)])
def test_row_and_column_layout(patch_size_t, frames):
    """copy_rgb duplicates the RGB rows: gm channel c must then equal rgb channel c, which only
    holds if the channel is the slowest axis of proj_out's rows. Perturbing the gm rows must leave
    RGB untouched, and non-zero gm columns must make the gm input matter."""
    config = tiny_transformer_config(image_conditioned=True, patch_size_t=patch_size_t)
    aug = GMAugmentationConfig(gm_out_init="copy_rgb", tap_blocks=[1])
    torch.manual_seed(0)
    model = GeoMotionDiT.from_config(config, aug).eval()
    x = _inputs(config, frames, image=True)
    with torch.no_grad():
        out = model(x["rgb"], x["gm"], x["text"], x["t"], image_latents=x["image"])
        torch.testing.assert_close(out.gm, out.rgb)
        rows = model.transformer.proj_out.weight.shape[0] // 2
        model.transformer.proj_out.weight[rows:].normal_()
        out2 = model(x["rgb"], x["gm"], x["text"], x["t"], image_latents=x["image"])
        torch.testing.assert_close(out2.rgb, out.rgb)
        assert (out2.gm - out.gm).abs().max() > 1e-2
        proj = model.transformer.patch_embed.proj
        cols = proj.weight.shape[1] * 32 // 48  # first 32 of 48 channels are pretrained
        assert torch.count_nonzero(proj.weight[:, cols:]) == 0
        proj.weight[:, cols:].normal_()
        out3 = model(x["rgb"], x["gm"], x["text"], x["t"], image_latents=x["image"])
        assert (out3.rgb - out2.rgb).abs().max() > 1e-2


def test_save_load_round_trip_and_config(tmp_path):
    config = tiny_transformer_config()
    aug = GMAugmentationConfig(tap_blocks=[0, 1])
    torch.manual_seed(0)
    model = GeoMotionDiT.from_config(config, aug).eval()
    with torch.no_grad():
        model.transformer.proj_out.weight.normal_()
    model.save_pretrained(tmp_path / "wr")
    assert json.loads((tmp_path / "wr" / "gm_augmentation.json").read_text()) == aug.to_dict()
    loaded = GeoMotionDiT.from_pretrained(tmp_path / "wr").eval()
    assert loaded.aug == aug
    x = _inputs(config, 3, image=True)
    with torch.no_grad():
        a = model(x["rgb"], x["gm"], x["text"], x["t"], image_latents=x["image"])
        b = loaded(x["rgb"], x["gm"], x["text"], x["t"], image_latents=x["image"])
    torch.testing.assert_close(a.gm, b.gm)
    with pytest.raises(FileNotFoundError, match="hub"):
        GeoMotionDiT.from_pretrained("THUDM/CogVideoX-5b-I2V")
    with pytest.raises(ValueError, match="already widened"):
        GeoMotionDiT.from_pretrained(tmp_path / "wr", GMAugmentationConfig(tap_blocks=[1]))


def test_hidden_state_taps_with_checkpointing():
    config = tiny_transformer_config()
    torch.manual_seed(0)
    model = GeoMotionDiT.from_config(config, GMAugmentationConfig(tap_blocks=[1, 0]))
    x = _inputs(config, 3, image=True)
    out = model(x["rgb"], x["gm"], x["text"], x["t"], image_latents=x["image"], return_hidden_states=True)
    tokens = 3 * (8 // 2) * (12 // 2)
    assert [h.shape for h in out.hidden_states] == [torch.Size([B, tokens, 32])] * 2
    model.enable_gradient_checkpointing()
    model.train()
    out_ckpt = model(x["rgb"], x["gm"], x["text"], x["t"], image_latents=x["image"], return_hidden_states=True)
    for a, b in zip(out.hidden_states, out_ckpt.hidden_states, strict=True):
        torch.testing.assert_close(a, b)
    loss = out_ckpt.hidden_states[1].square().mean() + out_ckpt.rgb.square().mean()
    loss.backward()
    assert model.transformer.transformer_blocks[0].ff.net[0].proj.weight.grad.abs().sum() > 0
    assert out_ckpt.hidden_states is not None and model._taps is None
    with pytest.raises(ValueError, match="image_latents"):
        model(x["rgb"], x["gm"], x["text"], x["t"])


@pytest.mark.parametrize("patch_size_t", [None, 2])
def test_rotary_matches_diffusers_pipeline(patch_size_t):
    config = tiny_transformer_config(patch_size_t=patch_size_t, sample_height=60, sample_width=90)
    cfg = SimpleNamespace(**config)
    fake_pipe = SimpleNamespace(vae_scale_factor_spatial=8, transformer=SimpleNamespace(config=cfg))
    expected = CogVideoXImageToVideoPipeline._prepare_rotary_positional_embeddings(fake_pipe, 480, 720, 4, "cpu")
    got = rotary_embeddings(cfg, 4, 60, 90)
    for e, g in zip(expected, got, strict=True):
        torch.testing.assert_close(g, e)


def test_frozen_parts_load_in_the_dtype_asked_for(tmp_path):
    """Stage 1b and inference load the DiT and VAE in bf16; diffusers silently ignores
    `torch_dtype` without `accelerate` (a declared dependency for that reason)."""
    from diffusers import AutoencoderKLCogVideoX

    from model.encoders import load_vae, tiny_vae_config

    GeoMotionDiT.from_config(tiny_transformer_config(), GMAugmentationConfig(tap_blocks=[1])).save_pretrained(
        tmp_path / "wr"
    )
    AutoencoderKLCogVideoX(**tiny_vae_config(32, 32)).save_pretrained(tmp_path / "vae")
    dit = GeoMotionDiT.from_pretrained(tmp_path / "wr", torch_dtype=torch.bfloat16)
    vae = load_vae(tmp_path, torch_dtype=torch.bfloat16)
    assert {p.dtype for p in dit.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in vae.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in GeoMotionDiT.from_pretrained(tmp_path / "wr").parameters()} == {torch.float32}
