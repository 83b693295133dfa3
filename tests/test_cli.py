"""The `worldreel` command line: help for every subcommand, argument parsing and clear errors."""

import argparse
import os

import pytest

from worldreel_cli import build_parser, main, parse_size


@pytest.mark.parametrize("command", ["synth", "label", "report", "serve", "info", "demo"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: worldreel" in capsys.readouterr().out


def test_train_help_comes_from_the_trainer(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = capsys.readouterr().out
    assert "--stage {1a,1b,2}" in out
    # README's spellings first, the earlier ones kept as aliases
    for primary, alias in (("--config", "--model"), ("--store", "--data"), ("--weights", "--pretrained"),
                           ("--store-weights", "--data-weights")):
        assert f"  {primary} " in out and f", {alias} " in out, primary


def test_train_accepts_old_and_new_spellings():
    from model.train import _job, _parser

    job = _job()
    new = job.build(job.from_args(_parser().parse_args(["--config", "tiny", "--store", "a", "--store", "b",
                                                        "--store-weights", "1", "2", "--weights", "w"])))
    old = job.build(job.from_args(_parser().parse_args(["--model", "tiny", "--data", "a", "--data", "b",
                                                        "--data-weights", "1", "2", "--pretrained", "w"])))
    assert new == old and new[0].stores == ["a", "b"] and new[0].weights == "w"


def test_every_label_and_train_option_has_help():
    from model.train import _parser

    for parser in (_parser(), _subparser("label")):
        undocumented = [a.option_strings for a in parser._actions if not (a.help and a.help.strip())]
        assert not undocumented


def test_demo_help_says_it_labels_trains_and_samples(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "label them" in out and "train the tiny model" in out and "sample a video" in out


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser(command)
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[command]


def _label_values(argv: list[str]) -> dict:
    from flows.labeling import LABEL_JOB

    return LABEL_JOB.from_args(build_parser("label").parse_args(["label", "--manifest", "m.csv", *argv]))


def test_label_options_keep_their_spellings():
    values = _label_values(["--out", "s.zarr", "--size", "32x48", "--fps", "native", "--frames", "9",
                            "--gate", "min_depth_valid_fraction=0.2", "--gate", "max_dynamic_ratio=none", "--no-report"])
    assert values == {"manifest": "m.csv", "store": "s.zarr", "height": 32, "width": 48, "fps": None, "frames": 9,
                      "gates": {"min_depth_valid_fraction": 0.2, "max_dynamic_ratio": None}, "write_report": False}
    assert _label_values(["--store", "s.zarr", "--fps", "12.5"])["fps"] == 12.5
    from flows.labeling import LabelRunParams, label_job

    run, cfg = label_job(LabelRunParams(**values))  # what `worldreel label` hands the flow
    assert (run.store, run.fps, run.write_report, cfg.height, cfg.num_frames) == ("s.zarr", None, False, 32, 9)
    assert cfg.thresholds.min_depth_valid_fraction == 0.2 and cfg.thresholds.max_dynamic_ratio is None


def test_sizes_parse_or_fail_clearly():
    assert parse_size("240x360") == (240, 360)
    for bad in ("240", "ax3", "10x10"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_size(bad)


@pytest.mark.parametrize("argv, message", [
    (["--size", "10x10"], "argument --size: 10x10: height must be >= 16, got 10"),  # the labelers need 16
    (["--gate", "foo=1"],
     "argument --gate: unknown gate 'foo'; known: max_camera_epipolar_ratio, max_camera_epipolar_ratio_worst"),
    (["--gate", "min_depth_valid_fraction"], "argument --gate: expected NAME=VALUE"),
    (["--frames", "10"], "num_frames - 1 (9) must be a positive multiple of stride 4"),
    (["--flow", "sea-raft"], "flow 'sea-raft' needs flow_weights"),
])
def test_label_errors_are_one_line(argv, message, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["label", "--manifest", "m.csv", "--store", str(tmp_path / "s"), *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err[-1].startswith("worldreel label: error: ") and message in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "s").exists()  # nothing started


@pytest.mark.parametrize("argv, message", [
    (["--manifest", "missing.csv"], "manifest missing.csv does not exist or is not a file"),
    (["--flow", "sea-raft", "--flow-weights", "nope.pth"], "--flow-weights nope.pth: not a checkpoint file"),
    (["--depth", "neural", "--depth-weights", "nope/"], "--depth-weights nope/: not a model folder"),
    (["--ray-address", "127.0.0.1:9"], "--ray-address 127.0.0.1:9: cluster unreachable"),
    (["--ray-address", "headnode"], "expected host:port or ray://host:port"),
])
def test_label_inputs_are_checked_at_the_door(argv, message, tmp_path, capsys, monkeypatch):
    """Manifest, weights and cluster are checked before Prefect or Ray start: one line, status 2."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m.csv").write_text("clip_id,video_path,start_sec,end_sec,caption\n")
    options = dict(zip(argv[::2], argv[1::2]))
    manifest = options.pop("--manifest", "m.csv")
    rest = [x for kv in options.items() for x in kv]
    assert main(["label", "--manifest", manifest, "--store", "s", *rest]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("worldreel label: error: ") and message in err[0], err
    assert not (tmp_path / "s").exists()  # nothing started


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(Exception, match="does not exist"):
        main(["label", "--manifest", str(tmp_path / "missing.csv"), "--store", str(tmp_path / "s"), "--debug"])


@pytest.mark.parametrize("command", ["info", "report"])
def test_store_is_an_option_and_still_a_positional(command, tmp_path, capsys):
    out = ["--out", str(tmp_path / "r")] if command == "report" else []
    for argv in (["--store", str(tmp_path / "nowhere")], [str(tmp_path / "nowhere")]):
        assert main([command, *argv, *out]) == 2
        assert f"worldreel {command}: error: no label store at" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([command, *out])
    assert "the label store is required: --store PATH" in capsys.readouterr().err


@pytest.mark.parametrize("exported", [None, "33"])
def test_prefect_defaults_reach_an_already_imported_prefect(exported, monkeypatch):
    """Prefect caches its settings at import; the ephemeral server's start-up limit must still apply."""
    import prefect  # noqa: F401  (imported before, as in a notebook or the tests)
    from prefect.settings import PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS as startup_timeout

    from worldreel_cli import prefect_defaults

    name = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
    if exported is None:
        monkeypatch.delenv(name, raising=False)
    else:
        monkeypatch.setenv(name, exported)
    with prefect_defaults():
        assert startup_timeout.value() == (180 if exported is None else 33)
        assert os.environ[name] == (exported or "180")  # what the server subprocess and Ray workers inherit
