"""TFLite metadata written by our builder, read back with independent readers.

The reference readers: MediaPipe's generated metadata schema classes (from
metadata_schema.fbs, shipped in its wheel), TensorFlow's generated model schema, the zip
module, and LiteRT, which must still load the file.
"""

import zipfile

import numpy as np
import pytest

from effnetlite.export import metadata

INFO = metadata.ClassifierInfo(
    name="EfficientNet-lite0", description="a test classifier",
    class_names=["astronaut", "cat", "coffee"], resolution=8, normalization=(127.0, 128.0))


@pytest.fixture(scope="module")
def tiny_tflite() -> bytes:
  """A real 8x8x3 -> 3 classifier flatbuffer from the TFLite converter."""
  import tensorflow as tf
  kernel = tf.constant(np.random.default_rng(0).normal(size=(192, 3)), tf.float32)

  @tf.function(input_signature=[tf.TensorSpec((1, 8, 8, 3), tf.float32)])
  def serve(images):
    return tf.matmul(tf.reshape(images, (1, 192)), kernel)
  converter = tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()])
  return converter.convert()


def _read_metadata(data: bytes):
  """The ModelMetadata object of a .tflite, found as MediaPipe finds it."""
  schema = pytest.importorskip("mediapipe.tasks.metadata.metadata_schema_py_generated")
  from tensorflow.lite.python import schema_py_generated as model_schema
  model = model_schema.Model.GetRootAsModel(bytearray(data), 0)
  entries = {model.Metadata(i).Name().decode(): model.Metadata(i).Buffer()
             for i in range(model.MetadataLength())}
  buffer = model.Buffers(entries[metadata.METADATA_NAME]).DataAsNumpy().tobytes()
  assert schema.ModelMetadata.ModelMetadataBufferHasIdentifier(buffer, 0)
  return schema, schema.ModelMetadataT.InitFromObj(
      schema.ModelMetadata.GetRootAsModelMetadata(buffer, 0))


def test_metadata_reads_back_with_mediapipes_schema(tiny_tflite, tmp_path):
  data = metadata.populate(tiny_tflite, INFO)
  schema, meta = _read_metadata(data)
  assert meta.name == b"EfficientNet-lite0" and meta.minParserVersion == b"1.0.0"
  (graph,) = meta.subgraphMetadata
  (image,), (scores,) = graph.inputTensorMetadata, graph.outputTensorMetadata
  assert image.content.contentPropertiesType == schema.ContentProperties.ImageProperties
  assert image.content.contentProperties.colorSpace == schema.ColorSpaceType.RGB
  size = image.content.contentProperties.defaultSize
  assert (size.width, size.height) == (8, 8)
  (unit,) = image.processUnits
  assert unit.optionsType == schema.ProcessUnitOptions.NormalizationOptions
  assert list(unit.options.mean) == [127.0] and list(unit.options.std) == [128.0]
  assert list(image.stats.min) == [pytest.approx(-127 / 128)]
  assert list(image.stats.max) == [pytest.approx(1.0)]
  assert scores.content.contentPropertiesType == schema.ContentProperties.FeatureProperties
  (labels,) = scores.associatedFiles
  assert labels.name == b"labels.txt"
  assert labels.type == schema.AssociatedFileType.TENSOR_AXIS_LABELS
  path = tmp_path / "m.tflite"
  path.write_bytes(data)
  with zipfile.ZipFile(path) as archive:
    assert archive.namelist() == ["labels.txt"]
    assert archive.getinfo("labels.txt").compress_type == zipfile.ZIP_STORED
  assert metadata.read_labels(str(path)) == ["astronaut", "cat", "coffee"]


def test_the_populated_model_still_runs_the_same(tiny_tflite, tmp_path):
  from ai_edge_litert.interpreter import Interpreter
  images = np.random.default_rng(1).uniform(-1, 1, (1, 8, 8, 3)).astype(np.float32)
  outputs = []
  for name, data in (("plain", tiny_tflite), ("with", metadata.populate(tiny_tflite, INFO))):
    (tmp_path / name).write_bytes(data)
    interpreter = Interpreter(model_path=str(tmp_path / name))
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], images)
    interpreter.invoke()
    outputs.append(interpreter.get_tensor(interpreter.get_output_details()[0]["index"]))
  np.testing.assert_array_equal(outputs[0], outputs[1])


def test_integer_input_has_no_normalization_and_plain_files_no_labels(tiny_tflite, tmp_path):
  info = metadata.ClassifierInfo(name="m", description="d", class_names=["a", "b", "c"],
                                 resolution=8, normalization=None)
  _, meta = _read_metadata(metadata.populate(tiny_tflite, info))
  (image,) = meta.subgraphMetadata[0].inputTensorMetadata
  assert not image.processUnits and image.stats is None
  (tmp_path / "plain.tflite").write_bytes(tiny_tflite)
  assert metadata.read_labels(str(tmp_path / "plain.tflite")) is None
