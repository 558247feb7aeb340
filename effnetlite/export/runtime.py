"""Running .tflite files with the LiteRT interpreter (no full TensorFlow at inference).

Input and output quantisation (float32, float16, int8, uint8) are read from the
model itself, so the same float pixels that the JAX path sees go in, whatever
the file's I/O types. Models are fed at their own fixed batch size.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from effnetlite.errors import UserError
from effnetlite.export.options import RAW_PIXELS_INPUT


class TFLiteModel:
  """A .tflite classifier: `logits(pixels)` for float pixels (N, H, W, 3) in [0, 255]."""

  def __init__(self, path: str, num_threads: int | None = None):
    if not os.path.isfile(path):
      raise UserError(f"TFLite model {path} does not exist; export one with scripts/export.py")
    from ai_edge_litert.interpreter import Interpreter
    try:
      self.interpreter = Interpreter(model_path=path, num_threads=num_threads or os.cpu_count())
      self.interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as error:
      raise UserError(f"{path} is not a loadable TFLite model ({error}); re-export it") from None
    self.path = path
    self.input = self.interpreter.get_input_details()[0]
    self.output = self.interpreter.get_output_details()[0]
    self.batch_size, self.height, self.width, channels = (int(d) for d in self.input["shape"])
    self.num_classes = int(self.output["shape"][-1])
    if channels != 3:
      raise UserError(f"{path} takes {channels}-channel input, not RGB")
    # Exported graphs either normalise inside (raw pixels in) or expect normalised input.
    self.takes_raw_pixels = _input_is_raw_pixels(self.interpreter)

  def check_matches(self, resolution: int, num_classes: int) -> None:
    """One-line error when the file does not fit the config it is evaluated with."""
    if (self.height, self.width) != (resolution, resolution):
      raise UserError(f"{self.path} takes {self.height}x{self.width} images but the config's "
                      f"resolution is {resolution}; pass the matching --config")
    if self.num_classes != num_classes:
      raise UserError(f"{self.path} predicts {self.num_classes} classes but the config has "
                      f"{num_classes}; pass the matching --config")

  def _quantize(self, values: np.ndarray) -> np.ndarray:
    dtype = self.input["dtype"]
    scale, zero_point = self.input["quantization"]
    if np.issubdtype(dtype, np.integer) and scale:
      info = np.iinfo(dtype)
      return np.clip(np.round(values / scale + zero_point), info.min, info.max).astype(dtype)
    return values.astype(dtype)

  def _dequantize(self, values: np.ndarray) -> np.ndarray:
    scale, zero_point = self.output["quantization"]
    if np.issubdtype(values.dtype, np.integer) and scale:
      return (values.astype(np.float32) - zero_point) * scale
    return values.astype(np.float32)

  def logits(self, pixels: np.ndarray) -> np.ndarray:
    """Model outputs for float pixels, fed in chunks of the model's batch size."""
    from effnetlite.data.preprocessing import normalize
    inputs = pixels if self.takes_raw_pixels else normalize(pixels)
    outputs = []
    for start in range(0, len(inputs), self.batch_size):
      chunk = inputs[start:start + self.batch_size]
      padded = np.zeros((self.batch_size,) + chunk.shape[1:], np.float32)
      padded[:len(chunk)] = chunk
      self.interpreter.set_tensor(self.input["index"], self._quantize(padded))
      self.interpreter.invoke()
      result = self._dequantize(self.interpreter.get_tensor(self.output["index"]))
      outputs.append(result[:len(chunk)])
    return np.concatenate(outputs)

  def op_names(self) -> list[str]:
    """Operator names in the graph (CONV_2D, ...), as written, before any delegate."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType
    plain = Interpreter(model_path=self.path, experimental_op_resolver_type=(
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES))
    plain.allocate_tensors()
    return sorted({op["op_name"] for op in plain._get_ops_details()})  # noqa: SLF001

  def latency_ms(self, repeats: int = 20) -> float:
    """Median wall time of one invoke (after a warm-up), in milliseconds."""
    import time
    sample = np.zeros(self.input["shape"], self.input["dtype"])
    self.interpreter.set_tensor(self.input["index"], sample)
    self.interpreter.invoke()
    times = []
    for _ in range(repeats):
      start = time.perf_counter()
      self.interpreter.invoke()
      times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))

  def describe(self) -> dict[str, Any]:
    def side(details):
      scale, zero_point = details["quantization"]
      return {"shape": [int(d) for d in details["shape"]], "dtype": np.dtype(details["dtype"]).name,
              "scale": float(scale), "zero_point": int(zero_point)}
    return {"input": side(self.input), "output": side(self.output),
            "input_is_raw_pixels": self.takes_raw_pixels}


def _input_is_raw_pixels(interpreter: Any) -> bool:
  """True when the exporter put normalisation inside the graph (input named `pixels`)."""
  signatures = interpreter.get_signature_list()
  return any(RAW_PIXELS_INPUT in spec.get("inputs", ()) for spec in signatures.values())
