"""One export command that checks its own result: build, calibrate, convert, verify, report.

Calibration and checking images go through `preprocessing.decode_and_center_crop`,
the same evaluation preprocessing that eval.py and predict use: most int8
accuracy collapses users report come from calibrating on differently
preprocessed images.
"""

from __future__ import annotations

import glob
import json
import os
import tempfile
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np

from effnetlite import export, export_check, factory, files, inference, preprocessing
from effnetlite.data import pipeline, sources
from effnetlite.errors import UserError
from effnetlite.export_options import ExportOptions
from effnetlite.sample_images import write_sample_photos


def _image_files(directory: str) -> list[str]:
  images = sorted(f for f in glob.glob(os.path.join(directory, "**", "*"), recursive=True)
                  if f.lower().endswith(sources.IMAGE_EXTENSIONS + (".webp", ".tif", ".tiff")))
  if not images:
    raise UserError(f"no images in {directory}; pass a folder of JPEG/PNG files")
  return images


def folder_pixels(directory: str, config: ml_collections.ConfigDict, limit: int | None = None
                  ) -> Iterator[np.ndarray]:
  """Evaluation-preprocessed pixels of the images in a folder, one batch of 1 at a time."""
  model = config.model
  for path in _image_files(directory)[:limit]:
    yield inference.load_eval_image(path, model.resolution, model.resize_method,
                                    model.eval_crop_fraction)[None]


def dataset_pixels(config: ml_collections.ConfigDict, source: sources.Source
                   ) -> Iterator[np.ndarray]:
  """Evaluation-preprocessed pixels of `source` (the training split, apart from evaluation)."""
  for batch in pipeline.eval_batches(config, source, global_batch=jax.device_count()):
    yield batch["image"][batch["mask"] > 0]


def calibration_data(config: ml_collections.ConfigDict, options: ExportOptions) -> Any:
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
    batches = dataset_pixels(config, source)
  return export.representative_dataset(batches, options.calibration_steps, options.raw_pixels)


def export_model(config: ml_collections.ConfigDict, options: ExportOptions, output: str
                 ) -> dict[str, Any]:
  """Exports, verifies and writes `output` plus `output.report.json`; returns the report."""
  options.check()
  files.check_writable(output.rstrip(os.sep), "--output")
  module, variables = factory.create_model(config)
  variables = factory.load_variables(options.weights, config, variables, ema=options.ema)
  representative = calibration_data(config, options)
  predict = export.inference_function(module, variables, options.raw_pixels,
                                      options.probabilities)
  resolution = config.model.resolution
  tf_module = export.tf_module(predict, options.batch_size, resolution, options.raw_pixels)
  if options.format == "saved_model":
    export.save_saved_model(tf_module, output)
    return {"file": os.path.abspath(output), "format": "saved_model"}
  data = export.convert_tflite(tf_module, options.quantize, options.io, representative)
  files.write_atomically(output, data)
  report = verify(config, module, variables, options, output, tf_module)
  files.write_atomically(output + ".report.json", json.dumps(report, indent=2))
  return report


def check_images(config: ml_collections.ConfigDict, options: ExportOptions) -> np.ndarray:
  if options.check_dir:
    return np.concatenate(list(folder_pixels(options.check_dir, config)))
  with tempfile.TemporaryDirectory() as directory:
    write_sample_photos(directory)
    return np.concatenate(list(folder_pixels(directory, config)))


def verify(config: ml_collections.ConfigDict, module: Any, variables: Any,
           options: ExportOptions, output: str, tf_module: Any) -> dict[str, Any]:
  """Parity of the written file with JAX on held-out photos, plus latency vs float."""
  pixels = check_images(config, options)
  logits = np.asarray(jax.jit(module.apply)(variables, preprocessing.normalize(pixels)))
  if options.probabilities:
    logits = np.asarray(jax.nn.softmax(logits))
  report = export_check.check_tflite(output, logits, pixels, probabilities=options.probabilities,
                                     threads=options.threads)
  report.update(quantize=options.quantize, io=options.io, weights=options.weights,
                variant=config.model.name, resolution=config.model.resolution)
  if options.quantize != "none":  # how much faster than the float file on this CPU
    with tempfile.TemporaryDirectory() as directory:
      float_path = os.path.join(directory, "float.tflite")
      files.write_atomically(float_path, export.convert_tflite(tf_module))
      from effnetlite.tflite import TFLiteModel
      float_ms = TFLiteModel(float_path, options.threads).latency_ms()
    report["float_latency_ms_batch1"] = float_ms
    report["latency_ratio_vs_float"] = report["latency_ms_batch1"] / float_ms
  return report
