"""The labeling flow end to end: Prefect (ephemeral) + local Ray + label store, on synthetic clips."""

import os
import re
import signal
import subprocess
import sys
import tempfile
import time

import pytest
from synthetic_manifest import FRAMES, SIZE, write_manifest

from storage import LabelStore
from worldreel_cli import main

LABEL_ARGS = ["--size", f"{SIZE[0]}x{SIZE[1]}", "--frames", str(FRAMES), "--workers", "2", "--batch-size", "1"]


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    root = tmp_path_factory.mktemp("flow")
    manifest, good, bad = write_manifest(root / "data", num_good=2)
    store = root / "labels.zarr"
    args = ["label", "--manifest", str(manifest), "--out", str(store), *LABEL_ARGS, "--store-rounding", "compact"]
    assert main(args) == 0
    return manifest, store, good, bad


def test_good_clips_committed_and_bad_clips_rejected_with_reasons(labelled):
    _, store_path, good, bad = labelled
    store = LabelStore.open(store_path)
    assert store.rounding == "compact"  # re-runs below name no rounding: the store keeps its own
    rows = {r["clip_id"]: r for r in store.index().to_pylist()}
    assert set(rows) == set(good) | set(bad)  # the malformed row has no clip: reported, not stored
    for clip_id in good:
        assert rows[clip_id]["status"] == "accepted", rows[clip_id]["reasons"]
        labels = store.read(clip_id, fields=["depth", "scene_flow_valid"])
        assert labels["depth"].shape == (FRAMES, *SIZE)
    for clip_id, code in bad.items():
        assert rows[clip_id]["status"] == "rejected"
        assert rows[clip_id]["reasons"][0].startswith(code), rows[clip_id]["reasons"]
        assert clip_id in rows[clip_id]["reasons"][0] or code in rows[clip_id]["reasons"][0]


def test_rerun_labels_nothing_and_redo_failed_retries_rejected(labelled, capsys, monkeypatch):
    manifest, store_path, good, bad = labelled
    before = {r["clip_id"]: r["committed_at"] for r in LabelStore.open(store_path).index().to_pylist()}
    capsys.readouterr()
    monkeypatch.chdir(store_path.parent)  # relative paths, as `make demo` gives them
    args = ["label", "--manifest", str(manifest), "--out", store_path.name, "--report-dir", "rel_report", *LABEL_ARGS]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "0 accepted, 0 rejected, 5 skipped" in out and "quality report:" in out
    assert (store_path.parent / "rel_report" / "index.html").exists()
    after = {r["clip_id"]: r["committed_at"] for r in LabelStore.open(store_path).index().to_pylist()}
    assert after == before
    assert main(["label", "--manifest", str(manifest), "--out", str(store_path), *LABEL_ARGS, "--redo-failed"]) == 0
    out = capsys.readouterr().out
    assert f"0 accepted, {len(bad)} rejected, {len(good)} skipped" in out
    assert LabelStore.open(store_path).rounding == "compact"
    redone = {r["clip_id"]: r["committed_at"] for r in LabelStore.open(store_path).index().to_pylist()}
    assert all(redone[c] > before[c] for c in bad) and all(redone[c] == before[c] for c in good)


def _label_process(manifest, store, *extra):
    """`worldreel label` in its own process group, with a Ray temp dir of its own (to find its workers)."""
    ray_tmp = tempfile.mkdtemp(prefix="wr", dir="/tmp")
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_TMPDIR": ray_tmp}
    proc = subprocess.Popen(
        [sys.executable, "-m", "worldreel_cli", "label", "--manifest", str(manifest), "--out", str(store), *LABEL_ARGS, *extra],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )
    proc.ray_tmp = ray_tmp
    return proc


def _kill_all(proc) -> None:
    """kill -9 the flow process, its group, and the Ray processes it started (they run in other sessions)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    subprocess.run(["pkill", "-9", "-f", proc.ray_tmp], check=False)
    time.sleep(1)


def _assert_each_clip_once(store_path, expected_ids):
    store = LabelStore.open(store_path)
    store.repair_index()
    store.compact_index()
    ids = store.index().column("clip_id").to_pylist()
    assert sorted(ids) == sorted(expected_ids)
    clips_on_disk = sorted(p.name for p in (store.root / "clips").glob("*/*"))
    assert clips_on_disk == sorted(expected_ids)
    for clip_id in store.clip_ids(status="accepted"):
        store.read(clip_id)  # complete and readable


def test_kill_9_of_the_flow_process_then_rerun_finishes_only_what_is_missing(tmp_path):
    manifest, good, _ = write_manifest(tmp_path / "data", num_good=4, with_bad=False)
    store = tmp_path / "labels.zarr"
    proc = _label_process(manifest, store, "--workers", "1")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if len(list((store / "clips").glob("*/*"))) >= 1:
            break
        time.sleep(0.05)
    _kill_all(proc)
    committed = sorted(p.name for p in (store / "clips").glob("*/*"))
    assert 1 <= len(committed) < len(good), "the run must be killed mid-way"
    _assert_each_clip_once(store, committed)  # what is visible is complete
    rerun = _label_process(manifest, store)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out[-3000:]
    summary = re.search(r"(\d+) accepted, (\d+) rejected, (\d+) skipped", out)
    assert summary, out[-3000:]
    accepted, rejected, skipped = map(int, summary.groups())
    # Only what was missing is labelled. A Ray worker orphaned by the kill may still publish the clip
    # it was writing before it dies, so the re-run can find more committed clips than counted above.
    assert skipped >= len(committed) and accepted + rejected + skipped == len(good)
    _assert_each_clip_once(store, good)


def test_two_concurrent_runs_on_one_store_lose_nothing(tmp_path):
    manifest, good, _ = write_manifest(tmp_path / "data", num_good=3, with_bad=False)
    store = tmp_path / "labels.zarr"
    runs = [_label_process(manifest, store, "--workers", "1"), _label_process(manifest, store, "--workers", "1")]
    for run in runs:
        out, _ = run.communicate(timeout=600)
        assert run.returncode == 0, out[-3000:]
        subprocess.run(["pkill", "-9", "-f", run.ray_tmp], check=False)
    _assert_each_clip_once(store, good)
