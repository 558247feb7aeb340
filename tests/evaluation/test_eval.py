"""eval.py agrees with training, counts exactly, evaluates .tflite files, rejects misfits."""

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT, run_python, tiny_config

from effnetlite.export import export_model
from effnetlite.train.loop import train_and_evaluate


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A short digits run: (config, workdir, its final metrics)."""
  root = tmp_path_factory.mktemp("eval")
  config = tiny_config(data_dir=str(root / "tfds"), batch=32, resolution=32)
  config.eval_batch_size = 64
  config.max_steps = 30
  config.model.bn_momentum = 0.9
  metrics = train_and_evaluate(config, str(root / "run"))
  return config, str(root / "run"), metrics


def _eval(config, *args):
  overrides = [f"--config.{k}={v}" for k, v in (
      ("model.resolution", config.model.resolution), ("dataset.name", "digits"),
      ("dataset.data_dir", config.dataset.data_dir), ("dataset.eval_split", "test"),
      ("dataset.num_classes", 10), ("eval_batch_size", config.eval_batch_size))]
  return subprocess.run([sys.executable, os.path.join(ROOT, "eval.py"),
                         f"--config={os.path.join(ROOT, 'configs', 'lite0.py')}", *overrides,
                         *args], capture_output=True, text=True, timeout=600)


def test_eval_matches_training_final_evaluation(trained, tmp_path):
  config, workdir, metrics = trained
  for flag, key in (("--ema", "ema_eval_top1"), ("--no-ema", "eval_top1")):
    output = tmp_path / f"result{flag}.json"
    result = _eval(config, f"--weights={workdir}", flag, f"--output={output}")
    assert result.returncode == 0, result.stderr[-2000:]
    values = json.loads(output.read_text())
    assert values["top1"] == metrics[key] and values["count"] == 359
    assert {"top1", "top5", "loss", "count", "images_per_sec", "weights", "split"} <= set(values)
    assert "top-1" in result.stdout


@pytest.mark.slow  # for the 15-minute default run; test_readme evaluates an int8 export
def test_tflite_float_matches_jax_and_int8_delta(trained, tmp_path):
  config, workdir, metrics = trained
  results = {}
  for quantize in ("none", "int8"):
    output = str(tmp_path / f"{quantize}.tflite")
    export_model.export_model(config, export_model.ExportOptions(
        weights=workdir, quantize=quantize, calibration_steps=200), output)
    result = _eval(config, f"--weights={output}", f"--output={output}.json")
    assert result.returncode == 0, result.stderr[-2000:]
    results[quantize] = json.load(open(f"{output}.json"))
  assert results["none"]["count"] == 359
  assert abs(results["none"]["top1"] - metrics["ema_eval_top1"]) <= 0.001
  print("int8 top-1 delta:", results["int8"]["top1"] - results["none"]["top1"])
  assert abs(results["int8"]["top1"] - results["none"]["top1"]) <= 0.05


_MOCK_EVAL = """
import json, jax, tensorflow_datasets as tfds
from helpers import tiny_config
from effnetlite.evaluation.evaluate_weights import evaluate_weights
config = tiny_config("imagenet2012", resolution=32, batch=64, num_classes=1000)
with tfds.testing.mock_data(num_examples=1001):
  result = evaluate_weights(config, "random", "validation")
print(json.dumps({"devices": jax.device_count(), "count": result["count"]}))
"""


@pytest.mark.parametrize("devices", [1, 4])
def test_mock_split_of_1001_counts_exactly(devices):
  result = run_python(_MOCK_EVAL, devices=devices)
  assert result.returncode == 0, result.stderr[-3000:]
  assert json.loads(result.stdout.splitlines()[-1]) == {"devices": devices, "count": 1001}


def test_mismatches_and_empty_split_fail_in_one_line(trained, tmp_path):
  config, workdir, _ = trained
  tflite = str(tmp_path / "model.tflite")
  export_model.export_model(config, export_model.ExportOptions(weights=workdir), tflite)
  cases = [
      (["--config.model.resolution=64", f"--weights={tflite}"], "takes 32x32 images"),
      ([f"--weights={tflite}", "--config.dataset.num_classes=12"], "predicts 10 classes"),
      ([f"--weights={workdir}", "--config.model.width=1.1"],
       "config.model.width=1.1 but the run has 1.0"),
      ([f"--weights={workdir}", "--split=test[:0]"], "is empty"),
  ]
  for args, message in cases:
    result = _eval(config, *args)
    assert result.returncode == 2, (args, result.stderr[-2000:])
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0], (args, errors)
