"""An independent NumPy model of the int8 network a QAT EfficientNet-Lite exports to.

Written from TFLite's int8 spec and reference kernels, not from effnetlite.quant: it folds
BN itself (float64), quantises weights per channel itself, derives every activation's
scale and zero point from the stored ranges itself, and then runs integer arithmetic
only - int8 codes, int64 accumulators, int32 biases, requantisation of each accumulator
by the real multiplier s_in * s_w / s_out (rounded half away from zero, what TFLite's
fixed-point multiplier approximates to 2^-31), fused ReLU6 as a clamp of the codes,
ADD by rescaling both inputs to the output scale, and AVERAGE_POOL_2D as the rounded
mean of the codes.
"""

from __future__ import annotations


import numpy as np

from effnetlite.nn import architecture


def round_half_away(x):
  return np.sign(x) * np.floor(np.abs(x) + 0.5)


def activation_params(low: float, high: float) -> tuple[float, int]:
  low, high = min(float(low), 0.0), max(float(high), 0.0)
  scale = max((high - low) / 255.0, 1e-8)
  return scale, int(np.clip(np.round(-128 - low / scale), -128, 127))


def _same_pad(size: int, k: int, stride: int) -> tuple[int, int]:
  out = -(-size // stride)
  total = max((out - 1) * stride + k - size, 0)
  return total // 2, total - total // 2


class Int8Reference:
  """Integer inference of a QAT model's variables (`params`, `batch_stats` with ranges)."""

  def __init__(self, variables: dict, width: float, depth: float, stem_channels: int,
               epsilon: float = 1e-3):
    self.params = variables["params"]
    self.stats = variables["batch_stats"]
    self.ranges = self.stats["quant_ranges"]
    self.specs = architecture.block_specs(width, depth, 0.0, stem_channels=stem_channels)
    self.epsilon = epsilon
    self.activations: dict[str, np.ndarray] = {}  # point -> dequantised values, last call
    self.forced: dict[str, np.ndarray] | None = None

  def record(self, point: str, codes: np.ndarray, q: tuple[float, int]) -> np.ndarray:
    """Keeps a layer's output; with `forced` activations (another implementation's, by
    point) the next layer starts from those instead, so each layer is compared alone."""
    self.activations[point] = dequantize(codes, q)
    if self.forced is None:
      return codes
    forced = np.asarray(self.forced[point], np.float64).reshape(codes.shape)
    return np.clip(round_half_away(forced / q[0]) + q[1], -128, 127).astype(np.int64)

  def act(self, point: str) -> tuple[float, int]:
    r = self.ranges[point]
    return activation_params(float(r["min"]), float(r["max"]))

  def folded(self, scope: dict, stats: dict, conv: str, bn: str):
    kernel = np.asarray(scope[conv]["kernel"], np.float64)
    gamma, beta = (np.asarray(scope[bn][k], np.float64) for k in ("scale", "bias"))
    mean, var = (np.asarray(stats[bn][k], np.float64) for k in ("mean", "var"))
    factor = gamma / np.sqrt(var + self.epsilon)
    return kernel * factor, beta - mean * factor

  @staticmethod
  def quantize_weights(kernel: np.ndarray):
    scale = np.maximum(np.abs(kernel).reshape(-1, kernel.shape[-1]).max(0) / 127.0, 1e-8)
    return np.clip(round_half_away(kernel / scale), -127, 127).astype(np.int64), scale

  def conv(self, x, in_q, kernel, bias, stride, depthwise, out_q, relu):
    """Integer conv: codes (N, H, W, C) at in_q=(scale, zp) -> codes at out_q."""
    s_in, zp_in = in_q
    s_out, zp_out = out_q
    wq, s_w = self.quantize_weights(kernel)
    bq = round_half_away(bias / (s_in * s_w)).astype(np.int64)
    k = kernel.shape[0]
    xs = x.astype(np.int64) - zp_in  # real zero is code zp_in: SAME padding pads zeros here
    (pt, pb), (pl, pr) = _same_pad(x.shape[1], k, stride), _same_pad(x.shape[2], k, stride)
    xs = np.pad(xs, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    out_h, out_w = -(-x.shape[1] // stride), -(-x.shape[2] // stride)
    cout = kernel.shape[-1]
    acc = np.zeros((x.shape[0], out_h, out_w, cout), np.int64)
    for i in range(k):
      for j in range(k):
        window = xs[:, i:i + stride * out_h:stride, j:j + stride * out_w:stride, :]
        if depthwise:
          acc += window * wq[i, j, 0]
        else:
          acc += np.einsum("nhwc,cd->nhwd", window, wq[i, j])
    acc += bq
    codes = round_half_away(acc * (s_in * s_w / s_out)) + zp_out
    low, high = -128, 127
    if relu:  # fused ReLU6: the codes of 0 and 6, within int8
      low, high = max(low, zp_out), min(high, zp_out + int(round_half_away(6.0 / s_out)))
    return np.clip(codes, low, high).astype(np.int64)

  @staticmethod
  def add(a, a_q, b, b_q, out_q):
    s_out, zp_out = out_q
    real = (a - a_q[1]) * (a_q[0] / s_out) + (b - b_q[1]) * (b_q[0] / s_out)
    return np.clip(round_half_away(real) + zp_out, -128, 127).astype(np.int64)

  def __call__(self, images: np.ndarray) -> tuple[np.ndarray, tuple[float, int]]:
    """(int8 logit codes, the output's (scale, zero point)) of normalised images."""
    p, s = self.params, self.stats
    in_q = (1.0 / 128.0, -1)
    x = np.clip(round_half_away(images / in_q[0]) + in_q[1], -128, 127).astype(np.int64)
    kernel, bias = self.folded(p, s, "stem_conv", "stem_bn")
    q = self.act("stem")
    x = self.conv(x, in_q, kernel, bias, 2, False, q, True)
    x = self.record("stem", x, q)
    for index, spec in enumerate(self.specs):
      name = f"block_{index}"
      bp, bs = p[name], s[name]
      block_in, block_q = x, q  # (after any forcing: the add's second input)
      if spec.expand_ratio != 1:
        kernel, bias = self.folded(bp, bs, "expand_conv", "expand_bn")
        new_q = self.act(f"{name}_expand")
        x, q = self.conv(x, q, kernel, bias, 1, False, new_q, True), new_q
        x = self.record(f"{name}_expand", x, q)
      kernel, bias = self.folded(bp, bs, "depthwise_conv", "depthwise_bn")
      new_q = self.act(f"{name}_depthwise")
      x, q = self.conv(x, q, kernel, bias, spec.stride, True, new_q, True), new_q
      x = self.record(f"{name}_depthwise", x, q)
      kernel, bias = self.folded(bp, bs, "project_conv", "project_bn")
      new_q = self.act(f"{name}_project")
      x, q = self.conv(x, q, kernel, bias, 1, False, new_q, False), new_q
      x = self.record(f"{name}_project", x, q)
      if spec.has_residual:
        new_q = self.act(f"{name}_add")
        x, q = self.add(x, q, block_in, block_q, new_q), new_q
        x = self.record(f"{name}_add", x, q)
    kernel, bias = self.folded(p, s, "head_conv", "head_bn")
    new_q = self.act("head")
    x, q = self.conv(x, q, kernel, bias, 1, False, new_q, True), new_q
    x = self.record("head", x, q)
    count = x.shape[1] * x.shape[2]
    total = x.sum(axis=(1, 2))
    pooled = np.sign(total) * ((np.abs(total) + count // 2) // count)  # C's rounding
    kernel = np.asarray(p["classifier"]["kernel"], np.float64)
    bias = np.asarray(p["classifier"]["bias"], np.float64)
    out_q = self.act("logits")
    logits = self.conv(pooled[:, None, None, :], q, kernel[None, None], bias, 1, False,
                       out_q, False)
    self.record("logits", logits[:, 0, 0, :], out_q)
    return logits[:, 0, 0, :], out_q


def dequantize(codes: np.ndarray, q: tuple[float, int]) -> np.ndarray:
  return (codes.astype(np.float64) - q[1]) * q[0]


