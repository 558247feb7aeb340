"""The Ethos-U NPU target with Arm's real Vela compiler: pretrained lite0 int8 entirely on the
i.MX 93's Ethos-U65, CPU fallbacks warned or refused, bad requests in one line."""

import json
import os
import re
import subprocess
import sys

import pytest
from helpers import ROOT

from effnetlite import config as config_lib
from effnetlite.errors import UserError
from effnetlite.export import export_model, vela
from effnetlite.export.options import ExportOptions

pytest.importorskip("ethosu.vela")
TARGET = "ethos-u65-256"


@pytest.fixture(scope="module")
def few_photos(tmp_path_factory):
  from effnetlite.data.sample_photos import write_sample_photos
  directory = str(tmp_path_factory.mktemp("photos"))
  write_sample_photos(directory)
  for name in os.listdir(directory):  # four are enough to calibrate and check a compile
    if name not in ("chelsea.png", "coffee.png", "china.jpg", "motorcycle.png"):
      os.remove(os.path.join(directory, name))
  return directory


def _export(*args, cwd):
  return subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "export.py"),
                         f"--config={os.path.join(ROOT, 'configs', 'lite0.py')}", *args],
                        capture_output=True, text=True, timeout=600, cwd=cwd)


def _one_error(result) -> str:
  assert result.returncode == 2, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
  return errors[0]


def test_vela_accelerators_are_the_ones_config_spells_out():
  assert vela.accelerator_configs() == config_lib.VELA_ACCELERATORS
  assert TARGET in config_lib.VELA_ACCELERATORS


def test_pretrained_lite0_int8_runs_entirely_on_the_ethos_u65(few_photos, tmp_path):
  """The i.MX 93 flow as a user runs it: every operator on the NPU, Vela's figures reported."""
  output = tmp_path / "lite0-int8.tflite"
  result = _export("--weights=pretrained", "--quantize=int8", "--io=int8", f"--target={TARGET}",
                   "--require_npu", f"--calibration_dir={few_photos}", "--calibration_steps=4",
                   f"--check_dir={few_photos}", f"--output={output}", cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "warning:" not in result.stderr
  with open(f"{output}.report.json") as handle:
    npu = json.load(handle)["npu"]
  assert npu["accelerator"] == TARGET and npu["vela_version"] == vela.VELA_VERSION
  assert npu["operators"] == npu["npu_operators"] == 60 and npu["cpu_operators"] == 0
  assert npu["cpu_fallback"] == [] and sum(npu["npu_operator_types"].values()) == 60
  assert npu["npu_operator_types"]["DepthwiseConv2D"] == 16
  assert npu["inference_ms"] > 0 and npu["clock_mhz"] > 0
  assert npu["inferences_per_second"] == pytest.approx(1e3 / npu["inference_ms"], rel=1e-6)
  assert npu["sram_kib"] > 0 and npu["dram_kib"] > 0
  assert re.search(rf"NPU \({TARGET}\)\s+60 of 60 operators on the NPU, CPU: -", result.stdout)
  assert re.search(r"Vela estimate\s+\d+\.\d\d ms", result.stdout), result.stdout
  # The compiled file: a TFLite flatbuffer whose graph is one Ethos-U custom operator.
  compiled = tmp_path / "lite0-int8_vela.tflite"
  assert npu["file"] == str(compiled) and npu["size_bytes"] == os.path.getsize(compiled)
  from ethosu.vela.tflite.Model import Model
  model = Model.GetRootAsModel(compiled.read_bytes(), 0)
  codes = [model.OperatorCodes(i).CustomCode() for i in range(model.OperatorCodesLength())]
  graph = model.Subgraphs(0)
  assert codes == [b"ethos-u"] and graph.OperatorsLength() == 1


@pytest.fixture(scope="module")
def float_io_int8(tmp_path_factory, few_photos):
  """A small int8 file with float input and output: Vela leaves its QUANTIZE and DEQUANTIZE
  (float in and out) to the CPU, a real fallback."""
  output = str(tmp_path_factory.mktemp("fallback") / "small-int8.tflite")
  config = config_lib.variant_config("lite0")
  config.model.resolution = 32
  export_model.export_model(config, ExportOptions(
      weights="random", quantize="int8", calibration_dir=few_photos, calibration_steps=4,
      check_dir=few_photos), output)
  return output


def test_cpu_fallback_is_a_loud_warning_naming_the_operators(float_io_int8, capsys):
  report = vela.compile_tflite(float_io_int8, TARGET)
  assert report["cpu_operators"] == 2 and report["operators"] == report["npu_operators"] + 2
  assert [op["operator"] for op in report["cpu_fallback"]] == ["Quantize", "Dequantize"]
  assert "Float32" in report["cpu_fallback"][0]["reason"]  # Vela's own reason
  warnings = [line for line in capsys.readouterr().err.splitlines()
              if line.startswith("warning:")]
  assert len(warnings) == 1 and "2 of" in warnings[0] and "Quantize" in warnings[0] and (
      "Dequantize" in warnings[0] and "--io=int8" in warnings[0]), warnings
  assert os.path.exists(vela.vela_path(float_io_int8))


def test_require_npu_refuses_a_cpu_fallback_and_writes_no_npu_file(float_io_int8, tmp_path):
  copy = tmp_path / "copy.tflite"
  copy.write_bytes(open(float_io_int8, "rb").read())
  with pytest.raises(UserError, match=r"--require_npu: 2 of \d+ operators fall back to the "
                                      r"CPU on ethos-u65-256 \(Vela\): Quantize"):
    vela.compile_tflite(str(copy), TARGET, require_npu=True)
  assert not os.path.exists(vela.vela_path(str(copy)))


def test_the_decision_by_hand():
  report = {"accelerator": TARGET, "operators": 3, "npu_operators": 2, "cpu_operators": 1,
            "cpu_fallback": [{"operator": "Softmax", "tensor": "out", "reason": "int16 only"}]}
  assert vela.fallback_message({**report, "cpu_operators": 0, "cpu_fallback": []}) is None
  vela.check_npu_only({**report, "cpu_operators": 0, "cpu_fallback": []}, require_npu=True)
  with pytest.raises(UserError, match=r"1 of 3 operators .*: Softmax \(out: int16 only\)$"):
    vela.check_npu_only(report, require_npu=True)


@pytest.mark.parametrize("args,message", [
    (["--quantize=int8", "--target=ethos-u99-1"], "--target='ethos-u99-1' is not a Vela "
     "accelerator configuration; use one of none, ethos-u55-32, "),
    ([f"--target={TARGET}"], f"--target={TARGET} needs --quantize=int8"),
    (["--quantize=float16", f"--target={TARGET}"], "needs --quantize=int8"),
    (["--quantize=int8", "--require_npu"], "--require_npu needs an NPU: pass --target="),
])
def test_bad_targets_are_one_line_before_any_work(args, message, tmp_path):
  result = _export("--weights=pretrained", *args, f"--output={tmp_path / 'm.tflite'}",
                   cwd=str(tmp_path))
  assert message in _one_error(result)
  assert os.listdir(tmp_path) == []


def test_missing_vela_is_one_line_saying_how_to_install(monkeypatch):
  for module in ("ethosu", "ethosu.vela", "ethosu.vela.architecture_features"):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
  with pytest.raises(UserError, match=r"pip install ethos-u-vela==5\.2\.0 \(or make setup\)"):
    ExportOptions(quantize="int8", target=TARGET).check()
