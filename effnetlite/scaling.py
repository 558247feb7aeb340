"""Compound-scaling rules of EfficientNet-Lite and exact cost of the built network.

Everything here is plain Python (no JAX) so that configs, the grid search and the
model table can reason about a variant without building it. The rules follow the
TF/TPU `efficientnet/lite` builder: channels rounded to multiples of 8, repeats
rounded up, stem (32) and head (1280) fixed, first and last stage never
depth-scaled.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence


@dataclasses.dataclass(frozen=True)
class StageSpec:
  """One stage of the base (B0) network before scaling."""
  kernel_size: int
  stride: int
  expand_ratio: int
  out_channels: int
  repeats: int


# (kernel, stride, expand, out, repeats) of EfficientNet-B0; lite drops squeeze-excite.
BASE_STAGES: tuple[StageSpec, ...] = (
    StageSpec(3, 1, 1, 16, 1),
    StageSpec(3, 2, 6, 24, 2),
    StageSpec(5, 2, 6, 40, 2),
    StageSpec(3, 2, 6, 80, 3),
    StageSpec(5, 1, 6, 112, 3),
    StageSpec(5, 2, 6, 192, 4),
    StageSpec(3, 1, 6, 320, 1),
)
STEM_CHANNELS = 32   # fixed for every lite variant
HEAD_CHANNELS = 1280  # fixed for every lite variant
DIVISOR = 8


@dataclasses.dataclass(frozen=True)
class BlockSpec:
  """One MBConv block of the scaled network, as built."""
  stage: int
  kernel_size: int
  stride: int
  expand_ratio: int
  in_channels: int
  out_channels: int
  drop_connect_rate: float

  @property
  def expanded_channels(self) -> int:
    return self.in_channels * self.expand_ratio

  @property
  def has_residual(self) -> bool:
    return self.stride == 1 and self.in_channels == self.out_channels


def round_filters(filters: int, width: float, divisor: int = DIVISOR) -> int:
  """Scales a channel count by `width`, rounding to a multiple of `divisor`.

  Rounds to nearest, but never more than 10% down (TF builder rule).
  """
  scaled = filters * width
  new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
  if new < 0.9 * scaled:
    new += divisor
  return int(new)


def round_repeats(repeats: int, depth: float) -> int:
  """Scales a stage's block count by `depth`, rounding up."""
  return int(math.ceil(depth * repeats))


def stage_plan(width: float, depth: float,
               stages: Sequence[StageSpec] = BASE_STAGES) -> list[tuple[int, int]]:
  """(out_channels, repeats) per stage after scaling; first/last stage keep depth."""
  plan = []
  for index, stage in enumerate(stages):
    fixed_depth = index in (0, len(stages) - 1)
    repeats = stage.repeats if fixed_depth else round_repeats(stage.repeats, depth)
    plan.append((round_filters(stage.out_channels, width), repeats))
  return plan


def block_specs(width: float, depth: float, drop_connect_rate: float = 0.2,
                stages: Sequence[StageSpec] = BASE_STAGES,
                stem_channels: int = STEM_CHANNELS) -> list[BlockSpec]:
  """Every block of the scaled network in order, with its drop-connect rate.

  Block inputs come from the previous block's output (the stem stays at 32
  channels even where round_filters(32) would be 40 or 48). Block i of N drops
  with rate drop_connect_rate * i / N, so the first block never drops.
  """
  plan = stage_plan(width, depth, stages)
  total = sum(repeats for _, repeats in plan)
  specs, in_channels = [], stem_channels
  for stage_index, (stage, (out_channels, repeats)) in enumerate(zip(stages, plan)):
    for repeat in range(repeats):
      specs.append(BlockSpec(
          stage=stage_index,
          kernel_size=stage.kernel_size,
          stride=stage.stride if repeat == 0 else 1,
          expand_ratio=stage.expand_ratio,
          in_channels=in_channels,
          out_channels=out_channels,
          drop_connect_rate=drop_connect_rate * len(specs) / total))
      in_channels = out_channels
  return specs


def same_output_size(size: int, stride: int) -> int:
  """TF 'SAME' output size: ceil(size / stride)."""
  return -(-size // stride)


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


def final_feature_size(resolution: int, stages: Sequence[StageSpec] = BASE_STAGES) -> int:
  """Side of the last feature map (stride 32 overall with TF 'SAME')."""
  size = same_output_size(resolution, 2)
  for stage in stages:
    size = same_output_size(size, stage.stride)
  return size
