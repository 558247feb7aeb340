"""Pixel preprocessing shared by training, evaluation, calibration, export and predict.

Most "cannot reproduce the accuracy" reports on EfficientNet-Lite come from
preprocessing that differs between these paths, so each step exists once:
  - `normalize`: (pixel - 127) / 128, the lite normalisation (not ImageNet
    mean/std). Applied on device by the train/eval steps and inside exported graphs.
  - `decode_and_center_crop`: the TF/TPU evaluation crop.
  - `decode_and_random_crop`: the TF/TPU training crop (stateless, seeded).
Evaluation, calibration and predict images travel as float32 pixels in [0, 255]
until `normalize`. Training batches leave the host as uint8 pixels (`to_uint8`:
the float resize rounded, a quarter of the bytes to batch, buffer and copy to the
accelerator); the jitted train step converts them in `normalize`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from effnetlite.config import RESIZE_METHODS
from effnetlite.errors import UserError

MEAN_PIXEL = 127.0
PIXEL_SCALE = 128.0


def normalize(images: Any) -> Any:
  """(pixel - 127) / 128 for NumPy, JAX or TF images of any integer or float dtype."""
  if hasattr(images, "astype"):  # NumPy and JAX arrays
    images = images.astype(np.float32)
  else:
    import tensorflow as tf
    images = tf.cast(images, tf.float32)
  return (images - MEAN_PIXEL) / PIXEL_SCALE


def crop_padding(resolution: int, crop_fraction: float = 0.875) -> int:
  """Pixels of context around the eval crop: round(res * (1/0.875 - 1)), 32 at 224."""
  return int(round(resolution * (1.0 / crop_fraction - 1.0)))


def check_resize_method(method: str) -> str:
  if method not in RESIZE_METHODS:
    raise UserError(f"unknown resize method {method!r}; choose one of "
                    f"{', '.join(RESIZE_METHODS)} (config.model.resize_method)")
  return method


def _decode(image_bytes: Any, crop_window: Any | None = None) -> Any:
  """Decodes JPEG/PNG/GIF/BMP to RGB; JPEG crops are fused into the decode."""
  import tensorflow as tf

  def generic():
    image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    if crop_window is None:
      return image
    top, left, height, width = tf.unstack(crop_window)
    return image[top:top + height, left:left + width]

  def jpeg():
    if crop_window is None:
      return tf.io.decode_jpeg(image_bytes, channels=3)
    return tf.io.decode_and_crop_jpeg(image_bytes, crop_window, channels=3)

  image = tf.cond(tf.io.is_jpeg(image_bytes), jpeg, generic)
  image.set_shape([None, None, 3])
  return image


def image_shape(image_bytes: Any) -> Any:
  """(height, width) of an encoded image without decoding JPEG pixels."""
  import tensorflow as tf
  return tf.cond(tf.io.is_jpeg(image_bytes),
                 lambda: tf.io.extract_jpeg_shape(image_bytes)[:2],
                 lambda: tf.shape(tf.io.decode_image(image_bytes, channels=3,
                                                     expand_animations=False))[:2])


def resize(image: Any, resolution: int, method: str) -> Any:
  """Resizes to resolution x resolution float32 pixels (no antialiasing, as TF/TPU)."""
  import tensorflow as tf
  image = tf.image.resize([image], [resolution, resolution], method=check_resize_method(method))
  return tf.cast(image[0], tf.float32)


def to_uint8(image: Any) -> Any:
  """Float pixels in [0, 255] -> uint8, rounded to nearest (TF's round: half to even);
  values outside [0, 255] (bicubic and lanczos overshoot) saturate."""
  import tensorflow as tf
  return tf.saturate_cast(tf.round(image), tf.uint8)


def decode_and_center_crop(image_bytes: Any, resolution: int, method: str = "bilinear",
                           crop_fraction: float = 0.875) -> Any:
  """The TF/TPU evaluation preprocessing: padded centre crop, then resize.

  side = res / (res + pad) * min(h, w), truncated; the crop is centred, rounding
  the offset up like the TF code ((h - side + 1) // 2).
  """
  window = _centre_window(image_shape(image_bytes), resolution, crop_fraction)
  return resize(_decode(image_bytes, window), resolution, method)


def _centre_window(shape: Any, resolution: int, crop_fraction: float) -> Any:
  """[top, left, side, side] of the evaluation crop of an image of `shape` (h, w)."""
  import tensorflow as tf
  height, width = shape[0], shape[1]
  pad = crop_padding(resolution, crop_fraction)
  side = tf.cast(resolution / (resolution + pad) * tf.cast(tf.minimum(height, width),
                                                           tf.float64), tf.int32)
  top, left = (height - side + 1) // 2, (width - side + 1) // 2
  return tf.stack([top, left, side, side])


def decode_and_random_crop(image_bytes: Any, resolution: int, seed: Any, method: str = "bilinear",
                           min_object_covered: float = 0.1,
                           aspect_ratio_range: tuple[float, float] = (3 / 4, 4 / 3),
                           area_range: tuple[float, float] = (0.08, 1.0), max_attempts: int = 10,
                           crop_fraction: float = 0.875) -> Any:
  """The TF/TPU training crop: sample_distorted_bounding_box, centre-crop fallback.

  `seed` is a stateless seed (shape [2] int) so that the crop is a function of
  (run seed, example position) and a resumed run repeats it exactly.
  """
  import tensorflow as tf
  shape = image_shape(image_bytes)
  bbox = tf.constant([0.0, 0.0, 1.0, 1.0], dtype=tf.float32, shape=[1, 1, 4])
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.concat([shape, [3]], axis=0), bounding_boxes=bbox, seed=seed,
      min_object_covered=min_object_covered, aspect_ratio_range=aspect_ratio_range,
      area_range=area_range, max_attempts=max_attempts, use_image_if_no_bounding_boxes=True)
  # All attempts failed -> the sampler returns the whole image; TF then centre-crops.
  # Choosing the window, not the branch, keeps one decode and one resize in the graph.
  failed = tf.reduce_all(tf.equal(size[:2], shape))
  window = tf.where(failed, _centre_window(shape, resolution, crop_fraction),
                    tf.stack([begin[0], begin[1], size[0], size[1]]))
  return resize(_decode(image_bytes, window), resolution, method)
