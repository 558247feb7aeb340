"""The train step: non-finite losses stopped or skipped, and its smoothed cross-entropy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import tiny_config

from effnetlite.train import optimizer as optimizer_lib
from effnetlite.train import steps
from effnetlite.weights import factory


@pytest.fixture(scope="module")
def setup():
  config = tiny_config(resolution=32, batch=4)
  config.model.width, config.model.depth = 0.25, 0.25  # small graph: the step logic is the test
  module = factory.module_from_config(config)
  variables = factory.init_variables(module, 32)
  schedule = optimizer_lib.learning_rate_schedule(config, 4, 10, 100)
  optimizer = optimizer_lib.make_optimizer(config, schedule)
  state = steps.create_train_state(variables, optimizer, jax.random.PRNGKey(0))
  images = jax.random.uniform(jax.random.PRNGKey(1), (4, 32, 32, 3), maxval=255.0)
  return config, module, optimizer, schedule, state, images


@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_nonfinite_loss(setup, mode):
  config, module, optimizer, schedule, state, images = setup
  config = config.copy_and_resolve_references()
  config.nonfinite_loss = mode
  step = jax.jit(steps.make_train_step(module, config, optimizer, schedule))
  bad = {"image": images.at[0, 0, 0, 0].set(jnp.nan), "label": jnp.zeros(4, jnp.int32)}
  new, metrics = step(state, bad)
  assert float(metrics["finite"]) == 0.0 and int(new.step) == 1
  unchanged = all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(new.params),
                                                       jax.tree.leaves(state.params)))
  assert unchanged == (mode == "skip")  # "stop" leaves it to the loop, which raises
  good = {"image": images, "label": jnp.zeros(4, jnp.int32)}
  _, metrics = step(state, good)
  assert float(metrics["finite"]) == 1.0 and np.isfinite(float(metrics["loss"]))


def test_cross_entropy_with_label_smoothing_by_hand():
  """TF's rule against NumPy: targets (1 - s) * one_hot + s / K, loss -sum(t * log_softmax)."""
  rng = np.random.default_rng(0)
  logits = rng.normal(size=(5, 7)).astype(np.float32) * 3
  labels = np.array([0, 6, 3, 3, 1])
  shifted = logits - logits.max(-1, keepdims=True)
  log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
  for smoothing in (0.0, 0.1):
    targets = np.eye(7)[labels] * (1 - smoothing) + smoothing / 7
    expected = -(targets * log_probs).sum(-1)
    np.testing.assert_allclose(steps.cross_entropy(logits, labels, 7, smoothing), expected,
                               rtol=1e-6)
