"""`worldreel import` core on Kubric MOVi scene folders written from synthetic scenes with exact labels."""

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from kubric_writer import NoDenseMotion, write_kubric_scene  # noqa: E402

from pipelines.clips import check_clip_id  # noqa: E402
from pipelines.dataset_import import (  # noqa: E402
    ImportConfig, build_estimator, import_tasks, import_window, label_timeline, plan_imports,
)
from pipelines.datasets import list_sequences  # noqa: E402
from pipelines.datasets.base import DatasetError  # noqa: E402
from pipelines.synthetic import SceneConfig  # noqa: E402
from storage import LabelStore  # noqa: E402

H, W, T = 32, 48, 9


def _scene(seed: int, camera: str = "orbit", num_moving: int = 2) -> SceneConfig:
    return SceneConfig(seed=seed, height=H, width=W, num_frames=T, stride=4, fps=12.0, camera=camera, num_moving=num_moving)


@pytest.fixture(scope="module")
def movi(tmp_path_factory):
    root = tmp_path_factory.mktemp("movi")
    good = {name: write_kubric_scene(root / name, _scene(seed, camera))
            for name, seed, camera in (("scene_orbit", 3, "orbit"), ("scene_dolly", 4, "dolly"))}
    # bad scenes: a missing depth frame, a non-unit camera quaternion, too few frames
    write_kubric_scene(root / "bad_missing_depth", _scene(5))
    (root / "bad_missing_depth" / "depth_00003.tiff").unlink()
    write_kubric_scene(root / "bad_quaternion", _scene(6))
    meta_path = root / "bad_quaternion" / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["camera"]["quaternions"][2] = [0.9, 0.1, 0.0, 0.0]
    meta_path.write_text(json.dumps(meta))
    write_kubric_scene(root / "bad_short", replace(_scene(7), num_frames=5))
    return root, good


def _config(root: Path, store: Path, **kwargs) -> ImportConfig:
    values = dict(format="kubric-movi", root=str(root), store=str(store), height=H, width=W, num_frames=T, stride=4, fps=None)
    return ImportConfig(**{**values, **kwargs})


@pytest.fixture(scope="module")
def imported(movi, tmp_path_factory):
    root, good = movi
    store_path = tmp_path_factory.mktemp("store") / "labels.zarr"
    cfg = _config(root, store_path)
    store = LabelStore.create(store_path, precision="float32")
    tasks = plan_imports(cfg)
    outcomes = import_tasks(tasks, cfg, store)
    return cfg, store, tasks, outcomes


def _clip_of(tasks, sequence):
    (task,) = [t for t in tasks if t.sequence == sequence]
    return task.clip_id


def _rotation_error_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    # atan2 of the skew and symmetric parts: arccos of the trace is ill-conditioned at small angles
    R = np.einsum("tji,tjk->tik", a[:, :3, :3].astype(np.float64), b[:, :3, :3].astype(np.float64))
    skew = np.stack([R[:, 2, 1] - R[:, 1, 2], R[:, 0, 2] - R[:, 2, 0], R[:, 1, 0] - R[:, 0, 1]], -1)
    return np.degrees(np.arctan2(np.linalg.norm(skew, axis=-1) / 2, (np.trace(R, axis1=1, axis2=2) - 1) / 2))


def test_round_trip_matches_ground_truth(movi, imported):
    _, good = movi
    _, store, tasks, _ = imported
    for name, fixture in good.items():
        clip_id = _clip_of(tasks, name)
        check_clip_id(clip_id)
        assert name in clip_id
        labels, gt = store.read(clip_id), fixture.clip.labels
        attrs = store.attrs(clip_id)
        # depth: the float32 ray distance of the file, converted to z
        assert (labels["depth_valid"] == gt["depth_valid"]).all()
        valid = gt["depth_valid"]
        assert np.abs(labels["depth"][valid] - gt["depth"][valid]).max() <= 2e-6 * gt["depth"][valid].max()
        # cameras: the world frame is not at the first camera, the clip's is
        assert not np.allclose(fixture.world_c2w[0], np.eye(4), atol=0.1)
        assert np.allclose(labels["c2w"][0], np.eye(4))
        assert _rotation_error_deg(labels["c2w"], gt["c2w"]).max() <= 0.01
        assert np.abs(labels["c2w"][:, :3, 3] - gt["c2w"][:, :3, 3]).max() <= 1e-4
        assert np.abs(labels["K"] - gt["K"]).max() <= 0.5
        # shipped flow: the 16-bit quantisation step, below float16 precision of the flow
        ranges = json.loads((fixture.folder / "data_ranges.json").read_text())["forward_flow"]
        step = (ranges["max"] - ranges["min"]) / 65535
        both = labels["flow_valid"] & gt["flow_valid"]
        assert both.mean() > 0.7 and (labels["flow_valid"] & ~gt["flow_valid"]).mean() < 0.002
        error = np.abs(labels["flow"] - gt["flow"])[both]
        assert error.max() <= max(step, np.abs(gt["flow"][both]).max() * 2**-11)
        # key flow spans 4 frames: derived from the per-object poses, exact to float rounding
        both = labels["key_flow_valid"] & gt["key_flow_valid"]
        assert np.abs(labels["key_flow"] - gt["key_flow"])[both].max() <= 1e-2
        # dynamic masks are the movers' pixels, scene flow valid where the ground truth is
        assert gt["dynamic_mask"].any() and (labels["dynamic_mask"] == gt["dynamic_mask"]).all()
        sf_valid = labels["scene_flow_valid"]
        precision = (sf_valid & gt["scene_flow_valid"]).sum() / sf_valid.sum()
        assert precision >= 0.95 and sf_valid.sum() >= 0.8 * gt["scene_flow_valid"].sum()
        both = sf_valid & gt["scene_flow_valid"]
        assert np.abs(labels["scene_flow"] - gt["scene_flow"])[both].max() <= 1e-4
        assert attrs["provenance"] == {"camera": "exact", "depth": "exact", "flow": "exact", "key_flow": "derived",
                                       "dynamic_mask": "derived", "scene_flow": "derived"}
        assert attrs["metric_scale"] is True and attrs["source"]["dataset"] == "kubric-movi"
        assert Path(attrs["source"]["uri"]) == fixture.folder.resolve()
        assert [Path(p).name for p in attrs["source"]["frames"]] == [f"rgba_{t:05d}.png" for t in range(T)]
        assert attrs["qa"]["flow_motion_gap_px"] < 0.01


def test_bad_sequences_get_reasons_and_the_others_commit(imported):
    _, store, tasks, outcomes = imported
    status = {o.clip_id: o for o in outcomes}
    assert status[_clip_of(tasks, "scene_orbit")].status == "accepted"
    assert status[_clip_of(tasks, "scene_dolly")].status == "accepted"
    expected = {"bad_missing_depth": "missing_file: ", "bad_quaternion": "bad_values: ", "bad_short": "too_short: "}
    for sequence, code in expected.items():
        outcome = status[_clip_of(tasks, sequence)]
        assert outcome.status == "rejected" and outcome.reasons[0].startswith(code), outcome.reasons
        assert sequence in outcome.reasons[0] and len(outcome.reasons[0]) < 300
    rows = {r["clip_id"]: r for r in store.index().to_pylist()}
    assert {rows[o.clip_id]["status"] for o in outcomes} == {"accepted", "rejected"}
    accepted = rows[_clip_of(tasks, "scene_orbit")]
    assert (accepted["provenance_flow"], accepted["provenance_key_flow"]) == ("exact", "derived")  # the index says it too
    assert rows[_clip_of(tasks, "bad_quaternion")]["reasons"][0].endswith("camera quaternion 2 is not a unit quaternion (norm 0.9055)")


def test_resume_does_nothing_on_rerun(imported):
    cfg, store, tasks, _ = imported
    before = {r["clip_id"]: r["committed_at"] for r in store.index().to_pylist()}
    outcomes = import_tasks(plan_imports(cfg), cfg, store)
    assert {o.status for o in outcomes} == {"skipped"} and len(outcomes) == len(tasks)
    assert {r["clip_id"]: r["committed_at"] for r in store.index().to_pylist()} == before


def test_resampled_rate_and_resized_labels(movi, tmp_path):
    root, good = movi
    fixture = good["scene_orbit"]
    cfg = _config(root, tmp_path / "s.zarr", sequences=["scene_orbit"], fps=6.0, num_frames=5, stride=2,
                  height=H // 2, width=W // 2)
    store = LabelStore.create(cfg.store, precision="float32")
    tasks = plan_imports(cfg)
    assert [t.frames for t in tasks] == [(0, 2, 4, 6, 8)]
    (outcome,) = import_tasks(tasks, cfg, store)
    assert outcome.status == "accepted", outcome.reasons
    labels, gt = store.read(tasks[0].clip_id), fixture.clip.labels
    attrs = store.attrs(tasks[0].clip_id)
    assert attrs["provenance"]["flow"] == "derived" and attrs["fps"] == 6.0 and attrs["source_stride"] == 2.0
    K = gt["K"][0].astype(np.float64)
    expected_K = np.array([[K[0, 0] / 2, 0, (K[0, 2] + 0.5) / 2 - 0.5], [0, K[1, 1] / 2, (K[1, 2] + 0.5) / 2 - 0.5], [0, 0, 1]])
    assert np.abs(labels["K"] - expected_K).max() <= 1e-4
    assert _rotation_error_deg(labels["c2w"], gt["c2w"][::2]).max() <= 0.01
    # the label pixel (u, v) reads source pixel (2u + 1, 2v + 1), flow halves
    # label key pairs (0, 2), (2, 4) are set frames (0, 4), (4, 8): the source's own key pairs
    key = gt["key_flow"]
    src = np.s_[:, 1::2, 1::2]
    both = labels["key_flow_valid"] & gt["key_flow_valid"][src]
    assert both.mean() > 0.5
    assert np.abs(labels["key_flow"] - key[src] / 2)[both].max() <= 1e-2
    assert (labels["dynamic_mask"] == gt["dynamic_mask"][src]).all()


def test_label_timeline_and_refusals():
    frames = np.arange(24)
    assert label_timeline(frames, 12.0, None).tolist() == list(range(24))
    assert label_timeline(frames, 12.0, 8.0).tolist() == [0, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18, 20, 21, 23]
    with pytest.raises(DatasetError, match="above the set's 12 fps"):
        label_timeline(frames, 12.0, 24.0)


def test_missing_split_or_sequence_is_one_clear_error(movi):
    root, _ = movi
    with pytest.raises(DatasetError, match="split folder 'train'"):
        list_sequences("kubric-movi", root, "train")
    with pytest.raises(DatasetError, match="no scene folder named nope"):
        list_sequences("kubric-movi", root, None, ["nope"])


def test_unknown_motion_invalid_or_estimated(movi, tmp_path):
    root, good = movi
    fixture = good["scene_orbit"]
    (reader,) = list_sequences("kubric-movi", root, None, ["scene_orbit"])
    no_motion = NoDenseMotion(reader, fixture.movers)
    gt = fixture.clip.labels
    frames = list(range(T))
    cfg = _config(root, tmp_path / "s.zarr")
    arrays, attrs = import_window(no_motion, frames, cfg)
    moving = np.stack([no_motion.read_dynamic_mask(t) for t in range(T - 1)])
    assert moving.any() and not (arrays["flow_valid"] & moving).any()
    static = arrays["flow_valid"] & gt["flow_valid"]
    assert static.mean() > 0.6 and np.abs(arrays["flow"] - gt["flow"])[static].max() <= 1e-2
    assert attrs["provenance"]["flow"] == "derived" and attrs["provenance"]["scene_flow"] == "absent"
    assert attrs["provenance"]["dynamic_mask"] == "exact"

    estimator = build_estimator(replace(cfg, unknown_motion="estimate"))
    arrays, attrs = import_window(no_motion, frames, replace(cfg, unknown_motion="estimate"), estimator)
    filled = arrays["flow_valid"] & moving
    assert filled.any() and (arrays["flow_uncertainty"][filled] > 0).all()
    assert attrs["provenance"]["flow"] == "estimated" and attrs["labelers"]["flow"]["estimator"]["name"] == estimator.name
    assert np.abs(arrays["flow"] - gt["flow"])[arrays["flow_valid"] & ~moving & gt["flow_valid"]].max() <= 1e-2


def test_training_reads_imported_clips_from_image_files(movi, imported):
    import torch

    from model.data import LabelClipDataset, collate_samples
    from model.losses import provenance_codes

    _, good = movi
    _, store, tasks, _ = imported
    dataset = LabelClipDataset([store.root])
    assert len(dataset) == 2
    samples = [dataset[i] for i in range(2)]
    batch = collate_samples(samples)
    for i, clip_id in enumerate(batch["clip_id"]):
        fixture = next(f for name, f in good.items() if name in clip_id)
        frames = torch.from_numpy(fixture.clip.frames).permute(0, 3, 1, 2).float() / 127.5 - 1
        torch.testing.assert_close(batch["rgb"][i], frames)  # PNG frames: lossless
        assert samples[i]["provenance"]["key_flow"] == "derived" and samples[i]["provenance"]["camera"] == "exact"
    assert torch.equal(batch["provenance"], provenance_codes([s["provenance"] for s in samples]))
    assert batch["has_scene_flow"].all() and batch["metric_scale"].all()


def test_shipped_flows_chained_over_multi_frame_steps(movi, tmp_path):
    # a set like Dynamic Replica: consecutive flows and dynamic masks, no object poses
    root, good = movi
    fixture = good["scene_orbit"]
    (reader,) = list_sequences("kubric-movi", root, None, ["scene_orbit"])
    shipped_only = NoDenseMotion(reader, fixture.movers, keep_flow=True)
    cfg = _config(root, tmp_path / "s.zarr", fps=6.0, num_frames=5, stride=2)
    arrays, attrs = import_window(shipped_only, [0, 2, 4, 6, 8], cfg)
    gt = fixture.clip.labels  # its key pairs (0, 4), (4, 8) are the label key pairs here: 4 flows chained
    assert attrs["provenance"] == {"camera": "exact", "depth": "exact", "flow": "derived", "key_flow": "derived",
                                   "dynamic_mask": "exact", "scene_flow": "derived"}
    both = arrays["key_flow_valid"] & gt["key_flow_valid"]
    assert both.sum() >= 0.8 * gt["key_flow_valid"].sum()
    assert np.linalg.norm(arrays["key_flow"] - gt["key_flow"], axis=-1)[both].max() <= 0.3  # 3 compositions x 0.1 px
    assert (arrays["dynamic_mask"][:-1] == gt["dynamic_mask"][:-1]).all()
    valid, truth = arrays["scene_flow_valid"], gt["scene_flow_valid"]
    assert valid.sum() >= 0.4 * truth.sum() and (valid & truth).sum() / valid.sum() >= 0.95
    assert np.abs(arrays["scene_flow"] - gt["scene_flow"])[valid & truth].max() <= 0.03
