"""The layer modules: every implementation gives the reference formulation's outputs and
gradients."""

import jax
import pytest
from helpers import grouped_depthwise_conv, relative_error

from effnetlite.nn import layers

jax.config.update("jax_default_matmul_precision", "highest")


@pytest.mark.parametrize("impl", ["conv", "shifted"])
def test_depthwise_module_impls(impl):
  x = jax.random.normal(jax.random.PRNGKey(0), (1, 9, 9, 8))
  module = layers.DepthwiseConv(5, 2, impl=impl)
  variables = module.init(jax.random.PRNGKey(1), x)
  expected = grouped_depthwise_conv(x, variables["params"]["kernel"], 2)
  assert relative_error(module.apply(variables, x), expected) <= 1e-5


# Expanding (16 -> 32) and projecting (32 -> 16) 1x1 convs.
@pytest.mark.parametrize("impl", ["conv", "dot"])
@pytest.mark.parametrize("features_in,features_out", [(16, 32), (32, 16)])
def test_pointwise_impls_outputs_and_gradients(impl, features_in, features_out):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, 7, 7, features_in))
  module = layers.Conv(features_out, impl=impl)
  variables = module.init(jax.random.PRNGKey(1), x)
  reference = layers.Conv(features_out, impl="conv")
  loss = lambda m: lambda v, a: (m.apply(v, a) ** 2).sum()  # noqa: E731
  ours = jax.grad(loss(module), argnums=(0, 1))(variables, x)
  theirs = jax.grad(loss(reference), argnums=(0, 1))(variables, x)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    assert relative_error(a, b) <= 1e-5


# The stem: 3x3 stride 2 from 3 channels as one matmul of patches, on even and odd sides
# (TF 'SAME' pads the odd pixel after), against XLA's convolution.
@pytest.mark.parametrize("size", [10, 9])
def test_patches_stem_outputs_and_gradients(size):
  x = jax.random.normal(jax.random.PRNGKey(0), (2, size, size + 1, 3))
  module = layers.Conv(8, kernel_size=3, stride=2, impl="dot")
  variables = module.init(jax.random.PRNGKey(1), x)
  reference = layers.Conv(8, kernel_size=3, stride=2, impl="conv")
  assert module.apply(variables, x).shape == (2, (size + 1) // 2, (size + 2) // 2, 8)
  loss = lambda m: lambda v, a: (m.apply(v, a) ** 2).sum()  # noqa: E731
  ours = jax.grad(loss(module), argnums=(0, 1))(variables, x)
  theirs = jax.grad(loss(reference), argnums=(0, 1))(variables, x)
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)):
    assert relative_error(a, b) <= 1e-5
