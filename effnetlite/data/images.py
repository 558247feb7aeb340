"""Image files as the evaluation sees them: any format PIL reads, TF's evaluation crop."""

from __future__ import annotations

import io
import os

import numpy as np

from effnetlite.data import preprocessing
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


def load_image(path: str, resolution: int = 224, resize_method: str = "bilinear",
               crop_fraction: float = 0.875) -> np.ndarray:
  """An image file as the model sees it at evaluation: (resolution, resolution, 3) float32
  RGB pixels in [0, 255], TF's centre crop (a border of `1 - crop_fraction`) resized.

  Feed `normalize(image[None])` to the model; take `resolution` and the other arguments
  from the model's config (`config.model.resolution`, ...) for a fine-tuned run.
  """
  image = preprocessing.decode_and_center_crop(
      read_image_bytes(path), resolution, resize_method, crop_fraction)
  return np.asarray(image)
