"""The quantised twin of `EfficientNetLite`: the int8 network a QAT run trains and exports.

`QuantizedEfficientNetLite` is the float model's wiring (`LiteArchitecture.network`) with
int8 layers in its slots. It reads the same variables as the float model - `params` and the
BN statistics in `batch_stats`, under the same names - plus one entry,
`batch_stats["quant_ranges"]`, holding each activation's averaged range, by point (a
layer's place in the network: `stem`, `block_3_expand`, `block_3_add`, `logits`). It
computes what the exported full-integer TFLite file computes:

- BN folded into the kernels with the frozen (running) statistics:
  w' = w * gamma / sqrt(var + eps), b' = beta - mean * gamma / sqrt(var + eps); the
  statistics are read, never updated (the float model's BN updates them; QAT does not);
- weights per-channel symmetric int8 (max|w'| / 127, narrow range), biases int32 at
  input scale x weight scale, at most 2^21 in magnitude: a channel whose bias would need
  more (its weights are tiny next to its bias, as in dozens of pretrained lite0's
  channels) gets the weight scale |b'| / (input scale x 2^21) instead, and its weights
  fewer than 127 levels, in proportion to how far the bias outweighs them. Every bias
  then stays an integer that float32 (the simulation's accumulators) and the converter's
  double arithmetic both hold exactly;
- activations per-tensor asymmetric int8 after every fused conv(+ReLU6), every residual
  add and the classifier; the input at the fixed (scale 1/128, zero point -1) that maps
  uint8 pixels p exactly onto the normalised (p - 127) / 128, so int8 and uint8 I/O are
  both exact;
- the full-window average pool keeps its input's scale and zero point and rounds the mean
  of the int8 codes half away from zero, as TFLite's int8 AVERAGE_POOL_2D does.

Outside the export the forward pass is that integer arithmetic
(`effnetlite.quant.integer`), code for code, as LiteRT's default CPU path (XNNPACK) runs
the file: each conv / fully-connected layer accumulates the int8 codes exactly (integers
in float32 at full precision) plus the int32 bias, then requantises like XNNPACK
(float32(acc) times the float32 multiplier s_in * s_w / s_out, rounded half to even); the
residual ADD is XNNPACK's fixed-point ADD; the scales are IEEE float32 values
(`fake_quant.ieee_divide`). A float simulation of the same network (round after float
convolutions) rounds ~1e-6 of the codes differently, and an EfficientNet carries such a
one-step difference into several output steps a few blocks later. Gradients pass straight
through every rounding.

Activation ranges are exponential moving averages (decay `range_decay`) of each batch's
min and max, updated in training (`mutable=["batch_stats"]`) and initialised from the
first batch. Why averaged rather than learned: the ranges then need no learning rate,
weight decay or optimiser state of their own (the recipe's RMSProp at the weights' rate
would move a clipping threshold by its own size in one step), they cannot collapse, and
a run's EMA copy of `batch_stats` averages them like the BN statistics; this is the
scheme of TF's own QAT (tfmot's MovingAverageQuantizer) and of qwix's ODML provider.

With `table` set (export), every scale comes from that table of numpy values, every
fake-quant is a `quant.fake_quant` composite the TFLite converter reads, and the layers
take their kernels and biases already folded and on the int8 / int32 grid from the
`quant_folded` collection: the converter then stores exactly the codes the simulation
used (folding BN in the exported graph instead rounds a few weights and the large biases
differently). `export_parameters` computes both from concrete variables by running this
module once.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from jax import lax

from effnetlite.nn import layers
from effnetlite.nn.depthwise import depthwise_shifted
from effnetlite.nn.model import (Classifier, ConvBNSlot, EfficientNetLite, LiteArchitecture,
                                 MBConvBlock, Residual, global_average_pool)
from effnetlite.quant import fake_quant as fq
from effnetlite.quant import integer
from effnetlite.quant.integer import QTensor, avg_pool_int8

RANGES = "quant_ranges"          # batch_stats[RANGES][point] = {"min", "max", "count"}
TABLE = "quant_table"            # the collection the scales are captured in
FOLDED = "quant_folded"          # the export's folded kernels and biases, by point
FOLDED_SUFFIX = ".folded"
# Largest int32 bias code: exact in float32 (the simulation's accumulators) and recovered
# exactly by the converter from a float32 bias (relative error 2^-24 x 2^21 < 1/2).
BIAS_CODE_LIMIT = 2.0 ** 21
ACTIVATIONS = "quant_activations"  # every int8 activation (dequantised), when mutable
# The normalised input (p - 127) / 128 of uint8 pixels p, exactly: int8 code p - 128.
INPUT_SCALE = 1.0 / 128.0
INPUT_ZERO_POINT = -1.0
_DIMENSIONS = ("NHWC", "HWIO", "NHWC")


@dataclasses.dataclass(eq=False)
class QuantTable:
  """Static quantisation parameters by point name (numpy); hashed by identity."""
  entries: dict[str, dict[str, np.ndarray]]

  def __getitem__(self, name: str) -> dict[str, np.ndarray]:
    return self.entries[name]


class _Context:
  """What one forward pass shares between layers: ranges in, ranges out, captured scales."""

  def __init__(self, stored: dict, update: bool, initializing: bool, decay: float,
               table: QuantTable | None, folded: dict | None = None):
    self.stored, self.update, self.initializing = stored, update, initializing
    self.decay, self.table, self.folded = decay, table, folded
    self.new_ranges: dict[str, Any] = {}
    self.captured: dict[str, dict[str, Any]] = {}
    self.values: dict[str, jax.Array] = {}    # every quantised activation, for checks

  def activation_params(self, name: str, x: jax.Array) -> tuple[Any, Any]:
    """(scale, zero point) of point `name`, its range observed on x first in training."""
    batch_min = lax.stop_gradient(jnp.min(x)).astype(jnp.float32)
    batch_max = lax.stop_gradient(jnp.max(x)).astype(jnp.float32)
    stored = self.stored.get(name)
    if stored is None or self.initializing:
      low, high = batch_min, batch_max
      self.new_ranges[name] = {"min": jnp.zeros((), jnp.float32),
                               "max": jnp.zeros((), jnp.float32),
                               "count": jnp.zeros((), jnp.float32)}
    else:
      seen = stored["count"] > 0
      if self.update:
        low = jnp.where(seen, self.decay * stored["min"] + (1 - self.decay) * batch_min,
                        batch_min)
        high = jnp.where(seen, self.decay * stored["max"] + (1 - self.decay) * batch_max,
                         batch_max)
        self.new_ranges[name] = {"min": low, "max": high, "count": stored["count"] + 1}
      else:  # never observed (a fresh model evaluated): this batch's range
        low = jnp.where(seen, stored["min"], batch_min)
        high = jnp.where(seen, stored["max"], batch_max)
    scale, zero_point = fq.activation_params(low, high)
    self.captured[name] = {"scale": scale, "zero_point": zero_point}
    return scale, zero_point

  def activation(self, name: str, x: jax.Array) -> QTensor:
    """x fake-quantised at point `name` (float rounding: the residual ADD)."""
    if self.table is not None:
      entry = self.table[name]
      scale, zero_point = entry["scale"], entry["zero_point"]
      value = fq.fake_quant_composite(x, scale, zero_point)
      return QTensor(value, float(scale.reshape(-1)[0]), float(zero_point.reshape(-1)[0]))
    scale, zero_point = self.activation_params(name, x)
    value = fq.fake_quant(x, scale, zero_point)
    self.values[name] = value
    return QTensor(value, scale, zero_point)

  def requantized(self, name: str, accumulator: jax.Array, real: jax.Array,
                  accumulator_scale: Any, relu: bool) -> QTensor:
    """The int8 output of an integer conv / fully-connected layer at point `name`
    (`integer.requantize`). `real` (acc * s_in * s_w, before ReLU6) carries the
    straight-through gradient and the observed range."""
    y = jax.nn.relu6(real) if relu else real
    scale, zero_point = self.activation_params(name, y)
    codes = integer.requantize(accumulator, accumulator_scale, scale, zero_point, relu)
    value = integer.straight_through(y, codes, scale, zero_point)
    self.values[name] = value
    return QTensor(value, scale, zero_point)

  def add(self, name: str, a: QTensor, b: QTensor) -> QTensor:
    """The residual ADD at point `name` (`integer.fixed_point_add`)."""
    real = a.value + b.value
    if self.table is not None:
      return self.activation(name, real)
    scale, zero_point = self.activation_params(name, real)
    codes = integer.fixed_point_add(a, b, scale, zero_point)
    value = integer.straight_through(real, codes, scale, zero_point)
    self.values[name] = value
    return QTensor(value, scale, zero_point)

  def quantized_input(self, images: jax.Array) -> QTensor:
    """The normalised images on the input's fixed int8 grid."""
    if self.table is not None:
      return QTensor(fq.fake_quant_composite(images, np.float32([INPUT_SCALE]),
                                             np.float32([INPUT_ZERO_POINT])),
                     INPUT_SCALE, INPUT_ZERO_POINT)
    return QTensor(fq.fake_quant(images.astype(jnp.float32), INPUT_SCALE, INPUT_ZERO_POINT),
                   INPUT_SCALE, INPUT_ZERO_POINT)

  def pool(self, x: QTensor) -> QTensor:
    """The full-window average pool at its input's (the head's) scale and zero point:
    integer (`avg_pool_int8`), or for export AVERAGE_POOL_2D between composites."""
    if self.table is None:
      return avg_pool_int8(x)
    head = self.table["head"]
    return QTensor(fq.fake_quant_composite(global_average_pool(x.value), head["scale"],
                                           head["zero_point"]), x.scale, x.zero_point)

  def weight(self, name: str, kernel: jax.Array, channel_axis: int, bias: jax.Array,
             input_scale: Any) -> tuple[jax.Array, Any]:
    """(fake-quantised kernel, per-channel scale): symmetric, narrow range, the scale
    raised where the bias would otherwise need more than `BIAS_CODE_LIMIT` codes."""
    if self.table is not None:
      scale = self.table[name]["scale"]
      value = fq.fake_quant_composite(kernel, scale, None, narrow_range=True,
                                      quantization_dimension=channel_axis % kernel.ndim)
      return value, scale
    bias_floor = jnp.abs(bias) / (input_scale * BIAS_CODE_LIMIT)
    scale = lax.stop_gradient(jnp.maximum(fq.weight_scale(kernel, channel_axis), bias_floor))
    self.captured[name] = {"scale": scale}
    shape = [1] * kernel.ndim
    shape[channel_axis] = -1
    return fq.fake_quant(kernel, scale.reshape(shape), 0.0, narrow_range=True), scale


class _Kernel(nn.Module):
  """A convolution's `kernel` parameter under the float model's name for that layer."""
  shape: tuple[int, ...]
  fan_out: int

  @nn.compact
  def __call__(self) -> jax.Array:
    return self.param("kernel", layers.conv_kernel_init(self.fan_out), self.shape, jnp.float32)


class _BatchNormVariables(nn.Module):
  """The float BN's `scale`, `bias` and `batch_stats/mean`, `var`, read only."""
  channels: int

  @nn.compact
  def __call__(self) -> tuple[jax.Array, ...]:
    c = self.channels
    mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
    var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    return scale, bias, mean.value, var.value


class _DenseVariables(nn.Module):
  features: int
  inputs: int

  @nn.compact
  def __call__(self) -> tuple[jax.Array, jax.Array]:
    kernel = self.param("kernel", layers.dense_kernel_init(self.features),
                        (self.inputs, self.features), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,), jnp.float32)
    return kernel, bias


def _point(layer: nn.Module) -> str:
  """The name of an inline layer's int8 output: its place in the network (`stem`,
  `block_3_expand`, `block_3_add`, `logits`), the key of its range and table entries."""
  return "_".join((*layer.scope.path, layer.name))


def _conv(x: jax.Array, kernel: jax.Array, stride: int, depthwise: bool, depthwise_impl: str,
          pointwise_impl: str) -> jax.Array:
  """The float model's convolution formulations at full float32 precision (on integer
  codes in training and evaluation, so the accumulators are exact)."""
  if depthwise:
    if depthwise_impl == "shifted":
      return depthwise_shifted(x, kernel, stride)  # elementwise products and sums: exact
    return lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
                                    dimension_numbers=_DIMENSIONS,
                                    feature_group_count=x.shape[-1],
                                    precision=lax.Precision.HIGHEST)
  if kernel.shape[0] == 1 and stride == 1 and pointwise_impl == "dot":
    return integer.pointwise_exact(x, kernel[0, 0])
  return lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
                                  dimension_numbers=_DIMENSIONS,
                                  precision=lax.Precision.HIGHEST)


class QuantConvBN(ConvBNSlot):
  """conv -> BN folded into it -> optional ReLU6 -> int8 activation at its point, over the
  float layer's variables (`<name>_conv/kernel`, `<name>_bn/...`)."""
  ctx: _Context = dataclasses.field(kw_only=True)
  epsilon: float = dataclasses.field(kw_only=True)
  depthwise_impl: str = dataclasses.field(kw_only=True)
  pointwise_impl: str = dataclasses.field(kw_only=True)

  @nn.compact
  def __call__(self, x: QTensor) -> QTensor:
    ctx, point, relu = self.ctx, _point(self), self.activation

    def conv(inputs, kernel_values):
      return _conv(inputs, kernel_values, self.stride, self.depthwise, self.depthwise_impl,
                   self.pointwise_impl)
    if ctx.table is not None:  # export: float ops between composites, the converter's input
      folded = ctx.folded[point]
      wq, _ = ctx.weight(point + ".kernel", folded["kernel"], -1, folded["bias"], x.scale)
      y = conv(x.value, wq) + folded["bias"]
      return ctx.activation(point, jax.nn.relu6(y) if relu else y)
    k, cin = self.kernel_size, x.value.shape[-1]
    if self.depthwise:
      kernel = _Kernel((k, k, 1, cin), k * k, name=f"{self.name}_conv")()
    else:
      kernel = _Kernel((k, k, cin, self.features), k * k * self.features,
                       name=f"{self.name}_conv")()
    gamma, beta, mean, var = _BatchNormVariables(kernel.shape[-1], name=f"{self.name}_bn")()
    factor = gamma * lax.rsqrt(var + self.epsilon)
    folded_kernel, folded_bias = kernel * factor, beta - mean * factor
    wq, w_scale = ctx.weight(point + ".kernel", folded_kernel, -1, folded_bias, x.scale)
    return _integer_layer(ctx, point, x, wq, w_scale, folded_bias, conv, relu)


def _integer_layer(ctx: _Context, point: str, x: QTensor, wq: jax.Array, w_scale: Any,
                   bias: jax.Array, op: Any, relu: bool) -> QTensor:
  """A conv or fully-connected layer in integer arithmetic: `op` (linear) applied to the
  int8 codes (input minus its zero point, weights) gives the int32 accumulator exactly -
  integers in float32, exact while partial sums stay below 2^24 - plus the int32 bias,
  then requantised as XNNPACK does. Gradients pass straight through the roundings. The
  export takes the layer's on-grid kernel and integer bias from here (`FOLDED_SUFFIX`)."""
  x_codes = fq.round_ste(x.value / lax.stop_gradient(x.scale))
  w_codes = fq.round_ste(wq / w_scale)
  accumulator_scale = lax.stop_gradient(x.scale * w_scale)
  bias_codes = jnp.clip(fq.round_ste(bias / accumulator_scale), -BIAS_CODE_LIMIT,
                        BIAS_CODE_LIMIT)
  ctx.captured[point + FOLDED_SUFFIX] = {"kernel": wq, "bias_codes": bias_codes,
                                         "input_scale": x.scale}
  accumulator = op(x_codes, w_codes) + bias_codes
  return ctx.requantized(point, accumulator, accumulator * accumulator_scale,
                         accumulator_scale, relu)


class QuantResidual(Residual):
  """The residual ADD in XNNPACK's fixed point, at its point."""
  ctx: _Context = dataclasses.field(kw_only=True)

  @nn.compact
  def __call__(self, branch: QTensor, inputs: QTensor, train: bool = False) -> QTensor:
    return self.ctx.add(_point(self), branch._replace(value=self.dropped(branch.value, train)),
                        inputs)


class QuantClassifier(Classifier):
  """Dropout, then the classifier as an int8 fully-connected layer at point `logits`."""
  ctx: _Context = dataclasses.field(kw_only=True)

  @nn.compact
  def __call__(self, x: QTensor, train: bool = False) -> QTensor:
    ctx, point = self.ctx, _point(self)
    inputs = self.dropped(x.value, train)
    if ctx.table is not None:
      kernel, bias = ctx.folded[point]["kernel"], ctx.folded[point]["bias"]
    else:
      kernel, bias = _DenseVariables(self.num_classes, inputs.shape[-1], name="classifier")()
    wq, w_scale = ctx.weight(point + ".kernel", kernel, -1, bias, x.scale)
    if ctx.table is not None:
      return ctx.activation(point, inputs @ wq + bias)
    return _integer_layer(ctx, point, QTensor(inputs, x.scale, x.zero_point), wq, w_scale,
                          bias, integer.pointwise_exact, relu=False)


class QuantizedEfficientNetLite(LiteArchitecture):
  """EfficientNet-Lite as the int8 TFLite file computes it: the float model's architecture
  fields (`qat_module` copies them) and wiring, plus `range_decay` and, for export,
  `table`. Computes in float32; BN statistics are frozen, so there is no momentum."""
  range_decay: float = 0.99
  table: QuantTable | None = None

  @nn.compact
  def __call__(self, images: jax.Array, train: bool = False,
               return_features: bool = False) -> jax.Array | dict[str, jax.Array]:
    # With a table (export) the ranges are not read: the table holds what they say.
    store = self.variable("batch_stats", RANGES, dict) if self.table is None else None
    folded = self.variable(FOLDED, "layers", dict).value if self.table is not None else None
    initializing = self.is_initializing()
    update = (train and self.is_mutable_collection("batch_stats") and not initializing
              and self.table is None)
    ctx = _Context(dict(store.value) if store else {}, update, initializing, self.range_decay,
                   self.table, folded)
    conv_bn = functools.partial(QuantConvBN, ctx=ctx, epsilon=self.bn_epsilon,
                                depthwise_impl=self.depthwise, pointwise_impl=self.pointwise)
    residual = functools.partial(QuantResidual, ctx=ctx)
    logits, features = self.network(
        ctx.quantized_input(images), train, conv_bn=conv_bn,
        block=functools.partial(MBConvBlock, conv_bn=conv_bn, residual=residual),
        pool=ctx.pool, classifier=functools.partial(QuantClassifier, ctx=ctx))
    if self.table is None:
      if update or initializing:
        store.value = ctx.new_ranges
      if self.is_mutable_collection(TABLE) and not initializing:
        for name, entry in ctx.captured.items():
          self.put_variable(TABLE, name, entry)
      if self.is_mutable_collection(ACTIVATIONS) and not initializing:
        for name, value in ctx.values.items():
          self.put_variable(ACTIVATIONS, name, value)
    if return_features:
      return {**{name: x.value for name, x in features.items()}, "logits": logits.value}
    return logits.value


def qat_module(float_module: EfficientNetLite, range_decay: float = 0.99
               ) -> QuantizedEfficientNetLite:
  """The twin of a float module: its `LiteArchitecture` fields (the float module's compute
  dtype, BN momentum and rematerialisation are not the int8 network's)."""
  fields = {f.name: getattr(float_module, f.name) for f in dataclasses.fields(LiteArchitecture)
            if f.name not in ("parent", "name")}
  return QuantizedEfficientNetLite(**fields, range_decay=range_decay)


def with_ranges(module: QuantizedEfficientNetLite, variables: dict[str, Any],
                resolution: int) -> dict[str, Any]:
  """Float variables plus unobserved activation ranges (count 0), ready for QAT; variables
  that already hold ranges are returned as they are."""
  if RANGES in variables.get("batch_stats", {}):
    return variables
  images = jnp.zeros((1, resolution, resolution, 3), jnp.float32)
  fresh = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), images))
  ranges = jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), fresh["batch_stats"][RANGES])
  return {**variables, "batch_stats": {**variables["batch_stats"], RANGES: ranges}}


def without_ranges(variables: dict[str, Any]) -> dict[str, Any]:
  """The float model's variables of a QAT model (the ranges dropped)."""
  stats = {k: v for k, v in variables.get("batch_stats", {}).items() if k != RANGES}
  return {**variables, "batch_stats": stats}


def observe_ranges(module: QuantizedEfficientNetLite, variables: dict[str, Any],
                   batches: Any) -> dict[str, Any]:
  """Variables whose activation ranges were averaged over `batches` of normalised images
  (BN statistics and weights unchanged): the start of a QAT run, or a check."""
  step = jax.jit(lambda v, x: module.apply(v, x, train=True, mutable=["batch_stats"],
                                           rngs={"dropout": jax.random.PRNGKey(0)})[1])
  for images in batches:
    variables = {**variables, "batch_stats": step(variables, images)["batch_stats"]}
  return variables


def export_parameters(module: QuantizedEfficientNetLite, variables: dict[str, Any],
                      resolution: int) -> tuple[QuantTable, dict[str, Any]]:
  """What the export needs, computed from `variables` by the module's own arithmetic (one
  evaluation-mode pass; the input does not matter): the table of every static scale and
  zero point, and the variables of the table-mode module (`FOLDED`): each layer's kernel
  on its int8 grid and its bias as the float32 nearest to (int32 code) x input scale x
  weight scale, which the converter rounds back to that very code."""
  ranges = variables.get("batch_stats", {}).get(RANGES)
  if not ranges:
    raise ValueError("these variables hold no activation ranges: not a QAT model")
  unseen = sorted(name for name, entry in ranges.items() if float(entry["count"]) <= 0)
  if unseen:
    raise ValueError(f"activation range {unseen[0]} was never observed: train (or "
                     "observe_ranges) before exporting")
  images = jnp.zeros((1, resolution, resolution, 3), jnp.float32)
  _, captured = jax.jit(lambda v: module.apply(v, images, train=False, mutable=[TABLE]))(
      variables)
  captured = jax.tree.map(np.asarray, dict(captured[TABLE]))
  entries, layers = {}, {}
  for name, entry in captured.items():
    if not name.endswith(FOLDED_SUFFIX):
      entries[name] = {k: np.asarray(v, np.float32).reshape(-1) for k, v in entry.items()}
  for name, entry in captured.items():
    if name.endswith(FOLDED_SUFFIX):
      point = name[:-len(FOLDED_SUFFIX)]
      bias_scale = (np.float64(entry["input_scale"])
                    * entries[point + ".kernel"]["scale"].astype(np.float64))
      layers[point] = {"kernel": np.asarray(entry["kernel"], np.float32),
                       "bias": (entry["bias_codes"].astype(np.float64) * bias_scale
                                ).astype(np.float32)}
  return QuantTable(entries), {FOLDED: {"layers": layers}}
