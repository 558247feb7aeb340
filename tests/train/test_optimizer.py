"""Optimiser, schedule, EMA and weight decay against NumPy re-implementations of the TF code."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effnetlite.config import base_config
from effnetlite.train import ema
from effnetlite.train import optimizer as optimizer_lib

jax.config.update("jax_enable_x64", False)


def _tf1_learning_rate(step, peak, steps_per_epoch, warmup_epochs=5, decay_epochs=2.4,
                       decay_factor=0.97):
  """TF utils.build_learning_rate: staircase exponential decay, warm-up overrides it."""
  warmup_steps = int(warmup_epochs * steps_per_epoch)
  decayed = peak * decay_factor ** math.floor(step / (decay_epochs * steps_per_epoch))
  return peak * step / warmup_steps if step < warmup_steps else decayed


def _tf1_rmsprop(params, grads_per_step, learning_rates, decay=0.9, momentum=0.9, epsilon=1e-3):
  """tf.compat.v1.train.RMSPropOptimizer: ms starts at 1, epsilon inside the sqrt."""
  ms = np.ones_like(params)
  mom = np.zeros_like(params)
  for grad, lr in zip(grads_per_step, learning_rates):
    ms = decay * ms + (1 - decay) * grad ** 2
    mom = momentum * mom + lr * grad / np.sqrt(ms + epsilon)
    params = params - mom
  return params


def test_schedule_matches_tf():
  config = base_config()
  steps_per_epoch = 4  # warm-up 20 steps, decay every 9.6 steps
  schedule = optimizer_lib.learning_rate_schedule(config, 1024, steps_per_epoch, total_steps=100)
  peak = 0.016 * 1024 / 256
  for step in range(60):
    assert float(schedule(step)) == pytest.approx(
        _tf1_learning_rate(step, peak, steps_per_epoch), rel=1e-6, abs=1e-9)


def test_rmsprop_with_schedule_matches_tf1_over_25_steps():
  config = base_config()
  steps_per_epoch = 2  # warm-up ends at step 10, then staircase decay: the LR changes often
  schedule = optimizer_lib.learning_rate_schedule(config, 256, steps_per_epoch, total_steps=25)
  optimizer = optimizer_lib.make_optimizer(config, schedule)
  rng = np.random.default_rng(0)
  params = rng.normal(size=(7,)).astype(np.float32)
  grads = [rng.normal(scale=3.0, size=(7,)).astype(np.float32) for _ in range(25)]
  state = optimizer.init(jnp.asarray(params))
  ours = jnp.asarray(params)
  for grad in grads:
    updates, state = optimizer.update(jnp.asarray(grad), state, ours)
    ours = ours + updates
  lrs = [_tf1_learning_rate(step, 0.016, steps_per_epoch) for step in range(25)]
  expected = _tf1_rmsprop(params.astype(np.float64), [g.astype(np.float64) for g in grads], lrs)
  np.testing.assert_allclose(np.asarray(ours), expected, atol=1e-6, rtol=0)


def test_cosine_and_constant_schedules():
  config = base_config()
  config.optimizer.schedule = "cosine"
  config.optimizer.warmup_epochs = 0
  cosine = optimizer_lib.learning_rate_schedule(config, 256, 10, total_steps=100)
  assert float(cosine(0)) == pytest.approx(0.016)
  assert float(cosine(50)) == pytest.approx(0.008)
  assert float(cosine(100)) == pytest.approx(0.0, abs=1e-9)
  config.optimizer.schedule = "constant"
  constant = optimizer_lib.learning_rate_schedule(config, 512, 10, 100)
  assert float(constant(77)) == pytest.approx(0.032)


def test_ema_matches_tf_formula():
  value = np.float32(0.0)
  average = np.float32(1.0)
  ours = {"w": jnp.asarray(average)}
  for t in range(1, 30):
    value = np.float32(np.sin(t))
    d = min(0.9999, (1.0 + t) / (10.0 + t))  # tf.train.ExponentialMovingAverage(num_updates=t)
    average = d * average + (1 - d) * value
    ours = ema.update_ema(ours, {"w": jnp.asarray(value)}, t, 0.9999)
  assert float(ours["w"]) == pytest.approx(float(average), abs=1e-6)
  assert float(ema.ema_decay(10 ** 6, 0.9999)) == pytest.approx(0.9999)


def test_weight_decay_excludes_batch_norm_and_includes_dense_bias():
  params = {
      "stem_conv": {"kernel": jnp.full((3, 3, 3, 2), 2.0)},
      "stem_bn": {"scale": jnp.full((2,), 5.0), "bias": jnp.full((2,), 7.0)},
      "block_0": {"project_bn": {"scale": jnp.ones(4)},
                  "project_conv": {"kernel": jnp.ones((1, 1, 2, 4))}},
      "classifier": {"kernel": jnp.full((2, 3), 3.0), "bias": jnp.full((3,), 4.0)},
  }
  # 1/2 * (54 * 4 + 8 * 1 + 6 * 9 + 3 * 16): BN scale/offset left out, Dense bias counted.
  assert float(optimizer_lib.l2_loss(params)) == pytest.approx(0.5 * (216 + 8 + 54 + 48))
