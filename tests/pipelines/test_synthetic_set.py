"""`worldreel synth`: videos that decord reads, a manifest, exact labels in a store; re-runs skip."""

import csv

import decord
import numpy as np
import pytest

from pipelines.synthetic import SceneConfig, render_clip
from pipelines.synthetic_set import SCENE_CLASSES, class_configs, write_synthetic_set
from storage import LabelStore
from worldreel_cli import main


def test_synth_command_writes_videos_manifest_and_ground_truth(tmp_path, capsys):
    out, store_path = tmp_path / "synth", tmp_path / "gt.zarr"
    args = ["synth", "--out", str(out), "--clips", "2", "--size", "48x64", "--frames", "9", "--seed", "7"]
    assert main(args + ["--store", str(store_path)]) == 0
    rows = list(csv.DictReader(open(out / "manifest.csv")))
    assert list(rows[0]) == ["clip_id", "video_path", "start_sec", "end_sec", "caption", "fx", "fy", "cx", "cy"]
    assert len(rows) == 2
    store = LabelStore.open(store_path)
    assert store.clip_ids(status="accepted") == sorted(r["clip_id"] for r in rows)

    expected = render_clip(SceneConfig(seed=7, height=48, width=64, num_frames=9, camera="dolly", num_moving=1))
    row = rows[0]
    video = decord.VideoReader(str(out / row["video_path"]))
    frames = video.get_batch(list(range(len(video)))).asnumpy()
    assert frames.shape == (9, 48, 64, 3)
    psnr = 10 * np.log10(255**2 / np.mean((frames.astype(float) - expected.frames) ** 2))
    assert psnr > 35, f"encoded video drifts from the rendered frames (PSNR {psnr:.1f} dB)"
    assert float(row["end_sec"]) == 9 / 8.0

    labels = store.read(row["clip_id"])
    for name in ("depth", "c2w", "K", "points"):
        np.testing.assert_allclose(labels[name], expected.labels[name], atol=1e-5, err_msg=name)
    K = expected.labels["K"][0]  # the manifest gives the true intrinsics, as a calibrated set would
    np.testing.assert_allclose([float(row[c]) for c in ("fx", "fy", "cx", "cy")], K[[0, 1, 0, 1], [0, 1, 2, 2]], atol=1e-5)
    for name, mask in (("flow", "flow_valid"), ("key_flow", "key_flow_valid"), ("scene_flow", "scene_flow_valid")):
        valid = expected.labels[mask]  # the store keeps 0 where a value is not observable
        np.testing.assert_array_equal(labels[mask], valid)
        np.testing.assert_allclose(labels[name][valid], expected.labels[name][valid], atol=1e-5, err_msg=name)
        assert (labels[name][~valid] == 0).all()
    assert labels.attrs["metric_scale"] is True
    assert labels.attrs["source"]["caption"] == row["caption"]
    assert labels.attrs["labelers"]["flow"]["name"] == "synthetic-ground-truth"

    capsys.readouterr()
    assert main(args + ["--store", str(store_path)]) == 0  # re-run: nothing to redo
    assert LabelStore.open(store_path).index().num_rows == 2
    assert main(args + ["--no-intrinsics"]) == 0  # labeling will have to estimate the focal
    assert all(not row["fx"] for row in csv.DictReader(open(out / "manifest.csv")))


def test_scene_classes_give_their_kind_of_scene_and_vary_within_a_class():
    expect = {
        "room": lambda c: c.scene == "room" and c.texture == "rich",
        "open_sky": lambda c: c.scene == "open" and c.camera in ("dolly", "orbit") and c.num_moving >= 1,
        "fixed_large_mover": lambda c: c.camera == "static" and c.large_mover,
        "pan": lambda c: c.camera == "pan" and c.num_moving >= 1,
        "textureless": lambda c: c.texture == "low",
        "repeated": lambda c: c.texture == "repeated",
        "degraded": lambda c: c.noise_std >= 2 and c.motion_blur >= 0.3 and c.exposure_drift >= 0.05,
    }
    assert set(SCENE_CLASSES) == set(expect)
    for name, check in expect.items():
        configs = class_configs(name, 4, 48, 72, seed=10, num_frames=9, fps=12.0)
        assert all(check(c) for c in configs), name
        assert [c.seed for c in configs] == [10, 11, 12, 13]
        assert all((c.height, c.width, c.num_frames, c.fps) == (48, 72, 9, 12.0) for c in configs)
        assert len({(c.camera, c.scene, c.num_moving) for c in configs}) > 1, f"{name}: no variation"
    with pytest.raises(ValueError, match="unknown scene class"):
        class_configs("underwater", 2, 48, 72, seed=0)


def test_set_without_intrinsics_hands_rendered_clips_and_keeps_first_version_names(tmp_path):
    seen = {}
    configs = class_configs("open_sky", 1, 24, 32, seed=0, num_frames=5)
    configs.append(SceneConfig(seed=4, height=24, width=32, num_frames=5, camera="pan", num_moving=1))
    def keep(row, clip):
        seen[row.clip_id] = clip

    rows = write_synthetic_set(tmp_path, configs, with_intrinsics=False, on_render=keep)
    assert [seen[r.clip_id].config for r in rows] == configs
    assert seen[rows[0].clip_id].caption == rows[0].caption
    # a config of the first generator keeps its video name (sets on disk stay valid)
    assert rows[1].video_path == "videos/synth_00004_60b39002.mp4"
    manifest = list(csv.DictReader(open(tmp_path / "manifest.csv")))
    assert all(row["fx"] == "" for row in manifest)
    seen.clear()
    write_synthetic_set(tmp_path, configs, with_intrinsics=False, on_render=keep)
    assert not seen  # nothing rendered again


def test_videos_are_encoded_the_same_every_time(tmp_path):
    """The same frames give the same video: benchmarks on synthetic sets compare code, not encoder
    noise (x264's macroblock-tree rate control made encodes up to 22 grey levels apart)."""
    from pipelines.video_io import write_video

    frames = render_clip(SceneConfig(seed=3, height=96, width=144, num_frames=9, texture="repeated")).frames
    decoded = []
    for name in ("a.mp4", "b.mp4"):
        path = write_video(tmp_path / name, frames, 8.0)
        decoded.append(decord.VideoReader(str(path)).get_batch(list(range(9))).asnumpy())
    np.testing.assert_array_equal(decoded[0], decoded[1])
    assert np.abs(decoded[0].astype(int) - frames).mean() < 2.0  # close to what was rendered
