"""Which formulation of each layer a platform runs, decided in one place.

A config says `auto` (or names a formulation) for `model.depthwise`, `model.pointwise` and
`rematerialize`; `resolve_backend` turns that into the concrete choices for one platform,
once, before any module is built. The modules only ever see concrete values, so the
float model, its int8 twin, an ahead-of-time compile for an accelerator on a CPU host and
a benchmark all run what this function says, and a run can record it.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import ml_collections

from effnetlite import config as config_lib
from effnetlite.errors import UserError


@dataclasses.dataclass(frozen=True)
class Backend:
  """The concrete layer formulations for one platform."""
  platform: str        # 'cpu' | 'gpu' | 'tpu'
  depthwise: str       # 'conv' | 'shifted'
  pointwise: str       # 'conv' | 'dot'
  rematerialize: bool

  def as_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


# What `auto` means per platform (README "Backends"; figures in benchmarks/README.md).
# CPU: XLA:CPU's grouped convolution is several times slower than shifted slices, and its
# 1x1 kernel gradient transposes the cotangent before a slow matmul. GPU: recomputing
# BN + ReLU6 in the backward pass cuts lite0's float32 temporaries on 8 H100s by a sixth;
# XLA:TPU and XLA:CPU keep less without it, and on CPU it also costs time.
AUTO = {
    "cpu": Backend("cpu", depthwise="shifted", pointwise="dot", rematerialize=False),
    "gpu": Backend("gpu", depthwise="conv", pointwise="conv", rematerialize=True),
    "tpu": Backend("tpu", depthwise="conv", pointwise="conv", rematerialize=False),
}
# What an export traces whatever trained the weights: the formulations TFLite's converter
# turns into DEPTHWISE_CONV_2D and CONV_2D.
EXPORTABLE = {"depthwise": "conv", "pointwise": "conv"}


def _choice(key: str, value: str, choices: tuple[str, ...]) -> str:
  if value not in choices:
    raise UserError(f"config.{key}={value!r} is not allowed; use {', '.join(choices)}")
  return value


def resolve_backend(config: ml_collections.ConfigDict, platform: str | None = None
                    ) -> Backend:
  """The concrete formulations `config` asks for on `platform` (default: JAX's default
  backend). A step compiled ahead of time for an accelerator names its platform: traced
  on a CPU host, `auto` would otherwise pick the CPU formulations."""
  platform = platform or jax.default_backend()
  if platform not in AUTO:
    raise UserError(f"platform {platform!r} has no layer formulations; use {', '.join(AUTO)}")
  auto = AUTO[platform]
  depthwise = _choice("model.depthwise", config.model.depthwise, config_lib.DEPTHWISE_IMPLS)
  pointwise = _choice("model.pointwise", config.model.pointwise, config_lib.POINTWISE_IMPLS)
  rematerialize = _choice("rematerialize", config.rematerialize, config_lib.REMATERIALIZE)
  return Backend(
      platform,
      depthwise=auto.depthwise if depthwise == "auto" else depthwise,
      pointwise=auto.pointwise if pointwise == "auto" else pointwise,
      rematerialize=auto.rematerialize if rematerialize == "auto" else
      rematerialize == "elementwise")
