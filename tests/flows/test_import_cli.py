"""`worldreel import` from the command line: a PointOdyssey folder into a store, and bad input at the door."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "pipelines"))
from writers_po_dr import render_ground_truth, world_from_first, write_pointodyssey  # noqa: E402

from storage import LabelStore  # noqa: E402
from worldreel_cli import main  # noqa: E402


def test_import_pointodyssey_through_the_cli(tmp_path, capsys):
    clip = render_ground_truth(seed=1, height=48, width=64, num_frames=5)
    write_pointodyssey(tmp_path / "po" / "train" / "seq_a", clip, world_from_first())
    store = tmp_path / "po.zarr"
    args = ["import", "--format", "pointodyssey", "--root", str(tmp_path / "po"), "--split", "train", "--store",
            str(store), "--size", "48x64", "--frames", "5", "--stride", "4", "--fps", "native", "--workers", "1",
            "--no-report"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "1 accepted, 0 rejected" in out and "clips imported" in out
    labels = LabelStore.open(store)
    (clip_id,) = labels.clip_ids(status="accepted")
    assert clip_id.startswith("pointodyssey-seq_a-")
    provenance = labels.attrs(clip_id)["provenance"]
    assert provenance["camera"] == "exact" and provenance["depth"] == "exact"
    assert provenance["dynamic_mask"] == "derived"  # from tracks and instance masks
    assert main(args) == 0 and "0 accepted, 0 rejected, 1 skipped" in capsys.readouterr().out  # resume: nothing to do


def test_import_with_a_missing_root_is_one_line(tmp_path, capsys):
    args = ["import", "--format", "bedlam", "--root", str(tmp_path / "nope"), "--store", str(tmp_path / "s.zarr")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nope" in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "s.zarr").exists()


def test_import_with_an_unknown_reader_option_is_one_line(tmp_path, capsys):
    (tmp_path / "bedlam").mkdir()
    args = ["import", "--format", "bedlam", "--root", str(tmp_path / "bedlam"), "--store", str(tmp_path / "s.zarr"),
            "--dataset-option", "colour=blue"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no option 'colour'" in err[0] and "depth_type" in err[0]
