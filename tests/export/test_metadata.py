"""Class names packed into a .tflite file: written, found again, absent from plain files."""

import zipfile

from effnetlite.export import metadata


def test_labels_round_trip_after_the_model_bytes(tmp_path):
  model = b"TFL3" + bytes(range(256)) * 4  # stands for a flatbuffer: any bytes before the zip
  path = tmp_path / "m.tflite"
  path.write_bytes(metadata.attach_labels(model, ["astronaut", "cat", "coffee"]))
  data = path.read_bytes()
  assert data.startswith(model)  # the flatbuffer is untouched
  assert metadata.read_labels(str(path)) == ["astronaut", "cat", "coffee"]
  with zipfile.ZipFile(path) as archive:  # any zip reader finds it
    assert archive.namelist() == ["labels.txt"]


def test_a_file_without_labels_has_none(tmp_path):
  path = tmp_path / "plain.tflite"
  path.write_bytes(b"TFL3" + b"\0" * 64)
  assert metadata.read_labels(str(path)) is None
