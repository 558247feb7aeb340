"""A QAT model to a full-integer TFLite file with its own quantisation parameters, and the
check of that file against the JAX simulation it was trained as.

Route: the twin with a static `QuantTable` (every fake-quant a `quant.fake_quant`
composite) on the simulation's folded, on-grid kernels and biases -> jax2tf (StableHLO
serialised for TF 2.21's converter, `effnetlite.export.stablehlo`) -> tf.function whose
variables are `tf.Variable` arguments (captured as constants instead, the converter folds
the weight fake-quants away and the file is not full-integer) -> TFLiteConverter with
`_experimental_strict_qdq = True`, which turns each composite into the int8 tensor it
describes: no calibration, no representative dataset, the trained scales as they are.
"""

from __future__ import annotations

import os
from typing import Any, Callable

import numpy as np

from effnetlite.errors import UserError
from effnetlite.export import stablehlo
from effnetlite.export.options import NORMALIZED_INPUT
from effnetlite.nn import backend
from effnetlite.quant import model as qmodel

IO_TYPES = ("int8", "uint8")
# Builtin operators a full-integer EfficientNet-Lite file may hold (QUANTIZE: the uint8 <->
# int8 conversions at the ends of a uint8-I/O file).
INTEGER_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D", "FULLY_CONNECTED",
               "RESHAPE", "QUANTIZE"}


def export_function(module: qmodel.QuantizedEfficientNetLite, table: qmodel.QuantTable
                    ) -> Callable[[Any, Any], Any]:
  """(folded variables, normalised images) -> logits, every fake-quant a composite."""
  exportable = module.clone(table=table, **backend.EXPORTABLE)

  def predict(variables, images):
    return exportable.apply(variables, images, train=False)
  return predict


def _tf_module(predict: Callable[[Any, Any], Any], variables: Any, batch_size: int,
               resolution: int) -> Any:
  """A tf.Module whose `serve(images)` runs `predict` on its tf.Variables."""
  import tensorflow as tf
  from jax.experimental import jax2tf
  holder = tf.Module()
  holder.variables_tree = tf.nest.map_structure(
      lambda a: tf.Variable(np.asarray(a), trainable=False), variables)
  converted = jax2tf.convert(predict, with_gradient=False)
  spec = tf.TensorSpec([batch_size, resolution, resolution, 3], tf.float32,
                       name=NORMALIZED_INPUT)

  def serve_images(images):
    return {"logits": converted(holder.variables_tree, images)}
  holder.serve = tf.function(serve_images, autograph=False, input_signature=[spec])
  return holder


def convert_qat(module: qmodel.QuantizedEfficientNetLite, variables: dict[str, Any],
                resolution: int, io_type: str = "int8", batch_size: int = 1) -> bytes:
  """The full-integer .tflite bytes of a QAT model (int8 or uint8 input and output).

  The input takes normalised images' int8 codes at scale 1/128 (zero point -1 for int8,
  127 for uint8: raw pixels go in as they are); the output is the logits at the range
  QAT averaged.
  """
  import tensorflow as tf
  if io_type not in IO_TYPES:
    raise UserError(f"--io={io_type} is not one of {', '.join(IO_TYPES)} for a QAT export")
  table, folded = qmodel.export_parameters(module, variables, resolution)
  with stablehlo.serialized_for_converter():
    holder = _tf_module(export_function(module, table), folded, batch_size, resolution)
    concrete = holder.serve.get_concrete_function()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
    converter._experimental_strict_qdq = True  # noqa: SLF001 - the composite route
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = getattr(tf, io_type)
    converter.inference_output_type = getattr(tf, io_type)
    return converter.convert()


def simulate(module: qmodel.QuantizedEfficientNetLite, variables: dict[str, Any],
             images: np.ndarray, chunk: int = 64) -> np.ndarray:
  """The JAX simulation's logits (evaluation mode) for normalised images."""
  import jax
  apply = jax.jit(lambda v, x: module.apply(v, x, train=False))
  return np.concatenate([np.asarray(apply(variables, images[i:i + chunk]))
                         for i in range(0, len(images), chunk)])


def integer_only(path: str) -> dict[str, Any]:
  """Operators of the file and whether every tensor an operator touches is integer."""
  from ai_edge_litert.interpreter import Interpreter, OpResolverType
  interpreter = Interpreter(model_path=path, experimental_op_resolver_type=(
      OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
  interpreter.allocate_tensors()
  tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
  ops = interpreter._get_ops_details()  # noqa: SLF001
  float_tensors = sorted({tensors[i]["name"] for op in ops
                          for i in list(op["inputs"]) + list(op["outputs"])
                          if i >= 0 and np.dtype(tensors[i]["dtype"]).kind == "f"})
  names = sorted({op["op_name"] for op in ops})
  return {"ops": names, "float_tensors": float_tensors,
          "full_integer": not float_tensors and set(names) <= INTEGER_OPS}


def check_against_simulation(path: str, module: qmodel.QuantizedEfficientNetLite,
                             variables: dict[str, Any], pixels: np.ndarray,
                             labels: np.ndarray | None = None,
                             threads: int | None = None) -> dict[str, Any]:
  """The file's logits against the JAX simulation's on float pixels (N, H, W, 3) in
  [0, 255]: top-1 agreement, and the largest difference in output quantisation steps.

  The file runs in LiteRT's default CPU path (XNNPACK, as MediaPipe and Android run it),
  whose integer arithmetic the simulation reproduces code for code. TFLite's own builtin
  kernels (no delegate) requantise with gemmlowp's fixed-point multipliers instead and
  round about 0.3% of each layer's codes the other way.
  """
  from effnetlite.data.preprocessing import normalize
  from effnetlite.export.runtime import TFLiteModel
  # Whole pixel values, as an image reaches the file: resized images hold halves, which the
  # file's input quantisation and the simulation's would round on different grids.
  pixels = np.clip(np.round(np.asarray(pixels, np.float32)), 0, 255)
  tflite = TFLiteModel(path, num_threads=threads)
  file_logits = tflite.logits(pixels)
  simulated = simulate(module, variables, np.asarray(normalize(pixels), np.float32))
  scale = float(tflite.output["quantization"][0])
  steps = np.abs(file_logits - simulated) / scale
  agree = file_logits.argmax(-1) == simulated.argmax(-1)
  report = {
      "file": os.path.abspath(path), "size_bytes": os.path.getsize(path),
      "images": int(len(pixels)), **integer_only(path), **tflite.describe(),
      "reference": "JAX int8 simulation",
      "top1_agreement_vs_simulation": float(agree.mean()),
      "max_output_steps_vs_simulation": float(steps.max()),
      "outputs_within_1_step": float((steps <= 1.0 + 1e-3).mean()),
      # The keys of a float/post-training export's report, against the simulation here.
      "top1_agreement": float(agree.mean()),
      "max_abs_output_diff": float(np.abs(file_logits - simulated).max()),
      "confident_images": 0, "top1_agreement_confident": None,
      "only_allowed_ops": None,
      "latency_ms_batch1": tflite.latency_ms(),
      "threads": threads or os.cpu_count(),
  }
  report["only_allowed_ops"] = report["full_integer"]
  if labels is not None:
    report["simulated_top1"] = float((simulated.argmax(-1) == labels).mean())
    report["tflite_top1"] = float((file_logits.argmax(-1) == labels).mean())
  return report
