"""`worldreel synth`: videos that decord reads, a manifest, exact labels in a store; re-runs skip."""

import csv

import decord
import numpy as np

from pipelines.synthetic import SceneConfig, render_clip
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
