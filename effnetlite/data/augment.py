"""RandAugment (N, M) and AutoAugment policy v0, written with TF2 ops (no tf.contrib).

Operate on float32 pixels in [0, 255] after the crop/resize/flip, with stateless
seeds so that augmentation is a function of (run seed, example position) like
the rest of the training input. Magnitudes follow the TF/TPU autoaugment.py
conventions (levels 0-10).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from effnetlite.errors import UserError

FILL = 128.0
MAX_LEVEL = 10.0


def _blend(a, b, factor):
  return tf.clip_by_value(b + factor * (a - b), 0.0, 255.0)


def _transform(image, matrix):
  """Projective transform with TF's 8-number convention, grey fill outside."""
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=tf.cast(matrix, tf.float32)[None],
      output_shape=tf.shape(image)[:2], fill_value=FILL, interpolation="NEAREST",
      fill_mode="CONSTANT")
  return out[0]


def _grey(image):
  return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def _equalize_channel(channel):
  values = tf.cast(channel, tf.int32)
  histogram = tf.histogram_fixed_width(values, [0, 255], nbins=256)
  nonzero = tf.boolean_mask(histogram, histogram != 0)
  step = (tf.reduce_sum(nonzero) - nonzero[-1]) // 255

  def apply():
    lut = (tf.cumsum(histogram) + step // 2) // tf.maximum(step, 1)
    lut = tf.clip_by_value(tf.concat([[0], lut[:-1]], 0), 0, 255)
    return tf.cast(tf.gather(lut, values), tf.float32)
  return tf.cond(step == 0, lambda: channel, apply)


def _auto_contrast_channel(channel):
  low, high = tf.reduce_min(channel), tf.reduce_max(channel)
  scale = 255.0 / tf.maximum(high - low, 1e-6)
  return tf.where(high > low, tf.clip_by_value((channel - low) * scale, 0.0, 255.0), channel)


def _per_channel(image, fn):
  return tf.stack([fn(image[..., c]) for c in range(3)], -1)


def _signed(level, maximum, sign):
  return tf.where(sign, -1.0, 1.0) * level / MAX_LEVEL * maximum


def apply_op(name: str, image, level, sign):
  """One named operation at `level` (0-10); `sign` flips the direction of signed ops."""
  size = tf.cast(tf.shape(image)[0], tf.float32)
  height, width = size, tf.cast(tf.shape(image)[1], tf.float32)
  if name == "AutoContrast":
    return _per_channel(image, _auto_contrast_channel)
  if name == "Equalize":
    return _per_channel(image, _equalize_channel)
  if name == "Invert":
    return 255.0 - image
  if name == "Rotate":
    angle = _signed(level, 30.0, sign) * 3.14159265 / 180.0
    cos, sin = tf.cos(angle), tf.sin(angle)
    x, y = (width - 1) / 2, (height - 1) / 2  # about the centre, as PIL's Image.rotate
    return _transform(image, [cos, -sin, x - cos * x + sin * y, sin, cos, y - sin * x - cos * y,
                              0.0, 0.0])
  if name == "Posterize":
    shift = tf.cast(8 - tf.cast(level / MAX_LEVEL * 4, tf.int32), tf.uint8)
    pixels = tf.cast(image, tf.uint8)
    return tf.cast(tf.bitwise.left_shift(tf.bitwise.right_shift(pixels, 8 - shift),
                                         8 - shift), tf.float32)
  if name == "Solarize":
    threshold = 256.0 - level / MAX_LEVEL * 256.0
    return tf.where(image < threshold, image, 255.0 - image)
  if name == "SolarizeAdd":
    return tf.where(image < 128.0, tf.minimum(image + level / MAX_LEVEL * 110.0, 255.0), image)
  if name in ("Color", "Contrast", "Brightness", "Sharpness"):
    factor = 1.0 + _signed(level, 0.9, sign)
    if name == "Color":
      return _blend(image, _grey(image), factor)
    if name == "Contrast":
      return _blend(image, tf.fill(tf.shape(image), tf.reduce_mean(_grey(image))), factor)
    if name == "Brightness":
      return _blend(image, tf.zeros_like(image), factor)
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(image[None], kernel, [1, 1, 1, 1], "VALID")[0]
    # As TF's autoaugment (and PIL's SMOOTH): the 1-pixel border keeps its pixels.
    inner = tf.pad(tf.ones_like(smooth), [[1, 1], [1, 1], [0, 0]]) > 0
    smooth = tf.where(inner, tf.pad(smooth, [[1, 1], [1, 1], [0, 0]]), image)
    return _blend(image, smooth, factor)
  if name in ("ShearX", "ShearY"):
    shear = _signed(level, 0.3, sign)
    matrix = ([1.0, shear, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0] if name == "ShearX"
              else [1.0, 0.0, 0.0, shear, 1.0, 0.0, 0.0, 0.0])
    return _transform(image, matrix)
  if name in ("TranslateX", "TranslateY"):
    axis = 1 if name == "TranslateX" else 0
    pixels = _signed(level, 0.45, sign) * tf.cast(tf.shape(image)[axis], tf.float32)  # ~100/224
    matrix = ([1.0, 0.0, -pixels, 0.0, 1.0, 0.0, 0.0, 0.0] if name == "TranslateX"
              else [1.0, 0.0, 0.0, 0.0, 1.0, -pixels, 0.0, 0.0])
    return _transform(image, matrix)
  if name == "Cutout":
    half = tf.cast(level / MAX_LEVEL * size * 0.45 / 2, tf.int32)
    rows = tf.range(tf.shape(image)[0])[:, None]
    cols = tf.range(tf.shape(image)[1])[None, :]
    inside = ((tf.abs(rows - tf.shape(image)[0] // 2) <= half) &
              (tf.abs(cols - tf.shape(image)[1] // 2) <= half))
    return tf.where(inside[..., None], FILL, image)
  if name == "Identity":
    return image
  raise ValueError(f"unknown augmentation op {name!r}")


RANDAUGMENT_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize",
                   "Color", "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY",
                   "TranslateX", "TranslateY", "Cutout", "SolarizeAdd")

# AutoAugment ImageNet policy v0: (op, probability, level) pairs per sub-policy.
POLICY_V0 = (
    (("Equalize", 0.8, 1), ("ShearY", 0.8, 4)), (("Color", 0.4, 9), ("Equalize", 0.6, 3)),
    (("Color", 0.4, 1), ("Rotate", 0.6, 8)), (("Solarize", 0.8, 3), ("Equalize", 0.4, 7)),
    (("Solarize", 0.4, 2), ("Solarize", 0.6, 2)), (("Color", 0.2, 0), ("Equalize", 0.8, 8)),
    (("Equalize", 0.4, 8), ("SolarizeAdd", 0.8, 3)), (("ShearX", 0.2, 9), ("Rotate", 0.6, 8)),
    (("Color", 0.6, 1), ("Equalize", 1.0, 2)), (("Invert", 0.4, 9), ("Rotate", 0.6, 0)),
    (("Equalize", 1.0, 9), ("ShearY", 0.6, 3)), (("Color", 0.4, 7), ("Equalize", 0.6, 0)),
    (("Posterize", 0.4, 6), ("AutoContrast", 0.4, 7)), (("Solarize", 0.6, 8), ("Color", 0.6, 9)),
    (("Solarize", 0.2, 4), ("Rotate", 0.8, 9)), (("Rotate", 1.0, 7), ("TranslateY", 0.8, 9)),
    (("ShearX", 0.0, 0), ("Solarize", 0.8, 4)), (("ShearY", 0.8, 0), ("Color", 0.6, 4)),
    (("Color", 1.0, 0), ("Rotate", 0.6, 2)), (("Equalize", 0.8, 4), ("Equalize", 0.0, 8)),
    (("Equalize", 1.0, 4), ("AutoContrast", 0.6, 2)), (("ShearY", 0.4, 7),
                                                       ("SolarizeAdd", 0.6, 7)),
    (("Posterize", 0.8, 2), ("Solarize", 0.6, 10)), (("Solarize", 0.6, 8), ("Equalize", 0.6, 1)),
    (("Color", 0.8, 6), ("Rotate", 0.4, 5)),
)


def _choose(index, branches, image):
  return tf.switch_case(index, [lambda fn=fn: fn(image) for fn in branches])


def randaugment(image, layers: int, magnitude: float, seed):
  """N layers, each a uniformly chosen op at magnitude M, random sign."""
  seeds = tf.random.experimental.stateless_split(seed, 2 * layers)
  for layer in range(layers):
    index = tf.random.stateless_uniform([], seeds[2 * layer], 0, len(RANDAUGMENT_OPS), tf.int32)
    sign = tf.random.stateless_uniform([], seeds[2 * layer + 1]) < 0.5
    branches = [lambda x, op=op: apply_op(op, x, float(magnitude), sign)
                for op in RANDAUGMENT_OPS]
    image = _choose(index, branches, image)
  return image


def autoaugment_v0(image, seed):
  """One uniformly chosen sub-policy; each of its ops applies with its probability."""
  seeds = tf.random.experimental.stateless_split(seed, 5)
  choice = tf.random.stateless_uniform([], seeds[0], 0, len(POLICY_V0), tf.int32)
  sign = tf.random.stateless_uniform([], seeds[1]) < 0.5
  draws = tf.random.stateless_uniform([2], seeds[2])

  def sub_policy(ops):
    def run(x):
      for position, (op, probability, level) in enumerate(ops):
        x = tf.cond(draws[position] < probability,
                    lambda x=x, op=op, level=level: apply_op(op, x, float(level), sign),
                    lambda x=x: x)
      return x
    return run
  return _choose(choice, [sub_policy(ops) for ops in POLICY_V0], image)


def apply_policy(image, augment: Any, seed):
  """The configured policy (`none`, `randaugment`, `autoaugment`) on one image."""
  image = tf.ensure_shape(image, [None, None, 3])
  if augment.policy == "randaugment":
    out = randaugment(image, augment.randaugment_layers, augment.randaugment_magnitude, seed)
  elif augment.policy == "autoaugment":
    out = autoaugment_v0(image, seed)
  else:
    raise UserError(f"unknown augment.policy {augment.policy!r}; use none, randaugment or "
                    "autoaugment")
  return tf.reshape(tf.clip_by_value(out, 0.0, 255.0), tf.shape(image))
