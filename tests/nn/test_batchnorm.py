"""Our BatchNorm: nn.BatchNorm's variables, outputs, running statistics and gradients."""

import jax
import pytest
from flax import linen as nn
from helpers import relative_error

from effnetlite.nn.batchnorm import BatchNorm


def _inputs():
  # An offset mean and uneven scales, as after a convolution.
  x = jax.random.normal(jax.random.PRNGKey(0), (4, 9, 7, 16)) * 3.0 + 1.5
  cotangent = jax.random.normal(jax.random.PRNGKey(1), x.shape)
  return x, cotangent


def _trained_variables(module, x):
  variables = module.init(jax.random.PRNGKey(2), x)
  params = jax.tree.map(lambda p: p + jax.random.uniform(jax.random.PRNGKey(3), p.shape),
                        variables["params"])
  return {"params": params, "batch_stats": variables["batch_stats"]}


@pytest.mark.parametrize("train", [True, False])
def test_matches_flax_batch_norm(train):
  x, cotangent = _inputs()
  ours = BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-3)
  theirs = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-3)
  variables = _trained_variables(theirs, x)
  assert jax.tree.structure(ours.init(jax.random.PRNGKey(2), x)) == jax.tree.structure(variables)

  def run(module):
    def apply(params, inputs):
      return module.apply({"params": params, "batch_stats": variables["batch_stats"]}, inputs,
                          mutable=["batch_stats"])
    y, vjp, updates = jax.vjp(apply, variables["params"], x, has_aux=True)
    return y, updates, vjp(cotangent)

  (y_ours, stats_ours, grads_ours), (y_theirs, stats_theirs, grads_theirs) = run(ours), run(theirs)
  assert relative_error(y_ours, y_theirs) <= 1e-6
  for a, b in zip(jax.tree.leaves(stats_ours), jax.tree.leaves(stats_theirs)):
    assert relative_error(a, b) <= 1e-6
  for a, b in zip(jax.tree.leaves(grads_ours), jax.tree.leaves(grads_theirs)):
    assert relative_error(a, b) <= 1e-5
