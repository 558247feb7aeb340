"""One export command that checks its own result: build, calibrate, convert, verify, report."""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from effnetlite.errors import warn
from effnetlite.export import calibration, convert, metadata, verify
from effnetlite.export.options import ExportOptions
from effnetlite.utils import files
from effnetlite.weights import factory, loading


def export_model(config: ml_collections.ConfigDict, options: ExportOptions, output: str,
                 class_names: list[str] | None = None) -> dict[str, Any]:
  """Exports, verifies and writes `output` plus `output.report.json`; returns the report.

  A .tflite file carries `class_names` (default: class_0, class_1, ...) as its labels.
  """
  options.check()
  files.check_writable(output.rstrip(os.sep), "--output")
  module, variables = factory.create_model(config)
  variables = loading.load_weights(options.weights, config, variables, ema=options.ema)
  names = class_names or [f"class_{i}" for i in range(config.dataset.num_classes)]
  representative = calibration.calibration_data(config, options)
  predict = convert.inference_function(module, variables, options.raw_pixels,
                                       options.probabilities)
  resolution = config.model.resolution
  tf_module = convert.tf_module(predict, options.batch_size, resolution, options.raw_pixels)
  if options.format == "saved_model":
    convert.save_saved_model(tf_module, output)
    return {"file": os.path.abspath(output), "format": "saved_model"}
  data = convert.convert_tflite(tf_module, options.quantize, options.io, representative)
  files.write_atomically(output, metadata.attach_labels(data, names))
  report = verify.verify_export(config, module, variables, options, output, tf_module)
  report["classes"] = _class_summary(names)
  if representative is not None:
    report["calibration_images"] = representative.seen
    if representative.seen < options.calibration_steps:
      warn(f"calibrated on {representative.seen} images: the calibration data holds fewer "
           f"than --calibration_steps={options.calibration_steps}")
  files.write_atomically(output + ".report.json", json.dumps(report, indent=2))
  return report


def _class_summary(names: list[str], shown: int = 10) -> str:
  listed = ", ".join(names[:shown])
  return f"{len(names)}: {listed}" + (", ..." if len(names) > shown else "")
