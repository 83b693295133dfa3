"""Camera <-> 9-d camera vector of LABELS.md (torch, batched).

The vector is C = (t_x, t_y, t_z, q_x, q_y, q_z, q_w, fov_y, fov_x): translation and unit
quaternion of `c2w` (first-frame coordinates) and the vertical/horizontal fields of view
in radians, fov_y = 2 atan(H / (2 f_y)), fov_x = 2 atan(W / (2 f_x)). Quaternions are
canonicalised to q_w >= 0 (q and -q are the same rotation). Decoding puts the principal
point at the image centre, which with pixel centres at integer coordinates (LABELS.md) is
((W - 1) / 2, (H - 1) / 2).
"""

from __future__ import annotations

import torch

__all__ = [
    "decode_camera",
    "encode_camera",
    "fov_to_intrinsics",
    "intrinsics_to_fov",
    "matrix_to_quaternion",
    "quaternion_to_matrix",
]


def _check_last(x: torch.Tensor, shape: tuple[int, ...], name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape[-len(shape) :]) != shape:
        raise ValueError(f"{name} must be (..., {', '.join(map(str, shape))}), got {tuple(x.shape)}")


def matrix_to_quaternion(R: torch.Tensor) -> torch.Tensor:
    """Rotation matrices (..., 3, 3) -> unit quaternions (..., 4) as (x, y, z, w), w >= 0.

    Uses the four candidate formulas and keeps, per matrix, the one with the largest
    denominator (Shepperd), so it is stable near 180-degree rotations.
    """
    _check_last(R, (3, 3), "R")
    m = R.unbind(-1)
    m00, m10, m20 = m[0].unbind(-1)
    m01, m11, m21 = m[1].unbind(-1)
    m02, m12, m22 = m[2].unbind(-1)
    # 4 * component^2 for w, x, y, z.
    sq = torch.stack(
        [
            1.0 + m00 + m11 + m22,
            1.0 + m00 - m11 - m22,
            1.0 - m00 + m11 - m22,
            1.0 - m00 - m11 + m22,
        ],
        dim=-1,
    )
    r = torch.sqrt(sq.clamp_min(1e-12))  # 2 * |component|
    # Candidate (w, x, y, z) * r for each choice of pivot component.
    cand = torch.stack(
        [
            torch.stack([r[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], dim=-1),
            torch.stack([m21 - m12, r[..., 1] ** 2, m10 + m01, m02 + m20], dim=-1),
            torch.stack([m02 - m20, m10 + m01, r[..., 2] ** 2, m12 + m21], dim=-1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, r[..., 3] ** 2], dim=-1),
        ],
        dim=-2,
    ) / (2.0 * r[..., None])
    best = sq.argmax(dim=-1)
    wxyz = torch.gather(cand, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    wxyz = torch.nn.functional.normalize(wxyz, dim=-1)
    wxyz = torch.where(wxyz[..., :1] < 0, -wxyz, wxyz)
    return torch.cat([wxyz[..., 1:], wxyz[..., :1]], dim=-1)


def quaternion_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """Quaternions (..., 4) as (x, y, z, w), any norm > 0 -> rotation matrices (..., 3, 3)."""
    _check_last(q, (4,), "q")
    x, y, z, w = torch.nn.functional.normalize(q, dim=-1).unbind(-1)
    row0 = torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], dim=-1)
    row1 = torch.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], dim=-1)
    row2 = torch.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], dim=-1)
    return torch.stack([row0, row1, row2], dim=-2)


def intrinsics_to_fov(K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """K (..., 3, 3) in pixels of (height, width) -> (..., 2) = (fov_y, fov_x) in radians."""
    _check_last(K, (3, 3), "K")
    fov_y = 2.0 * torch.atan(height / (2.0 * K[..., 1, 1]))
    fov_x = 2.0 * torch.atan(width / (2.0 * K[..., 0, 0]))
    return torch.stack([fov_y, fov_x], dim=-1)


def fov_to_intrinsics(fov: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(..., 2) = (fov_y, fov_x) radians -> K (..., 3, 3), principal point at the image centre."""
    _check_last(fov, (2,), "fov")
    fy = height / (2.0 * torch.tan(fov[..., 0] / 2.0))
    fx = width / (2.0 * torch.tan(fov[..., 1] / 2.0))
    K = torch.zeros(*fov.shape[:-1], 3, 3, dtype=fov.dtype, device=fov.device)
    K[..., 0, 0] = fx
    K[..., 1, 1] = fy
    K[..., 0, 2] = (width - 1) / 2.0
    K[..., 1, 2] = (height - 1) / 2.0
    K[..., 2, 2] = 1.0
    return K


def encode_camera(c2w: torch.Tensor, K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """c2w (..., 4, 4) and K (..., 3, 3) -> camera vector (..., 9).

    Layout: (t_x, t_y, t_z, q_x, q_y, q_z, q_w, fov_y, fov_x), q_w >= 0.
    """
    _check_last(c2w, (4, 4), "c2w")
    _check_last(K, (3, 3), "K")
    if c2w.shape[:-2] != K.shape[:-2]:
        raise ValueError(f"c2w {tuple(c2w.shape)} and K {tuple(K.shape)} disagree on leading dims")
    t = c2w[..., :3, 3]
    q = matrix_to_quaternion(c2w[..., :3, :3])
    return torch.cat([t, q, intrinsics_to_fov(K, height, width)], dim=-1)


def decode_camera(camera: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera vector (..., 9) -> (c2w (..., 4, 4), K (..., 3, 3)); the quaternion is normalised."""
    _check_last(camera, (9,), "camera")
    R = quaternion_to_matrix(camera[..., 3:7])
    c2w = torch.zeros(*camera.shape[:-1], 4, 4, dtype=camera.dtype, device=camera.device)
    c2w[..., :3, :3] = R
    c2w[..., :3, 3] = camera[..., :3]
    c2w[..., 3, 3] = 1.0
    return c2w, fov_to_intrinsics(camera[..., 7:9], height, width)
