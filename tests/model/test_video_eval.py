"""Video evaluation: consistency metrics on constructed videos with known answers, and one end-to-end run."""

import json
import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from model.video_eval import (
    CONSISTENCY_METRICS,
    PAPER_METRICS,
    EvaluateVideoConfig,
    consistency_metrics,
    evaluate_video,
    evaluate_video_main,
    held_out_clips,
    point_cloud_preview,
)
from pipelines.synthetic import SceneConfig, render_clip

STRIDE = 4


@pytest.fixture(scope="module")
def clip():
    """A dolly through a textured room with one mover: 13 frames, S = 4 key frames, exact labels."""
    return render_clip(SceneConfig(seed=5, height=48, width=64, num_frames=13, camera="dolly", num_moving=1))


def _perfect(labels):
    """The exact labels as the model's 4D output on the key frames."""
    return dict(
        depth=labels["depth"][::STRIDE].astype(np.float64),
        c2w=labels["c2w"][::STRIDE].astype(np.float64),
        K=labels["K"][::STRIDE].astype(np.float64),
        scene_flow=labels["scene_flow"].astype(np.float64),
        mask_logits=np.where(labels["dynamic_mask"], 4.0, -4.0),
        points=labels["points"],
    )


def test_a_perfect_4d_output_scores_perfectly(clip):
    values, notes = consistency_metrics(clip.frames, _perfect(clip.labels), clip.labels, STRIDE)
    assert set(values) == set(CONSISTENCY_METRICS) and not notes
    assert values["depth_log_rmse"] == 0 and values["depth_delta_1_25"] == 1 and values["depth_abs_rel"] == 0
    for m in ("camera_ate", "camera_rte", "camera_rre_deg", "scene_flow_epe3d"):
        assert values[m] == pytest.approx(0, abs=1e-6), m
    assert values["mask_iou"] == 1
    # warping with exact depth and cameras lands on the exact key flow, and on the next frame's depth
    assert values["reproj_flow_px"] < 1e-4 and values["reproj_depth_rel"] < 1e-3
    # what fails the 5 % depth test is occlusion and bilinear depth across object edges at 48x64
    assert values["reproj_inliers"] > 0.9
    assert values["reproj_photo_l1"] < 4.0  # bilinear resampling of the texture: the metric's floor here

    # the model's unit is free: depth, camera translations and scene flow 3x larger score the same
    scaled = _perfect(clip.labels)
    scaled["depth"] *= 3
    scaled["c2w"][:, :3, 3] *= 3
    scaled["scene_flow"] *= 3
    again, _ = consistency_metrics(clip.frames, scaled, clip.labels, STRIDE)
    for m in CONSISTENCY_METRICS:
        assert again[m] == pytest.approx(values[m], abs=1e-6), m


def test_non_uniformly_scaled_depth_scores_worse_by_the_expected_amount(clip):
    labels = clip.labels
    pred = _perfect(labels)
    band = np.zeros(pred["depth"].shape, bool)
    band[:, :, 48:] = True  # the right quarter of every key frame is 1.5x too far
    pred["depth"][band] *= 1.5
    values, _ = consistency_metrics(clip.frames, pred, labels, STRIDE)
    gt = labels["depth"][::STRIDE].astype(np.float64)
    s = np.median(gt) / np.median(pred["depth"])  # the median alignment of model.evaluate
    f = band.mean()
    # per pixel the log error is log s off the band and log 1.5 s on it
    expected = math.sqrt((1 - f) * math.log(s) ** 2 + f * math.log(1.5 * s) ** 2)
    assert values["depth_log_rmse"] == pytest.approx(expected, rel=1e-9)
    within = [abs(math.log(x)) < math.log(1.25) for x in (s, 1.5 * s)]
    assert values["depth_delta_1_25"] == pytest.approx((1 - f) * within[0] + f * within[1])
    assert values["depth_log_rmse"] > 0.15 and values["camera_rre_deg"] == pytest.approx(0, abs=1e-6)


def test_a_rotated_camera_scores_worse_by_the_expected_amount(clip):
    labels = clip.labels
    theta = math.radians(2.0)
    R = Rotation.from_rotvec([0.0, theta, 0.0]).as_matrix()
    pred = _perfect(labels)
    turn = np.eye(4)
    turn[:3, :3] = R
    pred["c2w"][-1] = pred["c2w"][-1] @ turn  # the last key camera turns about its own y axis, centre unchanged
    values, _ = consistency_metrics(clip.frames, pred, labels, STRIDE)
    S = pred["c2w"].shape[0]
    # one of the S - 1 relative rotations is off by theta: RMSE theta / sqrt(S - 1); centres unchanged
    assert values["camera_rre_deg"] == pytest.approx(math.degrees(theta) / math.sqrt(S - 1), rel=1e-5)
    assert values["camera_ate"] == pytest.approx(0, abs=1e-6)
    # a camera turned in place moves every projection by the homography K R^T K^-1, whatever the depth:
    # on the last pair the warp leaves the exact key flow target q by |H q - q|, on the others by 0
    K = labels["K"][0].astype(np.float64)
    H_rot = K @ R.T @ np.linalg.inv(K)
    h, w = labels["depth"].shape[1:]
    v, u = np.mgrid[0:h, 0:w].astype(np.float64)
    errors, counts = [], 0
    for k in range(S - 1):
        q = np.stack([u, v], -1) + labels["key_flow"][k]
        use = labels["key_flow_valid"][k] & ~labels["dynamic_mask"][k]
        if k == S - 2:
            q1 = np.concatenate([q, np.ones((h, w, 1))], -1) @ H_rot.T
            moved = q1[..., :2] / q1[..., 2:]
            use &= (moved[..., 0] >= 0) & (moved[..., 0] <= w - 1) & (moved[..., 1] >= 0) & (moved[..., 1] <= h - 1)
            errors = np.linalg.norm(moved - q, axis=-1)[use]
        counts += use.sum()
    expected = errors.sum() / counts
    assert expected > 0.3  # about f tan(theta) / (S - 1): visible
    assert values["reproj_flow_px"] == pytest.approx(expected, rel=1e-3)
    perfect, _ = consistency_metrics(clip.frames, _perfect(labels), labels, STRIDE)
    assert values["reproj_photo_l1"] > perfect["reproj_photo_l1"] + 1.0


def test_labeler_failure_and_point_cloud_preview(clip):
    values, notes = consistency_metrics(clip.frames, _perfect(clip.labels), None, STRIDE, label_failure="camera_x: why")
    assert math.isnan(values["depth_log_rmse"]) and "camera_x: why" in notes["depth_log_rmse"]
    assert math.isnan(values["reproj_flow_px"]) and "reproj_flow_px" in notes
    assert values["reproj_depth_rel"] < 1e-3  # the model's self-consistency needs no labels

    # a point at the cloud's centre lands at the picture's centre; nearer points hide farther ones
    points = np.array([[0.0, 0.0, 5.0], [0.0, 0.0, 4.0], [1.0, 0.0, 5.0], [-1.0, 0.0, 5.0]])
    colors = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [0, 0, 255]], np.uint8)
    image = point_cloud_preview(points, colors, size=(41, 61), yaw_deg=0.0, pitch_deg=0.0)
    # the cloud's median (0, 0, 5) is at the centre, hidden behind the green point (0, 0, 4) on the same ray
    assert tuple(image[20, 30]) == (0, 255, 0) and not (image == [255, 0, 0]).all(-1).any()
    blue = np.argwhere((image == [0, 0, 255]).all(-1))
    assert blue[:, 1].min() < 30 < blue[:, 1].max()  # the points left and right of it
    picture = point_cloud_preview(clip.labels["points"], clip.frames[::STRIDE])
    assert picture.shape == (160, 240, 3) and (picture != 255).any(axis=-1).mean() > 0.2


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A tiny stage-2 run with two checkpoints (steps 1 and 2) on a 2-clip synthetic store at 64x96x9."""
    from model.train import TrainConfig, Trainer
    from pipelines.synthetic_set import scene_configs, write_synthetic_set
    from storage import LabelStore

    tmp = tmp_path_factory.mktemp("video_eval")
    store = LabelStore.create(tmp / "store", precision="float32")
    write_synthetic_set(tmp / "set", scene_configs(2, 64, 96, seed=11, num_frames=9), store)
    Trainer(TrainConfig(config="tiny", stage="2", stores=[str(tmp / "store")], output_dir=str(tmp / "run"), steps=2,
                        save_every=1, device="cpu")).run()
    return tmp


def test_end_to_end_on_a_tiny_checkpoint_and_its_baseline(tiny_run, capsys):
    run = tiny_run / "run"
    out = tiny_run / "eval"
    cfg = EvaluateVideoConfig(checkpoint=str(run), baseline=str(run / "checkpoints" / "step_00000001"),
                              stores=[str(tiny_run / "store")], out=str(out), num_clips=2, steps=2, guidance=1.0,
                              report_clips=1, device="cpu")
    result = evaluate_video(cfg, log=lambda line: None)
    assert list(result.models) == ["checkpoint", "baseline"] and result.protocol["clips"] == 2
    rows = {row["metric"]: row for row in result.rows}
    assert set(CONSISTENCY_METRICS) <= set(rows)
    for row in rows.values():
        for name in ("checkpoint", "baseline"):
            value, note = row[name], row[f"{name}_note"]
            assert value is None or math.isfinite(value), (row["metric"], name)
            if value is None:
                assert note, (row["metric"], name)  # every value not computed says why
    # paper metrics: without weights, each network metric names the option that computes it
    for metric, (_, option) in PAPER_METRICS.items():
        if option and metric in rows and rows[metric]["checkpoint"] is None:
            note = rows[metric]["checkpoint_note"]
            assert option in note, note
    # the model's self-consistency needs no labeler: computed for both
    for name in ("checkpoint", "baseline"):
        assert rows["reproj_depth_rel"][name] is not None and rows["reproj_depth_rel"][name] >= 0
    page = (out / "index.html").read_text()
    assert page.count("<tr class=") == len(result.rows) and page.count('src="data:image/png') == 1 + 2 * 3
    saved = json.loads((out / "results.json").read_text())
    assert [row["metric"] for row in saved["rows"]] == [row["metric"] for row in result.rows]
    assert saved["seconds"]["generation"] > 0

    # held-out clips of another size are left out, each with one line
    clips, skipped = held_out_clips(cfg, (9, 32, 48))
    assert clips == [] and len(skipped) == 2 and "the model generates 9x32x48" in skipped[0]

    # the command line: the same run prints the table; bad input is one line and exit code 2
    argv = ["--checkpoint", str(run), "--store", str(tiny_run / "store"), "--out", str(tiny_run / "cli"), "--clips", "1",
            "--steps", "1", "--guidance", "1", "--report-clips", "0", "--device", "cpu"]
    assert evaluate_video_main(argv) == 0
    printed = capsys.readouterr().out
    assert "| metric | checkpoint | notes |" in printed and "depth_log_rmse" in printed
    assert evaluate_video_main(["--checkpoint", str(run), "--out", str(tiny_run / "x")]) == 2
    assert capsys.readouterr().out.strip().count("\n") == 0
    assert evaluate_video_main(["--checkpoint", str(run), "--store", str(tiny_run / "store"), "--out", "x",
                                "--baseline", str(tiny_run / "nothing")]) == 2
    assert "nothing" in capsys.readouterr().out
    # a weight file that does not load fails before anything is generated, in one line
    assert evaluate_video_main([*argv, "--i3d-weights", str(tiny_run / "missing_i3d.pt")]) == 2
    printed = capsys.readouterr().out
    assert printed.startswith("error:") and "missing_i3d.pt" in printed and printed.strip().count("\n") == 0


def test_a_perfect_output_against_the_real_labelers_scores_their_accuracy():
    """The labelers run on the video (as on generated ones): the perfect output's scores are the labelers' errors."""
    from pipelines.frame_labels import label_frames
    from pipelines.labeling import LabelConfig, build_backends

    clip = render_clip(SceneConfig(seed=3, height=64, width=96, num_frames=9, camera="dolly", num_moving=1))
    cfg = LabelConfig(height=64, width=96, num_frames=9)
    labels = label_frames(clip.frames, cfg, build_backends(cfg), clip.labels["K"])
    values, notes = consistency_metrics(clip.frames, _perfect(clip.labels), labels, STRIDE)
    # measured: log-RMSE 0.14, delta 0.91, RRE 0.45 deg, mask IoU 0.86 (multi-view depth on 64x96 frames)
    assert 0 < values["depth_log_rmse"] < 0.25 and values["depth_delta_1_25"] > 0.85
    assert values["camera_rre_deg"] < 1.0 and values["mask_iou"] > 0.7
    assert values["reproj_flow_px"] < 1.0  # the DIS key flow agrees with the exact warp on static pixels
    assert values["reproj_depth_rel"] < 1e-3  # labels play no part in the model's self-consistency


def _tiny_base_model_folder(root, height: int, width: int, frames: int):
    """A random CogVideoX image-to-video diffusers folder (transformer, VAE, T5, tokenizer, scheduler) saved to disk."""
    import torch
    from diffusers import AutoencoderKLCogVideoX, CogVideoXImageToVideoPipeline, CogVideoXTransformer3DModel
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    from model.dit import tiny_transformer_config
    from model.encoders import tiny_vae_config
    from model.losses import cogvideox_scheduler

    spm = pytest.importorskip("sentencepiece")
    torch.manual_seed(0)
    transformer = CogVideoXTransformer3DModel.from_config(
        tiny_transformer_config(sample_height=height // 8, sample_width=width // 8, sample_frames=frames))
    vae = AutoencoderKLCogVideoX(**tiny_vae_config(2 * height, 2 * width))  # tiles of twice the clip: one tile
    text = T5EncoderModel(T5Config(vocab_size=48, d_model=24, d_kv=8, d_ff=32, num_layers=1, num_heads=2))
    (root / "tokenizer").mkdir(parents=True)
    (root / "corpus.txt").write_text("a dolly shot of a textured room with still and moving objects\n" * 20)
    spm.SentencePieceTrainer.train(input=str(root / "corpus.txt"), model_prefix=str(root / "tokenizer" / "spiece"),
                                   vocab_size=30, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2)
    (root / "tokenizer" / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "T5Tokenizer", "extra_ids": 0}))
    tokenizer = T5Tokenizer.from_pretrained(root / "tokenizer")
    folder = root / "cogvideox-i2v"
    CogVideoXImageToVideoPipeline(tokenizer, text, vae, transformer, cogvideox_scheduler()).save_pretrained(folder)
    return folder


def test_the_base_model_as_a_baseline(tiny_run):
    """The base CogVideoX-I2V folder beside the checkpoint: paper metrics and labeler acceptance from its RGB,
    its 4D rows "not computed", and the same first frame, caption and seed as the checkpoint."""
    import torch

    from model.base_pipeline import BaseModelSampler
    from model.video_metrics import VideoMetricWeights, paper_metrics
    from storage import LabelStore

    folder = _tiny_base_model_folder(tiny_run / "base", 64, 96, 9)
    out = tiny_run / "eval_base"
    cfg = EvaluateVideoConfig(checkpoint=str(tiny_run / "run"), baseline_base_model=str(folder),
                              stores=[str(tiny_run / "store")], out=str(out), num_clips=1, steps=1, guidance=1.0,
                              seed=3, report_clips=1, device="cpu")
    result = evaluate_video(cfg, log=lambda line: None)
    assert list(result.models) == ["checkpoint", "base_model"]
    rows = {row["metric"]: row for row in result.rows}
    for metric in CONSISTENCY_METRICS:
        assert rows[metric]["base_model"] is None
        assert rows[metric]["base_model_note"] == "not computed: the base model has no 4D outputs"
    assert rows["reproj_depth_rel"]["checkpoint"] is not None  # the checkpoint keeps its 4D rows
    assert rows["fvd"]["base_model"] is None and "--i3d-weights" in rows["fvd"]["base_model_note"]
    accepted = rows["labeler_acceptance"]
    assert accepted["base_model"] in (0.0, 1.0) and accepted["base_model_note"].startswith(
        f"{int(accepted['base_model'])} of 1 videos labelled")

    # the run generated from the clip's first frame and caption with seed + 0: regenerating that way
    # gives the same video, so the same motion smoothness and dynamic degree
    store = LabelStore.open(tiny_run / "store")
    clips, _ = held_out_clips(cfg, (9, 64, 96))
    clip = clips[0]
    assert result.clips[0]["clip_id"] == clip.clip_id == store.clip_ids(status="accepted")[0]
    sampler = BaseModelSampler.from_folder(folder, scheduler="dpm")
    image = torch.from_numpy(clip.frames[0]).permute(2, 0, 1)[None].float() / 127.5 - 1.0
    video = sampler(image, clip.caption, 1, 1.0, torch.Generator().manual_seed(3), 9)
    assert video.shape == (1, 9, 3, 64, 96)
    frames = (video[0].permute(0, 2, 3, 1).numpy() * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
    again = paper_metrics([frames], [clip.frames], VideoMetricWeights())
    for metric in ("motion_smoothness", "dynamic_degree"):
        assert rows[metric]["base_model"] == pytest.approx(again[metric].value, abs=1e-12), metric
    page = (out / "index.html").read_text()
    assert page.count('src="data:image/png') == 1 + 3 + 1  # reference; checkpoint frames, depth, cloud; base frames

    # a folder that is not a diffusers base model fails before anything is generated, in one line
    with pytest.raises(FileNotFoundError, match="no model_index.json"):
        BaseModelSampler.from_folder(tiny_run / "store")
