"""The train step's handling of non-finite losses, and the eval step's masked sums."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effnetlite import factory, optim, steps
from helpers import tiny_config


@pytest.fixture(scope="module")
def setup():
  config = tiny_config(resolution=32, batch=4)
  config.model.width, config.model.depth = 0.25, 0.25  # small graph: the step logic is the test
  module = factory.module_from_config(config)
  variables = factory.init_variables(module, 32)
  schedule = optim.learning_rate_schedule(config, 4, 10, 100)
  optimizer = optim.make_optimizer(config, schedule)
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


def test_eval_step_ignores_masked_examples(setup):
  _, module, _, _, state, images = setup
  variables = {"params": state.params, "batch_stats": state.batch_stats}
  logits = module.apply(variables, (images - 127.0) / 128.0)
  labels = jnp.argmax(logits, -1).astype(jnp.int32)
  labels = labels.at[3].set((labels[3] + 1) % 10)  # wrong, but masked out
  sums = steps.make_eval_step(module, 10)(
      variables, {"image": images, "label": labels, "mask": jnp.array([1.0, 1.0, 1.0, 0.0])})
  assert float(sums["count"]) == 3 and float(sums["top1"]) == 3 and float(sums["top5"]) == 3
