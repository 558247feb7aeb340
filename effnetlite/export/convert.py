"""Export to SavedModel and TFLite (float32, float16, dynamic-range, full-integer int8/uint8).

JAX -> jax2tf (native serialisation) -> tf.function with a fixed signature ->
TFLiteConverter, which lowers the StableHLO to TFLite builtins only. The graph
is traced with `nn.backend.EXPORTABLE` (the plain convolutions) so that it becomes
DEPTHWISE_CONV_2D / CONV_2D whatever implementation training used. Export
knows nothing of training: it takes a module and its inference variables.
"""

from __future__ import annotations

import os
from typing import Any, Callable, Iterable, Iterator

import numpy as np

from effnetlite.data import preprocessing
from effnetlite.errors import UserError
from effnetlite.export.options import NORMALIZED_INPUT, RAW_PIXELS_INPUT
from effnetlite.nn import backend


def inference_function(module: Any, variables: Any, raw_pixels: bool,
                       probabilities: bool) -> Callable[[Any], Any]:
  """images -> logits or probabilities, with the exportable layer implementations."""
  import jax
  exportable = module.clone(**backend.EXPORTABLE)

  def predict(images):
    inputs = preprocessing.normalize(images) if raw_pixels else images
    logits = exportable.apply(variables, inputs, train=False)
    return jax.nn.softmax(logits) if probabilities else logits
  return predict


def tf_module(predict: Callable[[Any], Any], batch_size: int, resolution: int,
              raw_pixels: bool) -> Any:
  """A tf.Module whose `serve` has one fixed-shape float input, `pixels` or `images`."""
  import tensorflow as tf
  from jax.experimental import jax2tf
  converted = jax2tf.convert(predict, with_gradient=False)
  name = RAW_PIXELS_INPUT if raw_pixels else NORMALIZED_INPUT
  spec = tf.TensorSpec([batch_size, resolution, resolution, 3], tf.float32, name=name)

  # The argument's name becomes the signature's input name, which LiteRT reports.
  def serve_pixels(pixels):
    return {"logits": converted(pixels)}

  def serve_images(images):
    return {"logits": converted(images)}
  holder = tf.Module()  # the converter writes signatures only with a trackable owner
  holder.serve = tf.function(serve_pixels if raw_pixels else serve_images, autograph=False,
                             input_signature=[spec])
  return holder


def convert_tflite(module: Any, quantize: str = "none", io_type: str = "float32",
                   representative: Callable[[], Iterator[list[np.ndarray]]] | None = None
                   ) -> bytes:
  """TFLite flatbuffer; int8 needs `representative` (calibration inputs, as fed)."""
  import tensorflow as tf
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [module.serve.get_concrete_function()], module)
  converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
  if quantize == "float16":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
  elif quantize == "dynamic":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  elif quantize == "int8":
    if representative is None:
      raise UserError("int8 quantisation needs calibration data: set --calibration_steps > 0 "
                      "on a dataset with images, or pass --calibration_dir=IMAGES")
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if io_type != "float32":
      converter.inference_input_type = getattr(tf, io_type)
      converter.inference_output_type = getattr(tf, io_type)
  return converter.convert()


def save_saved_model(module: Any, output: str) -> None:
  """Writes a SavedModel directory next to `output`, then renames it into place."""
  import shutil

  import tensorflow as tf
  temporary = output.rstrip("/") + ".tmp-export"
  shutil.rmtree(temporary, ignore_errors=True)
  try:
    tf.saved_model.save(module, temporary,
                        signatures={"serving_default": module.serve.get_concrete_function()})
    shutil.rmtree(output, ignore_errors=True)
    os.replace(temporary, output)
  finally:
    shutil.rmtree(temporary, ignore_errors=True)


class RepresentativeDataset:
  """Calibration inputs for the converter: up to `steps` single images, fed as the model
  takes them; `seen` counts those the converter drew (a split may hold fewer)."""

  def __init__(self, batches: Iterable[np.ndarray], steps: int, raw_pixels: bool):
    self.batches, self.steps, self.raw_pixels = batches, steps, raw_pixels
    self.seen = 0

  def __call__(self) -> Iterator[list[np.ndarray]]:
    for pixels in self.batches:
      for image in pixels:
        if self.seen == self.steps:
          return
        inputs = image if self.raw_pixels else preprocessing.normalize(image)
        yield [np.asarray(inputs, np.float32)[None]]
        self.seen += 1
