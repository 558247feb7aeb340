"""Exports a model to TFLite or SavedModel, verifies the file and writes a report beside it.

  python scripts/export.py --weights=runs/ft --quantize=int8 --output=ft-int8.tflite
  python scripts/export.py --config=configs/lite0.py --weights=pretrained \
      --quantize=int8 --io=int8 --calibration_dir=IMAGES --output=efficientnet-lite0-int8.tflite
  python scripts/export.py --weights=runs/ft --quantize=int8 --io=int8 --target=ethos-u65-256 \
      --output=ft-int8.tflite    # + ft-int8_vela.tflite for the i.MX 93's NPU

  python scripts/export.py --weights=runs/qat --quantize=int8 --io=uint8 \
      --output=qat-uint8.tflite   # a QAT run: its trained ranges, no calibration

The .tflite file carries the class names (a run's own, or ImageNet's).
"""

import contextlib
import os

from absl import flags

from effnetlite import quant, runs
from effnetlite.export.options import FORMATS, IO_TYPES, QUANTIZE_MODES, ExportOptions
from effnetlite.utils import cli, files
from effnetlite.validation import check_pretrained, validate_config

_CONFIG = cli.DEFINE_config_file("config", "configs/lite0.py", from_weights=True)
_WEIGHTS = cli.DEFINE_weights(help_string="'pretrained', 'random', a training run directory "
                              "(its config is then used; RUN/best for the best checkpoint) or a "
                              "weights file.")
_FORMAT = flags.DEFINE_enum("format", "tflite", FORMATS, "Output format.")
_QUANTIZE = flags.DEFINE_enum("quantize", "none", QUANTIZE_MODES, "TFLite quantisation.")
_IO = flags.DEFINE_enum("io", "float32", IO_TYPES,
                        "Input/output type (int8/uint8 need --quantize=int8).")
_INPUT = flags.DEFINE_enum("input", "normalized", ["normalized", "pixels"],
                           "normalized: feed (x-127)/128 (quantised input = raw pixels); "
                           "pixels: normalisation inside the graph.")
_OUTPUTS = flags.DEFINE_enum("outputs", "logits", ["logits", "probabilities"], "Graph output.")
_BATCH = flags.DEFINE_integer("batch_size", 1, "Fixed batch size of the exported graph.",
                              lower_bound=1)
_STEPS = flags.DEFINE_integer("calibration_steps", 2000, "Calibration images for int8 (at "
                              "most; a smaller source is used whole, and the report says so).",
                              lower_bound=0)
_CALIBRATION_DIR = cli.DEFINE_path("calibration_dir", "", "Folder of calibration images "
                                   "(default: the config's training split).")
_CHECK_DIR = cli.DEFINE_path("check_dir", "", "Folder of images for the parity check "
                             "(default: the config's evaluation split).")
_CHECK_IMAGES = flags.DEFINE_integer("check_images", 200, "Images of the evaluation split for "
                                     "the parity check.", lower_bound=1)
_EMA = flags.DEFINE_bool("ema", True, "Export the EMA weights of training checkpoints.")
_THREADS = flags.DEFINE_integer("threads", None, "LiteRT threads for the latency check.",
                                lower_bound=1)
_TARGET = flags.DEFINE_string("target", "none", "An Ethos-U NPU to compile the int8 file for "
                              "with Arm's Vela (ethos-u65-256: NXP i.MX 93; any Vela "
                              "--accelerator-config): writes NAME_vela.tflite and Vela's "
                              "estimates to the report. Needs --quantize=int8.")
_REQUIRE_NPU = flags.DEFINE_bool("require_npu", False, "With --target: operators that Vela "
                                 "leaves to the CPU are an error, not a warning.")
_OUTPUT = cli.DEFINE_path("output", None, "The .tflite file or SavedModel directory.",
                          required=True)


def main(argv):
  cli.no_positional_arguments(argv)
  config = runs.config_for_weights(validate_config(_CONFIG.value), _WEIGHTS.value)
  if _WEIGHTS.value == "pretrained":
    check_pretrained(config)
  options = ExportOptions(
      weights=_WEIGHTS.value, format=_FORMAT.value, quantize=_QUANTIZE.value, io=_IO.value,
      raw_pixels=_INPUT.value == "pixels", probabilities=_OUTPUTS.value == "probabilities",
      batch_size=_BATCH.value, calibration_steps=_STEPS.value,
      calibration_dir=_CALIBRATION_DIR.value, check_dir=_CHECK_DIR.value,
      check_images=_CHECK_IMAGES.value, ema=_EMA.value,
      threads=_THREADS.value, target=_TARGET.value, require_npu=_REQUIRE_NPU.value)
  if quant.qat_enabled(config):  # the trained int8 network: its own ranges, no calibration
    options.check_qat()
  else:
    options.check()
  files.check_writable(_OUTPUT.value.rstrip(os.sep), "--output")
  from effnetlite.export import export_model, verify  # JAX/TF: after the checks
  into = runs.Run(os.path.dirname(os.path.abspath(_OUTPUT.value.rstrip(os.sep))))
  with into.lock("export.py") if into.is_run() else contextlib.nullcontext():  # one writer
    report = export_model.export_model(config, options, _OUTPUT.value)
  if "ops" in report:
    print(verify.format_report(report))
    print(f"report: {_OUTPUT.value}.report.json")
  else:
    print(f"wrote {report['file']}")


if __name__ == "__main__":
  cli.run(main)
