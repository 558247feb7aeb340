"""The run directory read without JAX: finding it, its saved config, class names, changes."""

import json
import os

import pytest
from helpers import tiny_config

from effnetlite import runs
from effnetlite.errors import UserError
from effnetlite.validation import validate_config


def _run_dir(root, config) -> str:
  run = os.path.join(root, "run")
  os.makedirs(os.path.join(run, "checkpoints", "4"))
  os.makedirs(os.path.join(run, "best", "2"))
  runs.save_config(run, config)
  return run


def test_a_run_is_found_from_itself_and_its_checkpoint_folders(tmp_path):
  run = _run_dir(tmp_path, tiny_config())
  for path in ("", "best", "checkpoints", "checkpoints/4", "best/2"):
    assert runs.find_run(os.path.join(run, path)) == run
  assert runs.find_run(str(tmp_path)) is None
  os.makedirs(tmp_path / "config_only")
  (tmp_path / "config_only" / "config.json").write_text("{}")
  assert runs.find_run(str(tmp_path / "config_only")) is None  # no checkpoints: not a run


def test_the_saved_config_loads_back_equal_and_valid(tmp_path):
  config = validate_config(tiny_config())
  run = _run_dir(tmp_path, config)
  with open(os.path.join(run, "config.json"), encoding="utf-8") as handle:
    assert json.load(handle)["augment"]["area_range"] == [0.08, 1.0]  # JSON has no tuples
  loaded = runs.load_config(run)
  assert loaded.augment.area_range == (0.08, 1.0)
  assert loaded.to_dict() == config.to_dict()
  assert validate_config(loaded).to_dict() == config.to_dict()


def test_an_unreadable_saved_config_is_one_user_error(tmp_path):
  (tmp_path / "config.json").write_text("{not json")
  with pytest.raises(UserError, match="config.json is not a readable config"):
    runs.load_config(str(tmp_path / "config.json"))


def test_differences_list_changed_keys_old_and_new():
  old, new = tiny_config(), tiny_config()
  new.optimizer.base_learning_rate = 0.1
  new.augment.area_range = (0.5, 1.0)
  assert runs.differences(old, new) == [("augment.area_range", [0.08, 1.0], [0.5, 1.0]),
                                        ("optimizer.base_learning_rate", 0.016, 0.1)]
  assert runs.describe(runs.differences(old, new, ["optimizer.base_learning_rate"])) == (
      "optimizer.base_learning_rate 0.016 -> 0.1")


def test_another_architecture_is_refused_and_num_classes_minus_one_taken(tmp_path):
  run = _run_dir(tmp_path, tiny_config())
  config = tiny_config()
  config.batch_size = 64  # may differ
  assert runs.config_for_weights(config, run) is config
  config.dataset.num_classes = runs.FROM_DATA
  assert runs.config_for_weights(config, run).dataset.num_classes == 10
  config.model.head_channels = 640
  with pytest.raises(UserError, match=r"config.model.head_channels=640 but the run has 1280"):
    runs.config_for_weights(config, os.path.join(run, "best"))
  unresolved = tiny_config()
  unresolved.dataset.num_classes = runs.FROM_DATA
  with pytest.raises(UserError, match="num_classes=-1"):
    runs.config_for_weights(unresolved, "pretrained")


def test_class_names_round_trip_and_history_rows(tmp_path):
  run = _run_dir(tmp_path, tiny_config())
  runs.save_class_names(run, ["astronaut", "cat", "coffee"])
  assert runs.read_class_names(run) == ["astronaut", "cat", "coffee"]
  assert runs.format_class_names(["a", "b", "c"], shown=2) == "0 a, 1 b, ... (3 in all)"
  runs.record_changes(run, 4, [("batch_size", 16, 32)])
  with open(os.path.join(run, runs.HISTORY_FILE), encoding="utf-8") as handle:
    row = json.loads(handle.read())
  assert row["step"] == 4 and row["changed"] == {"batch_size": [16, 32]}


def test_a_run_stopped_before_its_first_checkpoint_has_none(tmp_path):
  run = _run_dir(tmp_path, tiny_config())
  assert runs.has_checkpoints(run)
  os.rmdir(os.path.join(run, "checkpoints", "4"))
  os.rmdir(os.path.join(run, "best", "2"))
  assert not runs.has_checkpoints(run)  # a new architecture may then use the directory
