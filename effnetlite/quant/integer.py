"""XNNPACK's int8 arithmetic, the way LiteRT's default CPU path runs an int8 file, in
float32 JAX: the requantisation of an exact int32 accumulator, the fixed-point residual
ADD, the integer average pool and an exact float32 1x1 product. The twin
(`effnetlite.quant.model`) builds its layers from these; each returns the codes the file
computes, and `straight_through` gives them the gradient of the real-valued operation.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from effnetlite.nn import layers
from effnetlite.quant import fake_quant as fq


class QTensor(NamedTuple):
  """An activation on its int8 grid: float values, scale, zero point."""
  value: jax.Array
  scale: Any
  zero_point: Any


def straight_through(real: jax.Array, codes: jax.Array, scale: Any, zero_point: Any
                     ) -> jax.Array:
  """codes x scale forward (codes less the zero point); backward, the gradient of `real`
  clipped to the int8 range (zero outside it)."""
  exact = lax.stop_gradient(codes * scale)
  clipped = jnp.clip(real, (fq.INT8_MIN - zero_point) * scale, (fq.INT8_MAX - zero_point) * scale)
  return clipped + lax.stop_gradient(exact - clipped)


def requantize(accumulator: jax.Array, accumulator_scale: Any, scale: Any, zero_point: Any,
               relu: bool) -> jax.Array:
  """The int8 codes (less the zero point) of a conv / fully-connected output as XNNPACK
  computes them from the exact int32 accumulator: float32(acc) times the float32
  multiplier (s_in * s_w) / s_out, clamped (fused ReLU6), rounded half to even."""
  multiplier = fq.ieee_divide(accumulator_scale, scale)
  low, high = float(fq.INT8_MIN), float(fq.INT8_MAX)
  if relu:  # TFLite's fused-activation range: the codes of 0 and 6, within int8
    low = jnp.maximum(low, zero_point)
    high = jnp.minimum(high, zero_point + fq.round_half_away(fq.ieee_divide(6.0, scale)))
  acc = lax.stop_gradient(accumulator)
  return jnp.round(jnp.clip(acc * multiplier, low - zero_point, high - zero_point))


def fixed_point_add(a: QTensor, b: QTensor, scale: Any, zero_point: Any) -> jax.Array:
  """The int8 codes (less the zero point) of XNNPACK's residual ADD: each input's scale
  ratio s_a / s_out, s_b / s_out (float32) as a fixed-point multiplier of 2^shift,
  shift = 20 - floor(log2(the larger ratio)) (multipliers rounded half to even), the two
  products of the codes less their zero points summed in int32 with 2^(shift-1), shifted
  right arithmetically (halves round up), clamped."""
  ratio_a, ratio_b = fq.ieee_divide(a.scale, scale), fq.ieee_divide(b.scale, scale)
  _, exponent = jnp.frexp(jnp.maximum(ratio_a, ratio_b))  # larger ratio = m * 2^exponent
  shift = (21 - exponent).astype(jnp.int32)
  multiplier_a = jnp.round(jnp.ldexp(ratio_a, shift)).astype(jnp.int32)
  multiplier_b = jnp.round(jnp.ldexp(ratio_b, shift)).astype(jnp.int32)
  codes_a = jnp.round(lax.stop_gradient(a.value / a.scale)).astype(jnp.int32)
  codes_b = jnp.round(lax.stop_gradient(b.value / b.scale)).astype(jnp.int32)
  total = (multiplier_a * codes_a + multiplier_b * codes_b
           + jnp.left_shift(jnp.int32(1), shift - 1))
  codes = jnp.right_shift(total, shift).astype(jnp.float32)
  return jnp.clip(codes, fq.INT8_MIN - zero_point, fq.INT8_MAX - zero_point)


def avg_pool_int8(x: QTensor) -> QTensor:
  """TFLite's int8 full-window AVERAGE_POOL_2D: the mean of the int8 codes rounded half
  away from zero, at the input's scale and zero point (straight-through gradient)."""
  mean = jnp.mean(x.value, axis=(1, 2))
  codes = jnp.round(x.value / x.scale) + x.zero_point
  count = x.value.shape[1] * x.value.shape[2]
  total = jnp.sum(codes, axis=(1, 2))
  rounded = jnp.sign(total) * jnp.floor((jnp.abs(total) + count // 2) / count)
  exact = (rounded - x.zero_point) * x.scale
  return QTensor(mean + lax.stop_gradient(exact - mean), x.scale, x.zero_point)


@jax.custom_vjp
def pointwise_exact(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """`layers.pointwise_dot` at full float32 precision (no TF32: integer operands stay exact),
  with its gradient rule."""
  return lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())),
                         precision=lax.Precision.HIGHEST)


pointwise_exact.defvjp(lambda x, kernel: (pointwise_exact(x, kernel), (x, kernel)),
                       layers._pointwise_dot_bwd)  # noqa: SLF001 - the same rule
