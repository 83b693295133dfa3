import json

import cv2
import decord
import numpy as np
import pytest
import torch

from model.export import export_sample, load_image, read_cameras_json, sample_main, write_cameras_json, write_ply
from model.pipeline import WorldReelPipeline
from model.train import TrainConfig, Trainer
from pipelines.synthetic_set import scene_configs, write_synthetic_set
from storage import LabelStore

H, W, T = 32, 64, 9  # tiny model: multiples of 16; decord wants widths that are multiples of 64
S = 3


def read_ply(path):
    """Minimal binary little-endian PLY reader: header lines and the vertex table."""
    data = path.read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    count = int(next(line for line in header if line.startswith("element vertex")).split()[-1])
    kinds = {"float": "<f4", "uchar": "u1"}
    fields = [(line.split()[2], kinds[line.split()[1]]) for line in header if line.startswith("property")]
    vertices = np.frombuffer(data[end:], dtype=np.dtype(fields))
    assert len(vertices) == count
    return vertices


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A stage-2 tiny run of one step: the checkpoint `worldreel sample` loads."""
    root = tmp_path_factory.mktemp("export")
    store = LabelStore.create(root / "store", precision="float32")
    write_synthetic_set(root / "set", scene_configs(1, H, W, seed=3, num_frames=T), store)
    cfg = TrainConfig(config="tiny", stage="2", stores=[str(root / "store")], output_dir=str(root / "run"), steps=1, device="cpu")
    trainer = Trainer(cfg)
    trainer.run()
    return root, trainer


def test_ply_and_cameras_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(37, 3)).astype(np.float32)
    rgb = rng.integers(0, 256, (37, 3), dtype=np.uint8)
    vertices = read_ply(write_ply(tmp_path / "a.ply", xyz, rgb))
    assert np.array_equal(np.stack([vertices[a] for a in "xyz"], 1), xyz)
    assert np.array_equal(np.stack([vertices[c] for c in ("red", "green", "blue")], 1), rgb)
    with pytest.raises(ValueError, match="uint8"):
        write_ply(tmp_path / "b.ply", xyz, rgb.astype(np.int32))

    c2w = np.tile(np.eye(4), (4, 1, 1))
    c2w[:, :3, 3] = rng.normal(size=(4, 3))
    K = np.tile(np.array([[50.0, 0, 31.5], [0, 50.0, 15.5], [0, 0, 1]]), (4, 1, 1))
    cams = read_cameras_json(write_cameras_json(tmp_path / "c.json", c2w, K, H, W, np.arange(4) * 4))
    assert (cams["height"], cams["width"]) == (H, W) and cams["frame_index"].tolist() == [0, 4, 8, 12]
    assert np.array_equal(cams["c2w"], c2w) and np.array_equal(cams["K"], K)


def test_from_checkpoint_rebuilds_the_trained_models(run):
    root, trainer = run
    rng = torch.get_rng_state()
    pipe = WorldReelPipeline.from_checkpoint(root / "run")  # a run folder: its latest checkpoint
    assert torch.equal(torch.get_rng_state(), rng)  # loading leaves the global RNG alone
    for name in ("dit", "head", "vae"):
        ours, trained = getattr(pipe, name).state_dict(), getattr(trainer.models, name).state_dict()
        assert ours.keys() == trained.keys()
        for key in ours:
            assert torch.equal(ours[key], trained[key]), f"{name}.{key}"
    assert pipe.video_size == (T, H, W)
    assert pipe.scheduler.config.rescale_betas_zero_snr and pipe.scheduler.config.prediction_type == "v_prediction"


def test_sample_cli_writes_the_4d_export(run, tmp_path, capsys):
    root, _ = run
    image = np.random.default_rng(1).integers(0, 256, (48, 80, 3), dtype=np.uint8)  # resized and cropped to 32x64
    cv2.imwrite(str(tmp_path / "first.png"), image[..., ::-1])
    out = tmp_path / "sample"
    argv = ["--checkpoint", str(root / "run"), "--image", str(tmp_path / "first.png"), "--prompt", "a room", "--out", str(out)]
    assert sample_main([*argv, "--steps", "2", "--seed", "7", "--guidance", "2.0", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["size"] == [T, H, W]

    pipe = WorldReelPipeline.from_checkpoint(root / "run")
    expected = pipe(load_image(tmp_path / "first.png", H, W)[None], "a room", 2, 2.0, generator=torch.Generator().manual_seed(7))

    video = decord.VideoReader(str(out / "video.mp4"))
    assert len(video) == T and video[0].shape == (H, W, 3)
    frames = (expected.video[0].permute(0, 2, 3, 1).numpy() * 255).round()
    assert np.abs(video.get_batch(list(range(T))).asnumpy() - frames).mean() < 3  # lossy but close

    cams = read_cameras_json(out / "cameras.json")
    assert (cams["height"], cams["width"]) == (H, W) and cams["frame_index"].tolist() == [0, 4, 8]
    np.testing.assert_allclose(cams["c2w"], expected.c2w[0].numpy(), atol=1e-6)
    np.testing.assert_array_equal(cams["c2w"][0], np.eye(4))
    np.testing.assert_allclose(cams["K"], expected.K[0].numpy(), rtol=1e-6)

    for k in range(S):
        vertices = read_ply(out / "points" / f"frame_{k:03d}.ply")
        assert len(vertices) == H * W
        xyz = np.stack([vertices[a] for a in "xyz"], 1)
        np.testing.assert_allclose(xyz, expected.points[0, k].reshape(-1, 3).numpy(), rtol=1e-5, atol=1e-6)
        colours = np.stack([vertices[c] for c in ("red", "green", "blue")], 1)
        np.testing.assert_array_equal(colours, frames[4 * k].reshape(-1, 3).astype(np.uint8))

    geometry = np.load(out / "geometry.npz")
    assert geometry["scene_flow"].shape == (S - 1, H, W, 3) and geometry["dynamic_mask"].dtype == bool
    np.testing.assert_allclose(geometry["depth"], expected.depth[0].numpy(), rtol=1e-5)
    np.testing.assert_array_equal(geometry["dynamic_mask"], expected.mask_logits[0].numpy() > 0)
    assert json.loads((out / "sample.json").read_text())["seed"] == 7

    assert sample_main([*argv[:-2], "--out", str(tmp_path / "x"), "--checkpoint", str(tmp_path / "nowhere")]) == 2


def test_export_needs_a_decoded_video(run, tmp_path):
    root, _ = run
    pipe = WorldReelPipeline.from_checkpoint(root / "run")
    out = pipe(torch.zeros(1, 3, H, W), "x", 1, decode_video=False)
    with pytest.raises(ValueError, match="no decoded video"):
        export_sample(out, tmp_path)
