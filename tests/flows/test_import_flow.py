"""The import flow end to end: Prefect (ephemeral) + local Ray + label store, on Kubric scene folders."""

import argparse
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "pipelines"))
from kubric_writer import write_kubric_scene  # noqa: E402

from flows.importing import IMPORT_JOB, ImportRunParams, import_flow, import_job  # noqa: E402
from pipelines.synthetic import SceneConfig  # noqa: E402
from storage import LabelStore  # noqa: E402


@pytest.fixture(scope="module")
def movi(tmp_path_factory):
    root = tmp_path_factory.mktemp("movi_flow")
    for name, seed in (("scene_a", 11), ("scene_b", 12)):
        write_kubric_scene(root / name, SceneConfig(seed=seed, height=24, width=32, num_frames=5, stride=4, fps=12.0))
    write_kubric_scene(root / "scene_short", SceneConfig(seed=13, height=24, width=32, num_frames=3, stride=2, fps=12.0))
    return root


def test_import_flow_commits_resumes_and_reports(movi, tmp_path):
    store = tmp_path / "imported.zarr"
    values = {"format": "kubric-movi", "root": str(movi), "store": str(store), "height": 24, "width": 32, "frames": 5,
              "fps": None, "workers": 2, "batch_size": 1}
    summary = import_flow(ImportRunParams(**values))
    assert (summary["accepted"], summary["rejected"], summary["skipped"]) == (2, 1, 0)
    assert summary["rejected_by_reason"] == {"too_short": 1}
    assert summary["provenance"]["flow"] == {"exact": 2} and summary["provenance"]["scene_flow"] == {"derived": 2}
    assert Path(summary["report"]).name == "index.html" and Path(summary["report"]).exists()
    rows = {r["clip_id"]: r for r in LabelStore.open(store).index().to_pylist()}
    assert sorted(r["status"] for r in rows.values()) == ["accepted", "accepted", "rejected"]
    again = import_flow(ImportRunParams(**{**values, "write_report": False}))
    assert (again["accepted"], again["rejected"], again["skipped"]) == (0, 0, 3)


def test_import_options_build_the_config_and_the_command_line():
    cfg, run = import_job({"format": "kubric-movi", "root": "/data", "store": "/s", "fps": None, "sequences": ["a"]})
    assert cfg.fps is None and cfg.sequences == ["a"] and run.batch_size == 4
    argv = IMPORT_JOB.to_argv({"format": "kubric-movi", "root": "/data", "store": "/s", "height": 240, "width": 320})
    assert argv[argv.index("--size") + 1] == "240x320"
    parser = argparse.ArgumentParser()
    IMPORT_JOB.add_arguments(parser)
    args = parser.parse_args(["--format", "kubric-movi", "--root", "/d", "--out", "/s", "--size", "240x320",
                              "--frames", "21", "--fps", "native", "--sequences", "a", "b", "--unknown-motion", "estimate"])
    cfg, _ = import_job(IMPORT_JOB.from_args(args))
    assert (cfg.height, cfg.width, cfg.num_frames, cfg.fps, cfg.sequences) == (240, 320, 21, None, ["a", "b"])
    assert cfg.unknown_motion == "estimate" and cfg.store == "/s"
    with pytest.raises(ValueError, match="format must be one of"):
        import_job({"format": "nope", "root": "/data", "store": "/s"})
