"""Batch normalisation with Flax's variables and numerics, and a hand-written gradient.

Same parameters (`scale`, `bias`), statistics (`batch_stats/mean`, `var`), running
averages and eval-mode formula as `flax.linen.BatchNorm` (biased variance as
E[x^2] - E[x]^2, statistics in float32), so checkpoints, importers and exports
are unchanged. Training mode differs only in how the gradient is computed: the
textbook rule (two sums over the batch, then one elementwise pass) instead of
autodiff through the mean and variance, which XLA:CPU ran as about three reductions
per layer (the speed-up is in benchmarks/README.md).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax
from jax.ad_checkpoint import checkpoint_name

# The name of the batch statistics, for `jax.checkpoint` policies: recomputing the
# normalisation from them is elementwise, recomputing them is a pass over the batch.
BN_STATISTICS = "bn_statistics"


@jax.custom_vjp
def _normalize(x: jax.Array, scale: jax.Array, bias: jax.Array, mean: jax.Array,
               inverse_std: jax.Array) -> jax.Array:
  """(x - mean) * inverse_std * scale + bias, where mean and inverse_std are x's own."""
  return (x - mean) * (inverse_std * scale) + bias


def _normalize_fwd(x, scale, bias, mean, inverse_std):
  return _normalize(x, scale, bias, mean, inverse_std), (x, scale, mean, inverse_std)


def _normalize_bwd(residuals, grad_y):
  """dx = scale / std * (dy - mean(dy) - x_hat * mean(dy * x_hat)): the statistics'
  dependence on x is folded in here, so mean and inverse_std get no gradient."""
  x, scale, mean, inverse_std = residuals
  axes = tuple(range(x.ndim - 1))
  count = x.size // x.shape[-1]
  centred = x.astype(jnp.float32) - mean
  grad_y32 = grad_y.astype(jnp.float32)
  grad_bias = jnp.sum(grad_y32, axis=axes)
  grad_scale = jnp.sum(grad_y32 * centred, axis=axes) * inverse_std
  grad_x = (scale * inverse_std) * (grad_y32 - grad_bias / count
                                    - centred * (inverse_std * grad_scale / count))
  zeros = jnp.zeros_like(mean)
  return grad_x.astype(x.dtype), grad_scale, grad_bias, zeros, zeros


_normalize.defvjp(_normalize_fwd, _normalize_bwd)


class BatchNorm(nn.Module):
  """`nn.BatchNorm` over the last axis, with the hand-written training gradient."""
  use_running_average: bool
  momentum: float = 0.99
  epsilon: float = 1e-3
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    channels = x.shape[-1]
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, (channels,), jnp.float32)
    running_var = self.variable("batch_stats", "var", jnp.ones, (channels,), jnp.float32)
    scale = self.param("scale", nn.initializers.ones, (channels,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (channels,), jnp.float32)
    if self.use_running_average:
      mean, var = running_mean.value, running_var.value
      y = (x - mean) * (lax.rsqrt(var + self.epsilon) * scale) + bias
      return y.astype(self.dtype)
    axes = tuple(range(x.ndim - 1))
    x32 = x.astype(jnp.float32)
    mean = checkpoint_name(jnp.mean(x32, axes), BN_STATISTICS)
    var = checkpoint_name(jnp.maximum(jnp.mean(jnp.square(x32), axes) - jnp.square(mean), 0.0),
                          BN_STATISTICS)
    if not self.is_initializing():
      running_mean.value = self.momentum * running_mean.value + (1 - self.momentum) * mean
      running_var.value = self.momentum * running_var.value + (1 - self.momentum) * var
    y = _normalize(x, scale, bias, lax.stop_gradient(mean),
                   lax.stop_gradient(lax.rsqrt(var + self.epsilon)))
    return y.astype(self.dtype)
