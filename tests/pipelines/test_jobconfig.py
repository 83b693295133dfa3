"""Job configurations: one dataclass per job generates the command line and the Prefect form, and both
give the same dataclasses back; the labeling and training jobs describe every option."""

import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Literal

import pydantic
import pytest

from pipelines.jobconfig import JobConfig, Pair


@dataclass(frozen=True)
class Gates:
    min_a: float | None = 0.5
    max_b: float | None = 2.0
    extra: dict = field(default_factory=dict)  # not a scalar: not overridable


@dataclass(frozen=True)
class Toy:
    path: str = field(metadata={"help": "where", "aliases": ("--out",)})
    mode: Literal["fast", "slow"] = field(default="fast", metadata={"help": "how"})
    kind: str = field(default="x", metadata={"help": "which", "choices": ("x", "y")})
    height: int = field(default=32, metadata={"help": "rows", "ge": 16})
    width: int = field(default=48, metadata={"help": "columns", "ge": 16, "le": 64})
    rate: float | None = field(default=8.0, metadata={"help": "per second", "gt": 0, "none": "native"})
    limit: int | None = field(default=None, metadata={"help": "at most", "ge": 1})
    sources: list[str] = field(default_factory=list, metadata={"help": "inputs", "flag": "--source", "repeat": True})
    weights: list[float] | None = field(default=None, metadata={"help": "per input", "ge": 0})
    check: bool = field(default=True, metadata={"help": "verify"})
    gates: Gates = field(default_factory=Gates, metadata={"help": "bounds", "flag": "--gate"})


JOB = JobConfig(Toy, pairs=[Pair("--size", ("height", "width"), "resolution HxW")])


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="toy", exit_on_error=False)
    JOB.add_arguments(parser)
    return parser


def _parse(argv: list[str]) -> Toy:
    return JOB.build(JOB.from_args(_parser().parse_args(argv)))[0]


def test_command_line_gives_the_dataclass():
    toy = _parse(["--out", "p", "--mode", "slow", "--size", "16x64", "--rate", "native", "--limit", "3",
                  "--source", "a", "--source", "b", "--weights", "1", "3", "--no-check",
                  "--gate", "min_a=none", "--gate", "max_b=4"])
    assert toy == Toy(path="p", mode="slow", height=16, width=64, rate=None, limit=3, sources=["a", "b"],
                      weights=[1.0, 3.0], check=False, gates=Gates(min_a=None, max_b=4.0))
    assert _parse(["--path", "p"]) == Toy(path="p")  # absent options take the dataclass defaults


@pytest.mark.parametrize("argv, message", [
    (["--size", "10x40"], "height must be >= 16, got 10"),
    (["--size", "20x80"], "width must be <= 64, got 80"),
    (["--size", "20"], "expected HEIGHTxWIDTH"),
    (["--rate", "0"], "rate must be > 0"),
    (["--mode", "medium"], "'medium' is not one of fast, slow"),
    (["--kind", "z"], "'z' is not one of x, y"),
    (["--weights", "1", "-2"], "weights must be >= 0"),
    (["--gate", "min_c=1"], "unknown gate 'min_c'; known: max_b, min_a"),
    (["--gate", "extra=1"], "unknown gate 'extra'"),
    (["--gate", "min_a"], "expected NAME=VALUE"),
    (["--limit", "two"], "expected int, got 'two'"),
])
def test_command_line_errors_name_the_option_and_the_bound(argv, message):
    with pytest.raises(argparse.ArgumentError, match=message):
        _parser().parse_args(["--path", "p", *argv])


def test_form_has_the_same_names_defaults_bounds_and_help():
    form = JOB.form_model("ToyParams", "A toy job.", __name__)
    schema = form.model_json_schema()
    assert list(schema["properties"]) == [f.name for f in dataclasses.fields(Toy)]
    assert schema["required"] == ["path"]
    for f in dataclasses.fields(Toy):
        assert schema["properties"][f.name]["description"].startswith(f.metadata["help"])
    height = schema["properties"]["height"]
    assert (height["default"], height["minimum"]) == (32, 16)
    assert schema["properties"]["width"]["maximum"] == 64
    assert schema["properties"]["mode"]["enum"] == ["fast", "slow"]
    assert schema["properties"]["kind"]["enum"] == ["x", "y"]
    assert schema["properties"]["rate"]["anyOf"][0]["exclusiveMinimum"] == 0
    for bad in ({"height": 10}, {"width": 65}, {"mode": "medium"}, {"weights": [-1.0]}, {"unknown": 1}):
        with pytest.raises(pydantic.ValidationError):
            form(path="p", **bad)
    values = form(path="p", height=20, rate=None, gates={"max_b": 4}, sources=["a"]).model_dump()
    assert JOB.build(values)[0] == _parse(["--path", "p", "--size", "20x48", "--rate", "native", "--gate", "max_b=4",
                                           "--source", "a"])


def test_values_and_argv_round_trip():
    toy = Toy(path="p", mode="slow", height=20, rate=None, sources=["a", "b"], weights=[2.0], check=False,
              gates=Gates(max_b=None))
    values = JOB.values(toy)
    assert values["gates"] == {"max_b": None}  # only what differs from the default gates
    assert JOB.build(values)[0] == toy
    assert _parse(JOB.to_argv(values)) == toy


def test_build_checks_bounds_names_and_required_options():
    with pytest.raises(ValueError, match="height must be >= 16, got 8"):
        JOB.build({"path": "p", "height": 8})
    with pytest.raises(ValueError, match="path is required"):
        JOB.build({})
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['hieght'\]"):
        JOB.build({"path": "p", "hieght": 20})
    with pytest.raises(ValueError, match="unknown gates"):
        JOB.build({"path": "p", "gates": {"min_c": 1.0}})


def test_a_field_without_help_a_misspelt_key_or_an_unspellable_type_is_an_error():
    @dataclass
    class NoHelp:
        a: int = 1

    @dataclass
    class Misspelt:
        a: int = field(default=1, metadata={"hlep": "one"})

    @dataclass
    class Twice:
        a: int = field(default=1, metadata={"help": "one", "name": "b"})
        b: int = field(default=1, metadata={"help": "two"})

    with pytest.raises(TypeError, match="NoHelp.a has no help text"):
        JobConfig(NoHelp)
    with pytest.raises(TypeError, match=r"unknown metadata \['hlep'\]"):
        JobConfig(Misspelt)
    @dataclass
    class Unspellable:
        a: dict = field(default_factory=dict, metadata={"help": "one"})

    with pytest.raises(TypeError, match=r"options named twice: \['b'\]"):
        JobConfig(Twice)
    with pytest.raises(TypeError, match="Unspellable.a: type <class 'dict'> has no command-line or form spelling"):
        JobConfig(Unspellable)


def _jobs():
    from flows.labeling import LABEL_JOB, LabelRunParams
    from flows.training import TRAIN_JOB, TrainRunParams

    return [(LABEL_JOB, LabelRunParams), (TRAIN_JOB, TrainRunParams)]


def test_every_option_of_every_job_is_described_the_same_in_cli_and_form():
    for job, form in _jobs():
        parser = argparse.ArgumentParser()
        job.add_arguments(parser)
        shown = {a.dest: a.help for a in parser._actions if a.dest != "help"}
        assert set(form.model_fields) == {o.name for o in job.options}
        for option in job.options:
            described = form.model_fields[option.name].description
            assert option.help.strip() and described.startswith(option.help), option.name
            assert option.name in shown or any(option.name in p.names for p in job.pairs), option.name
        assert all(text and text.strip() for text in shown.values())


def test_labeling_form_and_cli_default_to_the_pipeline_defaults():
    """Every field of `LabelConfig` (also ones added later) is an option, with the pipeline's default."""
    from flows.labeling import LABEL_JOB, LabelRun, LabelRunParams, label_job
    from pipelines.labeling import LabelConfig

    form = LabelRunParams(manifest="m.csv", store="s.zarr")
    run, cfg = label_job(form)
    assert cfg == LabelConfig() and run == LabelRun(manifest="m.csv", store="s.zarr")
    assert {o.attr for o in LABEL_JOB.options if o.owner is LabelConfig} == {f.name for f in dataclasses.fields(LabelConfig)}
    sea_raft = label_job(form.model_copy(update={"flow": "sea-raft", "flow_weights": "w.pth"}))[1]
    assert sea_raft.scene_flow_max_uncertainty_px is None  # SEA-RAFT's uncertainty is never below ~1.6 px


def test_training_form_launches_the_trainer_with_the_same_configuration():
    from flows.training import TrainRunParams, train_command, train_config
    from model.train import TrainConfig, _job, _parser

    form = TrainRunParams(config="tiny", stage="2", stores=["a.zarr", "b.zarr"], store_weights=[1, 3], steps=7,
                          num_frames=9, resume=False, weights=None)
    job = _job()
    launched = job.build(job.from_args(_parser().parse_args(train_command(form)[4:])))[0]
    assert launched == train_config(form) == TrainConfig(config="tiny", stage="2", stores=["a.zarr", "b.zarr"],
                                                         store_weights=[1.0, 3.0], steps=7, num_frames=9, resume=False)
    assert TrainRunParams.model_json_schema()["properties"]["batch_size"]["description"]  # was undescribed
