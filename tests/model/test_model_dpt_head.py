import pytest
import torch
from diffusers.models.embeddings import CogVideoXPatchEmbed

from model.dpt_head import DPTHeadConfig, TemporalDPTHead, tokens_to_grid

B, S, GH, GW, D = 2, 3, 2, 3, 32
H, W = 16 * GH, 16 * GW


def _taps(seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, S * GH * GW, D, generator=g).requires_grad_(requires_grad) for _ in range(4)]


def test_tokens_to_grid_matches_diffusers_patch_order():
    """Build tokens with diffusers' own patch embedding, wired so that embedding channel d copies
    latent channel d at the patch's top-left pixel: the grid must then equal the strided latents."""
    embed = CogVideoXPatchEmbed(
        patch_size=2,
        in_channels=4,
        embed_dim=4,
        text_embed_dim=3,
        use_positional_embeddings=False,
        use_learned_positional_embeddings=False,
    )
    with torch.no_grad():
        embed.proj.weight.zero_()
        embed.proj.bias.zero_()
        for d in range(4):
            embed.proj.weight[d, d, 0, 0] = 1.0
    latents = torch.randn(B, S, 4, 2 * GH, 2 * GW)
    tokens = embed(torch.zeros(B, 5, 3), latents)[:, 5:]
    grid = tokens_to_grid(tokens, S, GH, GW)
    torch.testing.assert_close(grid, latents[..., ::2, ::2])
    with pytest.raises(ValueError, match="tokens"):
        tokens_to_grid(tokens, S + 1, GH, GW)


def test_shapes_and_ranges():
    head = TemporalDPTHead.from_head_config(DPTHeadConfig.tiny(D))
    out = head(_taps(), S, (GH, GW), (H, W))
    assert out.depth.shape == (B, S, H, W) and (out.depth > 0).all()
    assert out.points.shape == (B, S, H, W, 3)
    assert out.scene_flow.shape == (B, S - 1, H, W, 3)
    assert out.mask_logits.shape == (B, S, H, W)
    assert out.camera.shape == (B, S, 9)
    torch.testing.assert_close(out.camera[..., 3:7].norm(dim=-1), torch.ones(B, S))
    assert (out.camera[..., 6] >= 0).all()
    fov = out.camera[..., 7:]
    assert ((fov > 0) & (fov < torch.pi)).all()
    # label resolution need not be 16x the grid
    assert head(_taps(), S, (GH, GW), (50, 70)).depth.shape == (B, S, 50, 70)


def test_temporal_blocks_start_as_identity_then_mix_frames():
    torch.manual_seed(0)
    head = TemporalDPTHead.from_head_config(DPTHeadConfig.tiny(D)).eval()
    taps = _taps()
    changed = [t.clone() for t in taps]
    frame = GH * GW
    for t in changed:  # change only the last frame's tokens
        t[:, 2 * frame :] += torch.randn_like(t[:, 2 * frame :])
    with torch.no_grad():
        a, b = head(taps, S, (GH, GW), (H, W)), head(changed, S, (GH, GW), (H, W))
        torch.testing.assert_close(a.depth[:, :2], b.depth[:, :2])  # zero-init: frames independent
        assert (a.depth[:, 2] - b.depth[:, 2]).abs().max() > 1e-3
        for block in [*head.temporal_levels, *head.temporal_fused]:
            block.attn.out_proj.weight.normal_(std=0.5)
        a, b = head(taps, S, (GH, GW), (H, W)), head(changed, S, (GH, GW), (H, W))
        assert (a.depth[:, 0] - b.depth[:, 0]).abs().max() > 1e-3


@pytest.mark.parametrize("checkpoint_high_res", [False, True])
def test_gradients_reach_every_parameter(checkpoint_high_res):
    torch.manual_seed(0)
    config = DPTHeadConfig.tiny(D)
    config.checkpoint_high_res = checkpoint_high_res
    head = TemporalDPTHead.from_head_config(config)
    with torch.no_grad():  # as after some training: zero-initialised residual outputs are non-zero
        for block in [*head.temporal_levels, *head.temporal_fused]:
            block.attn.out_proj.weight.normal_(std=0.1)
            block.ff[2].weight.normal_(std=0.1)
    taps = _taps(requires_grad=True)
    out = head(taps, S, (GH, GW), (H, W))
    loss = (
        out.depth.mean()
        + out.points.square().mean()
        + out.camera.square().sum()
        + out.scene_flow.square().mean()
        + out.mask_logits.square().mean()
    )
    loss.backward()
    missing = [n for n, p in head.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert missing == []
    assert all(t.grad.abs().sum() > 0 for t in taps)
