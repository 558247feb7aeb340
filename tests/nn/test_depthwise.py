"""The shifted depthwise convolution and its hand-written gradients vs XLA's grouped convolution."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import grouped_depthwise_conv as grouped_conv
from helpers import relative_error as relative

from effnetlite.nn import depthwise

jax.config.update("jax_default_matmul_precision", "highest")


def outputs_and_gradients(fn, x, kernel, stride, cotangent):
  out, vjp = jax.vjp(lambda a, w: fn(a, w, stride), x, kernel)
  return (out, *vjp(cotangent))


# Every (kernel, stride) of lite0-lite4, on even and odd map sizes (odd: SAME pads
# asymmetrically); 36 px maps take the rows-only kernel-gradient sums (> 1024 pixels).
@pytest.mark.parametrize("kernel_size,stride", [(3, 1), (3, 2), (5, 1), (5, 2)])
@pytest.mark.parametrize("size", [14, 15, 36])
def test_outputs_and_gradients_match_grouped_conv(kernel_size, stride, size):
  kx, kk, kg = jax.random.split(jax.random.PRNGKey(kernel_size * 10 + stride + size), 3)
  x = jax.random.normal(kx, (2, size, size, 24))
  kernel = jax.random.normal(kk, (kernel_size, kernel_size, 1, 24))
  cotangent = jax.random.normal(kg, grouped_conv(x, kernel, stride).shape)
  ours = outputs_and_gradients(jax.jit(depthwise.depthwise_shifted, static_argnums=2),
                               x, kernel, stride, cotangent)
  theirs = outputs_and_gradients(grouped_conv, x, kernel, stride, cotangent)
  for name, a, b in zip(("output", "input gradient", "kernel gradient"), ours, theirs):
    assert a.shape == b.shape, name
    assert relative(a, b) <= 1e-5, name


def test_kernel_gradient_is_a_hand_computed_sum():
  """Tap (i, j) of a 3x3 stride-1 kernel sees x shifted by (i-1, j-1), zeros outside."""
  rng = np.random.RandomState(0)
  x = rng.randn(1, 5, 6, 2).astype(np.float32)
  cotangent = rng.randn(1, 5, 6, 2).astype(np.float32)
  padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
  expected = np.stack([[(padded[:, i:i + 5, j:j + 6] * cotangent).sum((0, 1, 2))
                        for j in range(3)] for i in range(3)])[:, :, None]
  _, vjp = jax.vjp(lambda w: depthwise.depthwise_shifted(jnp.asarray(x), w, 1),
                   jnp.zeros((3, 3, 1, 2)))
  np.testing.assert_allclose(vjp(jnp.asarray(cotangent))[0], expected, rtol=1e-5, atol=1e-5)


def test_bfloat16_gradients_are_summed_in_float32():
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 40, 40, 8))
  kernel = jax.random.normal(jax.random.PRNGKey(1), (3, 3, 1, 8))
  cotangent = jax.random.normal(jax.random.PRNGKey(2), (4, 40, 40, 8))
  _, vjp = jax.vjp(lambda w: depthwise.depthwise_shifted(x.astype(jnp.bfloat16), w, 1),
                   kernel.astype(jnp.bfloat16))
  (ours,) = vjp(cotangent.astype(jnp.bfloat16))
  _, reference_vjp = jax.vjp(lambda w: grouped_conv(x, w, 1), kernel)
  (reference,) = reference_vjp(cotangent)
  assert ours.dtype == jnp.bfloat16
  # bfloat16 inputs (8-bit mantissa) with float32 sums: ~1e-2, not the ~1 of bf16 sums.
  assert relative(ours.astype(jnp.float32), reference) <= 2e-2


def test_same_padding_puts_extra_pixel_after():
  assert depthwise.same_padding(224, 3, 2) == (0, 1)
  assert depthwise.same_padding(15, 5, 2) == (2, 2)
  assert depthwise.same_padding(14, 5, 1) == (2, 2)
