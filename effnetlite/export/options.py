"""What an export is asked to produce, checked before JAX or TensorFlow load."""

from __future__ import annotations

import dataclasses
import os

from effnetlite.errors import UserError

# The exported signature's input name says who normalises: the graph (raw pixels in) or
# the caller ((x - 127) / 128 done before); LiteRT reports it, so a runtime can tell.
RAW_PIXELS_INPUT = "pixels"
NORMALIZED_INPUT = "images"
QUANTIZE_MODES = ("none", "float16", "dynamic", "int8")
IO_TYPES = ("float32", "int8", "uint8")
FORMATS = ("tflite", "saved_model")


@dataclasses.dataclass
class ExportOptions:
  weights: str = "pretrained"
  format: str = "tflite"
  quantize: str = "none"
  io: str = "float32"
  raw_pixels: bool = False        # normalisation inside the graph
  probabilities: bool = False     # softmax inside the graph
  batch_size: int = 1
  calibration_steps: int = 2000
  calibration_dir: str = ""
  check_dir: str = ""             # default: the config's evaluation split
  check_images: int = 200         # at most this many images of the evaluation split
  ema: bool = True
  threads: int | None = None
  target: str = "none"            # a Vela accelerator config (ethos-u65-256: i.MX 93) or none
  require_npu: bool = False       # operators left to the CPU: an error, not a warning

  def check_qat(self) -> None:
    """The options of a QAT run's export: a full-integer file with the trained ranges."""
    if self.format != "tflite":
      raise UserError(f"--format={self.format}: a QAT run exports as a full-integer .tflite; "
                      "pass --format=tflite --quantize=int8")
    if self.quantize != "int8":
      raise UserError(f"--quantize={self.quantize}: a QAT run exports as the int8 network it "
                      "trained; pass --quantize=int8 (its trained ranges, no calibration)")
    if self.io not in ("int8", "uint8"):
      raise UserError(f"--io={self.io}: a QAT file takes and returns integers; pass --io=uint8 "
                      "(raw pixels in, as MediaPipe takes) or --io=int8")
    if self.raw_pixels:
      raise UserError("--input=pixels is for float files; a QAT file's integer input already "
                      "is the raw pixels (its quantisation does the normalisation)")
    if self.probabilities:
      raise UserError("--outputs=probabilities is not available for a QAT export (its int8 "
                      "logits are what was trained); pass --outputs=logits")
    if self.batch_size < 1:
      raise UserError(f"--batch_size={self.batch_size} must be at least 1")
    if self.target != "none":
      from effnetlite.export import vela
      vela.check_target(self.target)
    elif self.require_npu:
      raise UserError("--require_npu needs an NPU: pass --target=ACCELERATOR (e.g. "
                      "ethos-u65-256, the i.MX 93's Ethos-U65)")
    if self.calibration_dir:
      raise UserError("--calibration_dir: a QAT export uses the ranges trained with the "
                      "weights and calibrates nothing; leave it out")
    if self.check_dir and not os.path.isdir(self.check_dir):
      raise UserError(f"--check_dir={self.check_dir} is not a directory; pass a folder of "
                      "images")

  def check(self) -> None:
    """Every option on its own and together; one UserError naming the flag."""
    for flag, value, allowed in (("--format", self.format, FORMATS),
                                 ("--quantize", self.quantize, QUANTIZE_MODES),
                                 ("--io", self.io, IO_TYPES)):
      if value not in allowed:
        raise UserError(f"{flag}={value!r} is not one of {', '.join(allowed)}")
    if self.io != "float32" and self.quantize != "int8":
      raise UserError(f"--io={self.io} needs --quantize=int8 (integer I/O needs a fully "
                      "quantised model)")
    if self.format == "saved_model" and self.quantize != "none":
      raise UserError("SavedModel export is float only; use --format=tflite to quantise")
    if self.batch_size < 1:
      raise UserError(f"--batch_size={self.batch_size} must be at least 1")
    if self.target != "none":  # Vela's list: imports it (one line when it is not installed)
      from effnetlite.export import vela
      vela.check_target(self.target)
      if self.quantize != "int8":
        raise UserError(f"--target={self.target} needs --quantize=int8: the Ethos-U NPU runs "
                        "fully int8-quantised models only")
    elif self.require_npu:
      raise UserError("--require_npu needs an NPU: pass --target=ACCELERATOR (e.g. "
                      "ethos-u65-256, the i.MX 93's Ethos-U65)")
    if self.quantize == "int8" and self.calibration_steps <= 0:
      raise UserError("--quantize=int8 needs calibration data: set --calibration_steps > 0")
    for flag, directory in (("--calibration_dir", self.calibration_dir),
                            ("--check_dir", self.check_dir)):
      if directory and not os.path.isdir(directory):
        raise UserError(f"{flag}={directory} is not a directory; pass a folder of images")
