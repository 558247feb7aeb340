"""This project's training checkpoints: orbax directories, written atomically.

A checkpoint step holds three items:
  `state`  - everything training needs to resume (params, optimizer, EMA, step, RNG),
  `model`  - the inference variables alone: raw and EMA params and BN statistics,
  `config` - the resolved config as JSON, so a reader can check the variant.
Orbax writes each step into a temporary directory and renames it when complete,
so a run killed mid-save never leaves a step that a reader would pick up.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import orbax.checkpoint as ocp
from etils import epath
from flax import traverse_util

from effnetlite.errors import WeightsError
from effnetlite.weights import importers

ITEMS = ("state", "model", "config")


def make_manager(directory: str, keep: int | None = 3, asynchronous: bool = True,
                 best_metric: str | None = None) -> ocp.CheckpointManager:
  """A manager keeping `keep` steps (or, with `best_metric`, the best `keep`)."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, enable_async_checkpointing=asynchronous,
      best_fn=(lambda metrics: metrics[best_metric]) if best_metric else None,
      best_mode="max", keep_checkpoints_without_metrics=best_metric is None,
      cleanup_tmp_directories=True)
  return ocp.CheckpointManager(epath.Path(directory), options=options, item_names=ITEMS)


def inference_variables(state: Any) -> dict[str, Any]:
  """The `model` item: raw and EMA variables of a training state."""
  return {"params": state.params, "batch_stats": state.batch_stats,
          "ema_params": state.ema_params, "ema_batch_stats": state.ema_batch_stats}


def save(manager: ocp.CheckpointManager, step: int, state: Any, config: Mapping[str, Any],
         metrics: Mapping[str, float] | None = None, include_state: bool = True,
         force: bool = False) -> bool:
  """Saves one step; `include_state=False` stores only the inference variables."""
  items = {"model": ocp.args.StandardSave(inference_variables(state)),
           "config": ocp.args.JsonSave(dict(config))}
  if include_state:
    items["state"] = ocp.args.StandardSave(state)
  return manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=force)


def restore_state(manager: ocp.CheckpointManager, abstract_state: Any) -> Any | None:
  """The latest complete training state, or None when the directory has none."""
  step = manager.latest_step()
  if step is None:
    return None
  restored = manager.restore(
      step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state)))
  return restored.state


def step_directory(path: str) -> epath.Path | None:
  """The step directory `path` names: a step itself, or the newest finalised step of a
  checkpoint directory or of a workdir's `checkpoints/`."""
  root = epath.Path(path)
  if (root / "model").is_dir() and (root / "config").exists():
    return root
  for directory in (root, root / "checkpoints"):
    if directory.is_dir():
      latest = ocp.step.latest_step_metadata(directory, ocp.step.standard_name_format())
      if latest is not None and (latest.path / "model").is_dir():
        return latest.path
  return None


def is_training_checkpoint(path: str) -> bool:
  return os.path.isdir(path) and step_directory(path) is not None


def read_config(path: str) -> dict[str, Any]:
  """The config a checkpoint was trained with."""
  directory = step_directory(path)
  if directory is None:
    raise WeightsError(f"{path} holds no training checkpoint")
  return ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(directory / "config")


def read_inference_variables(path: str, template: Mapping[str, Any], ema: bool = True,
                             reset_classifier: bool | None = False,
                             model_name: str = "the model") -> dict[str, Any]:
  """Inference variables (EMA by default) from a checkpoint, checked against `template`."""
  directory = step_directory(path)
  if directory is None:
    raise WeightsError(f"{path} holds no training checkpoint")
  stored = ocp.StandardCheckpointer().restore(directory / "model")
  prefix = "ema_" if ema else ""
  tensors = traverse_util.flatten_dict(stored, sep="/")
  flat_template = traverse_util.flatten_dict(dict(template), sep="/")
  names = {ours: (prefix + ours, lambda a: a) for ours in flat_template}
  # Only the requested copy (raw or EMA) is compared; the other is there by design.
  tensors = {k: v for k, v in tensors.items() if k.startswith("ema_") == ema}
  return importers.assign(template, tensors, names, reset_classifier,
                          model_name=f"{model_name} (checkpoint {directory})")
