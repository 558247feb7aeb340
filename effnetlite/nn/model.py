"""EfficientNet-Lite as a Flax module, as the TF/TPU `efficientnet/lite` builder defines it.

The module takes images already normalised by `effnetlite.data.preprocessing.normalize`
(NHWC, any spatial size) and returns logits, or with `return_features=True` a
dict of the stride-2/4/8/16/32 feature maps, the head activation, the pooled
features and the logits. It knows nothing of optimisers, data or file formats.
"""

from __future__ import annotations

import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from effnetlite.nn import architecture, layers
from effnetlite.nn.batchnorm import BN_STATISTICS, BatchNorm

# ReLU6 rather than swish: bounded activations survive int8 quantisation.
relu6 = jax.nn.relu6


# The layers a block is built from, configured once by the network (the Flax ImageNet
# example's `ModuleDef` pattern): a block knows its shape, not the network's settings.
ModuleDef = Callable[..., nn.Module]


class MBConvBlock(nn.Module):
  """Inverted residual: [1x1 expand] -> depthwise -> 1x1 project (+ drop-connect)."""
  spec: architecture.BlockSpec
  conv: ModuleDef
  depthwise_conv: ModuleDef
  norm: ModuleDef

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> jax.Array:
    spec = self.spec
    x = inputs
    if spec.expand_ratio != 1:
      x = self.conv(spec.expanded_channels, name="expand_conv")(x)
      x = relu6(self.norm(name="expand_bn")(x))
    x = self.depthwise_conv(spec.kernel_size, spec.stride, name="depthwise_conv")(x)
    x = relu6(self.norm(name="depthwise_bn")(x))
    x = self.conv(spec.out_channels, name="project_conv")(x)
    x = self.norm(name="project_bn")(x)
    if spec.has_residual:
      if train and spec.drop_connect_rate > 0:
        x = drop_connect(x, spec.drop_connect_rate, self.make_rng("dropout"))
      x = x + inputs
    return x


def drop_connect(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
  """Stochastic depth: drops each example's residual branch with prob `rate`."""
  survival = 1.0 - rate
  mask = jax.random.bernoulli(rng, survival, (x.shape[0],) + (1,) * (x.ndim - 1))
  return jnp.where(mask, x / survival, jnp.zeros_like(x))


class LiteArchitecture(nn.Module):
  """The fields that define an EfficientNet-Lite network and its variables' names, shared
  by the float model and its int8 twin (`effnetlite.quant.model`), which copies them."""
  width: float = 1.0
  depth: float = 1.0
  num_classes: int = 1000
  dropout_rate: float = 0.2
  drop_connect_rate: float = 0.2
  stem_channels: int = architecture.STEM_CHANNELS
  head_channels: int = architecture.HEAD_CHANNELS
  bn_epsilon: float = 1e-3
  depthwise: str = "auto"
  pointwise: str = "auto"


class EfficientNetLite(LiteArchitecture):
  """EfficientNet-Lite with compound coefficients `width` and `depth`.

  Stem (32) and head (1280) channels are fixed while scaling; squeeze-excite is
  absent; activations are ReLU6; BN uses TF's momentum 0.99 and epsilon 1e-3.
  Parameters are float32 whatever the compute `dtype`.
  """
  bn_momentum: float = 0.99
  dtype: Any = jnp.float32
  # Training memory: each block's backward recomputes its BN + ReLU6 from the saved
  # convolution outputs and BN statistics (one kept activation per layer, not three).
  rematerialize: bool = False

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False,
               return_features: bool = False) -> jax.Array | dict[str, jax.Array]:
    # TF's BN: momentum 0.99 and epsilon 1e-3 by default.
    norm = functools.partial(BatchNorm, use_running_average=not train,
                             momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=self.dtype)
    conv = functools.partial(layers.Conv, impl=self.pointwise, dtype=self.dtype)
    depthwise_conv = functools.partial(layers.DepthwiseConv, impl=self.depthwise,
                                       dtype=self.dtype)
    features: dict[str, jax.Array] = {}
    x = conv(self.stem_channels, kernel_size=3, stride=2, name="stem_conv")(images)
    x = relu6(norm(name="stem_bn")(x))
    specs = architecture.block_specs(self.width, self.depth, self.drop_connect_rate,
                                     stem_channels=self.stem_channels)
    block = MBConvBlock
    if self.rematerialize:
      block = nn.remat(MBConvBlock, static_argnums=(2,),  # (self, x, train)
                       policy=jax.checkpoint_policies.save_only_these_names(
                           layers.CONV_OUTPUT, BN_STATISTICS))
    stride = 2
    for index, spec in enumerate(specs):
      if spec.stride > 1:  # the map about to shrink is the last at its stride
        features[f"stride_{stride}"] = x
        stride *= spec.stride
      x = block(spec, conv, depthwise_conv, norm, name=f"block_{index}")(x, train)
    features[f"stride_{stride}"] = x
    x = conv(self.head_channels, name="head_conv")(x)
    x = relu6(norm(name="head_bn")(x))
    features["head"] = x
    # A full-map average pool (not a mean) exports as one TFLite AVERAGE_POOL_2D.
    x = nn.avg_pool(x, window_shape=x.shape[1:3]).reshape(x.shape[0], -1)
    features["pooled"] = x
    x = nn.Dropout(self.dropout_rate, deterministic=not train)(x)
    logits = nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                      kernel_init=layers.dense_kernel_init(self.num_classes),
                      bias_init=nn.initializers.zeros, name="classifier")(x)
    if return_features:
      return {**features, "logits": logits}
    return logits
