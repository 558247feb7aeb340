"""Verifies an exported .tflite against the JAX model it came from, and reports.

Float files: max |delta logit| vs JAX. Quantised files: top-1 agreement with
the JAX float model (overall and where the float top-1 probability is >= 0.3)
and, with labels, both top-1s. Always: the operator list, file size, batch-1
latency in LiteRT (XNNPACK), and the I/O quantisation a deployer needs. The table also
shows the Ethos-U compile (`effnetlite.export.vela`) when the report has one.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import ml_collections
import numpy as np
from scipy.special import softmax

from effnetlite.data import preprocessing
from effnetlite.export import calibration, convert, vela
from effnetlite.export.options import ExportOptions
from effnetlite.export.runtime import TFLiteModel
from effnetlite.utils import files

CONFIDENT = 0.3
ALLOWED_OPS = {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D", "FULLY_CONNECTED",
               "SOFTMAX", "QUANTIZE", "DEQUANTIZE", "SUB", "MUL", "RESHAPE"}


def check_tflite(path: str, jax_logits: np.ndarray, pixels: np.ndarray,
                 labels: np.ndarray | None = None, probabilities: bool = False,
                 threads: int | None = None) -> dict[str, Any]:
  """The parity report of `path` on `pixels` whose JAX float outputs are `jax_logits`."""
  model = TFLiteModel(path, num_threads=threads)
  outputs = model.logits(pixels)
  float_probs = jax_logits if probabilities else softmax(jax_logits, axis=-1)
  float_top1, tflite_top1 = jax_logits.argmax(-1), outputs.argmax(-1)
  confident = float_probs.max(-1) >= CONFIDENT
  ops = model.op_names()
  report = {
      "file": os.path.abspath(path), "size_bytes": os.path.getsize(path), **model.describe(),
      "ops": ops, "only_allowed_ops": set(ops) <= ALLOWED_OPS,
      "images": int(len(pixels)),
      "max_abs_output_diff": float(np.abs(outputs - jax_logits).max()),
      "top1_agreement": float((float_top1 == tflite_top1).mean()),
      "confident_images": int(confident.sum()),
      "top1_agreement_confident": (float((float_top1 == tflite_top1)[confident].mean())
                                   if confident.any() else None),
      "latency_ms_batch1": model.latency_ms(),
      "threads": threads or os.cpu_count(),
  }
  if labels is not None:
    report["float_top1"] = float((float_top1 == labels).mean())
    report["tflite_top1"] = float((tflite_top1 == labels).mean())
  return report


def verify_export(config: ml_collections.ConfigDict, module: Any, variables: Any,
                  options: ExportOptions, output: str, tf_module: Any) -> dict[str, Any]:
  """Parity of the written file with JAX on held-out photos, plus latency vs float."""
  import jax
  pixels, labels, checked_on = calibration.check_images(config, options)
  apply = jax.jit(module.apply)
  logits = np.concatenate([np.asarray(apply(variables, preprocessing.normalize(chunk)))
                           for chunk in np.array_split(pixels, -(-len(pixels) // 64))])
  if options.probabilities:
    logits = np.asarray(jax.nn.softmax(logits))
  report = check_tflite(output, logits, pixels, labels, probabilities=options.probabilities,
                        threads=options.threads)
  report["checked_on"] = checked_on
  report.update(quantize=options.quantize, io=options.io, weights=options.weights,
                variant=config.model.name, resolution=config.model.resolution)
  if options.quantize != "none":  # how much faster than the float file on this CPU
    with tempfile.TemporaryDirectory() as directory:
      float_path = os.path.join(directory, "float.tflite")
      files.write_atomically(float_path, convert.convert_tflite(tf_module))
      float_ms = TFLiteModel(float_path, options.threads).latency_ms()
    report["float_latency_ms_batch1"] = float_ms
    report["latency_ratio_vs_float"] = report["latency_ms_batch1"] / float_ms
  return report


def format_report(report: dict[str, Any]) -> str:
  """A short human-readable table of the report."""
  rows = [("file", report["file"]), ("size", f"{report['size_bytes'] / 1e6:.2f} MB"),
          ("input", f"{report['input']['dtype']} {report['input']['shape']} scale="
                    f"{report['input']['scale']:.6g} zero_point={report['input']['zero_point']}"
                    + (" (raw pixels)" if report["input_is_raw_pixels"] else "")),
          ("output", f"{report['output']['dtype']} {report['output']['shape']} scale="
                     f"{report['output']['scale']:.6g} zero_point="
                     f"{report['output']['zero_point']}"),
          ("ops", ", ".join(report["ops"])),
          ("max |delta output| vs JAX", f"{report['max_abs_output_diff']:.3g}"),
          ("checked on", report["checked_on"])]
  if "max_output_steps_vs_simulation" in report:  # a QAT file: against its simulation
    rows += [("quantization", report["quantization"]),
             ("full integer", "yes" if report["full_integer"] else
              f"no: float tensors {', '.join(report['float_tensors'][:3])}"),
             ("top-1 agreement vs JAX int8 simulation",
              f"{report['top1_agreement']:.2%} of {report['images']}"),
             ("max |delta output| in output steps",
              f"{report['max_output_steps_vs_simulation']:.3g} (within 1 step: "
              f"{report['outputs_within_1_step']:.2%})")]
  else:
    rows += [("top-1 agreement vs JAX float", f"{report['top1_agreement']:.2%} of "
                                              f"{report['images']}"),
             (f"  where float p >= {CONFIDENT}", "n/a" if report["top1_agreement_confident"]
              is None else f"{report['top1_agreement_confident']:.2%} of "
              f"{report['confident_images']}")]
  rows.append(("latency, batch 1", f"{report['latency_ms_batch1']:.2f} ms "
                                   f"({report['threads']} threads)"))
  for key in ("float_top1", "simulated_top1", "tflite_top1", "latency_ratio_vs_float"):
    if key in report:
      rows.append((key.replace("_", " "), f"{report[key]:.4g}"))
  if "calibration_images" in report:
    rows.append(("calibration images", str(report["calibration_images"])))
  if "npu" in report:  # Vela's figures for the Ethos-U target
    rows += vela.format_rows(report["npu"])
  rows.append(("classes", report["classes"]))
  rows.append(("runtimes", report["runtimes"]))
  width = max(len(k) for k, _ in rows)
  return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)
