"""OmniWorld-Game and BEDLAM readers on scene folders written from synthetic scenes with exact labels."""

import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import OpenEXR
import pytest
from scipy.spatial.transform import Rotation

sys.path.insert(0, str(Path(__file__).parent))
from import_runs import import_run  # noqa: E402
from writers_omni_bedlam import write_bedlam_scene, write_exr_depth, write_omniworld_scene  # noqa: E402

from labelers.geometry import rigid_flow  # noqa: E402
from pipelines.datasets import bedlam, list_sequences, omniworld_game  # noqa: E402
from pipelines.datasets.base import DatasetError  # noqa: E402
from pipelines.synthetic import SceneConfig  # noqa: E402

H, W, T = 36, 64, 9  # 16:9 like BEDLAM's sensor
UID = "a1b2c3d4e5f6"
SCENE = "20230101_1_250_test_orbit"
SPLITS = [[0, 1, 2, 3, 4], [5, 6, 7, 8]]


def _cfg(seed: int, camera: str = "orbit") -> SceneConfig:
    return SceneConfig(seed=seed, height=H, width=W, num_frames=T, stride=4, scene="open", num_static=1,
                       num_moving=2, camera=camera, fov_x_deg=60.0)


def _rre_deg(R_a: np.ndarray, R_b: np.ndarray) -> float:
    return float(np.degrees(Rotation.from_matrix(R_a.T @ R_b).magnitude()))


def _reason(call, reason: str, *words: str) -> DatasetError:
    with pytest.raises(DatasetError) as info:
        call()
    err = info.value
    assert err.reason == reason, str(err)
    message = str(err)
    assert "\n" not in message and len(message) < 400
    for word in words:
        assert word in message, message
    return err


@pytest.fixture(scope="module")
def omni(tmp_path_factory):
    root = tmp_path_factory.mktemp("omniworld")
    fixture = write_omniworld_scene(root / UID, _cfg(3), SPLITS, seed=7)
    return root, fixture


@pytest.fixture(scope="module")
def bedlam_z(tmp_path_factory):
    root = tmp_path_factory.mktemp("bedlam")
    return root, write_bedlam_scene(root / SCENE, _cfg(4), seed=5)


def _copy_scene(src: Path, tmp_path: Path, name: str) -> Path:
    dst = tmp_path / "root" / name
    shutil.copytree(src, dst)
    return dst


# ====================================================================== OmniWorld-Game
def test_omniworld_lists_each_split_as_a_sequence(omni):
    root, _ = omni
    readers = omniworld_game.list_sequences(root)
    assert [r.name for r in readers] == [f"{UID}_split0", f"{UID}_split1"]
    assert [r.frame_numbers.tolist() for r in readers] == SPLITS
    r = readers[0]
    assert r.dataset == "omniworld-game" and r.fps == 24.0 and r.image_size == (H, W)
    assert r.metric_scale is False and "CC BY-NC-SA 4.0" in r.licence
    assert r.provenance == {"camera": "estimated", "depth": "exact", "flow": "absent", "key_flow": "absent",
                            "dynamic_mask": "absent", "scene_flow": "absent"}
    assert [x.name for x in list_sequences("omniworld-game", root, names=[f"{UID}_split1"])] == [f"{UID}_split1"]
    assert len(list_sequences("omniworld-game", root / UID, names=[UID])) == 2  # a scene folder as root
    _reason(lambda: omniworld_game.list_sequences(root, names=["nope"]), "missing_file", "nope")
    _reason(lambda: omniworld_game.list_sequences(root, split="train"), "missing_file", "train")


def test_omniworld_round_trip(omni):
    root, fx = omni
    for reader in omniworld_game.list_sequences(root):
        for f in reader.frame_numbers.tolist():
            assert np.array_equal(reader.read_rgb(f), fx.clip.frames[f])
            K, c2w = reader.read_camera(f)
            assert np.abs(K - fx.K).max() < 1e-3  # float32 storage; the +0.5 convention shift is exact
            assert _rre_deg(c2w[:3, :3], fx.world_c2w[f][:3, :3]) <= 0.01
            assert np.abs(c2w[:3, 3] - fx.world_c2w[f][:3, 3]).max() < 1e-5
            depth, valid = reader.read_depth(f)
            # equal to what the file encodes (decoded here independently, upstream's formula)
            d = cv2.imread(str(root / UID / "depth" / f"{f:06d}.png"), cv2.IMREAD_UNCHANGED) / 65535.0
            encoded = (d / (1000 - 999 * d) / 0.004).astype(np.float32)
            assert np.array_equal(valid, ~fx.sky[f]) and fx.sky[f].any()
            assert np.array_equal(depth[valid], encoded[valid]) and np.all(depth[~valid] == 0)
            # and to the ground truth within half a 16-bit step of d
            gt = fx.clip.labels["depth"][f].astype(np.float64)
            a = 0.004 * gt
            step = 0.5 / 65535 * 0.25 * (1 + 999 * a) ** 2  # half a step of d times dz/dd
            assert np.all(np.abs(depth - gt)[valid] <= step[valid] * 1.01 + 1e-6)
            assert reader.read_flow(f) is None and reader.read_dynamic_mask(f) is None
    assert "flow" in reader.refusals and "public code" in reader.refusals["flow"]


def test_omniworld_cameras_and_depth_give_the_synthetic_flow(omni):
    root, fx = omni
    reader = omniworld_game.list_sequences(root)[0]
    (K0, c2w0), (K1, c2w1) = reader.read_camera(0), reader.read_camera(1)
    depth, valid = reader.read_depth(0)
    flow, _ = rigid_flow(depth, K0, c2w0, K1, c2w1)
    static = valid & fx.clip.labels["flow_valid"][0] & ~fx.movers[0]
    err = np.linalg.norm(flow - fx.clip.labels["flow"][0], axis=-1)[static]
    assert static.sum() > 0.3 * H * W and err.max() < 0.05, err.max()


@pytest.mark.parametrize("case", ["quaternion", "nan", "rgb", "depth", "sky", "depth8", "rows"])
def test_omniworld_bad_frames_give_their_reason(omni, tmp_path, case):
    scene = _copy_scene(omni[0] / UID, tmp_path, UID)
    cam_path = scene / "camera" / "split_0.json"
    cam = json.loads(cam_path.read_text())
    if case == "quaternion":  # non-normalised: refused for that frame only
        cam["quats"][2] = [q * 1.2 for q in cam["quats"][2]]
    elif case == "nan":
        cam["trans"][2][0] = None
    elif case == "rows":
        cam["quats"] = cam["quats"][:3]
    cam_path.write_text(json.dumps(cam))
    if case == "rgb":
        (scene / "color" / "000002.png").unlink()
    elif case == "depth":
        (scene / "depth" / "000002.png").unlink()
    elif case == "sky":
        cv2.imwrite(str(scene / "depth" / "000002.png"), np.full((H, W), 65535, np.uint16))
    elif case == "depth8":
        cv2.imwrite(str(scene / "depth" / "000002.png"), np.full((H, W), 200, np.uint8))
    reader = omniworld_game.list_sequences(scene.parent)[0]
    expect = {
        "quaternion": (reader.read_camera, "bad_values", "quaternion norm 1.2"),
        "nan": (reader.read_camera, "bad_values", "NaN"),
        "rgb": (reader.read_rgb, "missing_file", "000002.png"),
        "depth": (reader.read_depth, "missing_file", "000002.png"),
        "sky": (reader.read_depth, "bad_values", "no valid depth"),
        "depth8": (reader.read_depth, "bad_format", "16-bit"),
        "rows": (reader.read_camera, "inconsistent", "3 rows for 5"),
    }
    call, reason, words = expect[case]
    _reason(lambda: call(2), reason, words)
    if case in ("quaternion", "nan", "rgb", "depth", "sky", "depth8"):
        reader.read_camera(1), reader.read_depth(1), reader.read_rgb(1)  # the other frames still read


@pytest.mark.parametrize("case", ["order", "fps", "frame"])
def test_omniworld_bad_scene_files_give_their_reason(omni, tmp_path, case):
    scene = _copy_scene(omni[0] / UID, tmp_path, UID)
    if case == "order":  # listed (the split count is known); the split's reader gives the reason
        (scene / "split_info.json").write_text(json.dumps({"split": [[0, 2, 1], [3, 4]]}))
        first, second = omniworld_game.list_sequences(scene.parent)
        _reason(lambda: first.frame_numbers, "inconsistent", "split 0")
        assert second.frame_numbers.tolist() == [3, 4]
    elif case == "fps":
        (scene / "fps.txt").unlink()
        reader = omniworld_game.list_sequences(scene.parent)[0]
        _reason(lambda: reader.fps, "missing_file", "fps.txt")
    else:  # a frame the split does not list
        reader = omniworld_game.list_sequences(scene.parent)[1]
        _reason(lambda: reader.read_camera(2), "missing_file", "frame 2")


# ====================================================================== BEDLAM
def test_bedlam_round_trip(bedlam_z):
    root, fx = bedlam_z
    (reader,) = bedlam.list_sequences(root, depth_type="z")
    assert reader.name == f"{SCENE}_seq_000000" and reader.fps == 30.0 and reader.image_size == (H, W)
    assert reader.frame_numbers.tolist() == list(range(T))
    assert reader.metric_scale is True and "non-commercial" in reader.licence
    assert reader.provenance == {"camera": "exact", "depth": "exact", "flow": "absent", "key_flow": "absent",
                                 "dynamic_mask": "exact", "scene_flow": "absent"}
    for t, f in enumerate(reader.frame_numbers.tolist()):
        assert np.array_equal(reader.read_rgb(f), fx.clip.frames[t])
        K, c2w = reader.read_camera(f)
        assert np.abs(K - fx.K).max() < 1e-4  # exact but for the 6 CSV decimals of the focal length
        assert _rre_deg(c2w[:3, :3], fx.world_c2w[t][:3, :3]) <= 0.01
        assert np.abs(c2w[:3, 3] - fx.world_c2w[t][:3, 3]).max() < 1e-7
        depth, valid = reader.read_depth(f)
        exr = OpenEXR.File(str(root / SCENE / "depth" / "seq_000000" / f"seq_000000_{f:04d}_depth.exr"))
        encoded = (exr.parts[0].channels["Depth"].pixels.astype(np.float64) / 100.0).astype(np.float32)
        assert np.array_equal(valid, ~fx.sky[t]) and fx.sky[t].any()
        assert np.array_equal(depth[valid], encoded[valid]) and np.all(depth[~valid] == 0)
        gt = fx.clip.labels["depth"][t]
        assert np.all(np.abs(depth - gt)[valid] <= 1e-6 * gt[valid])
        mask = reader.read_dynamic_mask(f)
        assert np.array_equal(mask, fx.movers[t]) and mask.any()
        assert reader.read_flow(f) is None


def test_bedlam_cameras_and_depth_give_the_synthetic_flow(bedlam_z):
    root, fx = bedlam_z
    (reader,) = bedlam.list_sequences(root, depth_type="z")
    (K0, c2w0), (K1, c2w1) = reader.read_camera(0), reader.read_camera(1)
    depth, valid = reader.read_depth(0)
    flow, _ = rigid_flow(depth, K0, c2w0, K1, c2w1)
    static = valid & fx.clip.labels["flow_valid"][0] & ~reader.read_dynamic_mask(0)
    err = np.linalg.norm(flow - fx.clip.labels["flow"][0], axis=-1)[static]
    assert static.sum() > 0.3 * H * W and err.max() < 1e-3, err.max()


def test_bedlam_unreal_camera_convention_closed_form():
    """unreal_coordinate_system.md: +yaw turns right, -pitch looks down, +roll turns clockwise."""
    c2w = bedlam.unreal_camera_to_c2w(100.0, 200.0, 300.0, 0.0, 0.0, 0.0)
    assert np.allclose(c2w[:3, :3], np.eye(3)) and np.allclose(c2w[:3, 3], [2.0, -3.0, 1.0])  # (Y, -Z, X) / 100
    forward = lambda yaw, pitch, roll: bedlam.unreal_camera_to_c2w(0, 0, 0, yaw, pitch, roll)[:3, 2]  # noqa: E731
    assert np.allclose(forward(90, 0, 0), [1, 0, 0])  # Unreal +Y: right
    assert np.allclose(forward(0, -90, 0), [0, 1, 0])  # down
    assert np.allclose(forward(0, 30, 0), [0, -0.5, np.sqrt(3) / 2])  # up 30 degrees
    right = bedlam.unreal_camera_to_c2w(0, 0, 0, 0, 0, 30)[:3, 0]
    assert np.allclose(right, [np.sqrt(3) / 2, 0.5, 0])  # clockwise: the right side dips


def test_bedlam_ray_depth_and_options(tmp_path):
    fx = write_bedlam_scene(tmp_path / SCENE, _cfg(6, camera="dolly"), depth_kind="ray", frame_step=5, seed=9)
    (reader,) = bedlam.list_sequences(tmp_path, depth_type="ray", fps="30")
    assert reader.frame_numbers.tolist() == list(range(0, 5 * T, 5))
    depth, valid = reader.read_depth(10)
    gt = fx.clip.labels["depth"][2]
    assert np.all(np.abs(depth - gt)[valid] <= 1e-5 * gt[valid])
    as_z, _ = bedlam.list_sequences(tmp_path, depth_type="z")[0].read_depth(10)
    assert np.abs(as_z - gt)[valid].max() > 0.05 * gt[valid].min()  # the option matters
    assert bedlam.list_sequences(tmp_path, fps=6)[0].fps == 6.0
    with pytest.raises(ValueError, match="depth_type"):
        bedlam.list_sequences(tmp_path, depth_type="planar")
    # without the option depth is refused with its reason; cameras and masks still read
    (plain,) = bedlam.list_sequences(tmp_path)
    assert plain.provenance["depth"] == "absent" and "depth_type" in plain.refusals["depth"]
    _reason(lambda: plain.read_depth(0), "unsupported", "depth_type")
    plain.read_camera(0), plain.read_dynamic_mask(0)


BEDLAM_CASES = ["nan", "column", "row", "sky", "channel", "exr", "nodepth", "env", "aspect", "frame", "hdri"]


@pytest.mark.parametrize("case", BEDLAM_CASES)
def test_bedlam_bad_data_gives_its_reason(bedlam_z, tmp_path, case):
    name = "20221010_3_1000_batch01hand" if case == "hdri" else SCENE
    scene = _copy_scene(bedlam_z[0] / SCENE, tmp_path, name)
    seq = "seq_000000"
    csv_path = scene / "ground_truth" / "camera" / f"{seq}_camera.csv"
    lines = csv_path.read_text().splitlines()
    if case == "nan":
        lines[3] = ",".join(["seq_000000_0002.png", "nan"] + lines[3].split(",")[2:])
    elif case == "column":
        lines = [",".join(v for i, v in enumerate(line.split(",")) if i != 9) for line in lines]  # sensor_height
    elif case == "row":
        del lines[3]
    elif case == "aspect":  # a rotated (portrait) sensor for a landscape image
        lines = [lines[0]] + [line.replace(",36,20.25,", ",20.25,36,") for line in lines[1:]]
    csv_path.write_text("\n".join(lines) + "\n")
    depth_path = scene / "depth" / seq / f"{seq}_0002_depth.exr"
    if case == "sky":
        write_exr_depth(depth_path, np.full((H, W), 1e8, np.float32))
    elif case == "channel":
        write_exr_depth(depth_path, np.ones((H, W), np.float32), channel="Z")
    elif case == "exr":
        depth_path.unlink()
    elif case == "nodepth":
        shutil.rmtree(depth_path.parent)
    elif case == "env":
        (scene / "masks" / seq / f"{seq}_0002_env.png").unlink()
    elif case == "frame":
        (scene / "png" / seq / f"{seq}_0002.png").unlink()
    (reader,) = bedlam.list_sequences(scene.parent, depth_type="z")
    expect = {
        "nan": (reader.read_camera, "bad_values", "NaN"),
        "column": (reader.read_camera, "bad_format", "sensor_height"),
        "row": (reader.read_camera, "missing_file", "seq_000000_0002.png"),
        "sky": (reader.read_depth, "bad_values", "no valid depth"),
        "channel": (reader.read_depth, "bad_format", "'Depth'"),
        "exr": (reader.read_depth, "missing_file", "_0002_depth.exr"),
        "nodepth": (reader.read_depth, "missing_file", "depth EXR"),
        "env": (reader.read_dynamic_mask, "missing_file", "environment mask"),
        "aspect": (reader.read_camera, "inconsistent", "rotated"),
        "frame": (reader.read_camera, "missing_file", "frame 2"),
        "hdri": (reader.read_depth, "unsupported", "HDRI"),
    }
    call, reason, words = expect[case]
    _reason(lambda: call(2), reason, words)
    if case == "nodepth":
        assert reader.provenance["depth"] == "absent" and "no depth folder" in reader.refusals["depth"]
    if case == "frame":
        assert reader.frame_numbers.tolist() == [0, 1, 3, 4, 5, 6, 7, 8]  # the gap is visible to the import
    if case not in ("column", "aspect"):
        reader.read_camera(1), reader.read_dynamic_mask(1)  # the other frames still read


# ====================================================================== one broken sequence of a run
def test_omniworld_broken_scenes_are_their_own_rejected_clips(omni, tmp_path):
    good = _copy_scene(omni[0] / UID, tmp_path, UID)
    no_fps = _copy_scene(omni[0] / UID, tmp_path, "b0rked0fps000")
    (no_fps / "fps.txt").unlink()
    bad_json = _copy_scene(omni[0] / UID, tmp_path, "b0rked0json00")
    (bad_json / "split_info.json").write_text("{not json")
    result = import_run(good.parent, "omniworld-game", (H, W), 4, 3)
    assert [s for s, _ in result[f"{UID}_split0"]] == ["accepted"]
    assert [s for s, _ in result[f"{UID}_split1"]] == ["accepted"]
    for k in (0, 1):
        ((status, reasons),) = result[f"b0rked0fps000_split{k}"]
        assert status == "rejected" and reasons[0].startswith("missing_file:") and "b0rked0fps000/fps.txt" in reasons[0]
    ((status, reasons),) = result["b0rked0json00_split0"]  # the split count is unknown: split 0 carries it
    assert status == "rejected" and reasons[0].startswith("bad_format:") and "split_info.json" in reasons[0]
    assert len(result) == 5


def test_bedlam_broken_sequences_are_their_own_rejected_clips(bedlam_z, tmp_path):
    scene = _copy_scene(bedlam_z[0] / SCENE, tmp_path, SCENE)
    for seq, damage in (("seq_000001", "csv"), ("seq_000002", "frames")):
        for sub in ("png", "depth", "masks"):
            shutil.copytree(scene / sub / "seq_000000", scene / sub / seq)
            for path in sorted((scene / sub / seq).iterdir()):
                path.rename(path.with_name(path.name.replace("seq_000000", seq)))
        cameras = scene / "ground_truth" / "camera"
        text = (cameras / "seq_000000_camera.csv").read_text().replace("seq_000000", seq)
        if damage == "csv":  # undecodable bytes in the camera table
            text = text.encode("utf-8") + b"\xff\xfe\x00broken\n"
            (cameras / f"{seq}_camera.csv").write_bytes(text)
        else:  # no frame images at all
            (cameras / f"{seq}_camera.csv").write_text(text)
            for path in (scene / "png" / seq).iterdir():
                path.unlink()
    result = import_run(scene.parent, "bedlam", (H, W), 9, 4, ["depth_type=z"])
    assert [s for s, _ in result[f"{SCENE}_seq_000000"]] == ["accepted"]
    ((status, reasons),) = result[f"{SCENE}_seq_000001"]
    assert status == "rejected" and reasons[0].startswith("bad_format:") and "seq_000001_camera.csv" in reasons[0]
    ((status, reasons),) = result[f"{SCENE}_seq_000002"]
    assert status == "rejected" and reasons[0].startswith("missing_file:") and "no frames" in reasons[0]
