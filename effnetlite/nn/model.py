"""EfficientNet-Lite as a Flax module, as the TF/TPU `efficientnet/lite` builder defines it.

The module takes images already normalised by `effnetlite.data.preprocessing.normalize`
(NHWC, any spatial size) and returns logits, or with `return_features=True` a
dict of the stride-2/4/8/16/32 feature maps, the head activation, the pooled
features and the logits. It knows nothing of optimisers, data or file formats.

The network is wired once (`LiteArchitecture.network`: stem, blocks of expansion,
depthwise, projection and residual add, head) from layers it is given as ModuleDefs (the
Flax ImageNet example's pattern): `EfficientNetLite` gives it float conv + BN + ReLU6
layers, its int8 twin (`effnetlite.quant.model`) the same layers with BN folded and int8
arithmetic, over the same variables.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import linen as nn

from effnetlite.nn import architecture, layers
from effnetlite.nn.batchnorm import BN_STATISTICS, BatchNorm

# ReLU6 rather than swish: bounded activations survive int8 quantisation.
relu6 = jax.nn.relu6


# The layers a block is built from, configured once by the network: a block knows its
# shape, not the network's settings.
ModuleDef = Callable[..., nn.Module]


class Inline(nn.Module):
  """A layer whose variables and random streams are its parent's: what it creates is named
  beside it (`stem` creates `stem_conv` and `stem_bn`). The float and int8 layers read the
  same variables in different ways; inline, both keep the names that checkpoints, weight
  importers and exports know, and the float model its random streams."""

  def setup(self) -> None:
    nn.share_scope(self, self.parent)


class ConvBNSlot(Inline):
  """What the wiring asks of a layer: a k x k conv (depthwise with `depthwise=True`), BN,
  and ReLU6 unless `activation=False`; its variables `<name>_conv` and `<name>_bn`."""
  features: int
  kernel_size: int = 1
  stride: int = 1
  depthwise: bool = False
  activation: bool = True


class ConvBN(ConvBNSlot):
  """The float layer: conv -> BatchNorm -> ReLU6, each from the network's ModuleDefs."""
  conv: ModuleDef = dataclasses.field(kw_only=True)
  depthwise_conv: ModuleDef = dataclasses.field(kw_only=True)
  norm: ModuleDef = dataclasses.field(kw_only=True)

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    if self.depthwise:
      x = self.depthwise_conv(self.kernel_size, self.stride, name=f"{self.name}_conv")(x)
    else:
      x = self.conv(self.features, self.kernel_size, self.stride, name=f"{self.name}_conv")(x)
    x = self.norm(name=f"{self.name}_bn")(x)
    return relu6(x) if self.activation else x


class Residual(Inline):
  """The block's residual add, the branch dropped per example in training (stochastic
  depth, rate `drop_rate`)."""
  drop_rate: float

  def dropped(self, branch: jax.Array, train: bool) -> jax.Array:
    if not train or self.drop_rate == 0:
      return branch
    survival = 1.0 - self.drop_rate
    mask = jax.random.bernoulli(self.make_rng("dropout"), survival,
                                (branch.shape[0],) + (1,) * (branch.ndim - 1))
    return jnp.where(mask, branch / survival, jnp.zeros_like(branch))

  @nn.compact
  def __call__(self, branch: jax.Array, inputs: jax.Array, train: bool = False) -> jax.Array:
    return self.dropped(branch, train) + inputs


class Classifier(Inline):
  """Dropout, then the dense layer `classifier` (TF's initialisers)."""
  num_classes: int
  dropout_rate: float
  dtype: Any = jnp.float32

  def dropped(self, x: jax.Array, train: bool) -> jax.Array:
    return nn.Dropout(self.dropout_rate, deterministic=not train)(x)

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    return nn.Dense(self.num_classes, dtype=self.dtype, param_dtype=jnp.float32,
                    kernel_init=layers.dense_kernel_init(self.num_classes),
                    bias_init=nn.initializers.zeros, name="classifier")(self.dropped(x, train))


def global_average_pool(x: jax.Array) -> jax.Array:
  """A full-map average pool (not a mean): it exports as one TFLite AVERAGE_POOL_2D."""
  return nn.avg_pool(x, window_shape=x.shape[1:3]).reshape(x.shape[0], -1)


class MBConvBlock(nn.Module):
  """Inverted residual: [1x1 expand] -> depthwise -> 1x1 project (+ drop-connect)."""
  spec: architecture.BlockSpec
  conv_bn: ModuleDef      # a ConvBNSlot
  residual: ModuleDef     # a Residual

  @nn.compact
  def __call__(self, inputs: Any, train: bool = False) -> Any:
    spec = self.spec
    x = inputs
    if spec.expand_ratio != 1:
      x = self.conv_bn(spec.expanded_channels, name="expand")(x)
    x = self.conv_bn(spec.expanded_channels, spec.kernel_size, spec.stride, depthwise=True,
                     name="depthwise")(x)
    x = self.conv_bn(spec.out_channels, activation=False, name="project")(x)
    if spec.has_residual:
      x = self.residual(spec.drop_connect_rate, name="add")(x, inputs, train)
    return x


class LiteArchitecture(nn.Module):
  """The fields that define an EfficientNet-Lite network and its wiring, shared by the float
  model and its int8 twin (`effnetlite.quant.model`), which copies the fields. `depthwise`
  and `pointwise` are concrete formulations (`effnetlite.nn.backend.resolve_backend`
  picks them per platform)."""
  width: float = 1.0
  depth: float = 1.0
  num_classes: int = 1000
  dropout_rate: float = 0.2
  drop_connect_rate: float = 0.2
  stem_channels: int = architecture.STEM_CHANNELS
  head_channels: int = architecture.HEAD_CHANNELS
  bn_epsilon: float = 1e-3
  depthwise: str = "conv"
  pointwise: str = "conv"

  def network(self, x: Any, train: bool, *, conv_bn: ModuleDef, block: ModuleDef,
              pool: Callable[[Any], Any], classifier: ModuleDef) -> tuple[Any, dict[str, Any]]:
    """(logits, features) of the input `x`, from the layers given (called inside a compact
    `__call__`, so the layers' variables are the caller's). Values pass between the
    layers as the layers make them: arrays, or the int8 twin's quantised tensors."""
    features: dict[str, Any] = {}
    x = conv_bn(self.stem_channels, kernel_size=3, stride=2, name="stem")(x)
    specs = architecture.block_specs(self.width, self.depth, self.drop_connect_rate,
                                     stem_channels=self.stem_channels)
    stride = 2
    for index, spec in enumerate(specs):
      if spec.stride > 1:  # the map about to shrink is the last at its stride
        features[f"stride_{stride}"] = x
        stride *= spec.stride
      x = block(spec, name=f"block_{index}")(x, train)
    features[f"stride_{stride}"] = x
    x = conv_bn(self.head_channels, name="head")(x)
    features["head"] = x
    x = pool(x)
    features["pooled"] = x
    # Named `logits` (the int8 twin's name for its output); its dense layer is `classifier`.
    return classifier(self.num_classes, self.dropout_rate, name="logits")(x, train), features


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
    conv_bn = functools.partial(
        ConvBN, norm=norm,
        conv=functools.partial(layers.Conv, impl=self.pointwise, dtype=self.dtype),
        depthwise_conv=functools.partial(layers.DepthwiseConv, impl=self.depthwise,
                                         dtype=self.dtype))
    block = MBConvBlock
    if self.rematerialize:
      block = nn.remat(MBConvBlock, static_argnums=(2,),  # (self, x, train)
                       policy=jax.checkpoint_policies.save_only_these_names(
                           layers.CONV_OUTPUT, BN_STATISTICS))
    logits, features = self.network(
        images, train, conv_bn=conv_bn,
        block=functools.partial(block, conv_bn=conv_bn, residual=Residual),
        pool=global_average_pool, classifier=functools.partial(Classifier, dtype=self.dtype))
    if return_features:
      return {**features, "logits": logits}
    return logits
