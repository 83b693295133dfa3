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
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

__all__ = ["GMNormalization", "decode_gm_video", "encode_gm_video"]

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
    depth_valid = depth_valid.bool() & torch.isfinite(depth) & (depth > 0)
    if not depth_valid.any():
        raise ValueError("clip has no valid depth: cannot normalise it")

    depth = depth.float()
    d_min = depth[depth_valid].min()
    d_max = depth[depth_valid].max()
    depth_n = 2.0 * (depth - d_min) / (d_max - d_min).clamp_min(_EPS) - 1.0
    depth_n = torch.where(depth_valid, depth_n, torch.full_like(depth_n, invalid_depth))

    flow = flow.float()
    flow_valid = flow_valid.bool() & torch.isfinite(flow).all(dim=-1)
    flow = torch.where(flow_valid[..., None], flow, torch.zeros_like(flow))
    magnitude = flow.norm(dim=-1)
    f_max = magnitude.max() if flow_valid.any() else magnitude.new_zeros(())
    flow_n = flow / f_max.clamp_min(_EPS)
    flow_n = torch.cat([flow_n, flow_n[-1:]], dim=0)

    video = torch.cat([depth_n[:, None], flow_n.permute(0, 3, 1, 2)], dim=1).clamp(-1.0, 1.0)
    return video, GMNormalization(float(d_min), float(d_max), float(f_max))


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
