"""Convolution layers with interchangeable implementations.

Each layer owns one parameter layout (Flax HWIO; depthwise (k, k, 1, C)) and
several numerically equivalent ways to compute it, so a backend can take the
fastest one without changing checkpoints or exports:

- depthwise `conv`: `lax.conv_general_dilated` with `feature_group_count=C`.
  Fast with cuDNN; exports to TFLite DEPTHWISE_CONV_2D.
- depthwise `shifted`: sum over the k*k strided slices of the padded input,
  each times its per-channel weight. XLA:CPU's grouped convolution is 5-14x
  slower than this, forward and backward.
- pointwise `conv`: a 1x1 convolution (exports to CONV_2D).
- pointwise `dot`: one matmul over the flattened pixels.
- `auto`: `shifted` / `dot` on CPU, `conv` elsewhere.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

DEPTHWISE_IMPLS = ("auto", "conv", "shifted")
POINTWISE_IMPLS = ("auto", "conv", "dot")
_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


def conv_kernel_init(fan_out: int) -> nn.initializers.Initializer:
  """TF EfficientNet init: N(0, sqrt(2 / fan_out)), fan_out = kh * kw * out.

  For depthwise kernels TF's layout is (k, k, C, 1), so fan_out is k * k; Flax's
  variance_scaling on (k, k, 1, C) would use k * k * C, sqrt(C) too small.
  """
  return nn.initializers.normal(stddev=math.sqrt(2.0 / fan_out))


def dense_kernel_init(num_classes: int) -> nn.initializers.Initializer:
  """TF EfficientNet dense init: uniform(+-1/sqrt(num_classes))."""
  bound = 1.0 / math.sqrt(num_classes)
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
      key, shape, dtype, -bound, bound)


def resolve_impl(impl: str, choices: tuple[str, ...], cpu_choice: str) -> str:
  """Maps 'auto' to the implementation that is fastest on the default backend."""
  if impl not in choices:
    raise ValueError(f"unknown implementation {impl!r}; choose one of {choices}")
  if impl != "auto":
    return impl
  return cpu_choice if jax.default_backend() == "cpu" else "conv"


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
  """TF 'SAME' padding: the odd extra pixel goes after (bottom/right)."""
  out = -(-size // stride)
  total = max((out - 1) * stride + kernel - size, 0)
  return total // 2, total - total // 2


def _windows(x: jax.Array, kernel_size: int, stride: int) -> list[jax.Array]:
  """The k*k strided views of the SAME-padded input that tap (i, j) of the kernel sees."""
  k = kernel_size
  batch, height, width, channels = x.shape
  x = jnp.pad(x, ((0, 0), same_padding(height, k, stride), same_padding(width, k, stride),
                  (0, 0)))
  out_h, out_w = -(-height // stride), -(-width // stride)
  return [lax.slice(x, (0, i, j, 0),
                    (batch, i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1, channels),
                    (1, stride, stride, 1))
          for i in range(k) for j in range(k)]


def _shifted_sum(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  taps = kernel.reshape(-1, kernel.shape[-1])
  result = None
  for window, tap in zip(_windows(x, kernel.shape[0], stride), taps):
    term = window * tap
    result = term if result is None else result + term
  return result


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def depthwise_shifted(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """Depthwise convolution as a sum of k*k strided, shifted slices.

  The kernel gradient has its own rule: autodiff materialises each of the k*k
  padded windows and reduces them one by one (~60% of a lite0 training step on
  CPU); one variadic reduce over all taps reads the input once and is 4-8x faster.
  """
  return _shifted_sum(x, kernel, stride)


def _depthwise_shifted_fwd(x, kernel, stride):
  return _shifted_sum(x, kernel, stride), (x, kernel)


def _input_gradient(cotangent: jax.Array, kernel: jax.Array, stride: int,
                    input_shape: tuple[int, ...]) -> jax.Array:
  """Gradient w.r.t. the input, as a correlation of the cotangent with the kernel.

  Input pixel y gets tap i from output o = (y + pad - i) / stride when that divides.
  With stride s the input splits into s*s phases (y mod s), each a plain shifted sum
  of the once-padded cotangent over the taps of its parity; the phases are then
  interleaved. Autodiff's k*k interior-padded copies instead make XLA recompute the
  cotangent's producers in every tap (~3x slower on CPU).
  """
  k = kernel.shape[0]
  batch, height, width, channels = input_shape
  pad_top, pad_left = same_padding(height, k, stride)[0], same_padding(width, k, stride)[0]
  rows, cols = -(-height // stride), -(-width // stride)
  padded = jnp.pad(cotangent, ((0, 0), (k, k), (k, k), (0, 0)))
  phases = []
  for p in range(stride):
    phase_row = []
    for q in range(stride):
      result = None
      for i in range(k):
        for j in range(k):
          if (p + pad_top - i) % stride or (q + pad_left - j) % stride:
            continue
          top, left = k + (p + pad_top - i) // stride, k + (q + pad_left - j) // stride
          window = lax.slice(padded, (0, top, left, 0), (batch, top + rows, left + cols, channels))
          term = window * kernel[i, j, 0]
          result = term if result is None else result + term
      phase_row.append(result)
    phases.append(phase_row)
  if stride == 1:
    return phases[0][0]
  interleaved = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)
  return interleaved.reshape(batch, rows * stride, cols * stride, channels)[:, :height, :width]


def _depthwise_shifted_bwd(stride, residuals, cotangent):
  x, kernel = residuals
  input_grad = _input_gradient(cotangent, kernel, stride, x.shape)
  # Products in float32, summed along rows first (short sums: float32 rounding stays
  # at autodiff's level for any batch or resolution), then over batch and rows.
  cotangent = cotangent.astype(jnp.float32)
  products = [window.astype(jnp.float32) * cotangent
              for window in _windows(x, kernel.shape[0], stride)]
  row_sums = lax.reduce(products, [jnp.float32(0)] * len(products),
                        lambda a, b: [u + v for u, v in zip(a, b)], (2,))
  kernel_grad = jnp.stack(row_sums).sum(axis=(1, 2))
  return input_grad.astype(x.dtype), kernel_grad.reshape(kernel.shape).astype(kernel.dtype)


depthwise_shifted.defvjp(_depthwise_shifted_fwd, _depthwise_shifted_bwd)


@jax.custom_vjp
def pointwise_dot(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """1x1 convolution as one matmul over all pixels: (..., Cin) @ (Cin, Cout)."""
  return lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def _pointwise_dot_fwd(x, kernel):
  return pointwise_dot(x, kernel), (x, kernel)


def _pointwise_dot_bwd(residuals, cotangent):
  x, kernel = residuals
  input_grad = lax.dot_general(cotangent, kernel, (((cotangent.ndim - 1,), (1,)), ((), ())))
  pixels_in = x.reshape(-1, x.shape[-1])
  pixels_out = cotangent.reshape(-1, cotangent.shape[-1])
  if pixels_in.shape[1] <= pixels_out.shape[1]:
    kernel_grad = jnp.matmul(jnp.transpose(pixels_in), pixels_out)
  else:
    kernel_grad = jnp.transpose(jnp.matmul(jnp.transpose(pixels_out), pixels_in))
  return input_grad, kernel_grad.astype(kernel.dtype)


pointwise_dot.defvjp(_pointwise_dot_fwd, _pointwise_dot_bwd)


class DepthwiseConv(nn.Module):
  """k x k depthwise convolution, TF 'SAME' padding, no bias."""
  kernel_size: int
  stride: int = 1
  impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    k = self.kernel_size
    kernel = self.param("kernel", conv_kernel_init(k * k), (k, k, 1, channels), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if resolve_impl(self.impl, DEPTHWISE_IMPLS, "shifted") == "shifted":
      return depthwise_shifted(x, kernel, self.stride)
    return lax.conv_general_dilated(
        x, kernel, (self.stride, self.stride), "SAME",
        dimension_numbers=_DIMENSIONS, feature_group_count=channels)


class Conv(nn.Module):
  """Dense k x k convolution, TF 'SAME' padding, no bias (stem and 1x1 layers)."""
  features: int
  kernel_size: int = 1
  stride: int = 1
  impl: str = "auto"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", conv_kernel_init(k * k * self.features),
                        (k, k, x.shape[-1], self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    if k == 1 and self.stride == 1 and resolve_impl(self.impl, POINTWISE_IMPLS, "dot") == "dot":
      return pointwise_dot(x, kernel[0, 0])
    return lax.conv_general_dilated(
        x, kernel, (self.stride, self.stride), "SAME", dimension_numbers=_DIMENSIONS)
