"""Depthwise convolution as k*k shifted slices, with hand-written gradients.

XLA:CPU's grouped convolution (`feature_group_count=C`) is several times slower than
summing the k*k strided windows of the padded input, each times its per-channel
tap. Autodiff of that sum is slow again, so both gradients are written out:

- kernel: autodiff materialises every padded window and reduces it on its own
  (k*k passes); here one variadic reduce reads each window once.
- input: autodiff builds k*k interior-padded copies of the cotangent, into each of
  which XLA fuses (recomputes) the cotangent's producers; here it is a correlation
  of the once-padded cotangent with the kernel, split into stride*stride phases.

Same values as the grouped convolution up to float32 rounding (tests/test_depthwise.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from effnetlite.nn.padding import same_output_size, same_padding

Padding = tuple[tuple[int, int], tuple[int, int]]
# Kernel-gradient sums run over both map axes up to this many output pixels, over
# rows only above it: XLA:CPU's reduction loops are fastest with ~100-1000 terms.
_MAX_PIXELS_SUMMED_AT_ONCE = 1024


def depthwise_shifted(x: jax.Array, kernel: jax.Array, stride: int) -> jax.Array:
  """k x k depthwise convolution (NHWC, kernel (k, k, 1, C)), TF 'SAME' padding."""
  padded, padding = pad_same(x, kernel.shape[0], stride)
  return _depthwise_padded(padded, kernel, stride, padding)


def pad_same(x: jax.Array, k: int, stride: int) -> tuple[jax.Array, Padding]:
  """x (NHWC) padded as TF's 'SAME' pads it for a k x k window, and that padding."""
  padding = (same_padding(x.shape[1], k, stride), same_padding(x.shape[2], k, stride))
  return jnp.pad(x, ((0, 0), *padding, (0, 0))), padding


def _input_size(padded: jax.Array, padding: Padding) -> tuple[int, int]:
  return padded.shape[1] - sum(padding[0]), padded.shape[2] - sum(padding[1])


def tap_windows(padded: jax.Array, k: int, stride: int, out_h: int,
                out_w: int) -> list[jax.Array]:
  """The k*k strided views of the padded input, one per kernel tap (row-major)."""
  batch, _, _, channels = padded.shape
  return [lax.slice(padded, (0, i, j, 0),
                    (batch, i + (out_h - 1) * stride + 1, j + (out_w - 1) * stride + 1, channels),
                    (1, stride, stride, 1))
          for i in range(k) for j in range(k)]


def _shifted_sum(windows: list[jax.Array], taps: jax.Array) -> jax.Array:
  result = None
  for window, tap in zip(windows, taps):
    term = window * tap
    result = term if result is None else result + term
  return result


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _depthwise_padded(padded: jax.Array, kernel: jax.Array, stride: int,
                      padding: Padding) -> jax.Array:
  height, width = _input_size(padded, padding)
  out_h, out_w = same_output_size(height, stride), same_output_size(width, stride)
  windows = tap_windows(padded, kernel.shape[0], stride, out_h, out_w)
  return _shifted_sum(windows, kernel.reshape(-1, kernel.shape[-1]))


def _depthwise_padded_fwd(padded, kernel, stride, padding):
  return _depthwise_padded(padded, kernel, stride, padding), (padded, kernel)


def _depthwise_padded_bwd(stride, padding, residuals, cotangent):
  padded, kernel = residuals
  input_grad = input_gradient(cotangent, kernel, stride, _input_size(padded, padding),
                              (padding[0][0], padding[1][0]))
  # The border gets no gradient; XLA folds this pad into jnp.pad's own transpose.
  padded_grad = jnp.pad(input_grad, ((0, 0), *padding, (0, 0)))
  return padded_grad.astype(padded.dtype), kernel_gradient(padded, cotangent, kernel.shape[0],
                                                           stride).astype(kernel.dtype)


_depthwise_padded.defvjp(_depthwise_padded_fwd, _depthwise_padded_bwd)


def kernel_gradient(padded: jax.Array, cotangent: jax.Array, k: int, stride: int) -> jax.Array:
  """d(loss)/d(kernel): per tap, the sum over pixels of its window times the cotangent.

  One variadic reduce for all taps, in float32, over short runs (one row, or one
  small map) so the rounding stays at autodiff's level for any batch; the partial
  sums (batch x rows, tiny) are added after.
  """
  out_h, out_w = cotangent.shape[1:3]
  axes = (1, 2) if out_h * out_w <= _MAX_PIXELS_SUMMED_AT_ONCE else (2,)
  cotangent = cotangent.astype(jnp.float32)
  products = [window.astype(jnp.float32) * cotangent
              for window in tap_windows(padded, k, stride, out_h, out_w)]
  partial_sums = lax.reduce(products, [jnp.float32(0)] * len(products),
                            lambda a, b: [u + v for u, v in zip(a, b)], axes)
  channels = cotangent.shape[-1]
  return jnp.stack(partial_sums).reshape(k * k, -1, channels).sum(1).reshape(k, k, 1, channels)


def input_gradient(cotangent: jax.Array, kernel: jax.Array, stride: int,
                   input_size: tuple[int, int], pad_before: tuple[int, int]) -> jax.Array:
  """d(loss)/d(input): the cotangent correlated with the kernel.

  Input pixel y gets tap i from output o = (y + pad - i) / stride when that divides.
  With stride s the input splits into s*s phases (y mod s), each a plain shifted
  sum of the once-padded cotangent over the taps of its parity; the phases are
  then interleaved.
  """
  k = kernel.shape[0]
  batch, _, _, channels = cotangent.shape
  (height, width), (pad_top, pad_left) = input_size, pad_before
  rows, cols = same_output_size(height, stride), same_output_size(width, stride)
  # k zeros each side cover every tap's reach, whatever the padding and stride.
  padded = jnp.pad(cotangent, ((0, 0), (k, k), (k, k), (0, 0)))
  phases = []
  for p in range(stride):
    phase_row = []
    for q in range(stride):
      windows, taps = [], []
      for i in range(k):
        for j in range(k):
          if (p + pad_top - i) % stride or (q + pad_left - j) % stride:
            continue
          top, left = k + (p + pad_top - i) // stride, k + (q + pad_left - j) // stride
          windows.append(lax.slice(padded, (0, top, left, 0),
                                   (batch, top + rows, left + cols, channels)))
          taps.append(kernel[i, j, 0])
      phase_row.append(_shifted_sum(windows, taps) if windows else
                       jnp.zeros((batch, rows, cols, channels), cotangent.dtype))
    phases.append(phase_row)
  if stride == 1:
    return phases[0][0]
  interleaved = jnp.stack([jnp.stack(row, axis=3) for row in phases], axis=2)
  return interleaved.reshape(batch, rows * stride, cols * stride, channels)[:, :height, :width]
