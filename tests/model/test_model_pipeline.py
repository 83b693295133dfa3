import copy

import pytest
import torch
from diffusers import AutoencoderKLCogVideoX, CogVideoXTransformer3DModel
from diffusers.pipelines.cogvideo.pipeline_cogvideox_image2video import CogVideoXImageToVideoPipeline

from model.camera import decode_camera
from model.dit import GeoMotionDiT, GMAugmentationConfig, expand_transformer, tiny_transformer_config
from model.dpt_head import DPTHeadConfig, TemporalDPTHead
from model.encoders import HashTextEncoder, VideoLatentEncoder, tiny_vae_config
from model.losses import cogvideox_scheduler
from model.pipeline import WorldReelPipeline, make_scheduler

T, H, W = 9, 32, 64
F, S = 3, 3


@pytest.fixture(scope="module")
def parts():
    torch.manual_seed(0)
    config = tiny_transformer_config(sample_height=H // 8, sample_width=W // 8, sample_frames=T)
    base = CogVideoXTransformer3DModel.from_config(config).eval()
    with torch.no_grad():  # diffusers zero-inits some layers; make every weight informative
        for p in base.parameters():
            p.add_(0.05 * torch.randn_like(p))
    aug = GMAugmentationConfig(tap_blocks=[0, 1, 1, 1])
    dit = GeoMotionDiT(expand_transformer(copy.deepcopy(base), aug), aug)
    with torch.no_grad():  # as after training: the gm latents matter
        dit.transformer.patch_embed.proj.weight[:, 32:].normal_(std=0.05)
        dit.transformer.proj_out.weight[64:].normal_(std=0.05)
    vae = AutoencoderKLCogVideoX(**tiny_vae_config(H, W)).eval()
    text = HashTextEncoder(config["text_embed_dim"], config["max_text_seq_length"])
    head = TemporalDPTHead.from_head_config(DPTHeadConfig.tiny(32))
    return dict(base=base, dit=dit, vae=vae, text=text, head=head)


def _pipe(parts, kind="dpm", dit=None):
    scheduler = make_scheduler(cogvideox_scheduler(), kind)
    return WorldReelPipeline(dit or parts["dit"], parts["head"], VideoLatentEncoder(parts["vae"]), parts["text"], scheduler)


def _image(seed=0, batch=1):
    return torch.rand(batch, 3, H, W, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def test_rgb_path_equals_diffusers_i2v_pipeline(parts):
    """With the new gm input columns zero (as at initialisation) the RGB latents of a guided DDIM
    run must equal diffusers' own CogVideoX-I2V pipeline on the base transformer, bit for bit."""
    aug = parts["dit"].aug
    fresh = GeoMotionDiT(expand_transformer(copy.deepcopy(parts["base"]), aug), aug)
    pipe = _pipe(parts, "ddim", dit=fresh)
    image = _image()
    out = pipe(image, "a room", num_inference_steps=3, guidance_scale=4.0, generator=_gen(5), decode_video=False)

    g = _gen(5)  # replay the draws: image posterior sample, then the joint [rgb | gm] noise
    torch.randn(1, 1, 16, H // 8, W // 8, generator=g)
    noise = torch.randn(1, F, 32, H // 8, W // 8, generator=g)[:, :, :16]
    scheduler = make_scheduler(cogvideox_scheduler(), "ddim")
    reference = CogVideoXImageToVideoPipeline(None, None, parts["vae"], parts["base"], scheduler)
    reference.set_progress_bar_config(disable=True)
    embeds = parts["text"](["", "a room"])
    expected = reference(
        image=(image + 1) / 2,
        prompt_embeds=embeds[1:],
        negative_prompt_embeds=embeds[:1],
        height=H,
        width=W,
        num_frames=T,
        num_inference_steps=3,
        guidance_scale=4.0,
        generator=_gen(5),
        latents=noise,
        output_type="latent",
        return_dict=False,
    )[0]
    torch.testing.assert_close(out.rgb_latents, expected, rtol=0, atol=1e-6)


def test_outputs_shapes_determinism_and_cameras(parts):
    pipe = _pipe(parts, "dpm")
    image = _image(batch=2)
    out = pipe(image, ["a room", "a street"], num_inference_steps=3, guidance_scale=3.0, generator=_gen(1))
    assert out.video.shape == (2, T, 3, H, W) and 0 <= out.video.min() and out.video.max() <= 1
    assert out.depth.shape == (2, S, H, W) and (out.depth > 0).all()
    assert out.points.shape == (2, S, H, W, 3) and out.scene_flow.shape == (2, S - 1, H, W, 3)
    assert out.mask_logits.shape == (2, S, H, W) and out.camera.shape == (2, S, 9)
    assert out.rgb_latents.shape == out.gm_latents.shape == (2, F, 16, H // 8, W // 8) and out.stride == 4
    for name, value in vars(out).items():
        if isinstance(value, torch.Tensor):
            assert torch.isfinite(value).all(), name
    # cameras: decoded from the 9-vectors, made relative to the first key frame
    c2w, K = decode_camera(out.camera, H, W)
    torch.testing.assert_close(out.K, K)
    torch.testing.assert_close(out.c2w, torch.linalg.inv(c2w[:, :1]) @ c2w)
    assert torch.equal(out.c2w[:, 0], torch.eye(4).expand(2, 4, 4))
    assert torch.allclose(out.c2w[..., :3, :3] @ out.c2w[..., :3, :3].transpose(-1, -2), torch.eye(3), atol=1e-5)

    again = pipe(image, ["a room", "a street"], num_inference_steps=3, guidance_scale=3.0, generator=_gen(1))
    other = pipe(image, ["a room", "a street"], num_inference_steps=3, guidance_scale=3.0, generator=_gen(2))
    for name in ("video", "depth", "camera", "scene_flow", "gm_latents"):
        assert torch.equal(getattr(out, name), getattr(again, name)), name
        assert not torch.equal(getattr(out, name), getattr(other, name)), name


def test_head_reads_the_last_steps_conditional_features(parts):
    pipe = _pipe(parts, "ddim")
    calls = []
    handle = pipe.dit.register_forward_hook(lambda module, args, kwargs, output: calls.append(output), with_kwargs=True)
    try:
        out = pipe(_image(), "a room", num_inference_steps=2, guidance_scale=2.0, generator=_gen(0), decode_video=False)
    finally:
        handle.remove()
    assert len(calls) == 2 and calls[0].hidden_states is None
    taps = calls[-1].hidden_states
    assert taps[0].shape[0] == 2  # [unconditional, conditional]
    expected = parts["head"]([t[1:] for t in taps], F, (H // 16, W // 16), (H, W))
    torch.testing.assert_close(out.depth, expected.depth)
    torch.testing.assert_close(out.camera, expected.camera)
    unconditional = parts["head"]([t[:1] for t in taps], F, (H // 16, W // 16), (H, W))
    assert not torch.allclose(out.depth, unconditional.depth)


def test_reconstruction_keeps_the_given_video(parts):
    pipe = _pipe(parts, "ddim")
    video = torch.rand(1, T, 3, H, W, generator=_gen(3)) * 2 - 1
    out = pipe(video[:, 0], "a room", 2, 1.0, generator=_gen(4), video=video, decode_video=False)
    g = _gen(4)
    pipe.vae.sample(video[:, :1], g)  # the image condition's draw comes first
    torch.testing.assert_close(out.rgb_latents, pipe.vae.sample(video, g))
    changed = video.clone()
    changed[:, 5:] = -changed[:, 5:]
    other = pipe(video[:, 0], "a room", 2, 1.0, generator=_gen(4), video=changed, decode_video=False)
    assert not torch.allclose(out.depth[:, -1], other.depth[:, -1])


def test_input_checks(parts):
    pipe = _pipe(parts)
    with pytest.raises(ValueError, match="image must be"):
        pipe(torch.zeros(3, H, W), "x")
    with pytest.raises(ValueError, match="multiples of 16"):
        pipe(torch.zeros(1, 3, H, W + 8), "x")
    with pytest.raises(ValueError, match="num_frames"):
        pipe(_image(), "x", num_frames=7)
    with pytest.raises(ValueError, match="prompts for"):
        pipe(_image(batch=2), ["x"])
    with pytest.raises(ValueError, match="scheduler must be"):
        make_scheduler(cogvideox_scheduler(), "euler")


def test_from_checkpoint_with_a_local_base_model_folder(parts, tmp_path):
    """The production path: a cogvideox-5b-i2v run loads VAE, T5 and scheduler from the base folder."""
    import dataclasses
    import json
    import shutil

    from transformers import T5Config, T5EncoderModel

    from model.encoders import T5TextEncoder
    from model.train import TrainConfig

    spm = pytest.importorskip("sentencepiece")
    base = tmp_path / "base"
    # tiles follow the config's sample size; at twice the clip size the tiny clip is one tile
    vae = AutoencoderKLCogVideoX(**tiny_vae_config(2 * H, 2 * W))
    vae.load_state_dict(parts["vae"].state_dict())
    vae.save_pretrained(base / "vae")
    cogvideox_scheduler().save_pretrained(base / "scheduler")
    T5EncoderModel(T5Config(vocab_size=48, d_model=24, d_kv=8, d_ff=32, num_layers=1, num_heads=2)).save_pretrained(
        base / "text_encoder"
    )
    (base / "tokenizer").mkdir()
    (tmp_path / "corpus.txt").write_text("a dolly shot of a textured room with still and moving objects\n" * 20)
    spm.SentencePieceTrainer.train(
        input=str(tmp_path / "corpus.txt"),
        model_prefix=str(base / "tokenizer" / "spiece"),
        vocab_size=30,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        minloglevel=2,
    )
    (base / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 0}))
    ckpt = tmp_path / "step_00000001"
    parts["dit"].save_pretrained(ckpt / "dit")
    parts["head"].save_pretrained(ckpt / "dpt_head")
    run = TrainConfig(config="cogvideox-5b-i2v", stage="2", stores=["store"], weights=str(base))
    (ckpt / "train_config.json").write_text(json.dumps(dataclasses.asdict(run)))

    pipe = WorldReelPipeline.from_checkpoint(ckpt, scheduler="ddim")
    assert isinstance(pipe.text_encoder, T5TextEncoder) and pipe.vae.vae.use_tiling
    assert pipe.text_encoder.max_length == parts["dit"].config.max_text_seq_length
    for key, value in parts["vae"].state_dict().items():
        assert torch.equal(pipe.vae.vae.state_dict()[key], value), key
    out = pipe(_image(), "a room", 1, 2.0, generator=_gen(0))
    assert out.video.shape == (1, T, 3, H, W) and torch.isfinite(out.depth).all()
    shutil.rmtree(ckpt / "dpt_head")
    with pytest.raises(ValueError, match="no DPT head"):
        WorldReelPipeline.from_checkpoint(ckpt)
