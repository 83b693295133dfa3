import numpy as np
import pytest
import torch

from model.data import LabelClipDataset, MixtureSampler, collate_samples, targets_from_batch
from model.gm_video import GMNormalization, decode_gm_video
from pipelines.synthetic import SceneConfig, render_clip
from pipelines.synthetic_set import scene_configs, write_synthetic_set
from storage import LabelStore

H, W, T = 32, 64, 9  # decord 0.6 mis-copies frames whose width is not a multiple of 64


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    paths = []
    for name, n, seed in (("a", 2, 0), ("b", 1, 100)):
        store = LabelStore.create(root / f"store_{name}", precision="float32")
        write_synthetic_set(root / f"set_{name}", scene_configs(n, H, W, seed=seed, num_frames=T), store)
        paths.append(root / f"store_{name}")
    return paths


def test_sample_contents_match_labels(stores):
    ds = LabelClipDataset(stores)
    assert len(ds) == 3 and ds.store_sizes == [2, 1]
    sample = ds[0]
    labels = LabelStore.open(stores[0]).read(ds.entries[0].clip_id)
    S = (T - 1) // 4 + 1
    assert sample["rgb"].shape == (T, 3, H, W) and sample["gm"].shape == (T, 3, H, W)
    assert sample["rgb"].min() >= -1 and sample["rgb"].max() <= 1
    # RGB comes from the source video at the label frames (near-lossless encode)
    cfg = SceneConfig(**labels.attrs["labelers"]["depth"]["params"])
    frames = torch.from_numpy(render_clip(cfg).frames).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert (sample["rgb"] - frames).abs().mean() < 0.03
    torch.testing.assert_close(sample["depth"], torch.from_numpy(labels["depth"][::4]))
    torch.testing.assert_close(sample["c2w"], torch.from_numpy(labels["c2w"][::4]))
    assert sample["points"].shape == (S, H, W, 3) and sample["scene_flow"].shape == (S - 1, H, W, 3)
    # the gm video decodes back to the labels
    depth, flow = decode_gm_video(sample["gm"], GMNormalization(*sample["gm_norm"].tolist()))
    valid = torch.from_numpy(labels["depth_valid"])
    torch.testing.assert_close(depth[valid], torch.from_numpy(labels["depth"])[valid], rtol=1e-4, atol=1e-4)
    fv = torch.from_numpy(labels["flow_valid"])
    torch.testing.assert_close(flow[fv], torch.from_numpy(labels["flow"])[fv], rtol=1e-4, atol=1e-4)
    assert sample["metric_scale"] and sample["has_gm"] and sample["has_camera"]


def test_mixture_sampler_weights_and_resume(stores):
    ds = LabelClipDataset(stores, frames_loader=lambda c, a, i, s: np.zeros((len(i), *s, 3), np.uint8))
    sampler = MixtureSampler(ds, weights=[1.0, 3.0], seed=0)
    it = iter(sampler)
    draws = [next(it) for _ in range(4000)]
    share_b = np.mean([d == 2 for d in draws])
    assert abs(share_b - 0.75) < 0.03
    resumed = MixtureSampler(ds, weights=[1.0, 3.0], seed=0)
    resumed.fast_forward(1000)
    it2 = iter(resumed)
    assert [next(it2) for _ in range(50)] == draws[1000:1050]
    only_a = MixtureSampler(ds, weights=[1.0, 0.0], seed=0)
    it3 = iter(only_a)
    assert {next(it3) for _ in range(50)} <= {0, 1}
    with pytest.raises(ValueError, match="weights"):
        MixtureSampler(ds, weights=[1.0])


def test_collate_and_targets(stores):
    ds = LabelClipDataset(stores[:1], frames_loader=lambda c, a, i, s: np.zeros((len(i), *s, 3), np.uint8), num_frames=5)
    batch = collate_samples([ds[0], ds[1]])
    assert batch["rgb"].shape == (2, 5, 3, H, W)
    assert batch["has_depth"].dtype == torch.bool and batch["has_depth"].shape == (2,)
    targets = targets_from_batch(batch)
    assert targets.depth.shape == (2, 2, H, W) and targets.scene_flow.shape == (2, 1, H, W, 3)
    with pytest.raises(ValueError, match="num_frames"):
        LabelClipDataset(stores[:1], num_frames=6)[0]
