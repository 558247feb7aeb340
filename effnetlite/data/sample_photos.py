"""Real photos that ship inside scikit-image and scikit-learn: offline check and
calibration images."""

from __future__ import annotations

import os

import numpy as np

# scikit-image photos bundled with the package (no download); greyscale ones become RGB.
SKIMAGE_PHOTOS = ("astronaut", "brick", "camera", "cat", "chelsea", "clock", "coffee", "coins",
                  "grass", "gravel", "hubble_deep_field", "immunohistochemistry", "moon", "page",
                  "retina", "rocket", "text")


def write_sample_photos(directory: str) -> list[str]:
  """Writes the bundled photos as PNG/JPEG files into `directory`; returns their paths."""
  import shutil

  import skimage.data
  import sklearn.datasets
  from PIL import Image
  os.makedirs(directory, exist_ok=True)
  paths = []
  for name in SKIMAGE_PHOTOS:
    pixels = np.asarray(getattr(skimage.data, name)())
    paths.append(os.path.join(directory, f"{name}.png"))
    Image.fromarray(pixels).convert("RGB").save(paths[-1])
  paths.append(os.path.join(directory, "motorcycle.png"))
  Image.fromarray(skimage.data.stereo_motorcycle()[0]).save(paths[-1])
  for filename in sklearn.datasets.load_sample_images().filenames:
    paths.append(os.path.join(directory, os.path.basename(filename)))
    shutil.copyfile(filename, paths[-1])
  return paths
