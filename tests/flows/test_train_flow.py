"""Training from Prefect: the trainer runs as its own process, checkpoints are published, a re-run resumes;
the top-level flow chains labeling, report and training."""

import json

from prefect.utilities.callables import parameter_schema
from synthetic_manifest import write_manifest

from flows.labeling import LabelRunParams
from flows.pipeline import worldreel_pipeline_flow
from flows.training import TrainRunParams, train_command, train_flow
from pipelines.synthetic_set import scene_configs, write_synthetic_set
from storage import LabelStore

H, W, T = 32, 64, 9  # the tiny model needs multiples of 16


def _steps(run_dir):
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_train_flow_publishes_checkpoints_and_resumes(tmp_path):
    store = LabelStore.create(tmp_path / "gt.zarr", precision="float32")
    write_synthetic_set(tmp_path / "synth", scene_configs(1, H, W, seed=1, num_frames=T), store)
    params = TrainRunParams(stores=[str(store.root)], output_dir=str(tmp_path / "run"), steps=2, save_every=1,
                            device="cpu")
    result = train_flow(params)
    assert [p.split("/")[-1] for p in result["checkpoints"]] == ["step_00000001", "step_00000002"]
    assert result["metrics"]["step"] == 2 and result["metrics"]["loss"] > 0
    resumed = train_flow(params.model_copy(update={"steps": 3}))  # e.g. a retried or extended run
    assert _steps(tmp_path / "run") == [1, 2, 3]  # continued from step 2, nothing repeated
    assert resumed["metrics"]["step"] == 3


def test_train_command_names_every_store_and_option():
    params = TrainRunParams(stores=["a.zarr", "b.zarr"], store_weights=[1, 3], output_dir="out", stage="2",
                            weights="/models/cogvideox", config="cogvideox-5b-i2v", init_from="ck", gpus=8,
                            strategy="fsdp")
    command = train_command(params)
    assert command[command.index("--strategy") + 1] == "fsdp" and command[command.index("--gpus") + 1] == "8"
    assert train_command(params.model_copy(update={"strategy": "ddp"}))[command.index("--strategy") + 1] == "ddp"
    schema = parameter_schema(train_flow.fn).model_dump()["definitions"]["TrainRunParams"]  # the UI's form
    assert schema["properties"]["strategy"]["enum"] == ["ddp", "fsdp"] and schema["properties"]["strategy"]["default"] == "ddp"
    assert command[command.index("--stage") + 1] == "2"
    assert [command[i + 1] for i, c in enumerate(command) if c == "--store"] == ["a.zarr", "b.zarr"]
    assert command[command.index("--store-weights") + 1 : command.index("--store-weights") + 3] == ["1.0", "3.0"]
    assert command[command.index("--weights") + 1] == "/models/cogvideox"


def test_pipeline_flow_labels_reports_and_trains_on_accepted_clips(tmp_path):
    manifest, good, bad = write_manifest(tmp_path / "data", num_good=1, with_bad=False)
    label = LabelRunParams(manifest=str(manifest), store=str(tmp_path / "labels.zarr"), height=96, width=144, frames=9,
                           workers=1, batch_size=1)
    train = TrainRunParams(stores=[], output_dir=str(tmp_path / "run"), steps=1, save_every=1, device="cpu")
    result = worldreel_pipeline_flow(label, train, str(tmp_path / "report"))
    assert result["labeling"]["accepted"] == len(good)
    assert (tmp_path / "report" / "index.html").exists()
    assert _steps(tmp_path / "run") == [1]
