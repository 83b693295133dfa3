"""Valid random clips for storage tests (geometry is consistent but not a rendered scene)."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation


def random_clip(T: int = 9, H: int = 12, W: int = 16, stride: int = 4, seed: int = 0) -> tuple[dict, dict]:
    """Arrays and attributes of one valid clip with every stored field of LABELS.md."""
    rng = np.random.default_rng(seed)
    S = (T - 1) // stride + 1
    c2w = np.tile(np.eye(4), (T, 1, 1))
    rotvecs = np.cumsum(rng.normal(0, 0.01, (T, 3)), axis=0)
    rotvecs -= rotvecs[0]
    c2w[:, :3, :3] = Rotation.from_rotvec(rotvecs).as_matrix()
    c2w[:, :3, 3] = np.cumsum(rng.normal(0, 0.05, (T, 3)), axis=0) - 0
    c2w[0, :3, 3] = 0
    K = np.tile(np.array([[20.0, 0, (W - 1) / 2], [0, 20.0, (H - 1) / 2], [0, 0, 1]]), (T, 1, 1))
    depth_valid = rng.random((T, H, W)) > 0.1
    depth = np.where(depth_valid, rng.uniform(1, 10, (T, H, W)), 0.0)
    flow_valid = rng.random((T - 1, H, W)) > 0.2
    key_flow_valid = rng.random((S - 1, H, W)) > 0.2
    dynamic = rng.random((S, H, W)) > 0.7
    sf_valid = dynamic[:-1] & key_flow_valid
    arrays = {
        "frame_index": np.arange(T, dtype=np.int64) * 3,
        "timestamps": np.arange(T) / 8.0,
        "K": K.astype(np.float32),
        "c2w": c2w.astype(np.float32),
        "depth": depth.astype(np.float32),
        "depth_valid": depth_valid,
        "flow": rng.normal(0, 3, (T - 1, H, W, 2)).astype(np.float32),
        "flow_valid": flow_valid,
        "flow_uncertainty": rng.uniform(0, 2, (T - 1, H, W)).astype(np.float32),
        "key_flow": rng.normal(0, 8, (S - 1, H, W, 2)).astype(np.float32),
        "key_flow_valid": key_flow_valid,
        "dynamic_mask": dynamic,
        "scene_flow": (rng.normal(0, 0.1, (S - 1, H, W, 3)) * sf_valid[..., None]).astype(np.float32),
        "scene_flow_valid": sf_valid,
    }
    attrs = {
        "source": {"dataset": "test", "uri": f"/videos/v{seed}.mp4", "start_sec": 0.0, "end_sec": T / 8, "caption": "a test"},
        "fps": 8.0,
        "stride": stride,
        "metric_scale": False,
        "labelers": {"flow": {"name": "test", "version": "0", "params": {}, "weights_sha256": None}},
        "qa": {"fb_consistent_fraction": 0.8, "dynamic_ratio": 0.3},
    }
    return arrays, attrs
