"""The TF/TPU EfficientNet optimiser: TF1 RMSProp, warm-up + staircase decay, L2 on the loss.

RMSProp keeps TF1 semantics: the accumulator starts at one and epsilon sits
inside the square root (`initial_scale=1.0`); optax's default start at zero
differs from TF1 by up to 1.37 in the first updates.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import optax
from flax import traverse_util

from effnetlite.config import SCHEDULES
from effnetlite.errors import UserError


def peak_learning_rate(config: ml_collections.ConfigDict, batch_size: int) -> float:
  """0.016 per 256 images, scaled linearly with the global batch."""
  optimizer = config.optimizer
  return optimizer.base_learning_rate * batch_size / optimizer.learning_rate_batch_base


def learning_rate_schedule(config: ml_collections.ConfigDict, batch_size: int,
                           steps_per_epoch: int, total_steps: int) -> optax.Schedule:
  """Linear warm-up from 0, then staircase x0.97 every 2.4 epochs counted from step 0.

  As in the TF code, warm-up steps count toward the decay, and the decayed value
  takes over once warm-up ends. Cosine and constant are options.
  """
  optimizer = config.optimizer
  if optimizer.schedule not in SCHEDULES:
    raise UserError(f"unknown schedule {optimizer.schedule!r}; choose one of {SCHEDULES}")
  peak = peak_learning_rate(config, batch_size)
  warmup_steps = int(optimizer.warmup_epochs * steps_per_epoch)
  decay_steps = optimizer.decay_epochs * steps_per_epoch

  def schedule(step):
    step = jnp.asarray(step, jnp.float32)
    if optimizer.schedule == "exponential":
      decayed = peak * optimizer.decay_factor ** jnp.floor(step / decay_steps)
    elif optimizer.schedule == "cosine":
      decayed = 0.5 * peak * (1 + jnp.cos(math.pi * jnp.minimum(step / max(total_steps, 1), 1)))
    else:
      decayed = jnp.asarray(peak, jnp.float32)
    if warmup_steps == 0:
      return decayed
    return jnp.where(step < warmup_steps, peak * step / warmup_steps, decayed)
  return schedule


def make_optimizer(config: ml_collections.ConfigDict,
                   schedule: optax.Schedule) -> optax.GradientTransformation:
  optimizer = config.optimizer
  if optimizer.name == "rmsprop":
    return optax.rmsprop(schedule, decay=optimizer.rmsprop_decay, eps=optimizer.epsilon,
                         initial_scale=optimizer.initial_scale, momentum=optimizer.momentum)
  if optimizer.name == "sgd":
    return optax.sgd(schedule, momentum=optimizer.momentum, nesterov=True)
  raise UserError(f"unknown optimizer {optimizer.name!r}; choose rmsprop or sgd")


def is_batch_norm(path: tuple[str, ...]) -> bool:
  """BN scale/offset: excluded from weight decay, as in the TF code."""
  return any(part.endswith("_bn") for part in path)


def l2_loss(params: Any) -> jax.Array:
  """sum(1/2 ||w||^2) over all trainable variables except batch norm (Dense bias included)."""
  flat = traverse_util.flatten_dict(params)
  return sum(0.5 * jnp.sum(jnp.square(w.astype(jnp.float32)))
             for path, w in flat.items() if not is_batch_norm(path))
