"""Class names carried inside the exported .tflite file.

The names travel as `labels.txt` in a zip archive appended to the flatbuffer: the
packing TFLite metadata uses for its associated files (the flatbuffer ignores what
follows it, and any zip reader finds the archive at the end). A file copied alone
still knows its classes.
"""

from __future__ import annotations

import io
import zipfile
from typing import Sequence

LABELS_NAME = "labels.txt"


def attach_labels(model: bytes, names: Sequence[str]) -> bytes:
  """`model` with the class names appended as `labels.txt`, one per line in output order."""
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
    archive.writestr(LABELS_NAME, "".join(f"{name}\n" for name in names))
  return model + buffer.getvalue()


def read_labels(path: str) -> list[str] | None:
  """The class names packed into a .tflite file, or None when it carries none."""
  try:
    with zipfile.ZipFile(path) as archive:
      text = archive.read(LABELS_NAME).decode("utf-8")
  except (zipfile.BadZipFile, KeyError, OSError):
    return None
  return text.splitlines()
