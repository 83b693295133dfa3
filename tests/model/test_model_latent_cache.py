import pytest
import torch
from diffusers import AutoencoderKLCogVideoX

from model.data import LabelClipDataset
from model.encoders import VideoLatentEncoder, tiny_vae_config
from model.latent_cache import LatentCache, cache_fingerprint, fill_latent_cache
from model.train import TrainConfig, Trainer
from pipelines.synthetic_set import scene_configs, write_synthetic_set
from storage import LabelStore

H, W, T = 32, 64, 9


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("cache")
    store = LabelStore.create(root / "store", precision="float32")
    write_synthetic_set(root / "set", scene_configs(2, H, W, seed=3, num_frames=T), store)
    return str(root / "store")


def _encoder(seed=0):
    torch.manual_seed(seed)
    return VideoLatentEncoder(AutoencoderKLCogVideoX(**tiny_vae_config(H, W)))


def test_cache_holds_the_posterior_moments(store, tmp_path):
    ds = LabelClipDataset([store])
    enc = _encoder()
    cache = LatentCache(tmp_path, cache_fingerprint(enc, T, H, W))
    assert fill_latent_cache(ds, enc, cache) == 2
    assert fill_latent_cache(ds, enc, cache) == 0  # nothing left to do
    sample = ds[1]
    mean, std = enc.moments(sample["gm"][None])
    got = cache.load(ds.entries[1].clip_id)
    assert got["gm_mean"].shape == (3, 16, H // 8, W // 8)
    torch.testing.assert_close(got["gm_mean"], mean[0], atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(got["gm_std"], std[0], atol=2e-3, rtol=2e-3)
    # a different VAE (weights) or clip size never reads these latents
    assert cache_fingerprint(_encoder(seed=1), T, H, W) != cache_fingerprint(enc, T, H, W)
    assert cache_fingerprint(enc, 5, H, W) != cache_fingerprint(enc, T, H, W)
    with pytest.raises(KeyError, match="not in the latent cache"):
        cache.load("missing")
    first_only = LabelClipDataset([store], load_videos=False)[1]
    torch.testing.assert_close(first_only["rgb"], sample["rgb"][:1])
    torch.testing.assert_close(first_only["depth"], sample["depth"])


def test_trainer_with_cache_matches_online_encoding(store, tmp_path):
    common = dict(config="tiny", stores=[store], steps=1, save_every=10, device="cpu", stage="2", dpt_weighting="none")
    online = Trainer(TrainConfig(output_dir=str(tmp_path / "online"), **common))
    cached = Trainer(TrainConfig(output_dir=str(tmp_path / "cached"), latent_cache=str(tmp_path / "lat"), **common))
    assert len(list((tmp_path / "lat").rglob("*.safetensors"))) == 2
    batch_online = next(online._batches())
    batch_cached = next(cached._batches())
    assert batch_cached["rgb"].shape[1] == 1 and batch_online["rgb"].shape[1] == T
    with torch.no_grad():
        a = online.compute_losses(batch_online)
        b = cached.compute_losses(batch_cached)
    for key in ("diff_rgb", "diff_gm", "dpt", "reg"):  # same draws, moments rounded to float16
        torch.testing.assert_close(b[key], a[key], rtol=2e-2, atol=1e-4)
