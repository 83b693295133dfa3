"""The `worldreel` command line: help for every subcommand, argument parsing and clear errors."""

import argparse
import os

import pytest

from worldreel_cli import _parse_gate, build_parser, main, parse_size


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
    assert "--stage {1a,1b,2}" in out and "--store" in out and "--weights" in out


def test_sizes_and_gates_parse_or_fail_clearly():
    assert parse_size("240x360") == (240, 360)
    for bad in ("240", "ax3", "4x4"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_size(bad)
    assert _parse_gate("min_depth_valid_fraction=0.2") == ("min_depth_valid_fraction", 0.2)
    assert _parse_gate("max_dynamic_ratio=none") == ("max_dynamic_ratio", None)
    with pytest.raises(argparse.ArgumentTypeError):
        _parse_gate("min_depth_valid_fraction")


def test_label_rejects_unknown_gate_names(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("clip_id,video_path,start_sec,end_sec,caption\n")
    args = build_parser().parse_args(["label", "--manifest", str(manifest), "--out", str(tmp_path / "s"), "--gate", "foo=1"])
    with pytest.raises(ValueError, match="unknown quality gate"):
        args.func(args)


def test_info_on_missing_store_fails_with_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no label store"):
        main(["info", str(tmp_path / "nowhere")])


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
