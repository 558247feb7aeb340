"""Exports a model to TFLite or SavedModel, verifies the file and writes a report beside it.

  python scripts/export.py --config=configs/lite0.py --weights=pretrained \
      --quantize=int8 --io=int8 --calibration_dir=IMAGES --output=efficientnet-lite0-int8.tflite
"""

import effnetlite  # noqa: F401  (first: quiets TensorFlow before anything imports it)
from absl import app, flags
from ml_collections import config_flags

from effnetlite import deploy, export_check
from effnetlite.errors import UserError, exit_with, parse_flags_or_exit, quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file("config", "configs/lite0.py", "Model config file.")
_WEIGHTS = flags.DEFINE_string("weights", "pretrained", "'pretrained', weights file or checkpoint.")
_FORMAT = flags.DEFINE_string("format", "tflite", "tflite | saved_model")
_QUANTIZE = flags.DEFINE_string("quantize", "none", "none | float16 | dynamic | int8")
_IO = flags.DEFINE_string("io", "float32", "Input/output type: float32 | int8 | uint8 (int8 only).")
_INPUT = flags.DEFINE_enum("input", "normalized", ["normalized", "pixels"],
                           "normalized: feed (x-127)/128 (quantised input = raw pixels); "
                           "pixels: normalisation inside the graph.")
_OUTPUTS = flags.DEFINE_enum("outputs", "logits", ["logits", "probabilities"], "Graph output.")
_BATCH = flags.DEFINE_integer("batch_size", 1, "Fixed batch size of the exported graph.")
_STEPS = flags.DEFINE_integer("calibration_steps", 2000, "Calibration images for int8.")
_CALIBRATION_DIR = flags.DEFINE_string("calibration_dir", "", "Folder of calibration images.")
_CHECK_DIR = flags.DEFINE_string("check_dir", "", "Folder of images for the parity check.")
_EMA = flags.DEFINE_bool("ema", True, "Export the EMA weights of training checkpoints.")
_THREADS = flags.DEFINE_integer("threads", None, "LiteRT threads for the latency check.")
_OUTPUT = flags.DEFINE_string("output", None, "The .tflite file or SavedModel directory.")
flags.mark_flag_as_required("output")


def main(argv):
  del argv
  quiet_library_logs()
  options = deploy.ExportOptions(
      weights=_WEIGHTS.value, format=_FORMAT.value, quantize=_QUANTIZE.value, io=_IO.value,
      raw_pixels=_INPUT.value == "pixels", probabilities=_OUTPUTS.value == "probabilities",
      batch_size=_BATCH.value, calibration_steps=_STEPS.value,
      calibration_dir=_CALIBRATION_DIR.value, check_dir=_CHECK_DIR.value, ema=_EMA.value,
      threads=_THREADS.value)
  try:
    report = deploy.export_model(_CONFIG.value, options, _OUTPUT.value)
  except UserError as error:
    exit_with(error)
  if "ops" in report:
    print(export_check.format_report(report))
    print(f"report: {_OUTPUT.value}.report.json")
  else:
    print(f"wrote {report['file']}")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags_or_exit)
