"""`effnetlite_digits`: a small real dataset that works offline (tests, demo, search).

scikit-learn's handwritten digits (1,797 8x8 greyscale images that ship inside
the package, 10 classes), upsampled to RGB PNGs and split 80/20 per class by a
fixed permutation. Built by an ordinary tfds builder, so it exercises the same
tfds path as ImageNet; nothing is downloaded.
"""

from __future__ import annotations

import io
import os

import numpy as np
import tensorflow_datasets as tfds

from effnetlite.config import DEFAULT_DATA_DIR

IMAGE_SIZE = 64
TEST_FRACTION = 0.2


class EffnetliteDigits(tfds.core.GeneratorBasedBuilder):
  """scikit-learn digits as 64x64 RGB PNGs."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "scikit-learn digits upsampled to 64x64 RGB."}

  def _info(self) -> tfds.core.DatasetInfo:
    return self.dataset_info_from_configs(
        features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format="png"),
            "label": tfds.features.ClassLabel(names=[str(d) for d in range(10)]),
        }),
        supervised_keys=("image", "label"),
        description=__doc__)

  def _split_generators(self, dl_manager):
    del dl_manager  # the data ships with scikit-learn
    from sklearn.datasets import load_digits
    digits = load_digits()
    train, test = [], []
    rng = np.random.RandomState(0)
    for label in range(10):
      indices = rng.permutation(np.flatnonzero(digits.target == label))
      cut = int(round(len(indices) * TEST_FRACTION))
      test += indices[:cut].tolist()
      train += indices[cut:].tolist()
    return {"train": self._generate_examples(digits, sorted(train)),
            "test": self._generate_examples(digits, sorted(test))}

  def _generate_examples(self, digits, indices):
    from PIL import Image
    for index in indices:
      pixels = (digits.images[index] * (255.0 / 16.0)).round().astype(np.uint8)
      image = Image.fromarray(pixels).resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR)
      buffer = io.BytesIO()
      image.convert("RGB").save(buffer, format="PNG")
      yield int(index), {"image": buffer.getvalue(), "label": int(digits.target[index])}


def write_example(path: str, index: int = 0) -> int:
  """Writes test example `index` as a PNG (for the demo's predict step); returns its label."""
  builder = EffnetliteDigits(data_dir=os.path.expanduser(DEFAULT_DATA_DIR))
  builder.download_and_prepare()
  dataset = builder.as_dataset(split="test", decoders={"image": tfds.decode.SkipDecoding()})
  example = next(iter(dataset.skip(index).take(1)))
  with open(path, "wb") as handle:
    handle.write(example["image"].numpy())
  return int(example["label"])

