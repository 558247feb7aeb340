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


def depthwise_shifted(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """Depthwise convolution as a sum of k*k strided, shifted slices."""
  k = kernel.shape[0]
  _, height, width, _ = x.shape
  pad_h, pad_w = same_padding(height, k, stride), same_padding(width, k, stride)
  x = jnp.pad(x, ((0, 0), pad_h, pad_w, (0, 0)))
  out_h, out_w = -(-height // stride), -(-width // stride)
  result = None
  for i in range(k):
    for j in range(k):
      window = lax.slice(
          x, (0, i, j, 0),
          (x.shape[0], i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1, x.shape[3]),
          (1, stride, stride, 1))
      term = window * kernel[i, j, 0]
      result = term if result is None else result + term
  return result


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
      return lax.dot_general(x, kernel[0, 0], (((x.ndim - 1,), (0,)), ((), ())))
    return lax.conv_general_dilated(
        x, kernel, (self.stride, self.stride), "SAME", dimension_numbers=_DIMENSIONS)
