"""The video-evaluation flow: the typed form, a run on a tiny checkpoint, and its artifacts."""

from prefect.artifacts import Artifact
from prefect.utilities.callables import parameter_schema

from flows.video_eval import VideoEvalParams, evaluate_video_flow, train_then_evaluate_flow
from model.train import TrainConfig, Trainer
from pipelines.synthetic_set import scene_configs, write_synthetic_set
from storage import LabelStore


def test_evaluate_video_flow_on_a_tiny_checkpoint(tmp_path):
    store = LabelStore.create(tmp_path / "store", precision="float32")
    write_synthetic_set(tmp_path / "set", scene_configs(1, 64, 96, seed=4, num_frames=9), store)
    Trainer(TrainConfig(config="tiny", stage="2", stores=[str(store.root)], output_dir=str(tmp_path / "run"), steps=1,
                        device="cpu")).run()
    params = VideoEvalParams(checkpoint=str(tmp_path / "run"), baseline=str(tmp_path / "run"), stores=[str(store.root)],
                             out=str(tmp_path / "eval"), clips=1, steps=1, guidance=1.0, report_clips=1, device="cpu")
    result = evaluate_video_flow(params)
    assert (tmp_path / "eval" / "index.html").exists() and result["report"].endswith("index.html")
    rows = {row["metric"]: row for row in result["rows"]}
    # the same checkpoint twice with the same noise: one number in both columns
    assert rows["reproj_depth_rel"]["checkpoint"] == rows["reproj_depth_rel"]["baseline"] is not None

    markdown = Artifact.get("video-eval")
    assert "| depth_log_rmse |" in markdown.data and "pass --i3d-weights PATH" in markdown.data
    assert str(tmp_path / "eval" / "index.html") in markdown.data  # no report server: the page's path as text
    table = Artifact.get("video-eval-table")
    assert "reproj_depth_rel" in table.data and "baseline note" in table.data

    schema = parameter_schema(evaluate_video_flow.fn).model_dump()["definitions"]["VideoEvalParams"]  # the UI's form
    props = schema["properties"]
    assert set(schema["required"]) == {"checkpoint", "out"}
    assert props["scheduler"]["enum"] == ["dpm", "ddim"] and props["steps"]["minimum"] == 1
    assert "FVD" in props["i3d_weights"]["description"]
    chained = parameter_schema(train_then_evaluate_flow.fn).model_dump()  # train, then evaluate its run
    assert set(chained["properties"]) == {"train", "evaluate"}
    assert {"TrainRunParams", "VideoEvalParams"} <= set(chained["definitions"])
