"""The compound-scaling rule of EfficientNet and its rounding, in plain Python.

A variant is the base network scaled by a width and a depth multiplier at some
resolution; compound scaling derives all three from coefficients alpha (depth),
beta (width), gamma (resolution) and phi. The rounding follows the TF/TPU
`efficientnet/lite` builder: channels to multiples of 8 but never more than 10%
down, repeats up, resolutions to multiples of 8.
"""

from __future__ import annotations

import dataclasses
import math

DIVISOR = 8


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


def round_resolution(resolution: float, divisor: int = DIVISOR) -> int:
  """The nearest multiple of `divisor` (at least `divisor`): strides of 2 halve it cleanly."""
  return max(divisor, int(round(resolution / divisor)) * divisor)


@dataclasses.dataclass(frozen=True)
class ScaledModel:
  """Width and depth multipliers and input side of a compound-scaled network."""
  width: float
  depth: float
  resolution: int


def compound_scale(width: float, depth: float, resolution: int, alpha: float, beta: float,
                   gamma: float, phi: float) -> ScaledModel:
  """The one compound-scaling rule, used by the grid search and scripts/scale.py.

  depth * alpha^phi, width * beta^phi, resolution * gamma^phi (rounded to a multiple
  of 8). The multipliers keep 6 decimals: what a config file shows, and more than the
  channel rounding can tell apart.
  """
  return ScaledModel(width=round(width * beta ** phi, 6), depth=round(depth * alpha ** phi, 6),
                     resolution=round_resolution(resolution * gamma ** phi))
