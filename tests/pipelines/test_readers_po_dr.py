"""PointOdyssey and Dynamic Replica readers: round trips against synthetic ground truth, bad data.

Fixtures are written by `writers_po_dr` in each set's layout from a synthetic clip whose data-set
world frame is not the first camera; the readers must give back what the files encode.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from pipelines.datasets import list_sequences
from pipelines.datasets.base import DatasetError, FlowFrame
from pipelines.datasets.dynamic_replica import list_sequences as dr_list_sequences
from tests.pipelines.import_runs import import_run
from tests.pipelines.writers_po_dr import (
    encode_float16_png,
    read_index,
    render_ground_truth,
    world_from_first,
    write_dynamic_replica,
    write_index,
    write_pointodyssey,
)

DEPTH_STEP_M = 1000.0 / 65535.0


@pytest.fixture(scope="module")
def clip():
    return render_ground_truth()


def rotation_error_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    """Angle of R_a^T R_b (via rotation vectors: exact for tiny angles, unlike arccos of the trace)."""
    return float(np.degrees((Rotation.from_matrix(R_a).inv() * Rotation.from_matrix(R_b)).magnitude()))


def assert_reason(call, reason: str, where: str) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        call()
    err = info.value
    assert err.reason == reason, str(err)
    assert where in err.where, str(err)
    assert "\n" not in str(err)
    return err


# ---------------------------------------------------------------------- PointOdyssey
def write_po(root: Path, clip, **kwargs) -> dict:
    return write_pointodyssey(root / "train" / "seq_po", clip, world_from_first(), **kwargs)


@pytest.fixture(scope="module")
def po(tmp_path_factory, clip):
    root = tmp_path_factory.mktemp("po")
    truth = write_po(root, clip)
    (reader,) = list_sequences("pointodyssey", root, "train")
    return reader, truth


def test_po_sequence_metadata(po, clip):
    reader, truth = po
    assert reader.name == "seq_po" and reader.dataset == "pointodyssey"
    np.testing.assert_array_equal(reader.frame_numbers, np.arange(5))
    assert reader.image_size == (48, 64) and reader.fps == 30.0 and reader.metric_scale
    assert reader.provenance["flow"] == "absent" and reader.provenance["camera"] == "exact"
    assert reader.read_flow(0) is None
    rgb = reader.read_rgb(2)
    assert rgb.shape == (48, 64, 3) and rgb.dtype == np.uint8
    assert np.abs(rgb.astype(float) - clip.frames[2]).mean() < 8  # JPEG, RGB order kept
    # the data set's world is not the first camera
    assert np.abs(truth["c2w"][0] - np.eye(4)).max() > 0.5
    # readers travel to workers without their cached arrays, and still read
    copy = pickle.loads(pickle.dumps(reader))
    assert copy._arrays == {}
    np.testing.assert_array_equal(copy.read_camera(1)[1], reader.read_camera(1)[1])


def test_po_depth_is_what_the_png_encodes(po):
    reader, truth = po
    for n in reader.frame_numbers:
        depth, valid = reader.read_depth(n)
        assert depth.dtype == np.float32 and valid.all()
        np.testing.assert_array_equal(depth, (truth["depth_png"][n] * np.float32(DEPTH_STEP_M)).astype(np.float32))
        short = truth["depth"][n] - depth  # truncation: the file is at most one step short
        assert short.min() >= -1e-6 and short.max() <= DEPTH_STEP_M + 1e-6


def test_po_cameras_to_float16_precision(po):
    reader, truth = po
    errors = []
    for n in reader.frame_numbers:
        K, c2w = reader.read_camera(n)
        R = c2w[:3, :3]
        np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
        assert np.linalg.det(R) > 0
        errors.append(rotation_error_deg(R, truth["c2w"][n][:3, :3]))
        assert np.linalg.norm(c2w[:3, 3] - truth["c2w"][n][:3, 3]) < 3e-3
        assert np.abs(K - truth["K"][n]).max() < 0.1  # float16 K, half-pixel convention converted
    # float16 rotation entries: median 0.005 deg, worst 0.018 deg over random rotations
    assert max(errors) < 0.02 and np.mean(errors) < 0.01, errors


def test_po_dynamic_mask_matches_movers(po, clip):
    reader, _ = po
    truth = clip.labels["dynamic_mask"]
    assert truth.any() and not truth.all()
    for n in reader.frame_numbers:
        mask = reader.read_dynamic_mask(n)
        assert mask is not None
        np.testing.assert_array_equal(mask, truth[n])
    # over a longer step (key frames several source frames apart) the same objects move
    np.testing.assert_array_equal(reader.read_dynamic_mask(1, 4), truth[1])


def test_po_fog_pixels_are_invalid(tmp_path, clip):
    fog = np.zeros(clip.labels["depth"].shape, bool)
    fog[1, 5:9, 10:20] = True
    write_po(tmp_path, clip, fog=fog)
    (reader,) = list_sequences("pointodyssey", tmp_path, "train")
    depth, valid = reader.read_depth(1)
    np.testing.assert_array_equal(valid, ~fog[1])
    assert (depth[fog[1]] == 0).all()


def test_po_instance_without_tracks_is_unknown(tmp_path, clip):
    write_po(tmp_path, clip)
    anno = tmp_path / "train" / "seq_po" / "anno.npz"
    arrays = dict(np.load(anno))
    arrays["visibs"][:] = False  # no track can be placed: nothing decides any instance
    np.savez(anno, **arrays)
    (reader,) = list_sequences("pointodyssey", tmp_path, "train")
    assert reader.read_dynamic_mask(0) is None


def test_po_a_few_absurd_tracks_do_not_decide(tmp_path, clip):
    write_po(tmp_path, clip)
    seq = tmp_path / "train" / "seq_po"
    arrays = dict(np.load(seq / "anno.npz"))
    still = np.flatnonzero(arrays["visibs"][0])[:5]
    arrays["trajs_3d"][1, still] = np.float16(6e4)  # "huge values": a jump, not motion
    arrays["trajs_3d"][1, still[:2]] = np.inf
    np.savez(seq / "anno.npz", **arrays)
    (reader,) = list_sequences("pointodyssey", tmp_path, "train")
    np.testing.assert_array_equal(reader.read_dynamic_mask(0), clip.labels["dynamic_mask"][0])


def _edit_anno(**changes):
    def edit(seq: Path) -> None:
        arrays = dict(np.load(seq / "anno.npz"))
        for key, change in changes.items():
            arrays[key] = change(arrays[key])
        np.savez(seq / "anno.npz", **arrays)

    return edit


def _unlink(relative: str):
    return lambda seq: (seq / relative).unlink()


def _nan_at(index):
    def edit(a):
        a = a.copy()
        a[index] = np.nan
        return a

    return edit


PO_BAD = {
    "missing_frame": (_unlink("rgbs/rgb_00002.jpg"), lambda r: r.frame_numbers, "missing_file", "rgb_00002.jpg"),
    "missing_depth": (_unlink("depths/depth_00003.png"), lambda r: r.read_depth(3), "missing_file", "depth_00003.png"),
    "missing_anno": (_unlink("anno.npz"), lambda r: r.frame_numbers, "missing_file", "anno.npz"),
    "extra_images": (
        lambda s: shutil.copy(s / "rgbs" / "rgb_00000.jpg", s / "rgbs" / "rgb_00005.jpg"),
        lambda r: r.frame_numbers,
        "inconsistent",
        "rgbs",
    ),
    "nan_extrinsics": (_edit_anno(extrinsics=_nan_at((1, 0, 3))), lambda r: r.read_camera(1), "bad_values", "anno.npz"),
    "not_a_rotation": (_edit_anno(extrinsics=lambda a: a * np.float16(1.5)), lambda r: r.read_camera(0), "bad_values", "anno.npz"),
    "trajs_3d_none": (
        _edit_anno(trajs_3d=lambda a: np.array(None)),  # an object array, as in early releases
        lambda r: r.read_dynamic_mask(0),
        "bad_format",
        "anno.npz",
    ),
    "nan_trajectories": (_edit_anno(trajs_3d=_nan_at(1)), lambda r: r.read_dynamic_mask(0), "bad_values", "anno.npz"),
    "missing_mask": (_unlink("masks/mask_00001.png"), lambda r: r.read_dynamic_mask(1), "missing_file", "mask_00001.png"),
}


@pytest.mark.parametrize("case", sorted(PO_BAD))
def test_po_bad_data_has_a_reason(tmp_path, clip, case):
    break_it, read, reason, where = PO_BAD[case]
    write_po(tmp_path, clip)
    break_it(tmp_path / "train" / "seq_po")
    (reader,) = list_sequences("pointodyssey", tmp_path, "train")
    err = assert_reason(lambda: read(reader), reason, where)
    assert len(str(err)) < 300


def test_po_listing(tmp_path, clip):
    write_po(tmp_path, clip)
    assert [r.name for r in list_sequences("pointodyssey", tmp_path)] == ["seq_po"]
    assert_reason(lambda: list_sequences("pointodyssey", tmp_path, "val"), "missing_file", "val")
    assert_reason(lambda: list_sequences("pointodyssey", tmp_path, "train", ["nope"]), "missing_file", str(tmp_path))


# ---------------------------------------------------------------------- Dynamic Replica
def write_dr(root: Path, clip) -> tuple[dict, dict]:
    split = root / "valid"
    entries_a, truth_a = write_dynamic_replica(split, "seq_a", clip, world_from_first(0), "ndc_isotropic")
    entries_b, truth_b = write_dynamic_replica(
        split, "seq_b", clip, world_from_first(3), "ndc_norm_image_bounds", bare_paths=True
    )
    write_index(split, "valid", entries_a + entries_b)
    return {"seq_a": truth_a, "seq_b": truth_b}


@pytest.fixture(scope="module")
def dr(tmp_path_factory, clip):
    root = tmp_path_factory.mktemp("dr")
    truth = write_dr(root, clip)
    readers = {r.name: r for r in list_sequences("dynamic-replica", root, "valid")}
    return root, readers, truth


def test_dr_sequences_left_camera(dr):
    root, readers, truth = dr
    assert sorted(readers) == ["seq_a", "seq_b"]
    reader = readers["seq_a"]
    np.testing.assert_array_equal(reader.frame_numbers, np.arange(5))  # left view only, not 10 entries
    assert reader.image_size == (48, 64) and reader.fps == pytest.approx(30.0) and reader.metric_scale
    assert reader.read_rgb(0).shape == (48, 64, 3)
    assert np.abs(truth["seq_a"]["c2w"][0] - np.eye(4)).max() > 0.5
    (right,) = dr_list_sequences(root, "valid", ["seq_a"], camera="right")
    _, c2w_right = right.read_camera(0)
    _, c2w_left = reader.read_camera(0)
    np.testing.assert_allclose(np.linalg.inv(c2w_left) @ c2w_right[:, 3], [0.1, 0, 0, 1], atol=1e-9)


@pytest.mark.parametrize("name", ["seq_a", "seq_b"])
def test_dr_cameras_exact(dr, name):
    _, readers, truth = dr
    reader = readers[name]
    for n in reader.frame_numbers:
        K, c2w = reader.read_camera(n)
        assert rotation_error_deg(c2w[:3, :3], truth[name]["c2w"][n][:3, :3]) < 1e-6
        assert np.linalg.norm(c2w[:3, 3] - truth[name]["c2w"][n][:3, 3]) < 1e-6
        np.testing.assert_allclose(K, truth[name]["K"][n], atol=1e-9)


def test_dr_depth_is_float16(dr):
    _, readers, truth = dr
    reader = readers["seq_a"]
    for n in reader.frame_numbers:
        depth, valid = reader.read_depth(n)
        assert valid.all()
        np.testing.assert_array_equal(depth, truth["seq_a"]["depth"][n].astype(np.float16).astype(np.float32))
        assert (np.abs(depth - truth["seq_a"]["depth"][n]) / truth["seq_a"]["depth"][n]).max() <= 1e-3


@pytest.mark.parametrize("name", ["seq_a", "seq_b"])
def test_dr_flow_to_float16_precision(dr, name):
    _, readers, truth = dr
    reader = readers[name]
    for n in reader.frame_numbers[:-1]:
        flow = reader.read_flow(n)
        assert isinstance(flow, FlowFrame) and flow.target_frame == n + 1
        np.testing.assert_array_equal(flow.flow_valid, truth[name]["flow_valid"][n])
        gt = truth[name]["flow"][n]
        valid = flow.flow_valid
        np.testing.assert_array_equal(flow.flow_px[valid], gt[valid].astype(np.float16).astype(np.float32))
        assert np.abs(flow.flow_px - gt)[valid].max() <= 1e-3 * np.abs(gt[valid]).max() + 1e-4
        assert (flow.flow_px[~valid] == 0).all()
    assert reader.read_flow(int(reader.frame_numbers[-1])) is None


@pytest.mark.parametrize("name", ["seq_a", "seq_b"])
def test_dr_dynamic_mask_matches_movers(dr, clip, name):
    _, readers, _ = dr
    truth = clip.labels["dynamic_mask"]
    assert truth.any() and not truth.all()
    for n in readers[name].frame_numbers:
        np.testing.assert_array_equal(readers[name].read_dynamic_mask(n), truth[n])
    np.testing.assert_array_equal(readers[name].read_dynamic_mask(3, 0), truth[3])


def _edit_entries(root: Path, edit) -> None:
    path = root / "valid" / "frame_annotations_valid.jgz"
    entries = read_index(path)
    edit([e for e in entries if e["sequence_name"] == "seq_a" and e["camera_name"] == "left"], entries)
    write_index(root / "valid", "valid", entries)


def _set(n, keys, value):
    def edit(left, entries):
        target = left[n]
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return edit


def _rewrite_file(n, keys, array_fn):
    def edit(root: Path):
        entries = read_index(root / "valid" / "frame_annotations_valid.jgz")
        path = [e for e in entries if e["sequence_name"] == "seq_a" and e["camera_name"] == "left"][n]
        for key in keys:
            path = path[key]
        cv2.imwrite(str(root / "valid" / path), array_fn())

    return edit


def _nan_trajectories(root: Path):
    path = root / "valid" / "seq_a_left" / "trajectories" / "000001.pth"
    data = torch.load(path)
    data["traj_3d_world"][:] = float("nan")
    torch.save(data, path)


DR_BAD = {
    "unknown_intrinsics_format": (
        lambda root: _edit_entries(root, _set(2, ["viewpoint", "intrinsics_format"], "screen")),
        lambda r: r.read_camera(2),
        "unsupported",
        "frame_annotations_valid.jgz",
    ),
    "nan_viewpoint": (
        lambda root: _edit_entries(root, _set(1, ["viewpoint", "T"], [0.0, float("nan"), 1.0])),
        lambda r: r.read_camera(1),
        "bad_values",
        "frame_annotations_valid.jgz",
    ),
    "uneven_timestamps": (
        lambda root: _edit_entries(root, _set(3, ["frame_timestamp"], 0.2)),
        lambda r: r.fps,
        "inconsistent",
        "frame_annotations_valid.jgz",
    ),
    "missing_frame": (
        lambda root: _edit_entries(root, lambda left, entries: entries.remove(left[2])),
        lambda r: r.frame_numbers,
        "missing_file",
        "frame_annotations_valid.jgz",
    ),
    "repeated_frame": (
        lambda root: _edit_entries(root, _set(2, ["frame_number"], 1)),
        lambda r: r.frame_numbers,
        "inconsistent",
        "frame_annotations_valid.jgz",
    ),
    "missing_depth": (
        lambda root: (root / "valid" / "seq_a_left" / "depths" / "seq_a_left-0003.png").unlink(),
        lambda r: r.read_depth(3),
        "missing_file",
        "seq_a_left-0003.png",
    ),
    "flow_wrong_shape": (
        _rewrite_file(0, ["flow_forward", "path"], lambda: encode_float16_png(np.zeros((48, 64)))),
        lambda r: r.read_flow(0),
        "bad_format",
        "seq_a_left-0000.png",
    ),
    "nan_trajectories": (_nan_trajectories, lambda r: r.read_dynamic_mask(0), "bad_values", "000000.pth"),
}


@pytest.mark.parametrize("case", sorted(DR_BAD))
def test_dr_bad_data_has_a_reason(tmp_path, clip, case):
    break_it, read, reason, where = DR_BAD[case]
    write_dr(tmp_path, clip)
    break_it(tmp_path)
    (reader,) = list_sequences("dynamic-replica", tmp_path, "valid", ["seq_a"])
    err = assert_reason(lambda: read(reader), reason, where)
    assert len(str(err)) < 300


def test_dr_invalid_depth_pixels(tmp_path, clip):
    write_dr(tmp_path, clip)
    depth = clip.labels["depth"][2].copy()
    depth[0, :5] = np.inf
    depth[1, :5] = 0.0
    _rewrite_file(2, ["depth", "path"], lambda: encode_float16_png(depth))(tmp_path)
    (reader,) = list_sequences("dynamic-replica", tmp_path, "valid", ["seq_a"])
    values, valid = reader.read_depth(2)
    assert not valid[:2, :5].any() and valid[2:].all() and (values[:2, :5] == 0).all()


def test_dr_listing(tmp_path, clip):
    assert_reason(lambda: list_sequences("dynamic-replica", tmp_path, "valid"), "missing_file", "frame_annotations_valid.jgz")
    write_dr(tmp_path, clip)
    assert [r.name for r in list_sequences("dynamic-replica", tmp_path)] == ["seq_a", "seq_b"]
    assert_reason(lambda: list_sequences("dynamic-replica", tmp_path, "valid", ["nope"]), "missing_file", str(tmp_path))


# ---------------------------------------------------------------------- one broken sequence of a run
def _corrupt_anno(seq: Path) -> None:
    """A compressed anno.npz whose deflate stream is damaged (the zip directory still reads)."""
    arrays = dict(np.load(seq / "anno.npz"))
    np.savez_compressed(seq / "anno.npz", **arrays)
    data = bytearray((seq / "anno.npz").read_bytes())
    middle = len(data) // 3
    data[middle : middle + 64] = b"\xff" * 64
    (seq / "anno.npz").write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["one_array", "corrupt_deflate"])
def test_po_broken_sequence_is_its_own_rejected_clip(tmp_path, clip, damage):
    write_po(tmp_path, clip)
    broken = tmp_path / "train" / "seq_broken"
    shutil.copytree(tmp_path / "train" / "seq_po", broken)
    if damage == "one_array":  # a bare .npy saved under the npz name
        np.save(broken / "anno.npy", np.zeros(3))
        (broken / "anno.npy").replace(broken / "anno.npz")
    else:
        _corrupt_anno(broken)
    result = import_run(tmp_path, "pointodyssey", (48, 64), 5, 4)
    assert sorted(result) == ["seq_broken", "seq_po"]
    assert [s for s, _ in result["seq_po"]] == ["accepted"]
    ((status, reasons),) = result["seq_broken"]
    assert status == "rejected" and reasons[0].startswith("bad_format:") and "seq_broken/anno.npz" in reasons[0]


def test_dr_broken_sequence_is_its_own_rejected_clip(tmp_path, clip):
    write_dr(tmp_path, clip)
    # seq_b loses its frame 2 in the shared index; seq_a is untouched
    index = tmp_path / "valid" / "frame_annotations_valid.jgz"
    entries = [e for e in read_index(index) if not (e["sequence_name"] == "seq_b" and e["frame_number"] == 2)]
    write_index(tmp_path / "valid", "valid", entries)
    result = import_run(tmp_path, "dynamic-replica", (48, 64), 5, 4)
    assert [s for s, _ in result["seq_a"]] == ["accepted"]
    ((status, reasons),) = result["seq_b"]
    assert status == "rejected" and reasons[0].startswith("missing_file:") and "seq_b: frame 2 is missing" in reasons[0]
