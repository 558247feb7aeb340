"""Checkpoints on disk: a step saved once, the inference weights read as a view of it, and
run directories written before that (a `model` item beside `state` in every step) still
evaluate, export and resume."""

import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
from helpers import ROOT, tiny_config

from effnetlite import runs
from effnetlite.train import steps
from effnetlite.train import optimizer as optimizer_lib
from effnetlite.validation import validate_config
from effnetlite.weights import checkpoints, factory, loading

OLD_RUN = os.path.join(ROOT, "tests", "fixtures", "old_format_run")


def _bytes(directory: str) -> int:
  return sum(os.path.getsize(os.path.join(folder, name))
             for folder, _, names in os.walk(directory) for name in names)


def test_a_step_holds_the_train_state_once_and_its_weights_read_as_a_view(tmp_path):
  config = validate_config(tiny_config())
  module, variables = factory.create_model(config)
  optimizer = optimizer_lib.make_optimizer(config, lambda step: 0.1)
  state = steps.create_train_state(variables, optimizer, jax.random.PRNGKey(0))
  state = state.replace(ema_params=jax.tree.map(lambda x: x + 1, state.params))
  run = runs.Run(str(tmp_path / "run"))
  run.save_config(config)
  manager = checkpoints.make_manager(run.checkpoints_dir, asynchronous=False)
  checkpoints.save(manager, 5, state, config.to_dict(), force=True)
  step = os.path.join(run.checkpoints_dir, "5")
  assert sorted(n for n in os.listdir(step) if not n.startswith(("_", "commit"))) == [
      "config", "state"]
  state_bytes = sum(x.nbytes for x in jax.tree.leaves(state))
  assert _bytes(step) <= 1.05 * state_bytes  # the arrays once, plus orbax's metadata
  for name in (run.path, run.checkpoints_dir, step):
    found, _, stored = checkpoints.read_newest(name)
    assert str(found) == step
    assert sorted(stored) == ["batch_stats", "ema_batch_stats", "ema_params", "params"]
    np.testing.assert_array_equal(stored["ema_params"]["stem_conv"]["kernel"],
                                  np.asarray(state.params["stem_conv"]["kernel"]) + 1)


def _old_run(tmp_path) -> str:
  copy = str(tmp_path / "old_run")
  shutil.copytree(OLD_RUN, copy)
  return copy


def test_a_run_from_before_still_evaluates_and_exports(tmp_path, photo_files):
  from effnetlite.evaluation.evaluate_weights import evaluate_weights
  from effnetlite.export import export_model
  from effnetlite.export.options import ExportOptions
  run = _old_run(tmp_path)
  config = validate_config(runs.Run(run).load_config())
  # The old `model` item is what evaluation reads: the same arrays as the `state` item's.
  step = os.path.join(run, "checkpoints", "2")
  saved_state = ocp.StandardCheckpointer().restore(os.path.join(step, "state"))
  _, template = factory.create_model(config)
  variables = loading.load_weights(run, config, template)
  np.testing.assert_array_equal(variables["params"]["classifier"]["kernel"],
                                saved_state["ema_params"]["classifier"]["kernel"])
  metrics = evaluate_weights(config, run, "test[:32]", progress=False)
  assert metrics["step"] == 2 and metrics["kept_as"] == "latest" and metrics["count"] == 32
  photos = str(tmp_path / "photos")
  os.makedirs(photos)
  for name in ("chelsea", "coffee"):
    shutil.copy(photo_files[name], photos)
  report = export_model.export_model(config, ExportOptions(weights=run, check_dir=photos),
                                     str(tmp_path / "old.tflite"))
  assert report["max_abs_output_diff"] <= 1e-4


def test_a_run_from_before_resumes_and_saves_the_new_way(tmp_path):
  from effnetlite.train.loop import train_and_evaluate
  run = _old_run(tmp_path)
  config = runs.Run(run).load_config()
  config.max_steps = 3
  train_and_evaluate(config, run)
  new_step = os.path.join(run, "checkpoints", "3")
  assert sorted(n for n in os.listdir(new_step) if not n.startswith(("_", "commit"))) == [
      "config", "state"]
  assert int(checkpoints.read_newest(run)[0].name) == 3
