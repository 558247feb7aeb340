"""Exact parameter and multiply-accumulate counts of a built variant, without building it.

Counted from the block table, layer by layer: they equal what the Flax module
holds (tests compare with the initialised variables) and what its convolutions
compute at a resolution.
"""

from __future__ import annotations

from typing import Any

from effnetlite.nn.architecture import HEAD_CHANNELS, STEM_CHANNELS, block_specs
from effnetlite.nn.padding import same_output_size


def count_params(width: float, depth: float, num_classes: int = 1000,
                 stem_channels: int = STEM_CHANNELS,
                 head_channels: int = HEAD_CHANNELS) -> int:
  """Trainable parameters: conv/dense kernels, dense bias, BN scale and offset."""
  bn = lambda c: 2 * c  # noqa: E731 - scale + offset
  total = 3 * 3 * 3 * stem_channels + bn(stem_channels)
  specs = block_specs(width, depth, stem_channels=stem_channels)
  for block in specs:
    hidden = block.expanded_channels
    if block.expand_ratio != 1:
      total += block.in_channels * hidden + bn(hidden)
    total += block.kernel_size ** 2 * hidden + bn(hidden)
    total += hidden * block.out_channels + bn(block.out_channels)
  total += specs[-1].out_channels * head_channels + bn(head_channels)
  total += head_channels * num_classes + num_classes
  return total


def count_macs(width: float, depth: float, resolution: int, num_classes: int = 1000,
               stem_channels: int = STEM_CHANNELS,
               head_channels: int = HEAD_CHANNELS) -> int:
  """Exact multiply-accumulates of all convolutions and the classifier."""
  size = same_output_size(resolution, 2)
  total = size * size * 3 * 3 * 3 * stem_channels
  specs = block_specs(width, depth, stem_channels=stem_channels)
  for block in specs:
    hidden = block.expanded_channels
    if block.expand_ratio != 1:
      total += size * size * block.in_channels * hidden
    size = same_output_size(size, block.stride)
    total += size * size * block.kernel_size ** 2 * hidden
    total += size * size * hidden * block.out_channels
  total += size * size * specs[-1].out_channels * head_channels
  total += head_channels * num_classes
  return total


def config_params(config: Any) -> int:
  """Parameters of the network a full config describes (every model key counts)."""
  model = config.model
  return count_params(model.width, model.depth, config.dataset.num_classes,
                      model.stem_channels, model.head_channels)


def config_macs(config: Any, num_classes: int | None = None) -> int:
  """Multiply-accumulates of the network a full config describes, at its resolution
  (with a `num_classes` classifier instead of the config's, when given)."""
  model = config.model
  return count_macs(model.width, model.depth, model.resolution,
                    num_classes or config.dataset.num_classes, model.stem_channels,
                    model.head_channels)
