"""Checkpoint files written before TrainConfig's names were aligned with its public names still read."""

import json

from model.checkpoints import read_train_config
from model.train import TrainConfig


def test_old_train_config_names_read_as_todays(tmp_path):
    old = {"model": "tiny", "stage": "2", "data": ["a.zarr"], "data_weights": [1.0], "pretrained": None, "steps": 3}
    (tmp_path / "train_config.json").write_text(json.dumps(old))
    run = read_train_config(tmp_path)
    assert run == {"config": "tiny", "stage": "2", "stores": ["a.zarr"], "store_weights": [1.0], "weights": None,
                   "steps": 3}
    assert TrainConfig(**run).stores == ["a.zarr"]
