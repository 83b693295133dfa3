"""Video metrics: Fréchet distance on closed forms, strict checkpoint layouts against the official
manifests (tests/model/data/video_metrics/), tiny-network plumbing, and VBench dimensions on
constructed videos with known motion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from model.video_metrics import (
    MetricNetworks,
    PaperMetricsAccumulator,
    VideoMetricConfig,
    VideoMetricWeights,
    paper_metrics,
)
from model.video_metrics.frechet import (
    RunningFeatureStatistics,
    feature_statistics,
    frechet_distance,
    frechet_distance_of_features,
)
from model.video_metrics.i3d import (
    I3DConfig,
    InceptionI3d,
    _fill_num_batches_tracked,
    i3d_features,
    load_i3d,
    preprocess_i3d,
)
from model.video_metrics.inception import FIDInceptionV3, InceptionConfig, inception_features, load_fid_inception
from model.video_metrics.vbench import (
    CLIP_B32,
    DINO_B16,
    ClipVisionSpec,
    DinoSpec,
    FeatureEncoder,
    _clip_vision_state,
    consistency_from_features,
    dynamic_degree_video,
    dynamic_threshold,
    frame_interval,
    interpolate_midframe,
    motion_smoothness_video,
    preprocess_clip,
    preprocess_dino,
    rename_official_vit_keys,
    top_flow_magnitude,
)
from model.video_metrics.weights import layout_of, load_strict

MANIFESTS = Path(__file__).parent / "data" / "video_metrics"
TINY_INCEPTION = InceptionConfig(width_divisor=32, num_classes=5)
TINY_I3D = I3DConfig(width_divisor=16, num_classes=7, final_pool=(1, 2, 2))
TINY_DINO = DinoSpec(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
TINY_CLIP = ClipVisionSpec(
    hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, projection_dim=16
)


def manifest(name: str) -> dict:
    return json.loads((MANIFESTS / f"{name}.json").read_text())


def meta_state(name: str) -> dict[str, torch.Tensor]:
    """A state dict with the manifest's keys and shapes, on the meta device (no memory)."""
    dtype = {"num_batches_tracked": torch.long}
    return {
        key: torch.empty(shape, device="meta", dtype=dtype.get(key.rsplit(".", 1)[-1], torch.float32))
        for key, shape in manifest(name)["keys"].items()
    }


def lively(net: torch.nn.Module) -> torch.nn.Module:
    """He-initialised convolutions, so activations keep their scale through a deep random net."""
    torch.manual_seed(0)
    for module in net.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Conv3d)):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    return net.eval()


def meta_model(build):
    with torch.device("meta"):
        return build()


# ----------------------------------------------------------------------------- Fréchet distance


def test_frechet_diagonal_and_commuting_closed_form():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    d1, d2 = rng.uniform(0.2, 3.0, 6), rng.uniform(0.2, 3.0, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(d1) - np.sqrt(d2)) ** 2)
    assert frechet_distance(mu1, np.diag(d1), mu2, np.diag(d2)) == pytest.approx(expected, rel=1e-10)
    # same eigenvalues in a shared rotated basis: covariances commute, same closed form
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    s1, s2 = q @ np.diag(d1) @ q.T, q @ np.diag(d2) @ q.T
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    # 1-D: (mu1 - mu2)^2 + (sigma1 - sigma2)^2
    one_d = frechet_distance(np.array([1.0]), np.array([[4.0]]), np.array([-2.0]), np.array([[9.0]]))
    assert one_d == pytest.approx(9.0 + (2.0 - 3.0) ** 2)


def test_frechet_general_matches_symmetric_form():
    """Tr sqrt(S1 S2) = Tr sqrt(S1^1/2 S2 S1^1/2) (TF-GAN's form, via eigendecompositions)."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    s1, s2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    w, v = np.linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(w)) @ v.T
    inner = np.linalg.eigvalsh(root1 @ s2 @ root1)
    expected = np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(inner, 0, None)))
    assert frechet_distance(np.zeros(5), s1, np.zeros(5), s2) == pytest.approx(expected, rel=1e-8)


def test_frechet_of_identical_sets_is_zero_and_statistics_are_unbiased():
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(50, 8)) @ rng.normal(size=(8, 8))
    assert abs(frechet_distance_of_features(feats, feats)) < 1e-8
    # rank-deficient (fewer samples than dimensions): the eps path, still ~0
    few = rng.normal(size=(4, 16))
    assert abs(frechet_distance_of_features(few, few)) < 1e-3
    stats = feature_statistics(np.array([[0.0, 1.0], [2.0, 3.0]]))
    np.testing.assert_allclose(stats.sigma, [[2.0, 2.0], [2.0, 2.0]])  # ddof = 1
    with pytest.raises(ValueError, match="at least 2"):
        feature_statistics(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="means"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))


# ----------------------------------------------------------------------------- official layouts


def test_inception_manifest_matches_architecture_and_loads_strictly():
    net = meta_model(FIDInceptionV3)
    assert layout_of(net) == {k: tuple(v) for k, v in manifest("pt_inception-2015-12-05-6726825d")["keys"].items()}
    assert sum(p.numel() for p in net.parameters()) == 23_850_960  # torchvision's 27 161 264 - AuxLogits, 1008 classes
    load_strict(net, meta_state("pt_inception-2015-12-05-6726825d"), "inception")


def test_i3d_manifest_matches_architecture_and_loads_without_num_batches_tracked():
    net = meta_model(InceptionI3d)
    state = meta_state("i3d_pretrained_400")
    assert not any(k.endswith("num_batches_tracked") for k in state)
    layout = {k: v for k, v in layout_of(net).items() if not k.endswith("num_batches_tracked")}
    assert layout == {k: tuple(v.shape) for k, v in state.items()}
    assert state["logits.conv3d.weight"].shape == (400, 1024, 1, 1, 1)
    load_strict(net, _fill_num_batches_tracked(net, state), "i3d")


def test_dino_manifest_renamed_matches_transformers_vit():
    state = rename_official_vit_keys(meta_state("dino_vitb16"))
    net = meta_model(DINO_B16.build)
    assert layout_of(net) == {k: tuple(v.shape) for k, v in state.items()}
    load_strict(net, state, "dino")
    # names already in the installed scheme pass unchanged
    assert rename_official_vit_keys(state).keys() == state.keys()


def test_clip_manifest_matches_vision_tower_and_text_keys_are_set_aside():
    state = meta_state("clip_vit_base_patch32_vision")
    full = {
        **state,
        "text_model.embeddings.token_embedding.weight": torch.empty(49408, 512, device="meta"),
        "text_projection.weight": torch.empty(512, 512, device="meta"),
        "logit_scale": torch.empty((), device="meta"),
        "vision_model.embeddings.position_ids": torch.arange(50)[None],
    }
    net = meta_model(CLIP_B32.build)
    load_strict(net, _clip_vision_state(full, "clip"), "clip")
    with pytest.raises(ValueError, match="position_ids"):
        _clip_vision_state({**state, "vision_model.embeddings.position_ids": torch.zeros(1, 50)}, "clip")


@pytest.mark.parametrize("case", ["missing", "extra", "misshaped"])
@pytest.mark.parametrize("name", ["pt_inception-2015-12-05-6726825d", "i3d_pretrained_400"])
def test_strict_loading_rejects_a_wrong_layout(name, case):
    build = FIDInceptionV3 if name.startswith("pt_inception") else InceptionI3d
    net = meta_model(build)
    state = meta_state(name)
    key = next(k for k in state if k.endswith("conv.weight") or k.endswith("conv3d.weight"))
    if case == "missing":
        del state[key]
    elif case == "extra":
        state["AuxLogits.fc.weight"] = torch.empty(1008, 768, device="meta")
    else:
        state[key] = torch.empty(1, 2, 3, device="meta")
    if build is InceptionI3d:
        state = _fill_num_batches_tracked(net, state)
    with pytest.raises(ValueError, match=case.replace("extra", "unexpected")) as error:
        load_strict(net, state, f"{name} weights")
    assert "\n" not in str(error.value) and (key in str(error.value) or "AuxLogits" in str(error.value))


# ----------------------------------------------------------------------------- tiny networks, files


def test_tiny_networks_load_from_files_and_give_feature_shapes(tmp_path):
    torch.manual_seed(0)
    inception, i3d = FIDInceptionV3(TINY_INCEPTION).eval(), InceptionI3d(TINY_I3D).eval()
    dino, clip = TINY_DINO.build().eval(), TINY_CLIP.build().eval()
    torch.save(inception.state_dict(), tmp_path / "inception.pth")
    i3d_state = {k: v for k, v in i3d.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(i3d_state, tmp_path / "i3d.pt")
    (tmp_path / "dino").mkdir()
    save_file({k: v.contiguous() for k, v in dino.state_dict().items()}, str(tmp_path / "dino" / "model.safetensors"))
    text_keys = {"logit_scale": torch.tensor(2.6), "text_model.final_layer_norm.weight": torch.ones(8)}
    torch.save({**clip.state_dict(), **text_keys}, tmp_path / "clip.bin")
    weights = VideoMetricWeights(
        inception=tmp_path / "inception.pth",
        i3d=tmp_path / "i3d.pt",
        dino=tmp_path / "dino",
        clip=tmp_path / "clip.bin",
    )
    config = VideoMetricConfig(inception=TINY_INCEPTION, i3d=TINY_I3D, dino=TINY_DINO, clip=TINY_CLIP)
    nets = MetricNetworks.load(weights, "cpu", config)

    images = torch.rand(2, 3, 40, 60)
    clips = torch.rand(2, 3, 8, 64, 64) * 2 - 1
    with torch.no_grad():
        assert nets.inception(images).shape == (2, TINY_INCEPTION.feature_dim)
        torch.testing.assert_close(nets.inception(images), inception(images))
        assert nets.i3d(clips).shape == (2, 7)
        assert nets.i3d(clips, feature="pool").shape == (2, nets.i3d.feature_dim)
        torch.testing.assert_close(nets.i3d(clips), i3d(clips))
    video = np.random.default_rng(0).integers(0, 256, (3, 30, 50, 3), dtype=np.uint8)
    assert FeatureEncoder(nets.dino, "dino")(video).shape == (3, 32)
    assert FeatureEncoder(nets.clip, "clip")(video).shape == (3, 16)
    with pytest.raises(ValueError, match="missing"):
        load_fid_inception(tmp_path / "i3d.pt", config=TINY_INCEPTION)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_i3d(tmp_path / "nope.pt", config=TINY_I3D)


def test_preprocessing_sizes_and_ranges():
    video = np.full((20, 36, 64, 3), 255, np.uint8)
    clip = preprocess_i3d(video, num_frames=16, resolution=224)
    assert clip.shape == (3, 16, 224, 224) and torch.allclose(clip, torch.ones(()))
    with pytest.raises(ValueError, match="needs 16"):
        preprocess_i3d(video[:9])
    assert preprocess_dino(video).shape == (20, 3, 224, 398)  # short side 224, int(224 * 64 / 36), no crop
    assert preprocess_clip(video).shape == (20, 3, 224, 224)


# ----------------------------------------------------------------------------- VBench dimensions


def textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    """Smooth random RGB texture (flow-friendly), uint8."""
    import cv2

    noise = np.random.default_rng(seed).uniform(0, 255, (height // 4, width // 4, 3)).astype(np.float32)
    return np.clip(cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)


def translating(offsets_px: list[float], height: int = 48, width: int = 64) -> np.ndarray:
    """Frames of a canvas seen through a window moving right by offsets_px[t] (sub-pixel by remap)."""
    import cv2

    canvas = textured(height + 8, width + 80)
    grid_x, grid_y = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    frames = [cv2.remap(canvas, grid_x + np.float32(4 + dx), grid_y + 4, cv2.INTER_CUBIC) for dx in offsets_px]
    return np.stack(frames)


class ExactFlow:
    """Flow stub: uniform horizontal flow given per pair, for exact rule tests."""

    name = "exact"

    def __init__(self, flows_px: list[float]):
        self.flows_px = flows_px

    def estimate(self, src, dst):
        from labelers.flow import FlowResult

        flow = np.zeros((*src.shape[:3], 2), np.float32)
        flow[..., 0] = np.asarray(self.flows_px[: len(src)], np.float32)[:, None, None]
        return FlowResult(flow, np.zeros(src.shape[:3], np.float32))


def test_dynamic_degree_rule_threshold_and_count_edges():
    video = np.zeros((8, 64, 96, 3), np.uint8)  # threshold 6 * 64 / 256 = 1.5 px, needs round(4 * 8 / 16) = 2 pairs
    assert dynamic_threshold(64, 96, 8) == (1.5, 2)
    assert not dynamic_degree_video(video, ExactFlow([1.5, 1.5, 1.5, 0, 0, 0, 0])).is_dynamic  # at, not above
    assert not dynamic_degree_video(video, ExactFlow([9.0, 0, 0, 0, 0, 0, 0])).is_dynamic  # one pair only
    assert dynamic_degree_video(video, ExactFlow([0, 1.51, 0, 0, 0, 1.51, 0])).is_dynamic  # two pairs
    flow = np.zeros((10, 10, 2))
    flow[0, :5, 0] = 4.0  # 5 of 100 pixels move: the top 5 % is exactly them
    assert top_flow_magnitude(flow) == pytest.approx(4.0)
    assert frame_interval(None) == 1 and frame_interval(24) == 3 and frame_interval(30) == 4


def test_dynamic_degree_with_dis_flow_on_known_motion():
    from labelers.dis_flow import DisFlow

    flow = DisFlow()
    static = translating([0.0] * 6)  # threshold 6 * 48 / 256 = 1.125 px
    moving = translating([3.0 * t for t in range(6)])
    still = dynamic_degree_video(static, flow)
    assert not still.is_dynamic and still.pair_scores_px.max() < 0.3
    move = dynamic_degree_video(moving, flow)
    assert move.is_dynamic and np.allclose(move.pair_scores_px, 3.0, atol=0.5)
    result = paper_metrics([static, moving], [static], VideoMetricWeights(), flow=flow)
    assert result["dynamic_degree"].value == 0.5 and result["dynamic_degree"].per_clip == (0.0, 1.0)


def test_interpolated_midframe_is_exact_for_uniform_translation():
    video = translating([0.0, 2.0, 4.0])
    # the window moves right, so the content moves left: F_02 = -4 px, F_20 = +4 px
    mid = interpolate_midframe(video[0], video[2], np.full((48, 64, 2), (-4.0, 0.0)), np.full((48, 64, 2), (4.0, 0.0)))
    # away from the borders both warps sample the canvas positions of frame 1
    assert np.abs(mid[:, 4:-4].astype(int) - video[1][:, 4:-4]).max() <= 2


def test_motion_smoothness_uniform_beats_jitter():
    from labelers.dis_flow import DisFlow

    flow = DisFlow()
    uniform = translating([2.0 * t for t in range(9)])
    jitter = np.random.default_rng(3).uniform(-3, 3, 9) * (np.arange(9) % 2)  # odd frames off their midpoints
    jittery = translating(list(2.0 * np.arange(9) + jitter))
    smooth, rough = motion_smoothness_video(uniform, flow), motion_smoothness_video(jittery, flow)
    assert smooth > 0.99 and rough < smooth - 0.02


def test_consistency_formula_on_constructed_features():
    theta = np.deg2rad(60.0)
    feats = np.array([[1.0, 0.0], [1.0, 0.0], [np.cos(theta), np.sin(theta)]])
    # frame 1: (1 + 1) / 2; frame 2: (cos 60 + cos 60) / 2 -> mean (1 + 0.5) / 2
    assert consistency_from_features(feats).value == pytest.approx(0.75)
    flipped = np.array([[1.0, 0.0], [-1.0, 0.0]])  # negative cosines clamp to 0
    assert consistency_from_features(flipped).value == 0.0
    assert consistency_from_features(np.ones((5, 3)) * 2.0).value == pytest.approx(1.0)


def test_consistency_metrics_constant_and_perturbed_video():
    torch.manual_seed(0)
    config = VideoMetricConfig(dino=TINY_DINO, clip=TINY_CLIP)
    nets = MetricNetworks(dino=TINY_DINO.build().eval(), clip=TINY_CLIP.build().eval())
    constant = np.repeat(textured(32, 48)[None], 4, axis=0)
    perturbed = constant.copy()
    perturbed[3] = textured(32, 48, seed=5)
    out = paper_metrics([constant], [constant], VideoMetricWeights(), networks=nets, config=config)
    for name, kind in (("subject_consistency", "dino"), ("background_consistency", "clip")):
        assert out[name].value == pytest.approx(1.0, abs=1e-6)
        f = torch.nn.functional.normalize(FeatureEncoder(getattr(nets, kind), kind)(perturbed).double(), dim=-1)
        cos = float(f[3] @ f[0])  # frame 3 against frame 0, which equals its predecessor frame 2
        expected = (1.0 + 1.0 + max(cos, 0.0)) / 3  # frames 1 and 2 score 1, frame 3 scores max(cos, 0)
        got = paper_metrics([perturbed], [perturbed], VideoMetricWeights(), networks=nets, config=config)[name].value
        assert got == pytest.approx(expected, abs=1e-6) and got < 1.0 - 1e-4


# ----------------------------------------------------------------------------- paper_metrics


def test_paper_metrics_tiny_end_to_end_and_missing_weights():
    torch.manual_seed(0)
    config = VideoMetricConfig(fvd_num_frames=8, fvd_resolution=64, inception=TINY_INCEPTION, i3d=TINY_I3D)
    nets = MetricNetworks(inception=lively(FIDInceptionV3(TINY_INCEPTION)), i3d=lively(InceptionI3d(TINY_I3D)))
    rng = np.random.default_rng(0)
    clips = [rng.integers(0, 256, (8, 32, 48, 3), dtype=np.uint8) for _ in range(3)]
    other = [np.clip(c.astype(int) // 2 + 60, 0, 255).astype(np.uint8) for c in clips]
    same = paper_metrics(clips, clips, VideoMetricWeights(), networks=nets, config=config)
    assert abs(same["fvd"].value) < 1e-6 and abs(same["fid"].value) < 1e-3
    assert same["fid"].details["num_generated_frames"] == 24 and "rank-deficient" in same["fid"].note
    differ = paper_metrics(clips, other, VideoMetricWeights(), networks=nets, config=config)
    assert differ["fvd"].value > 1e-6 and differ["fid"].value > 1e-3
    assert same["subject_consistency"].note == "not computed: pass --dino-weights PATH"
    assert same["background_consistency"].value is None and "--clip-weights" in same["background_consistency"].note

    bare = paper_metrics(clips, clips, VideoMetricWeights())
    assert bare["fvd"].note == "not computed: pass --i3d-weights PATH"
    assert bare["fid"].note == "not computed: pass --inception-weights PATH"
    assert list(bare) == ["fvd", "fid", "dynamic_degree", "motion_smoothness", "subject_consistency",
                          "background_consistency"]
    short = paper_metrics(clips, clips, VideoMetricWeights(), networks=nets)  # default protocol: 16 frames
    assert short["fvd"].note == "not computed: generated clip 0 has 8 frames, needs >= 16"
    few = paper_metrics([c[:4] for c in clips], clips, VideoMetricWeights(), config=VideoMetricConfig(fps=30.0))
    assert few["dynamic_degree"].note == "not computed: generated clip 0 has 4 frames, needs >= 5"  # 1 in 4 kept
    with pytest.raises(ValueError, match="reference clip 1"):
        paper_metrics(clips, [clips[0], clips[1].astype(np.float32)], VideoMetricWeights())


# ----------------------------------------------------------------------------- streaming


def test_running_statistics_equal_the_statistics_of_all_features():
    rng = np.random.default_rng(4)
    # a large common offset: raw second moments would cancel badly, the pairwise update must not
    batches = [1e3 + rng.normal(size=(n, 6)) @ rng.normal(size=(6, 6)) for n in (1, 5, 3, 1)]
    running = RunningFeatureStatistics()
    for batch in batches:
        running.add(batch)
    expected = feature_statistics(np.concatenate(batches))
    got = running.statistics()
    assert got.count == expected.count == 10 and running.dim == 6
    np.testing.assert_allclose(got.mu, expected.mu, rtol=1e-12)
    np.testing.assert_allclose(got.sigma, expected.sigma, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="differs"):
        running.add(np.zeros((2, 5)))
    one = RunningFeatureStatistics()
    one.add(np.zeros((1, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        one.statistics()


def test_streamed_accumulator_equals_the_metrics_on_all_clips_at_once():
    """Clip pairs fed one at a time (as evaluate-video does, dropping the frames) give the
    formulas' values on the full feature sets: FVD / FID from all features, VBench means."""
    from labelers.dis_flow import DisFlow

    torch.manual_seed(0)
    config = VideoMetricConfig(fvd_num_frames=8, fvd_resolution=64, batch_size=2, inception=TINY_INCEPTION,
                               i3d=TINY_I3D, dino=TINY_DINO, clip=TINY_CLIP)
    nets = MetricNetworks(inception=lively(FIDInceptionV3(TINY_INCEPTION)), i3d=lively(InceptionI3d(TINY_I3D)),
                          dino=TINY_DINO.build().eval(), clip=TINY_CLIP.build().eval())
    flow = DisFlow()
    rng = np.random.default_rng(1)
    generated = [translating([speed * t for t in range(8)], 32, 48) for speed in (0.0, 2.0, 3.5)]
    reference = [rng.integers(0, 256, (8, 32, 48, 3), dtype=np.uint8) for _ in range(3)]
    streamed = PaperMetricsAccumulator(networks=nets, config=config, flow=flow)
    for gen, ref in zip(generated, reference):
        streamed.add(gen, ref.copy())  # batch of 2 I3D clips: one full batch, one flushed by result()
    got = streamed.result()

    with torch.no_grad():
        fvd = frechet_distance_of_features(*(i3d_features(nets.i3d, clips, num_frames=8, resolution=64, batch_size=2)
                                             for clips in (generated, reference)))
        fid = frechet_distance_of_features(*(np.concatenate([inception_features(nets.inception, c) for c in clips])
                                             for clips in (generated, reference)))
    assert got["fvd"].value == pytest.approx(fvd, rel=1e-6) and got["fvd"].details["num_reference"] == 3
    assert got["fid"].value == pytest.approx(fid, rel=1e-6) and got["fid"].details["num_generated_frames"] == 24
    flags = [float(dynamic_degree_video(c, flow).is_dynamic) for c in generated]
    assert flags == [0.0, 1.0, 1.0] and got["dynamic_degree"].value == pytest.approx(2 / 3)
    smooth = [motion_smoothness_video(c, flow) for c in generated]
    assert got["motion_smoothness"].value == pytest.approx(np.mean(smooth), rel=1e-12)
    for metric, kind in (("subject_consistency", "dino"), ("background_consistency", "clip")):
        parts = [FeatureEncoder(getattr(nets, kind), kind).consistency(c) for c in generated]
        expected = sum(p.total for p in parts) / sum(p.count for p in parts)
        assert got[metric].value == pytest.approx(expected, rel=1e-9) and got[metric].value < 1.0

    # paper_metrics on the lists is the same table
    listed = paper_metrics(generated, reference, VideoMetricWeights(), networks=nets, config=config, flow=flow)
    for name, result in listed.items():
        assert result.value == pytest.approx(got[name].value, rel=1e-9), name
        assert result.note == got[name].note, name
    # a second model against the same reference: the reference is encoded once, by the first accumulator
    other = PaperMetricsAccumulator(networks=nets, config=config, flow=flow)
    for gen in generated:
        other.add(gen)
    shared = other.result(reference=streamed)
    assert shared["fvd"].value == pytest.approx(got["fvd"].value, rel=1e-9)
    assert shared["fid"].value == pytest.approx(got["fid"].value, rel=1e-9)
    with pytest.raises(ValueError, match="no reference clip"):
        other.result()
    with pytest.raises(ValueError, match="generated clip 3"):
        other.add(generated[0].astype(np.float32))
