"""Convolution layers with interchangeable implementations.

Each layer owns one parameter layout (Flax HWIO; depthwise (k, k, 1, C)) and
several numerically equivalent ways to compute it, so a backend can take the
fastest one without changing checkpoints or exports:

- depthwise `conv`: `lax.conv_general_dilated` with `feature_group_count=C`.
  Fast with cuDNN; exports to TFLite DEPTHWISE_CONV_2D.
- depthwise `shifted`: sum over the k*k strided slices of the padded input,
  each times its per-channel weight, with hand-written gradients
  (`effnetlite.nn.depthwise`). XLA:CPU's grouped convolution is several times slower
  (figures in benchmarks/README.md).
- pointwise `conv`: a 1x1 convolution (exports to CONV_2D).
- pointwise `dot`: one matmul over the flattened pixels.

The layers take a concrete formulation (default `conv`); which one a platform runs is
decided once, by `effnetlite.nn.backend.resolve_backend`.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax
from jax.ad_checkpoint import checkpoint_name

from effnetlite.nn.depthwise import depthwise_shifted, pad_same, tap_windows
from effnetlite.nn.padding import same_output_size

_DIMENSIONS = ("NHWC", "HWIO", "NHWC")
# The name of every convolution's output, for `jax.checkpoint` policies: a training
# step may keep these for the backward pass and recompute the BN + ReLU6 after them.
CONV_OUTPUT = "conv_output"


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


@jax.custom_vjp
def pointwise_dot(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """1x1 convolution as one matmul over all pixels: (..., Cin) @ (Cin, Cout).

  The gradient rule is written out so the kernel gradient is one
  (pixels, Cin)^T (pixels, Cout) product of the flattened maps: for autodiff's
  rule on the 4-D product XLA:CPU wrote the cotangent transposed, (Cout, pixels),
  before a slow matmul (benchmarks/README.md has the training speed before and after).
  """
  return lax.dot_general(x, kernel, (((x.ndim - 1,), (0,)), ((), ())))


def _pointwise_dot_fwd(x, kernel):
  return pointwise_dot(x, kernel), (x, kernel)


def _pointwise_dot_bwd(residuals, cotangent):
  x, kernel = residuals
  input_grad = lax.dot_general(cotangent, kernel, (((cotangent.ndim - 1,), (1,)), ((), ())))
  pixels_in = x.reshape(-1, x.shape[-1])
  pixels_out = cotangent.reshape(-1, cotangent.shape[-1])
  kernel_grad = lax.dot_general(pixels_in, pixels_out, (((0,), (0,)), ((), ())))
  return input_grad, kernel_grad.astype(kernel.dtype)


pointwise_dot.defvjp(_pointwise_dot_fwd, _pointwise_dot_bwd)


def patches_dot(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """k x k convolution (TF 'SAME') as one matmul of the k*k*Cin patches: for the stem's
  three input channels XLA:CPU's convolution and its kernel gradient ran ~8x slower than
  PyTorch's (benchmarks/README.md, op profile); patches make both plain matmuls."""
  k, _, channels, features = kernel.shape
  out_h, out_w = (same_output_size(x.shape[axis], stride) for axis in (1, 2))
  taps = tap_windows(pad_same(x, k, stride)[0], k, stride, out_h, out_w)
  # (i, j, c) order along the last axis: the HWIO kernel's own order when flattened.
  return pointwise_dot(jnp.concatenate(taps, axis=-1), kernel.reshape(k * k * channels, features))


def _check_concrete(impl: str, choices: tuple[str, ...]) -> None:
  """Layers take the formulation `effnetlite.nn.backend.resolve_backend` chose, never
  'auto' or a misspelling (which would otherwise run the plain convolution unnoticed)."""
  if impl not in choices:
    raise ValueError(f"layer formulation {impl!r} is not one of {choices}; resolve it with "
                     "effnetlite.nn.backend.resolve_backend")


class DepthwiseConv(nn.Module):
  """k x k depthwise convolution, TF 'SAME' padding, no bias."""
  kernel_size: int
  stride: int = 1
  impl: str = "conv"      # or "shifted"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    k = self.kernel_size
    kernel = self.param("kernel", conv_kernel_init(k * k), (k, k, 1, channels), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    _check_concrete(self.impl, ("conv", "shifted"))
    if self.impl == "shifted":
      return checkpoint_name(depthwise_shifted(x, kernel, self.stride), CONV_OUTPUT)
    return checkpoint_name(lax.conv_general_dilated(
        x, kernel, (self.stride, self.stride), "SAME",
        dimension_numbers=_DIMENSIONS, feature_group_count=channels), CONV_OUTPUT)


class Conv(nn.Module):
  """Dense k x k convolution, TF 'SAME' padding, no bias (stem and 1x1 layers)."""
  features: int
  kernel_size: int = 1
  stride: int = 1
  impl: str = "conv"      # or "dot"
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param("kernel", conv_kernel_init(k * k * self.features),
                        (k, k, x.shape[-1], self.features), jnp.float32)
    x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
    _check_concrete(self.impl, ("conv", "dot"))
    if self.impl == "dot":
      if k == 1 and self.stride == 1:
        return checkpoint_name(pointwise_dot(x, kernel[0, 0]), CONV_OUTPUT)
      return checkpoint_name(patches_dot(x, kernel, self.stride), CONV_OUTPUT)
    return checkpoint_name(lax.conv_general_dilated(
        x, kernel, (self.stride, self.stride), "SAME", dimension_numbers=_DIMENSIONS),
        CONV_OUTPUT)
