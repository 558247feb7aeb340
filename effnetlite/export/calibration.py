"""The images an export sees: calibration inputs for int8 and held-out images to check it.

Both go through the evaluation preprocessing (`data.images.load_image` and the
evaluation pipeline) that eval.py and predict use: most int8 accuracy collapses
users report come from calibrating on differently preprocessed images.
"""

from __future__ import annotations

import glob
import os
import tempfile
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np

from effnetlite.data import pipeline, sources
from effnetlite.data.images import load_image
from effnetlite.data.sample_photos import write_sample_photos
from effnetlite.errors import UserError, warn
from effnetlite.export import convert
from effnetlite.export.options import ExportOptions


def _image_files(directory: str) -> list[str]:
  found = sorted(f for f in glob.glob(os.path.join(directory, "**", "*"), recursive=True)
                 if f.lower().endswith(sources.IMAGE_EXTENSIONS + (".webp", ".tif", ".tiff")))
  if not found:
    raise UserError(f"no images in {directory}; pass a folder of JPEG/PNG files")
  return found


def folder_pixels(directory: str, config: ml_collections.ConfigDict, limit: int | None = None
                  ) -> Iterator[np.ndarray]:
  """Evaluation-preprocessed pixels of the images in a folder, one batch of 1 at a time."""
  model = config.model
  for path in _image_files(directory)[:limit]:
    yield load_image(path, model.resolution, model.resize_method,
                     model.eval_crop_fraction)[None]


def dataset_batches(config: ml_collections.ConfigDict, source: sources.Source
                    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
  """(pixels, labels) of `source`'s examples, evaluation-preprocessed, padding dropped."""
  for batch in pipeline.eval_batches(config, source, global_batch=jax.device_count()):
    keep = batch["mask"] > 0
    yield batch["image"][keep], batch["label"][keep]


def calibration_data(config: ml_collections.ConfigDict, options: ExportOptions) -> Any:
  """The converter's representative dataset for int8 (None otherwise): --calibration_dir,
  or the training split of the configured dataset."""
  if options.quantize != "int8":
    return None
  if options.calibration_dir:
    batches = folder_pixels(options.calibration_dir, config, options.calibration_steps)
  else:
    try:  # fail now, not in the middle of the conversion
      source = sources.make_source(config.dataset, config.dataset.train_split)
    except UserError as error:
      raise UserError(f"int8 quantisation needs calibration data and the configured dataset "
                      f"is unavailable ({error}); pass --calibration_dir=IMAGES") from None
    batches = (pixels for pixels, _ in dataset_batches(config, source))
  return convert.RepresentativeDataset(batches, options.calibration_steps, options.raw_pixels)


def check_images(config: ml_collections.ConfigDict, options: ExportOptions
                 ) -> tuple[np.ndarray, np.ndarray | None, str]:
  """Held-out images for the parity check: (pixels, labels or None, where they came from).

  --check_dir, else the first `options.check_images` of the config's evaluation split
  (labelled: the report gives both top-1s), else - with no dataset here - the photos
  bundled offline, which suit ImageNet models only; the report says which.
  """
  if options.check_dir:
    pixels = np.concatenate(list(folder_pixels(options.check_dir, config)))
    return pixels, None, f"{len(pixels)} images of {options.check_dir}"
  try:
    source = sources.make_source(config.dataset, config.dataset.eval_split)
  except UserError as error:
    warn(f"checking the export on the bundled photos: the evaluation split is unavailable "
         f"({error})")
  else:
    pixels, labels = [], []
    for batch_pixels, batch_labels in dataset_batches(config, source):
      pixels.append(batch_pixels)
      labels.append(batch_labels)
      if sum(map(len, pixels)) >= options.check_images:
        break
    pixels = np.concatenate(pixels)[:options.check_images]
    labels = np.concatenate(labels)[:options.check_images]
    return pixels, labels, (f"{len(pixels)} images of {config.dataset.name}/"
                            f"{config.dataset.eval_split}")
  with tempfile.TemporaryDirectory() as directory:
    write_sample_photos(directory)
    pixels = np.concatenate(list(folder_pixels(directory, config)))
  return pixels, None, f"{len(pixels)} bundled photos (ImageNet classes)"
