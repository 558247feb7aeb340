"""Images/s per CPU core of the training preprocessing on ImageNet-sized JPEGs.

  python benchmarks/input_pipeline.py [--images=512] [--resolution=224] [--batch=128]
      [--batches=20] [--mixup_alpha=0]

Writes `--images` synthetic 500x375 photograph-like JPEGs (ImageNet's typical size)
and an image folder that lists them often enough for the timed batches to lie inside
one epoch, as they do in an ImageNet epoch (1.28M images); the start of an epoch
(tracing, threads, the shuffle buffer's fill) is timed apart. Times
`pipeline.train_batches`: fused decode + random crop, resize, flip, rounding to uint8,
batching (and mixup with --mixup_alpha), with tf.data AUTOTUNE.

Per core is images per CPU-second of the whole process (all its threads), a figure
that holds on a machine shared with other jobs; `taskset -c 1 python ...` measures
one core.
"""

import os
import shutil
import tempfile
import time

import numpy as np
from absl import flags

from effnetlite.config import base_config
from effnetlite.utils import cli

_IMAGES = flags.DEFINE_integer("images", 512, "Distinct JPEGs to write.", lower_bound=1)
_RESOLUTION = flags.DEFINE_integer("resolution", 224, "Output side.", lower_bound=32)
_BATCH = flags.DEFINE_integer("batch", 128, "Batch size.", lower_bound=1)
_BATCHES = flags.DEFINE_integer("batches", 20, "Timed batches.", lower_bound=1)
_MIXUP = flags.DEFINE_float("mixup_alpha", 0.0, "config.augment.mixup_alpha.", lower_bound=0.0)


def write_jpegs(directory: str, count: int, listed: int) -> None:
  """`count` distinct JPEGs under directory/train/class_*, linked to `listed` files."""
  from PIL import Image
  rng = np.random.default_rng(0)
  paths = []
  for index in range(count):
    folder = os.path.join(directory, "train", f"class_{index % 10}")
    os.makedirs(folder, exist_ok=True)
    # Smooth gradients plus noise: compresses like a photo (~100 KB), not like noise.
    y, x = np.mgrid[0:375, 0:500]
    base = np.stack([x * 0.5, y * 0.6, (x + y) * 0.3], -1) + rng.normal(0, 20, (375, 500, 3))
    paths.append(os.path.join(folder, f"{index}.jpg"))
    Image.fromarray(np.clip(base, 0, 255).astype(np.uint8)).save(paths[-1], quality=90)
  for index in range(count, listed):  # more examples per epoch, the same bytes
    source = paths[index % count]
    target = os.path.join(os.path.dirname(source), f"{index}.jpg")
    try:
      os.link(source, target)
    except OSError:
      shutil.copyfile(source, target)


def main(argv) -> None:
  cli.no_positional_arguments(argv)
  from effnetlite.data import pipeline, sources  # TensorFlow: after configure_process
  batch, timed = _BATCH.value, _BATCHES.value
  with tempfile.TemporaryDirectory() as directory:
    # The first batch, the timed ones, and the next epoch's start-up come after them.
    write_jpegs(directory, _IMAGES.value, (timed + 2 + pipeline.NEXT_EPOCH_LEAD) * batch)
    config = base_config(resolution=_RESOLUTION.value)
    config.dataset.name, config.dataset.data_dir = "folder", directory
    config.dataset.eval_split, config.dataset.num_classes = "train", 10
    config.batch_size = batch
    config.augment.mixup_alpha = _MIXUP.value
    source = sources.make_source(config.dataset, "train")
    batches = pipeline.train_batches(config, source)
    start = time.perf_counter()
    first = next(batches)  # epoch start-up: tracing, threads, shuffle buffer, autotuning
    startup = time.perf_counter() - start
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(timed):
      next(batches)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    batches.close()
  images = timed * batch
  cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
  print(f"training preprocessing: {images / cpu:.0f} images/s per core ({images} images in "
        f"{cpu:.2f} CPU-s; {images / wall:.0f} images/s on {cores} core(s)) at "
        f"{_RESOLUTION.value}px, 500x375 JPEGs, batch {batch} of {first['image'].dtype}, "
        f"mixup_alpha {_MIXUP.value:g}; epoch start-up {startup:.2f} s")


if __name__ == "__main__":
  cli.run(main)
