"""TFLite metadata in every exported classifier, and the class names that travel with it.

MediaPipe Tasks, the TFLite Task Library and Android Studio's model binding read a
classifier's description from the model itself: a `TFLITE_METADATA` entry of the
flatbuffer's `metadata` list points at a buffer holding a `ModelMetadata` flatbuffer
(schema `metadata_schema.fbs`, identifier "M001"): the input's image properties and
normalisation, and the output's class scores with an associated labels file. The
associated files travel as a zip archive appended to the flatbuffer (the flatbuffer
ignores what follows it, and any zip reader finds the archive at the end).

Written here with the `flatbuffers` builder (a dependency of TensorFlow already): the
official writers do not install cleanly everywhere this project does - mediapipe's Python
writer imports a native module its wheel lacks, and tflite-support needs the system's
libusb at import - and only the few tables below are needed. Field slots follow the
schema's declaration order (a union takes two: its type, then its value).
"""

from __future__ import annotations

import dataclasses
import io
import zipfile
from typing import Sequence

import flatbuffers
import numpy as np

LABELS_NAME = "labels.txt"
METADATA_NAME = "TFLITE_METADATA"
METADATA_IDENTIFIER = b"M001"
MIN_PARSER_VERSION = "1.0.0"  # only tables of the schema's first release are used

# Enum and union values of metadata_schema.fbs.
_RGB = 1                       # ColorSpaceType
_TENSOR_AXIS_LABELS = 2        # AssociatedFileType
_FEATURE_PROPERTIES = 1        # ContentProperties
_IMAGE_PROPERTIES = 2
_NORMALIZATION_OPTIONS = 1     # ProcessUnitOptions


@dataclasses.dataclass(frozen=True)
class ClassifierInfo:
  """What a runtime needs to know about an exported classifier."""
  name: str
  description: str
  class_names: Sequence[str]
  resolution: int
  input_name: str = "image"
  # (mean, std) of the float input the graph takes: (x - mean) / std. None for integer input.
  normalization: tuple[float, float] | None = None
  output_name: str = "scores"
  output_description: str = "Class scores (logits), one per label in labels.txt."


def _table(builder: flatbuffers.Builder, fields: list[tuple[str, int, object]]) -> int:
  """A table from (kind, slot, value) fields; kind: offset | uint8 | uint32."""
  builder.StartObject(max(slot for _, slot, _ in fields) + 1 if fields else 0)
  for kind, slot, value in fields:
    if kind == "offset":
      builder.PrependUOffsetTRelativeSlot(slot, value, 0)
    elif kind == "uint8":
      builder.PrependUint8Slot(slot, value, 0)
    else:
      builder.PrependUint32Slot(slot, value, 0)
  return builder.EndObject()


def _offsets(builder: flatbuffers.Builder, offsets: Sequence[int]) -> int:
  builder.StartVector(4, len(offsets), 4)
  for offset in reversed(offsets):
    builder.PrependUOffsetTRelative(offset)
  return builder.EndVector()


def _floats(builder: flatbuffers.Builder, values: Sequence[float]) -> int:
  builder.StartVector(4, len(values), 4)
  for value in reversed(values):
    builder.PrependFloat32(value)
  return builder.EndVector()


def model_metadata(info: ClassifierInfo) -> bytes:
  """The ModelMetadata flatbuffer of an image classifier with one input and one output."""
  b = flatbuffers.Builder(1024)
  strings = {key: b.CreateString(value) for key, value in (
      ("name", info.name), ("description", info.description), ("version", "v1"),
      ("input", info.input_name), ("output", info.output_name),
      ("input_description", f"RGB image, {info.resolution}x{info.resolution}."),
      ("output_description", info.output_description),
      ("labels", LABELS_NAME), ("labels_description", "Class names, one per line."),
      ("parser", MIN_PARSER_VERSION))}

  labels_file = _table(b, [("offset", 0, strings["labels"]),
                           ("offset", 1, strings["labels_description"]),
                           ("uint8", 2, _TENSOR_AXIS_LABELS)])
  # input: image properties (+ normalisation of a float input)
  size = _table(b, [("uint32", 0, info.resolution), ("uint32", 1, info.resolution)])
  image = _table(b, [("uint8", 0, _RGB), ("offset", 1, size)])
  input_content = _table(b, [("uint8", 0, _IMAGE_PROPERTIES), ("offset", 1, image)])
  input_fields = [("offset", 0, strings["input"]), ("offset", 1, strings["input_description"]),
                  ("offset", 3, input_content)]
  if info.normalization is not None:
    mean, std = info.normalization
    options = _table(b, [("offset", 0, _floats(b, [mean])), ("offset", 1, _floats(b, [std]))])
    unit = _table(b, [("uint8", 0, _NORMALIZATION_OPTIONS), ("offset", 1, options)])
    low, high = (0.0 - mean) / std, (255.0 - mean) / std
    stats = _table(b, [("offset", 0, _floats(b, [high])), ("offset", 1, _floats(b, [low]))])
    input_fields += [("offset", 4, _offsets(b, [unit])), ("offset", 5, stats)]
  input_tensor = _table(b, input_fields)
  # output: class scores with the labels file
  features = _table(b, [])
  output_content = _table(b, [("uint8", 0, _FEATURE_PROPERTIES), ("offset", 1, features)])
  output_tensor = _table(b, [("offset", 0, strings["output"]),
                             ("offset", 1, strings["output_description"]),
                             ("offset", 3, output_content),
                             ("offset", 6, _offsets(b, [labels_file]))])
  subgraph = _table(b, [("offset", 2, _offsets(b, [input_tensor])),
                        ("offset", 3, _offsets(b, [output_tensor]))])
  root = _table(b, [("offset", 0, strings["name"]), ("offset", 1, strings["description"]),
                    ("offset", 2, strings["version"]), ("offset", 3, _offsets(b, [subgraph])),
                    ("offset", 7, strings["parser"])])
  b.Finish(root, file_identifier=METADATA_IDENTIFIER)
  return bytes(b.Output())


def populate(model: bytes, info: ClassifierInfo) -> bytes:
  """`model` with its TFLITE_METADATA buffer and the labels file appended as a zip."""
  from tensorflow.lite.python import schema_py_generated as schema
  from tensorflow.lite.tools import flatbuffer_utils
  flat = flatbuffer_utils.read_model_from_bytearray(bytearray(model))
  buffer = schema.BufferT()
  buffer.data = np.frombuffer(model_metadata(info), np.uint8)
  flat.buffers.append(buffer)
  entry = schema.MetadataT()
  entry.name, entry.buffer = METADATA_NAME, len(flat.buffers) - 1
  flat.metadata = [m for m in (flat.metadata or []) if m.name != METADATA_NAME.encode()]
  flat.metadata.append(entry)
  archive = io.BytesIO()
  with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as files:  # MediaPipe reads stored only
    files.writestr(LABELS_NAME, "".join(f"{name}\n" for name in info.class_names))
  return flatbuffer_utils.convert_object_to_bytearray(flat) + archive.getvalue()


def read_labels(path: str) -> list[str] | None:
  """The class names packed into a .tflite file, or None when it carries none."""
  try:
    with zipfile.ZipFile(path) as archive:
      text = archive.read(LABELS_NAME).decode("utf-8")
  except (zipfile.BadZipFile, KeyError, OSError):
    return None
  return text.splitlines()
