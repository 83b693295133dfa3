"""Label store: round trips, atomic commits under kill -9, concurrent writers, validation."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from clip_factory import random_clip

from labelers.geometry import unproject_depth
from storage import FIELDS, LabelStore, LabelValidationError, RejectedClipError, SchemaVersionError, STORED_FIELDS
from storage.store import ClipNotFoundError

WRITER = Path(__file__).parent / "writer_proc.py"
SIZE = "9x24x32"  # T x H x W of the writer processes' clips: tiny, the protocol is what is tested


@pytest.fixture
def store(tmp_path):
    return LabelStore.create(tmp_path / "labels.zarr")


def _assert_clip_matches(read, arrays, atol_half=None):
    for name in STORED_FIELDS:
        expected = np.asarray(arrays[name])
        got = read[name]
        spec = FIELDS[name]
        if spec.valid is not None:
            valid = np.asarray(arrays[spec.valid])
            expected = np.where(valid.reshape(valid.shape + (1,) * (expected.ndim - valid.ndim)), expected, 0)
        if spec.kind == "half" and atol_half is not None:
            np.testing.assert_allclose(got, expected, rtol=1e-3, atol=atol_half, err_msg=name)
        else:
            np.testing.assert_array_equal(got, expected.astype(got.dtype), err_msg=name)


@pytest.mark.parametrize("precision", ["float16", "float32"])
def test_round_trip_every_field(tmp_path, precision):
    store = LabelStore.create(tmp_path / "s.zarr", precision=precision)
    arrays, attrs = random_clip(seed=3)
    result = store.commit("clip-a", arrays, attrs)
    assert result.committed and result.status == "accepted"
    read = store.read("clip-a")
    assert set(read) == set(FIELDS)
    _assert_clip_matches(read, arrays, atol_half=2e-3 if precision == "float16" else None)
    half = np.float16 if precision == "float16" else np.float32
    assert read["depth"].dtype == half and read["flow"].dtype == half and read["K"].dtype == np.float32
    assert read.attrs["status"] == "accepted" and read.attrs["schema_version"] == 1
    assert (read.attrs["T"], read.attrs["height"], read.attrs["width"]) == (9, 12, 16)
    assert read.attrs["qa"]["dynamic_ratio"] == 0.3
    # points are derived on read: P_k = c2w_k [D K^-1 uv1] on key frames, 0 where depth is invalid
    for n, k in enumerate(range(0, 9, 4)):
        expected = unproject_depth(read["depth"][k].astype(np.float64), read["K"][k], read["c2w"][k])
        expected[~read["depth_valid"][k]] = 0
        np.testing.assert_allclose(read["points"][n], expected, rtol=1e-5, atol=1e-5)


def test_read_subset_of_fields_and_unknown_field(store):
    arrays, attrs = random_clip()
    store.commit("c", arrays, attrs)
    subset = store.read("c", fields=["depth", "c2w"])
    assert set(subset) == {"depth", "c2w"}
    with pytest.raises(KeyError, match="unknown field"):
        store.read("c", fields=["rgb"])
    with pytest.raises(ClipNotFoundError):
        store.read("nope")


def test_commit_is_idempotent_and_index_has_one_row_per_clip(store):
    arrays, attrs = random_clip()
    assert store.commit("c1", arrays, attrs).committed
    assert not store.commit("c1", arrays, attrs).committed
    store.commit_rejected("c2", attrs, ["qa: fb_consistent_fraction 0.10 < 0.50"])
    index = store.index()
    assert isinstance(index, pa.Table)
    assert index.column("clip_id").to_pylist() == ["c1", "c2"]
    assert store.clip_ids(status="accepted") == ["c1"]
    assert store.clip_ids(status="rejected") == ["c2"]
    row = index.to_pylist()[1]
    assert row["status"] == "rejected" and row["reasons"] == ["qa: fb_consistent_fraction 0.10 < 0.50"]
    assert index.to_pylist()[0]["qa_fb_consistent_fraction"] == pytest.approx(0.8)
    assert store.compact_index() == 2
    assert store.index().column("clip_id").to_pylist() == ["c1", "c2"]
    assert not list((store.root / "index" / "rows").glob("*.parquet"))


def test_replace_rejected_clip_with_accepted(store):
    arrays, attrs = random_clip()
    store.commit_rejected("c", attrs, ["decode: too_short"])
    assert not store.commit("c", arrays, attrs).committed  # no silent overwrite
    assert store.commit("c", arrays, attrs, replace=True).committed
    assert store.clip_ids(status="accepted") == ["c"]
    assert store.index().num_rows == 1
    store.read("c", fields=["depth"])


def test_rejected_clip_has_no_arrays(store):
    _, attrs = random_clip()
    store.commit_rejected("r", attrs, ["camera: too little parallax"])
    assert store.attrs("r")["reasons"] == ["camera: too little parallax"]
    for fields in (None, ["depth"]):
        with pytest.raises(RejectedClipError, match=r"'r' was rejected \(camera: too little parallax\)"):
            store.read("r", fields=fields)


def test_empty_store_is_readable_after_compaction(tmp_path):
    """A run over a manifest with no rows compacts an empty index: every reader must still accept it."""
    store = LabelStore.create(tmp_path / "empty.zarr")
    store.compact_index()
    reopened = LabelStore.open(tmp_path / "empty.zarr")
    assert reopened.index().num_rows == 0 and "committed_at" in reopened.index().column_names
    assert reopened.clip_ids() == [] and reopened.clip_ids(status="accepted") == []
    store.commit("a", *random_clip())
    assert reopened.clip_ids() == ["a"]
    reopened.compact_index()
    assert reopened.clip_ids(status="accepted") == ["a"]


@pytest.mark.parametrize(
    "mutate, field, message",
    [
        (lambda a: a.__setitem__("depth", a["depth"][:, :-1]), "depth_valid", "expected shape"),
        (lambda a: a.__setitem__("flow", a["flow"][..., :1]), "flow", "expected shape"),
        (lambda a: a["c2w"].__setitem__((0, 0, 3), 0.5), "c2w", "identity"),
        (lambda a: a["c2w"].__setitem__((3, slice(0, 3), 0), [2.0, 0, 0]), "c2w", "orthonormal"),
        (lambda a: a["depth"].__setitem__(np.nonzero(a["depth_valid"]), -1.0), "depth", "depth <= 0"),
        (lambda a: a["flow"].__setitem__(np.nonzero(a["flow_valid"]), np.nan), "flow", "non-finite"),
        (lambda a: a["K"].__setitem__((2, 0, 0), 0.0), "K", "focal"),
        (lambda a: a.__setitem__("depth_valid", a["depth_valid"].astype(np.uint8)), "depth_valid", "bool"),
        (lambda a: a.pop("scene_flow"), "scene_flow", "missing"),
        (lambda a: a.__setitem__("points", np.zeros(1)), "points", "derived on read"),
    ],
)
def test_invalid_input_raises_naming_clip_and_field_and_writes_nothing(store, mutate, field, message):
    arrays, attrs = random_clip()
    arrays = {k: np.array(v, copy=True) for k, v in arrays.items()}
    mutate(arrays)
    with pytest.raises(LabelValidationError, match=message) as err:
        store.commit("bad-clip", arrays, attrs)
    assert err.value.clip_id == "bad-clip" and err.value.field == field
    assert "'bad-clip'" in str(err.value) and repr(field) in str(err.value)
    assert not store.has_clip("bad-clip")
    assert store.clip_ids() == []
    assert not any((store.root / ".staging").iterdir())


def test_non_finite_values_outside_validity_are_zeroed_not_rejected(store):
    arrays, attrs = random_clip()
    arrays["flow"][~arrays["flow_valid"]] = np.nan
    store.commit("c", arrays, attrs)
    flow = store.read("c", fields=["flow"])["flow"]
    assert np.isfinite(flow).all()
    assert (flow[~arrays["flow_valid"]] == 0).all()


def test_missing_attribute_raises(store):
    arrays, attrs = random_clip()
    del attrs["metric_scale"]
    with pytest.raises(LabelValidationError, match="metric_scale"):
        store.commit("c", arrays, attrs)


def test_reader_checks_schema_version(store):
    arrays, attrs = random_clip()
    store.commit("c", arrays, attrs)
    clip_json = store.clip_path("c") / "zarr.json"
    meta = json.loads(clip_json.read_text())
    meta["attributes"]["schema_version"] = 99
    clip_json.write_text(json.dumps(meta))
    with pytest.raises(SchemaVersionError, match="99"):
        store.read("c")
    root_json = store.root / "zarr.json"
    meta = json.loads(root_json.read_text())
    meta["attributes"]["worldreel"]["schema_version"] = 2
    root_json.write_text(json.dumps(meta))
    with pytest.raises(SchemaVersionError):
        LabelStore.open(store.root)


def test_open_missing_store_and_create_over_foreign_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        LabelStore.open(tmp_path / "nothing")
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "file.txt").write_text("x")
    with pytest.raises(FileExistsError):
        LabelStore.create(tmp_path / "foreign")


def test_a_store_another_run_creates_meanwhile_is_opened(tmp_path, monkeypatch):
    """Two runs started at once on one new store: the second finds no store at its check, and the
    first has created it by the time the second writes its root group."""
    LabelStore.create(tmp_path / "labels.zarr", rounding="compact")
    seen = iter([False])  # the first look comes before the other run wrote its root group
    monkeypatch.setattr("storage.store._is_local_store", lambda root: next(seen, True))
    store = LabelStore.create(tmp_path / "labels.zarr")
    assert store.rounding == "compact"  # the store the other run created, not a new one
    seen = iter([False])
    with pytest.raises(FileExistsError, match="already exists"):
        LabelStore.create(tmp_path / "labels.zarr", exist_ok=False)


def test_repair_index_finds_clip_published_without_index_row(store):
    arrays, attrs = random_clip()
    store.commit("c", arrays, attrs)
    for row in (store.root / "index" / "rows").glob("*.parquet"):
        row.unlink()  # as if the writer died between publish and index write
    assert store.clip_ids() == []
    assert store.repair_index() == ["c"]
    assert store.clip_ids() == ["c"]


def _run_writer(store_path, first, last, size=SIZE):
    return subprocess.Popen(
        [sys.executable, str(WRITER), str(store_path), str(first), str(last), size],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _assert_store_consistent(store_path, expected_ids):
    store = LabelStore.open(store_path)
    store.repair_index()
    assert store.clip_ids() == expected_ids
    assert store.index().num_rows == len(expected_ids)
    for clip_id in expected_ids:
        T, H, W = (int(x) for x in SIZE.split("x"))
        arrays, _ = random_clip(T=T, H=H, W=W, seed=int(clip_id.split("-")[1]))
        _assert_clip_matches(store.read(clip_id), arrays, atol_half=2e-3)


def test_writer_killed_mid_clip_leaves_no_partial_clip_and_rerun_completes(tmp_path):
    store_path = tmp_path / "s.zarr"
    LabelStore.create(store_path)
    staging = store_path / ".staging"
    proc = _run_writer(store_path, 0, 16)
    deadline = time.time() + 60
    committed_before = 0
    while time.time() < deadline:  # kill -9 while a clip is half written in staging
        if any(staging.iterdir()) and len(list((store_path / "clips").glob("*/*"))) >= 2:
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "writer finished before it could be killed"
    visible = sorted(p.name for p in (store_path / "clips").glob("*/*"))
    committed_before = len(visible)
    assert 2 <= committed_before < 16
    _assert_store_consistent(store_path, visible)  # every visible clip is complete
    rerun = _run_writer(store_path, 0, 16)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert len(out.splitlines()) == 16 - committed_before  # only what was missing
    _assert_store_consistent(store_path, [f"clip-{i:03d}" for i in range(16)])
    assert LabelStore.open(store_path).clean_staging(older_than_s=0) <= 1


def test_two_concurrent_writers_lose_nothing(tmp_path):
    store_path = tmp_path / "s.zarr"
    LabelStore.create(store_path)
    # Overlapping ranges: both processes race on clips 5..10.
    a, b = _run_writer(store_path, 0, 11), _run_writer(store_path, 5, 16)
    for proc in (a, b):
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    _assert_store_consistent(store_path, [f"clip-{i:03d}" for i in range(16)])
    store = LabelStore.open(store_path)
    store.compact_index()
    assert store.index().num_rows == 16


@pytest.mark.parametrize("dtype, width", [(np.float16, 10), (np.float32, 23)])
def test_round_mantissa_error_bound_and_special_values(dtype, width):
    from storage.store import round_mantissa

    values = np.random.default_rng(0).normal(0, 20, 100_000).astype(dtype)
    values = values[np.abs(values) > 1e-3]  # normal numbers: the relative bound holds
    for keep in (4, 7, width):
        rounded = round_mantissa(values, keep)
        assert rounded.dtype == dtype
        rel = np.abs(rounded.astype(np.float64) - values) / np.abs(values.astype(np.float64))
        assert rel.max() <= 2.0 ** -(keep + 1) * (1 + 1e-6)
        # round to nearest, not truncation: the errors have no sign bias
        assert abs(np.mean(np.sign(rounded.astype(np.float64) - values)[rel > 0])) < 0.05 or keep == width
    special = np.array([0.0, -0.0, np.nan, np.inf, -np.inf, np.finfo(dtype).max], dtype)
    out = round_mantissa(special, 4)
    assert out[0] == 0 and np.isnan(out[2]) and out[3] == np.inf and out[4] == -np.inf
    assert np.isfinite(out[5]) and out[5] <= np.finfo(dtype).max  # never rounded up to infinity
    with pytest.raises(ValueError, match="keep_bits"):
        round_mantissa(values, width + 1)


def test_compact_rounding_store_is_smaller_and_within_its_bound(tmp_path):
    arrays, attrs = random_clip(T=17, H=48, W=64, seed=5)
    # Smooth flow as a labeler gives it (random noise would not compress either way).
    yy, xx = np.mgrid[0:48, 0:64]
    arrays["flow"] = np.stack([0.05 * xx + 0.3 * np.sin(yy / 7.0), 0.02 * yy - 1.5], -1)[None].repeat(16, 0)
    arrays["flow"] = (arrays["flow"] * np.linspace(1, 3, 16)[:, None, None, None]).astype(np.float32)
    plain = LabelStore.create(tmp_path / "plain.zarr")
    compact = LabelStore.create(tmp_path / "compact.zarr", rounding="compact")
    size_plain = plain.commit("c", arrays, attrs).nbytes
    size_compact = compact.commit("c", arrays, attrs).nbytes
    assert size_compact < 0.95 * size_plain
    reopened = LabelStore.open(tmp_path / "compact.zarr")
    assert reopened.rounding == "compact"
    a, b = plain.read("c"), reopened.read("c")
    np.testing.assert_array_equal(a["depth"], b["depth"])  # depth is never rounded
    np.testing.assert_array_equal(a["points"], b["points"])
    for name, bits in (("flow", 7), ("key_flow", 7), ("flow_uncertainty", 4), ("scene_flow", 7)):
        exact, rounded = a[name].astype(np.float64), b[name].astype(np.float64)
        # relative bound on normal numbers; float16 subnormals (< 6e-5) lose relatively more
        assert np.all(np.abs(rounded - exact) <= 2.0 ** -(bits + 1) * np.abs(exact) + 1e-5), name
    with pytest.raises(ValueError, match="rounding"):
        LabelStore.create(tmp_path / "bad.zarr", rounding="lossy")


def test_provenance_columns_in_index_and_old_index_stays_readable(store):
    arrays, attrs = random_clip()
    store.commit("plain", arrays, attrs)  # labelled footage: no provenance attribute
    attrs["provenance"] = {"camera": "exact", "depth": "exact", "flow": "derived", "scene_flow": "absent"}
    store.commit("imported", arrays, attrs)
    store.commit_rejected("rej", {**attrs, "provenance": {"camera": "estimated"}}, ["camera: too little parallax"])
    rows = {r["clip_id"]: r for r in store.index().to_pylist()}
    assert rows["imported"]["provenance_flow"] == "derived" and rows["imported"]["provenance_scene_flow"] == "absent"
    assert rows["imported"]["provenance_key_flow"] is None  # not in the attribute: null, not a guess
    assert all(rows["plain"][f"provenance_{p}"] is None for p in ("camera", "depth", "flow", "dynamic_mask"))
    assert rows["rej"]["provenance_camera"] == "estimated"
    assert store.attrs("imported")["provenance"]["camera"] == "exact"
    store.compact_index()
    assert store.index().schema.field("provenance_depth").type == pa.string()
    # an index written before the provenance columns existed reads with them null
    import pyarrow.parquet as pq

    compacted = store.root / "index" / "index.parquet"
    old = pq.read_table(compacted)
    pq.write_table(old.drop_columns([c for c in old.column_names if c.startswith("provenance_")]), compacted)
    reopened = LabelStore.open(store.root)
    assert reopened.index().column("provenance_camera").to_pylist() == [None, None, None]
    store.commit("new", arrays, attrs)
    # rows sorted by clip id: imported (its column dropped above), new, plain, rej
    assert reopened.index().column("provenance_camera").to_pylist() == [None, "exact", None, None]


@pytest.mark.parametrize(
    "provenance, field, message",
    [
        ({"camera": "guessed"}, "provenance.camera", "must be one of"),
        ({"rgb": "exact"}, "provenance", "unknown part 'rgb'"),
        (["exact"], "provenance", "mapping"),
    ],
)
def test_invalid_provenance_is_refused(store, provenance, field, message):
    arrays, attrs = random_clip()
    with pytest.raises(LabelValidationError, match=message) as err:
        store.commit("c", arrays, {**attrs, "provenance": provenance})
    assert err.value.field == field and not store.has_clip("c")
