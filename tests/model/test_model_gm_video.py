import pytest
import torch

from model.gm_video import GMNormalization, decode_gm_video, encode_gm_video


def _clip(T=3, H=4, W=5):
    depth = torch.linspace(2.0, 10.0, T * H * W).reshape(T, H, W)
    valid = torch.ones(T, H, W, dtype=torch.bool)
    flow = torch.zeros(T - 1, H, W, 2)
    flow_valid = torch.ones(T - 1, H, W, dtype=torch.bool)
    return depth, valid, flow, flow_valid


def test_known_values():
    depth, valid, flow, flow_valid = _clip()
    depth[0, 0, 0] = 100.0  # invalid outlier must not set the max
    valid[0, 0, 0] = False
    depth[0, 0, 1] = 1.0  # the true minimum
    flow[0, 1, 1] = torch.tensor([3.0, 4.0])  # |F| = 5: the max
    flow[1, 2, 2] = torch.tensor([-1.0, 0.0])
    flow[1, 3, 3] = torch.tensor([50.0, 0.0])  # invalid: ignored and zeroed
    flow_valid[1, 3, 3] = False
    video, norm = encode_gm_video(depth, valid, flow, flow_valid)
    assert video.shape == (3, 3, 4, 5)
    assert norm == GMNormalization(depth_min=1.0, depth_max=10.0, flow_max=5.0)
    assert video[0, 0, 0, 0] == 1.0  # invalid depth -> +1
    assert video[0, 0, 0, 1] == -1.0  # d_min -> -1
    assert video[-1, 0, -1, -1] == 1.0  # d_max -> +1
    torch.testing.assert_close(video[0, 0, 1, 0], 2 * (depth[0, 1, 0] - 1) / 9 - 1)
    torch.testing.assert_close(video[0, 1:, 1, 1], torch.tensor([0.6, 0.8]))
    torch.testing.assert_close(video[1, 1:, 2, 2], torch.tensor([-0.2, 0.0]))
    assert video[1, 1, 3, 3] == 0.0
    torch.testing.assert_close(video[2, 1:], video[1, 1:])  # last frame repeats the last flow
    assert video.abs().max() <= 1.0


def test_round_trip_on_valid_pixels():
    g = torch.Generator().manual_seed(0)
    depth = 1.0 + 5.0 * torch.rand(5, 6, 7, generator=g)
    valid = torch.rand(5, 6, 7, generator=g) > 0.2
    flow = 8.0 * torch.randn(4, 6, 7, 2, generator=g)
    flow_valid = torch.rand(4, 6, 7, generator=g) > 0.1
    video, norm = encode_gm_video(depth, valid, flow, flow_valid, invalid_depth=-1.0)
    depth_back, flow_back = decode_gm_video(video, norm)
    torch.testing.assert_close(depth_back[valid], depth[valid], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(flow_back[flow_valid], flow[flow_valid], atol=1e-5, rtol=1e-5)
    assert (flow_back[~flow_valid] == 0).all()


def test_static_clip_and_errors():
    depth, valid, flow, flow_valid = _clip()
    video, norm = encode_gm_video(depth, valid, flow, flow_valid)
    assert norm.flow_max == 0.0 and (video[:, 1:] == 0).all()
    with pytest.raises(ValueError, match="no valid depth"):
        encode_gm_video(depth, torch.zeros_like(valid), flow, flow_valid)
    with pytest.raises(ValueError, match="flow must be"):
        encode_gm_video(depth, valid, flow[:1], flow_valid)
