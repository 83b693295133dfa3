import math

import pytest
import torch

from model.camera import (
    decode_camera,
    encode_camera,
    fov_to_intrinsics,
    matrix_to_quaternion,
    quaternion_to_matrix,
)


def _random_rotations(n: int, generator: torch.Generator) -> torch.Tensor:
    q = torch.randn(n, 4, generator=generator, dtype=torch.float64)
    return quaternion_to_matrix(q)


def test_quaternion_known_answers():
    # 90 degrees about z: x -> y.
    Rz = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    s = math.sqrt(0.5)
    torch.testing.assert_close(matrix_to_quaternion(Rz), torch.tensor([0, 0, s, s], dtype=torch.float64))
    # 180 degrees about x: w = 0, the pivot must not be w.
    Rx = torch.diag(torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64))
    q = matrix_to_quaternion(Rx)
    torch.testing.assert_close(q.abs(), torch.tensor([1.0, 0, 0, 0], dtype=torch.float64))
    torch.testing.assert_close(matrix_to_quaternion(torch.eye(3)), torch.tensor([0.0, 0, 0, 1]))


def test_rotation_round_trip_and_sign():
    g = torch.Generator().manual_seed(0)
    R = _random_rotations(500, g)
    q = matrix_to_quaternion(R)
    assert (q[:, 3] >= 0).all()
    torch.testing.assert_close(q.norm(dim=-1), torch.ones(500, dtype=torch.float64))
    torch.testing.assert_close(quaternion_to_matrix(q), R, atol=1e-10, rtol=0)
    # q and -q encode the same rotation and canonicalise to the same vector.
    torch.testing.assert_close(matrix_to_quaternion(quaternion_to_matrix(-q)), q, atol=1e-10, rtol=0)


def test_camera_vector_round_trip_batched():
    g = torch.Generator().manual_seed(1)
    B, T, H, W = 2, 5, 48, 72
    c2w = torch.eye(4, dtype=torch.float64).repeat(B, T, 1, 1)
    c2w[..., :3, :3] = _random_rotations(B * T, g).reshape(B, T, 3, 3)
    c2w[..., :3, 3] = torch.randn(B, T, 3, generator=g, dtype=torch.float64)
    K = torch.zeros(B, T, 3, 3, dtype=torch.float64)
    K[..., 0, 0] = 50.0 + 10 * torch.rand(B, T, generator=g, dtype=torch.float64)
    K[..., 1, 1] = 40.0 + 10 * torch.rand(B, T, generator=g, dtype=torch.float64)
    K[..., 0, 2], K[..., 1, 2], K[..., 2, 2] = (W - 1) / 2, (H - 1) / 2, 1.0
    cam = encode_camera(c2w, K, H, W)
    assert cam.shape == (B, T, 9)
    c2w_back, K_back = decode_camera(cam, H, W)
    torch.testing.assert_close(c2w_back, c2w, atol=1e-10, rtol=0)
    torch.testing.assert_close(K_back, K, atol=1e-9, rtol=0)
    torch.testing.assert_close(encode_camera(c2w_back, K_back, H, W), cam)


def test_fov_definition_matches_labels():
    H, W = 480, 720
    K = fov_to_intrinsics(torch.tensor([math.pi / 2, math.pi / 2]), H, W)
    # fov = 90 degrees <=> f = size / 2.
    torch.testing.assert_close(K[1, 1], torch.tensor(H / 2.0))
    torch.testing.assert_close(K[0, 0], torch.tensor(W / 2.0))
    cam = encode_camera(torch.eye(4), K, H, W)
    torch.testing.assert_close(cam, torch.tensor([0, 0, 0, 0, 0, 0, 1, math.pi / 2, math.pi / 2]))


def test_camera_input_checks():
    with pytest.raises(ValueError, match="c2w"):
        encode_camera(torch.eye(3), torch.eye(3), 4, 4)
    with pytest.raises(ValueError, match="camera"):
        decode_camera(torch.zeros(8), 4, 4)
