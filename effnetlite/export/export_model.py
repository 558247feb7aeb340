"""One export command that checks its own result: build, calibrate, convert, verify, report."""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from effnetlite import quant
from effnetlite.data import labels, preprocessing
from effnetlite.errors import warn
from effnetlite.export import calibration, convert, metadata, verify
from effnetlite.export.options import ExportOptions
from effnetlite.utils import files
from effnetlite.weights import factory, loading


def export_model(config: ml_collections.ConfigDict, options: ExportOptions, output: str
                 ) -> dict[str, Any]:
  """Exports, verifies and writes `output` plus `output.report.json`; returns the report.

  A .tflite file carries TFLite metadata with the weights' class names (a run's own,
  ImageNet's for 1000 classes) as its labels file.
  """
  if quant.qat_enabled(config):
    return export_qat(config, options, output)
  options.check()
  files.check_writable(output.rstrip(os.sep), "--output")
  module, variables = factory.create_model(config)
  variables = loading.load_weights(options.weights, config, variables, ema=options.ema)
  names = labels.class_names(options.weights, config.dataset.num_classes)
  representative = calibration.calibration_data(config, options)
  predict = convert.inference_function(module, variables, options.raw_pixels,
                                       options.probabilities)
  resolution = config.model.resolution
  tf_module = convert.tf_module(predict, options.batch_size, resolution, options.raw_pixels)
  if options.format == "saved_model":
    convert.save_saved_model(tf_module, output)
    return {"file": os.path.abspath(output), "format": "saved_model"}
  data = convert.convert_tflite(tf_module, options.quantize, options.io, representative)
  info = classifier_info(config, options, names)
  files.write_atomically(output, metadata.populate(data, info))
  report = verify.verify_export(config, module, variables, options, output, tf_module)
  report["classes"] = _class_summary(names)
  report["runtimes"] = _runtimes(options)
  if representative is not None:
    report["calibration_images"] = representative.seen
    if representative.seen < options.calibration_steps:
      warn(f"calibrated on {representative.seen} images: the calibration data holds fewer "
           f"than --calibration_steps={options.calibration_steps}")
  if options.target != "none":  # the NPU compile, once the int8 file has proved itself
    from effnetlite.export import vela
    report["npu"] = vela.compile_tflite(output, options.target, options.require_npu)
  files.write_atomically(output + ".report.json", json.dumps(report, indent=2))
  return report


def export_qat(config: ml_collections.ConfigDict, options: ExportOptions, output: str
               ) -> dict[str, Any]:
  """A QAT run's full-integer file: the int8 network it trained, with its trained ranges
  (no calibration), checked against the JAX simulation of that network on the check images."""
  from effnetlite.export import qat as qexport
  options.check_qat()
  files.check_writable(output, "--output")
  module, variables = factory.create_model(config)
  variables = loading.load_weights(options.weights, config, variables, ema=options.ema)
  names = labels.class_names(options.weights, config.dataset.num_classes)
  data = qexport.convert_qat(module, variables, config.model.resolution, options.io,
                             options.batch_size)
  files.write_atomically(output, metadata.populate(data, classifier_info(config, options, names)))
  pixels, image_labels, checked_on = calibration.check_images(config, options)
  report = qexport.check_against_simulation(output, module, variables, pixels, image_labels,
                                            options.threads)
  report["checked_on"] = checked_on
  report.update(quantize="int8", io=options.io, weights=options.weights,
                variant=config.model.name, resolution=config.model.resolution,
                quantization="QAT: the trained activation ranges and weights (no calibration)")
  report["classes"] = _class_summary(names)
  report["runtimes"] = _runtimes(options)
  if not report["full_integer"]:
    warn(f"{output} is not full-integer: float tensors {report['float_tensors'][:3]}")
  if options.target != "none":
    from effnetlite.export import vela
    report["npu"] = vela.compile_tflite(output, options.target, options.require_npu)
  files.write_atomically(output + ".report.json", json.dumps(report, indent=2))
  return report


def _runtimes(options: ExportOptions) -> str:
  """Which runtimes take the file, where that is not all of them."""
  if options.io == "int8":
    return ("LiteRT, Vela/Ethos-U (the NXP layout); not MediaPipe Tasks, which take uint8 or "
            "float32 input and output only: export with --io=uint8 for it")
  return "LiteRT, MediaPipe Tasks and the TFLite Task Library (metadata: labels, normalization)"


def _class_summary(names: list[str], shown: int = 10) -> str:
  listed = ", ".join(names[:shown])
  return f"{len(names)}: {listed}" + (", ..." if len(names) > shown else "")


def classifier_info(config: ml_collections.ConfigDict, options: ExportOptions,
                    class_names: list[str]) -> metadata.ClassifierInfo:
  """The metadata of an export: its input as the graph takes it, its output, its labels."""
  if options.io != "float32":
    normalization = None  # integer input: raw pixels, the quantisation says the rest
  elif options.raw_pixels:
    normalization = (0.0, 1.0)  # the graph normalises
  else:
    normalization = (preprocessing.MEAN_PIXEL, preprocessing.PIXEL_SCALE)
  scores = "probabilities (softmax)" if options.probabilities else "scores (logits)"
  return metadata.ClassifierInfo(
      name=f"EfficientNet-{config.model.name}",
      description=(f"EfficientNet-Lite image classifier ({len(class_names)} classes, "
                   f"{config.model.resolution}x{config.model.resolution} RGB), exported by "
                   "effnetlite."),
      class_names=class_names, resolution=config.model.resolution,
      normalization=normalization,
      output_name="probabilities" if options.probabilities else "logits",
      output_description=f"Class {scores}, one per line of labels.txt.")
