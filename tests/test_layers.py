"""Every convolution implementation gives the reference formulation's outputs and gradients."""

import jax
import jax.numpy as jnp
import pytest
from jax import lax

from effnetlite import layers

jax.config.update("jax_default_matmul_precision", "highest")


def _reference_depthwise(x, kernel, stride):
  """XLA's grouped convolution with TF 'SAME' padding: the formulation TF uses."""
  return lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                  feature_group_count=x.shape[-1],
                                  precision=lax.Precision.HIGHEST)


def _relative(a, b):
  return float(jnp.abs(a - b).max() / (jnp.abs(b).max() + 1e-12))


# Every (kernel, stride) of lite0-lite4, on even and odd map sizes (odd: SAME pads asymmetrically).
@pytest.mark.parametrize("kernel_size,stride", [(3, 1), (3, 2), (5, 1), (5, 2)])
@pytest.mark.parametrize("size", [14, 15])
def test_shifted_depthwise_matches_grouped_conv(kernel_size, stride, size):
  kx, kk, kg = jax.random.split(jax.random.PRNGKey(kernel_size * 10 + stride + size), 3)
  x = jax.random.normal(kx, (2, size, size, 24))
  kernel = jax.random.normal(kk, (kernel_size, kernel_size, 1, 24))
  cotangent = jax.random.normal(kg, _reference_depthwise(x, kernel, stride).shape)
  results = {}
  for name, fn in (("reference", _reference_depthwise), ("shifted", layers.depthwise_shifted)):
    out, vjp = jax.vjp(lambda a, w: fn(a, w, stride), x, kernel)
    results[name] = (out, *vjp(cotangent))
  for ours, theirs in zip(results["shifted"], results["reference"]):
    assert ours.shape == theirs.shape
    assert _relative(ours, theirs) <= 1e-5


@pytest.mark.parametrize("impl", ["conv", "shifted", "auto"])
def test_depthwise_module_impls(impl):
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 9, 9, 8))
  module = layers.DepthwiseConv(5, 2, impl=impl)
  variables = module.init(jax.random.PRNGKey(1), x)
  expected = _reference_depthwise(x, variables["params"]["kernel"], 2)
  assert _relative(module.apply(variables, x), expected) <= 1e-5


@pytest.mark.parametrize("impl", ["conv", "dot", "auto"])
def test_pointwise_impls_outputs_and_gradients(impl):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 7, 16))
  module = layers.Conv(32, impl=impl)
  variables = module.init(jax.random.PRNGKey(1), x)
  reference = layers.Conv(32, impl="conv")
  loss = lambda m: lambda v, a: (m.apply(v, a) ** 2).sum()  # noqa: E731
  ours = jax.grad(loss(module), argnums=(0, 1))(variables, x)
  theirs = jax.grad(loss(reference), argnums=(0, 1))(variables, x)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    assert _relative(a, b) <= 1e-5


def test_same_padding_puts_extra_pixel_after():
  assert layers.same_padding(224, 3, 2) == (0, 1)
  assert layers.same_padding(15, 5, 2) == (2, 2)
  assert layers.same_padding(14, 5, 1) == (2, 2)


def test_unknown_impl_is_rejected():
  with pytest.raises(ValueError, match="unknown implementation 'fast'"):
    layers.resolve_impl("fast", layers.DEPTHWISE_IMPLS, "shifted")
