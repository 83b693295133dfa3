"""Neural labelers in Ray actors: loaded once, called through proxies with the labeler protocol."""

import hashlib

import numpy as np
import pytest
import ray
import torch
from safetensors.torch import save_file
from synthetic_manifest import FRAMES, SIZE, write_manifest

from flows.labeling import LabelRunParams, label_clips_flow, label_config
from flows.ray_fanout import NeuralLabeler, _ActorProxy, init_ray
from labelers.sea_raft import SEA_RAFT_VARIANTS, SeaRaft, SeaRaftFlow
from storage import LabelStore


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "sea_raft_s.safetensors"
    save_file(SeaRaft(SEA_RAFT_VARIANTS["S"]).state_dict(), str(path))
    return path


def test_actor_proxy_gives_the_same_flow_as_the_local_model(checkpoint):
    init_ray(num_cpus=2)
    params = LabelRunParams(manifest="unused.csv", store="unused", flow="sea-raft", flow_weights=str(checkpoint),
                            height=SIZE[0], width=SIZE[1], frames=FRAMES)
    actor = NeuralLabeler.remote(label_config(params))
    proxy = _ActorProxy(actor, "flow")
    local = SeaRaftFlow.from_checkpoint(checkpoint, device="cpu")
    assert (proxy.name, proxy.version) == (local.name, local.version)
    assert proxy.params["weights_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    rng = np.random.default_rng(0)
    src = rng.integers(0, 255, (1, *SIZE, 3), dtype=np.uint8)
    dst = np.roll(src, 2, axis=2)
    remote_fwd, remote_bwd = proxy.estimate_bidirectional(src, dst)
    local_fwd, local_bwd = local.estimate_bidirectional(src, dst)
    np.testing.assert_allclose(remote_fwd.flow_px, local_fwd.flow_px, atol=1e-5)
    np.testing.assert_allclose(remote_bwd.uncertainty_px, local_bwd.uncertainty_px, atol=1e-5)
    ray.kill(actor)


def test_labeling_flow_with_sea_raft_runs_the_model_in_an_actor(checkpoint, tmp_path):
    manifest, good, _ = write_manifest(tmp_path / "data", num_good=1, with_bad=False)
    store = tmp_path / "labels.zarr"
    params = LabelRunParams(manifest=str(manifest), store=str(store), flow="sea-raft", flow_weights=str(checkpoint),
                            height=SIZE[0], width=SIZE[1], frames=FRAMES, workers=2, batch_size=1)
    summary = label_clips_flow(params)
    assert summary["accepted"] + summary["rejected"] == 1  # random weights: the clip's fate is not the point
    attrs = LabelStore.open(store).attrs(good[0])
    flow = attrs["labelers"]["flow"]
    assert flow["name"] == "sea_raft"
    assert flow["params"]["weights_sha256"] == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
