"""Images/s of the training preprocessing on ImageNet-sized JPEGs, on this machine.

  python benchmarks/input_pipeline.py [--images=512] [--resolution=224] [--batch=128]

Writes synthetic 500x375 photographs-like JPEGs (ImageNet's typical size) into a
temporary image folder and times `pipeline.train_batches` over them: fused
decode + random crop, resize, flip, batching, with tf.data AUTOTUNE.
"""

import os
import tempfile
import time

import numpy as np
from absl import flags

from effnetlite.config import base_config
from effnetlite.utils import cli

_IMAGES = flags.DEFINE_integer("images", 512, "JPEGs to write.", lower_bound=1)
_RESOLUTION = flags.DEFINE_integer("resolution", 224, "Output side.", lower_bound=32)
_BATCH = flags.DEFINE_integer("batch", 128, "Batch size.", lower_bound=1)
_BATCHES = flags.DEFINE_integer("batches", 20, "Timed batches.", lower_bound=1)


def write_jpegs(directory: str, count: int) -> None:
  from PIL import Image
  rng = np.random.default_rng(0)
  for index in range(count):
    folder = os.path.join(directory, "train", f"class_{index % 10}")
    os.makedirs(folder, exist_ok=True)
    # Smooth gradients plus noise: compresses like a photo (~100-150 KB), not like noise.
    y, x = np.mgrid[0:375, 0:500]
    base = np.stack([x * 0.5, y * 0.6, (x + y) * 0.3], -1) + rng.normal(0, 20, (375, 500, 3))
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(
        os.path.join(folder, f"{index}.jpg"), quality=90)


def main(argv) -> None:
  cli.no_positional_arguments(argv)
  from effnetlite.data import pipeline, sources  # TensorFlow: after configure_process
  with tempfile.TemporaryDirectory() as directory:
    write_jpegs(directory, _IMAGES.value)
    config = base_config(resolution=_RESOLUTION.value)
    config.dataset.name, config.dataset.data_dir = "folder", directory
    config.dataset.eval_split, config.dataset.num_classes = "train", 10
    config.batch_size = _BATCH.value
    source = sources.make_source(config.dataset, "train")
    batches = pipeline.train_batches(config, source)
    next(batches)  # start-up: threads, autotuning
    start = time.perf_counter()
    for _ in range(_BATCHES.value):
      next(batches)
    rate = _BATCHES.value * _BATCH.value / (time.perf_counter() - start)
  print(f"training preprocessing: {rate:.0f} images/s at {_RESOLUTION.value}px on "
        f"{os.cpu_count()} cores (500x375 JPEGs, batch {_BATCH.value})")


if __name__ == "__main__":
  cli.run(main)
