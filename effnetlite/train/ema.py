"""Exponential moving average of weights and BN statistics, with TF's warm-up.

TF's `ExponentialMovingAverage(decay, num_updates=global_step)` uses
decay_t = min(decay, (1 + t) / (10 + t)); early averages follow the weights
closely instead of remembering the random init. `optax.ema` warms up differently.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def ema_decay(num_updates: jax.Array, decay: float) -> jax.Array:
  t = jnp.asarray(num_updates, jnp.float32)
  return jnp.minimum(decay, (1.0 + t) / (10.0 + t))


def update_ema(average: Any, value: Any, num_updates: jax.Array, decay: float) -> Any:
  """average <- d * average + (1 - d) * value, with d = ema_decay(num_updates)."""
  d = ema_decay(num_updates, decay)
  return jax.tree.map(lambda a, v: d * a + (1.0 - d) * v, average, value)
