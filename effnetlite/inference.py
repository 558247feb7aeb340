"""Single-image inference: read a file, preprocess as evaluation does, top-k classes."""

from __future__ import annotations

import io
import os
from typing import Any, Callable, Sequence

import jax
import numpy as np

from effnetlite import labels, preprocessing
from effnetlite.errors import UserError

# Formats tf.io.decode_image reads; anything else PIL opens is re-encoded as PNG.
_TF_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")


def read_image_bytes(path: str) -> bytes:
  """Encoded bytes of an image file that the TF preprocessing can decode.

  Greyscale, palette and RGBA files decode to RGB (alpha dropped); formats TF
  cannot read (WebP, TIFF, ...) go through PIL first.
  """
  if not os.path.isfile(path):
    raise UserError(f"image {path} does not exist; pass the path of an image file")
  with open(path, "rb") as handle:
    data = handle.read()
  from PIL import Image, UnidentifiedImageError
  try:
    with Image.open(io.BytesIO(data)) as image:
      image.verify()
    if data.startswith(_TF_SIGNATURES):
      return data
    with Image.open(io.BytesIO(data)) as image:
      buffer = io.BytesIO()
      image.convert("RGB").save(buffer, format="PNG")
      return buffer.getvalue()
  except (UnidentifiedImageError, OSError, SyntaxError) as error:
    raise UserError(f"{path} is not a readable image ({error.__class__.__name__}); pass a "
                    "JPEG, PNG, GIF, BMP, WebP or TIFF file") from None


def load_eval_image(path: str, resolution: int, resize_method: str = "bilinear",
                    crop_fraction: float = 0.875) -> np.ndarray:
  """The evaluation view of an image file: float32 pixels, (res, res, 3)."""
  image = preprocessing.decode_and_center_crop(
      read_image_bytes(path), resolution, resize_method, crop_fraction)
  return np.asarray(image)


def make_predict_fn(module: Any) -> Callable[[Any, np.ndarray], jax.Array]:
  """jit(variables, pixels) -> class probabilities; normalises like training."""
  def predict(variables, pixels):
    logits = module.apply(variables, preprocessing.normalize(pixels), train=False)
    return jax.nn.softmax(logits.astype(np.float32), axis=-1)
  return jax.jit(predict)


def softmax(logits: np.ndarray) -> np.ndarray:
  shifted = np.exp(logits - logits.max(-1, keepdims=True))
  return shifted / shifted.sum(-1, keepdims=True)


def class_names(num_classes: int) -> Sequence[str]:
  if num_classes == 1000:
    return [labels.imagenet_label(i) for i in range(1000)]
  return [f"class_{i}" for i in range(num_classes)]


def top_k(probabilities: np.ndarray, k: int, names: Sequence[str]) -> list[dict[str, Any]]:
  """[{"index", "label", "prob"}] best first."""
  order = np.argsort(-probabilities, kind="stable")[:k]
  return [{"index": int(i), "label": names[i], "prob": float(probabilities[i])} for i in order]
