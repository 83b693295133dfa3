import math
from types import SimpleNamespace

import pytest
import torch
from diffusers import AutoencoderKLCogVideoX

from model.encoders import tiny_vae_config
from model.gm_video import encode_gm_video, gm_round_trip_error, vae_reconstruct, vae_round_trip
from pipelines.synthetic import SceneConfig, render_clip

H, W, T = 32, 64, 9


class _ScaleVAE(torch.nn.Module):
    """A stand-in VAE with the CogVideoX interface whose round trip multiplies the video by `scale`."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale
        self.seen: list[tuple[int, ...]] = []

    def encode(self, x):
        self.seen.append(tuple(x.shape))
        return SimpleNamespace(latent_dist=SimpleNamespace(mode=lambda: x, sample=lambda generator=None: x))

    def decode(self, z):
        return SimpleNamespace(sample=z * self.scale)


def _two_level_clip():
    """Depth 2 on the left half, 10 on the right, one invalid outlier column per half; flow (3, 4) px."""
    depth = torch.full((T, H, W), 2.0)
    depth[..., W // 2 :] = 10.0
    valid = torch.ones(T, H, W, dtype=torch.bool)
    depth[..., 0] = depth[..., -1] = 1000.0  # must neither set d_max nor count
    valid[..., 0] = valid[..., -1] = False
    flow = torch.tensor([3.0, 4.0]).expand(T - 1, H, W, 2).clone()
    return depth, valid, flow, torch.ones(T - 1, H, W, dtype=torch.bool)


def test_known_errors_in_label_units():
    depth, valid, flow, flow_valid = _two_level_clip()
    vae = _ScaleVAE(0.5)
    err = vae_round_trip(vae, depth, valid, flow, flow_valid)
    assert vae.seen == [(1, 3, T, H, W)]  # (B, C, T, H, W) as diffusers' video VAE takes it
    assert (err.norm.depth_min, err.norm.depth_max, err.norm.flow_max) == (2.0, 10.0, 5.0)
    # normalised depth -1 / +1 -> -0.5 / +0.5 -> 4 / 8: relative errors 1.0 and 0.2, equal counts
    assert err.depth_abs_rel == pytest.approx(0.6, rel=1e-6)
    # flow (3, 4) -> (1.5, 2): 2.5 px end-point error
    assert err.flow_epe_px == pytest.approx(2.5, rel=1e-6)
    # squared errors: depth 0.5^2 everywhere (invalid +1 -> 0.5 too), flow 0.3^2 and 0.4^2
    assert err.psnr_depth_db == pytest.approx(10 * math.log10(4 / 0.25), rel=1e-6)
    assert err.psnr_flow_db == pytest.approx(10 * math.log10(4 / 0.125), rel=1e-6)
    assert err.psnr_db == pytest.approx(10 * math.log10(24), rel=1e-6)


def test_perfect_reconstruction_has_no_error():
    clip = render_clip(SceneConfig(seed=1, height=H, width=W, num_frames=T, camera="orbit", num_moving=2))
    labels = {k: torch.from_numpy(clip.labels[k]) for k in ("depth", "depth_valid", "flow", "flow_valid")}
    err = vae_round_trip(_ScaleVAE(1.0), labels["depth"], labels["depth_valid"], labels["flow"], labels["flow_valid"])
    assert err.depth_abs_rel < 1e-6 and err.flow_epe_px < 1e-5
    assert err.psnr_db == math.inf and err.norm.flow_max > 0


def test_tiny_cogvideox_vae_plumbing():
    """The real VAE class at tiny size, random weights: shapes and finite numbers only (they mean nothing)."""
    clip = render_clip(SceneConfig(seed=2, height=H, width=W, num_frames=T, camera="dolly", num_moving=1))
    depth, depth_valid = torch.from_numpy(clip.labels["depth"]), torch.from_numpy(clip.labels["depth_valid"])
    flow, flow_valid = torch.from_numpy(clip.labels["flow"]), torch.from_numpy(clip.labels["flow_valid"])
    torch.manual_seed(0)
    vae = AutoencoderKLCogVideoX(**tiny_vae_config(H, W)).eval()
    video, norm = encode_gm_video(depth, depth_valid, flow, flow_valid)
    reconstruction = vae_reconstruct(vae, video)
    assert reconstruction.shape == (T, 3, H, W) and reconstruction.dtype == torch.float32
    err = vae_round_trip(vae, depth, depth_valid, flow, flow_valid)
    assert err == gm_round_trip_error(reconstruction, video, norm, depth, depth_valid, flow, flow_valid)
    assert all(math.isfinite(v) and v > 0 for v in (err.depth_abs_rel, err.flow_epe_px, err.psnr_db))
    sampled = vae_round_trip(vae, depth, depth_valid, flow, flow_valid, True, torch.Generator().manual_seed(0))
    assert sampled.psnr_db != err.psnr_db  # a posterior sample, not the mean
    with pytest.raises(ValueError, match="T must be 1 \\+ 4k"):
        vae_reconstruct(vae, video[:7])
