import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from model.evaluate import camera_metrics, depth_metrics, evaluate_clip, mask_iou, scene_flow_epe


def _trajectory(T=6, seed=0):
    """c2w (T, 4, 4) with c2w[0] = I, moving and turning."""
    rng = np.random.default_rng(seed)
    c2w = np.tile(np.eye(4), (T, 1, 1))
    for t in range(1, T):
        c2w[t, :3, :3] = Rotation.from_rotvec(rng.normal(0, 0.2, 3)).as_matrix()
        c2w[t, :3, 3] = [0.5 * t, 0.1 * t**2, rng.normal(0, 0.3)]
    return c2w


def _sim3(c2w, s, R, t):
    out = c2w.copy()
    out[:, :3, :3] = R @ c2w[:, :3, :3]
    out[:, :3, 3] = s * c2w[:, :3, 3] @ R.T + t
    return out


def test_depth_identity_scale_and_known_outliers():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1.0, 5.0, (3, 8, 10))
    valid = rng.random(gt.shape) > 0.2
    m = depth_metrics(gt, gt, valid)
    assert m["log_rmse"] == 0 and m["delta_1_25"] == 1 and m["abs_rel"] == 0 and m["scale"] == pytest.approx(1)
    m = depth_metrics(gt / 7.0, gt, valid)  # a global scale is aligned away
    assert m["log_rmse"] == pytest.approx(0, abs=1e-12) and m["delta_1_25"] == 1 and m["scale"] == pytest.approx(7.0)
    # gt 2 everywhere, a fraction f of the prediction 1.5x too far: median scale stays 1
    gt = np.full((2, 10, 10), 2.0)
    pred = gt.copy()
    pred[0, :3] *= 1.5  # f = 30 / 200
    m = depth_metrics(pred, gt)
    assert m["scale"] == 1.0
    assert m["log_rmse"] == pytest.approx(math.sqrt(0.15) * math.log(1.5))
    assert m["delta_1_25"] == pytest.approx(0.85) and m["abs_rel"] == pytest.approx(0.15 * 0.5)
    # invalid pixels (mask, zero or NaN) never count
    pred[0, :3] = np.nan
    assert depth_metrics(pred, gt)["log_rmse"] == 0
    with pytest.raises(ValueError, match="no pixel"):
        depth_metrics(pred, gt, np.zeros(gt.shape, bool))


def test_camera_identity_and_sim3_invariance():
    gt = _trajectory()
    m = camera_metrics(gt, gt)
    assert m["ate"] == pytest.approx(0, abs=1e-9) and m["rte"] == pytest.approx(0, abs=1e-9)
    assert m["rre_deg"] == pytest.approx(0, abs=1e-5)
    R = Rotation.from_rotvec([0.3, -1.0, 0.5]).as_matrix()
    moved = _sim3(gt, 0.37, R, np.array([2.0, -1.0, 4.0]))
    m = camera_metrics(moved, gt)
    assert m["ate"] == pytest.approx(0, abs=1e-9) and m["rte"] == pytest.approx(0, abs=1e-9)
    assert m["rre_deg"] == pytest.approx(0, abs=1e-5)


def test_camera_known_perturbations():
    # ATE: planar square of centres, prediction lifted +-eps out of the plane. The optimal
    # similarity is R = I, t = 0, s = 1 / (1 + eps^2), leaving ATE = eps / sqrt(1 + eps^2).
    gt = np.tile(np.eye(4), (4, 1, 1))
    gt[:, :3, 3] = [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0]]
    pred = gt.copy()
    pred[:, 2, 3] = [0.75, 0.75, -0.75, -0.75]
    m = camera_metrics(pred, gt)
    assert m["ate"] == pytest.approx(0.6) and m["rre_deg"] == pytest.approx(0, abs=1e-6)
    # RRE and RTE: camera moving 1 along x with no rotation; from frame 3 on the prediction
    # is turned by theta about its y axis (centres unchanged). Pair 2->3 has a rotation error
    # theta; pairs 3->4 and 4->5 see the unit step in a turned frame: error 2 sin(theta / 2).
    T, theta = 6, 0.2
    gt = np.tile(np.eye(4), (T, 1, 1))
    gt[:, 0, 3] = np.arange(T)
    pred = gt.copy()
    pred[3:, :3, :3] = Rotation.from_rotvec([0, theta, 0]).as_matrix()
    m = camera_metrics(pred, gt)
    assert m["ate"] == pytest.approx(0, abs=1e-9)
    assert m["rre_deg"] == pytest.approx(math.degrees(theta) / math.sqrt(T - 1))
    assert m["rte"] == pytest.approx(2 * math.sin(theta / 2) * math.sqrt(2 / (T - 1)))
    # a static ground-truth camera has no defined ATE / RTE
    static = np.tile(np.eye(4), (T, 1, 1))
    m = camera_metrics(pred, static)
    assert math.isnan(m["ate"]) and math.isnan(m["rte"]) and m["rre_deg"] > 0


def test_scene_flow_epe_and_mask_iou():
    rng = np.random.default_rng(1)
    gt = rng.normal(size=(2, 4, 5, 3))
    valid = np.zeros((2, 4, 5), bool)
    valid[0, :2] = True
    assert scene_flow_epe(gt, gt, valid) == 0
    assert scene_flow_epe(gt / 4, gt, valid, scale=4.0) == pytest.approx(0, abs=1e-12)
    off = gt + np.array([0.0, 3.0, 4.0])  # |delta| = 5 on every pixel
    off[~valid] = 1e6  # invalid pixels never count
    assert scene_flow_epe(off, gt, valid) == pytest.approx(5.0)
    assert math.isnan(scene_flow_epe(gt, gt, np.zeros_like(valid)))

    a = np.zeros((2, 4, 4), bool)
    assert mask_iou(a, a) == 1.0
    b = a.copy()
    a[0, :2] = True  # 8 pixels
    b[0, 1:3] = True  # 8 pixels, 4 shared
    assert mask_iou(a, a) == 1.0 and mask_iou(a, b) == pytest.approx(4 / 12)


def test_evaluate_clip_on_a_scaled_perfect_prediction():
    S, H, W = 4, 6, 8
    rng = np.random.default_rng(2)
    depth = rng.uniform(1, 3, (S, H, W))
    flow = rng.normal(size=(S - 1, H, W, 3))
    mask = rng.random((S, H, W)) > 0.5
    c2w = _trajectory(S)
    labels = dict(
        depth=depth,
        depth_valid=np.ones_like(mask),
        c2w=c2w,
        scene_flow=flow,
        scene_flow_valid=mask[:-1],
        dynamic_mask=mask,
    )
    s = 0.5  # the prediction lives in a unit twice as large as the labels'
    c2w_pred = _sim3(c2w, s, np.eye(3), np.zeros(3))
    pred = dict(depth=s * depth, c2w=c2w_pred, scene_flow=s * flow, mask_logits=np.where(mask, 3.0, -3.0))
    m = evaluate_clip(pred, labels)
    for k in ("log_rmse", "abs_rel", "ate", "rte", "epe3d"):
        assert m[k] == pytest.approx(0, abs=1e-9), k
    assert m["delta_1_25"] == 1 and m["mask_iou"] == 1 and m["rre_deg"] == pytest.approx(0, abs=1e-5)


def test_evaluate_cli_on_label_store_clips(tmp_path, capsys):
    import json

    import torch

    from model.data import LabelClipDataset
    from model.evaluate import LABEL_KEYS, METRICS, PRED_KEYS, evaluate_main
    from model.pipeline import WorldReelPipeline
    from model.train import TrainConfig, Trainer
    from pipelines.synthetic_set import scene_configs, write_synthetic_set
    from storage import LabelStore

    H, W, T = 32, 64, 9
    store = LabelStore.create(tmp_path / "store", precision="float32")
    write_synthetic_set(tmp_path / "set", scene_configs(2, H, W, seed=11, num_frames=T), store)
    data = str(tmp_path / "store")
    Trainer(TrainConfig(config="tiny", stage="2", stores=[data], output_dir=str(tmp_path / "run"), steps=1, device="cpu")).run()

    argv = ["--checkpoint", str(tmp_path / "run"), "--data", data, "--steps", "2", "--device", "cpu"]
    assert evaluate_main([*argv, "--json", str(tmp_path / "m.json")]) == 0
    table = capsys.readouterr().out
    assert "mean of 2" in table and all(m in table for m in METRICS)
    result = json.loads((tmp_path / "m.json").read_text())
    assert len(result["clips"]) == 2
    for row in result["clips"]:
        assert all(np.isfinite(row[m]) for m in METRICS), row
        assert 0 <= row["delta_1_25"] <= 1 and 0 <= row["mask_iou"] <= 1

    # the same numbers by hand: reconstruction of clip 0, metrics on its key-frame labels
    sample = LabelClipDataset([data], num_frames=T)[0]
    pipe = WorldReelPipeline.from_checkpoint(tmp_path / "run", scheduler="ddim")
    video = sample["rgb"][None]
    generator = torch.Generator().manual_seed(0)
    out = pipe(video[:, 0], sample["caption"], 2, 1.0, generator=generator, video=video, decode_video=False)
    pred = {k: getattr(out, k)[0].numpy() for k in PRED_KEYS}
    expected = evaluate_clip(pred, {k: sample[k].numpy() for k in LABEL_KEYS})
    row = result["clips"][0]
    assert row["clip_id"] == sample["clip_id"]
    for m in METRICS:
        assert row[m] == pytest.approx(expected[m], rel=1e-6, abs=1e-9), m
