"""The EfficientNet-Lite architecture as data: the B0 stage table and the blocks of a variant.

Plain Python (no JAX), so that configs, the grid search, the cost counts and the
weight importers can reason about a variant without building it. Lite rules (TF/TPU
`efficientnet/lite` builder): no squeeze-excite, stem and head channels not scaled
with width, first and last stage never depth-scaled.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

from effnetlite.nn.padding import same_output_size
from effnetlite.nn.scaling import round_filters, round_repeats


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


def final_feature_size(resolution: int, stages: Sequence[StageSpec] = BASE_STAGES) -> int:
  """Side of the last feature map (stride 32 overall with TF 'SAME')."""
  size = same_output_size(resolution, 2)
  for stage in stages:
    size = same_output_size(size, stage.stride)
  return size
