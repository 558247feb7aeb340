"""int8 fake quantisation: the scale/zero-point rules, the straight-through estimator, and
the `quant.fake_quant` StableHLO composite that TFLite's converter turns into int8 tensors.

The rules are TFLite's int8 spec (ai.google.dev/edge/litert/models/quantization_spec):
- weights: symmetric, per output channel, zero point 0, narrow range [-127, 127],
  scale = max|w| / 127;
- activations: asymmetric per tensor, [-128, 127], the range [lo, hi] widened to hold 0,
  scale = (hi - lo) / 255, zero point = round(-128 - lo / scale);
- biases: int32, scale = input scale * weight scale (per channel), zero point 0.

`fake_quant` is what training runs: quantise-dequantise in float with a clipped
straight-through gradient (identity inside the representable range, zero outside;
scales get no gradient). `fake_quant_composite` is the same function wrapped in
`jax.lax.composite(name="quant.fake_quant")` with the scale and zero point as static
attributes, the form the converter reads under `converter._experimental_strict_qdq = True`
(attribute names and types as qwix's OdmlConversionProvider writes them).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

INT8_MIN, INT8_MAX = -128, 127
WEIGHT_MIN = -127                    # narrow range: symmetric weights never use -128
INT32_MAX = 2 ** 31 - 1
# Scales never reach zero (an all-zero channel or a constant activation): TFLite refuses 0.
MIN_SCALE = 1e-8


def exact_float32(x: jax.Array) -> jax.Array:
  """x, opaque to XLA's algebraic simplifier: divisions by it stay IEEE divisions.

  XLA rewrites x / 255 as x * (1/255) and a / (b / c) as a * c / b, which round
  differently in the last bit; a requantisation multiplier one bit off rounds exact ties
  (float32(acc) * M landing on .5, about 1e-5 of the codes) the other way than the C
  runtime, and the difference grows downstream. Scales and multipliers therefore pass
  through here, so that they are the float32 values the TFLite file and XNNPACK compute.
  """
  return lax.optimization_barrier(x)


def ieee_divide(numerator: Any, denominator: Any) -> jax.Array:
  """numerator / denominator rounded as IEEE float32 division (as C computes it): both
  broadcast to one shape and made opaque first, so that XLA can neither divide by a
  broadcast scalar as a multiplication by its reciprocal nor fold the operands."""
  numerator, denominator = jnp.broadcast_arrays(jnp.asarray(numerator, jnp.float32),
                                                jnp.asarray(denominator, jnp.float32))
  return exact_float32(numerator) / exact_float32(denominator)


def weight_scale(kernel: Any, channel_axis: int = -1) -> Any:
  """Per-channel symmetric scale max|w| / 127 along `channel_axis` (float32)."""
  xp = jnp if isinstance(kernel, jax.Array) else np
  axes = tuple(a for a in range(kernel.ndim) if a != channel_axis % kernel.ndim)
  largest = xp.max(xp.abs(kernel), axis=axes).astype(np.float32)
  if xp is jnp:
    return exact_float32(jnp.maximum(ieee_divide(largest, INT8_MAX), MIN_SCALE))
  return np.maximum(largest / np.float32(INT8_MAX), np.float32(MIN_SCALE)).astype(np.float32)


def activation_params(low: Any, high: Any) -> tuple[Any, Any]:
  """(scale, zero point) of an int8 activation whose float range is [low, high].

  The range is widened to hold 0 (zero must be exact: padding, ReLU). The zero point
  is a float holding an integer in [-128, 127].
  """
  xp = jnp if isinstance(low, jax.Array) or isinstance(high, jax.Array) else np
  low = xp.minimum(xp.asarray(low, np.float32), 0.0)
  high = xp.maximum(xp.asarray(high, np.float32), 0.0)
  levels = np.float32(INT8_MAX - INT8_MIN)
  if xp is jnp:
    scale = exact_float32(jnp.maximum(ieee_divide(high - low, levels), MIN_SCALE))
    zero_point = jnp.clip(jnp.round(INT8_MIN - ieee_divide(low, scale)), INT8_MIN, INT8_MAX)
    return scale, zero_point.astype(np.float32)
  scale = np.maximum((high - low) / levels, np.float32(MIN_SCALE)).astype(np.float32)
  zero_point = xp.clip(xp.round(INT8_MIN - low / scale), INT8_MIN, INT8_MAX).astype(np.float32)
  return scale, zero_point


def _quantize_dequantize(x: jax.Array, scale: Any, zero_point: Any, low: int, high: int
                         ) -> jax.Array:
  """x rounded onto the int8 grid (round half to even, saturating), in float."""
  q = jnp.clip(jnp.round(x / scale) + zero_point, low, high)
  return (q - zero_point) * scale


def fake_quant(x: jax.Array, scale: Any, zero_point: Any = 0.0, narrow_range: bool = False
               ) -> jax.Array:
  """Quantise-dequantise with a clipped straight-through gradient.

  `scale` and `zero_point` broadcast against `x` (per-channel: shape (C,) on the last
  axis); they are treated as constants by the gradient.
  """
  scale, zero_point = jax.lax.stop_gradient(scale), jax.lax.stop_gradient(zero_point)
  low = WEIGHT_MIN if narrow_range else INT8_MIN
  quantized = _quantize_dequantize(x, scale, zero_point, low, INT8_MAX)
  clipped = jnp.clip(x, (low - zero_point) * scale, (INT8_MAX - zero_point) * scale)
  return clipped + jax.lax.stop_gradient(quantized - clipped)


def round_ste(x: jax.Array) -> jax.Array:
  """round(x) forward, identity backward."""
  return x + jax.lax.stop_gradient(jnp.round(x) - x)


def round_half_away(x: Any) -> Any:
  """std::round: halves away from zero (TFLite's rounding of activation bounds)."""
  xp = jnp if isinstance(x, jax.Array) else np
  return xp.sign(x) * xp.floor(xp.abs(x) + 0.5)


def fake_quant_composite(x: jax.Array, scale: np.ndarray, zero_point: np.ndarray | None = None,
                         narrow_range: bool = False,
                         quantization_dimension: int | None = None) -> jax.Array:
  """`fake_quant` as a `quant.fake_quant` composite with static (numpy) parameters.

  Weights: `zero_point=None` (symmetric), `narrow_range=True`, and for per-channel scales
  `quantization_dimension` = the kernel's output-channel axis. Activations: one scale
  and one zero point. The converter reads the attributes; the body is the decomposition
  JAX runs, the same arithmetic as `fake_quant`.
  """
  scale = np.asarray(scale, np.float32).reshape(-1)
  if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
    raise ValueError(f"invalid quantisation scale {scale}")
  attributes: dict[str, Any] = {"scale": scale, "dtype": "i8", "narrow_range": narrow_range}
  if zero_point is not None:
    attributes["zero_point"] = np.asarray(zero_point, np.int64).reshape(-1)
  if quantization_dimension is not None:
    attributes["quantization_dimension"] = int(quantization_dimension)
  zp_value = (np.zeros_like(scale) if zero_point is None
              else np.asarray(zero_point, np.float32).reshape(-1))
  if scale.size > 1:  # broadcast along the quantised axis
    shape = [1] * x.ndim
    shape[quantization_dimension] = scale.size
    scale_b, zp_b = scale.reshape(shape), zp_value.reshape(shape)
  else:
    scale_b, zp_b = scale[0], zp_value[0]
  low = WEIGHT_MIN if narrow_range else INT8_MIN

  @functools.partial(jax.lax.composite, name="quant.fake_quant")
  def op(value, **unused_attributes):
    return _quantize_dequantize(value, scale_b, zp_b, low, INT8_MAX)
  return op(x, **attributes)
