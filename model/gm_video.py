"""Geometry-motion video: depth and optical flow as a 3-channel video in [-1, 1].

Following the paper, each clip's depth is min-max normalised over its valid pixels,
D~ = 2 (D - d_min) / (d_max - d_min) - 1, and the forward flow is divided by its largest
valid magnitude, F~ = F / max|F|, so both live in the RGB range the video VAE expects.
Channels are (depth, flow_dx, flow_dy).

Choices the paper leaves open (documented here, mirrored in `GMNormalization`):
- invalid depth pixels get `invalid_depth` (default +1.0, the far end of the range, where
  the usual invalid pixels, sky and unresolved background, belong);
- invalid flow pixels get 0 (no motion);
- flow has T - 1 fields for T frames; the last frame repeats the last field so that the
  VAE's final 4-frame group stays temporally smooth. Decoding drops it again;
- a clip with a constant valid depth (d_max == d_min) maps it to -1; a clip with no
  motion keeps flow_max = 0 and an all-zero flow channel.

Whether the video VAE (trained on RGB) keeps these videos is measured, not assumed:
`vae_round_trip` encodes a clip's gm video, decodes it and reports the error in label
units (depth relative error, flow end-point error in pixels) and PSNR of the normalised
video. Only a real CogVideoX VAE (local weights) gives meaningful numbers;
`bench/bench_vae_roundtrip.py --vae DIR` runs it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = [
    "GMNormalization",
    "GMRoundTripError",
    "decode_gm_video",
    "encode_gm_video",
    "gm_round_trip_error",
    "vae_reconstruct",
    "vae_round_trip",
]

_EPS = 1e-8


@dataclass(frozen=True)
class GMNormalization:
    """Per-clip constants that undo the normalisation (units of the clip's depth and pixels)."""

    depth_min: float
    depth_max: float
    flow_max: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def encode_gm_video(
    depth: torch.Tensor,
    depth_valid: torch.Tensor,
    flow: torch.Tensor,
    flow_valid: torch.Tensor,
    invalid_depth: float = 1.0,
) -> tuple[torch.Tensor, GMNormalization]:
    """Build the geometry-motion video of one clip.

    Args:
        depth: (T, H, W) z-depth.
        depth_valid: (T, H, W) bool.
        flow: (T - 1, H, W, 2) forward flow t -> t+1 in pixels, (dx, dy).
        flow_valid: (T - 1, H, W) bool.
        invalid_depth: value in [-1, 1] written where depth is invalid.

    Returns:
        video: (T, 3, H, W) float32 in [-1, 1], channels (depth, flow_dx, flow_dy);
        the normalisation constants.
    """
    if depth.ndim != 3:
        raise ValueError(f"depth must be (T, H, W), got {tuple(depth.shape)}")
    T, H, W = depth.shape
    if T < 2:
        raise ValueError(f"need at least 2 frames, got {T}")
    if depth_valid.shape != depth.shape:
        raise ValueError(f"depth_valid {tuple(depth_valid.shape)} must match depth {tuple(depth.shape)}")
    if flow.shape != (T - 1, H, W, 2):
        raise ValueError(f"flow must be ({T - 1}, {H}, {W}, 2), got {tuple(flow.shape)}")
    if flow_valid.shape != (T - 1, H, W):
        raise ValueError(f"flow_valid must be ({T - 1}, {H}, {W}), got {tuple(flow_valid.shape)}")
    if not -1.0 <= invalid_depth <= 1.0:
        raise ValueError(f"invalid_depth must be in [-1, 1], got {invalid_depth}")
    depth = depth.float()
    depth_valid = depth_valid.bool() & torch.isfinite(depth) & (depth > 0)
    if not depth_valid.any():
        raise ValueError("clip has no valid depth: cannot normalise it")
    invalid = ~depth_valid
    # masked reductions, not depth[depth_valid]: a boolean gather costs 3x more at 49 x 480 x 720
    d_min = depth.masked_fill(invalid, float("inf")).amin()
    d_max = depth.masked_fill(invalid, float("-inf")).amax()

    # filled in place, channel by channel: at 49 x 480 x 720 one float32 channel is 68 MB, so
    # every temporary avoided (cat, permuted copies, stacked components) counts in the data loader
    video = depth.new_empty(T, 3, H, W)
    depth_n = depth.sub(d_min).mul_(2.0).div_((d_max - d_min).clamp_min(_EPS)).sub_(1.0)
    video[:, 0] = depth_n.masked_fill_(invalid, invalid_depth)

    flow_x, flow_y = flow.float().unbind(dim=-1)
    flow_invalid = ~(flow_valid.bool() & torch.isfinite(flow_x) & torch.isfinite(flow_y))
    video_x, video_y = video[:-1, 1], video[:-1, 2]
    video_x.copy_(flow_x).masked_fill_(flow_invalid, 0.0)
    video_y.copy_(flow_y).masked_fill_(flow_invalid, 0.0)
    f_max = torch.hypot(video_x, video_y).max()
    video[:-1, 1:].div_(f_max.clamp_min(_EPS))
    video[-1, 1:] = video[-2, 1:]
    return video.clamp_(-1.0, 1.0), GMNormalization(float(d_min), float(d_max), float(f_max))


def decode_gm_video(video: torch.Tensor, norm: GMNormalization) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert `encode_gm_video` (values are clamped to [-1, 1] first, as generated videos may overshoot).

    Args:
        video: (T, 3, H, W).

    Returns:
        depth: (T, H, W) in the clip's depth units;
        flow: (T - 1, H, W, 2) in pixels.
    """
    if video.ndim != 4 or video.shape[1] != 3:
        raise ValueError(f"video must be (T, 3, H, W), got {tuple(video.shape)}")
    video = video.clamp(-1.0, 1.0)
    depth = (video[:, 0] + 1.0) / 2.0 * (norm.depth_max - norm.depth_min) + norm.depth_min
    flow = video[:-1, 1:].permute(0, 2, 3, 1) * norm.flow_max
    return depth, flow


# ============================================================================ VAE round trip
@dataclass(frozen=True)
class GMRoundTripError:
    """How much of a clip's depth and flow survive a VAE encode/decode of its gm video.

    Attributes:
        depth_abs_rel: mean |D_rec - D| / D over valid depth pixels (after undoing the
            [-1, 1] normalisation with the clip's own d_min, d_max).
        flow_epe_px: mean end-point error |F_rec - F| in pixels over valid flow pixels
            (after undoing the division by the clip's max |F|).
        psnr_db: PSNR of the whole normalised video (range [-1, 1], peak-to-peak 2).
        psnr_depth_db, psnr_flow_db: the same for the depth channel and the two flow channels.
        norm: the clip's normalisation constants (label units behind the numbers).
    """

    depth_abs_rel: float
    flow_epe_px: float
    psnr_db: float
    psnr_depth_db: float
    psnr_flow_db: float
    norm: GMNormalization

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _psnr_db(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR for values in [-1, 1] (peak-to-peak 2); inf for identical inputs."""
    mse = float((a.double() - b.double()).square().mean())
    return math.inf if mse == 0.0 else 10.0 * math.log10(4.0 / mse)


def gm_round_trip_error(
    reconstruction: torch.Tensor,
    video: torch.Tensor,
    norm: GMNormalization,
    depth: torch.Tensor,
    depth_valid: torch.Tensor,
    flow: torch.Tensor,
    flow_valid: torch.Tensor,
) -> GMRoundTripError:
    """Errors of a reconstructed gm video against the labels it was built from.

    Args:
        reconstruction, video: (T, 3, H, W) decoded and original gm videos (`encode_gm_video`).
        norm: the clip's constants from `encode_gm_video`.
        depth, depth_valid: (T, H, W); flow: (T - 1, H, W, 2) pixels; flow_valid: (T - 1, H, W).
    """
    if reconstruction.shape != video.shape or video.ndim != 4 or video.shape[1] != 3:
        raise ValueError(f"reconstruction {tuple(reconstruction.shape)} and video {tuple(video.shape)} must be (T, 3, H, W)")
    if depth.shape != (video.shape[0], *video.shape[2:]) or flow.shape != (video.shape[0] - 1, *video.shape[2:], 2):
        raise ValueError(f"depth {tuple(depth.shape)} / flow {tuple(flow.shape)} do not match video {tuple(video.shape)}")
    depth, flow = depth.float(), flow.float()
    depth_rec, flow_rec = decode_gm_video(reconstruction.float(), norm)
    d_ok = depth_valid.bool() & torch.isfinite(depth) & (depth > 0)
    f_ok = flow_valid.bool() & torch.isfinite(flow).all(dim=-1)
    depth_rel = ((depth_rec - depth).abs() / depth)[d_ok]
    epe = torch.linalg.vector_norm(flow_rec - flow, dim=-1)[f_ok]
    return GMRoundTripError(
        depth_abs_rel=float(depth_rel.double().mean()) if d_ok.any() else math.nan,
        flow_epe_px=float(epe.double().mean()) if f_ok.any() else math.nan,
        psnr_db=_psnr_db(reconstruction.float(), video),
        psnr_depth_db=_psnr_db(reconstruction[:, 0].float(), video[:, 0]),
        psnr_flow_db=_psnr_db(reconstruction[:, 1:].float(), video[:, 1:]),
        norm=norm,
    )


@torch.no_grad()
def vae_reconstruct(
    vae: Any, video: torch.Tensor, sample_posterior: bool = False, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Encode a (T, 3, H, W) video in [-1, 1] with a video VAE and decode it again.

    Args:
        vae: an `AutoencoderKLCogVideoX` (or anything with its `encode(x).latent_dist` and
            `decode(z).sample` on (B, C, T, H, W)); runs on the VAE's device and dtype. For
            49 x 480 x 720 on a GPU, call `vae.enable_tiling()` first.
        sample_posterior: decode a posterior sample (what training sees) instead of the mean.

    Returns:
        (T, 3, H, W) float32 reconstruction on the input's device.
    """
    if video.ndim != 4 or video.shape[1] != 3:
        raise ValueError(f"video must be (T, 3, H, W), got {tuple(video.shape)}")
    param = next(vae.parameters(), None)
    device, dtype = (param.device, param.dtype) if param is not None else (video.device, video.dtype)
    x = video.permute(1, 0, 2, 3)[None].to(device, dtype)
    posterior = vae.encode(x).latent_dist
    z = posterior.sample(generator) if sample_posterior else posterior.mode()
    out = vae.decode(z).sample[0].permute(1, 0, 2, 3)
    if out.shape != video.shape:
        shapes = f"the VAE returned {tuple(out.shape)} for a {tuple(video.shape)} video"
        raise ValueError(f"{shapes} (T must be 1 + 4k, H and W multiples of 8)")
    return out.to(video.device, torch.float32)


def vae_round_trip(
    vae: Any,
    depth: torch.Tensor,
    depth_valid: torch.Tensor,
    flow: torch.Tensor,
    flow_valid: torch.Tensor,
    sample_posterior: bool = False,
    generator: torch.Generator | None = None,
) -> GMRoundTripError:
    """Build a clip's gm video, pass it through `vae` (`vae_reconstruct`), report the error in label units.

    The numbers describe the VAE only with its real weights (CogVideoX's, from a local
    folder); a random-weight VAE checks the plumbing and its numbers mean nothing.

    Args:
        depth, depth_valid: (T, H, W) with T = 1 + 4k; flow: (T - 1, H, W, 2) pixels; flow_valid: (T - 1, H, W).
    """
    video, norm = encode_gm_video(depth, depth_valid, flow, flow_valid)
    reconstruction = vae_reconstruct(vae, video, sample_posterior, generator)
    return gm_round_trip_error(reconstruction, video, norm, depth, depth_valid, flow, flow_valid)
