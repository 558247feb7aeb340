"""Every benchmark script runs as the README prints it, at tiny sizes (figures not checked:
speed belongs in benchmarks/README.md, not in tests)."""

import json
import os
import subprocess
import sys

import pytest
from helpers import ROOT

BENCHMARKS = os.path.join(ROOT, "benchmarks")
# script -> tiny flags, and a regex of the line it must print
TINY = {
    "accelerators.py": (["--target=h100x8", "--per_chip_batch=8", "--dtype=float32"],
                        "lite0 float32 on h100x8 (cuda12), 8/chip: compiled"),
    "input_pipeline.py": (["--images=12", "--resolution=32", "--batch=4", "--batches=2"],
                          "training preprocessing: "),
    "op_profile.py": (["--resolution=32", "--batch=2", "--steps=1"], "| sum of ops |"),
    "throughput.py": (["--resolution=32", "--batch=2", "--dtypes=float32", "--repeats=1",
                       "--warmup=0", "--rounds=1"], "train"),
}


def test_every_benchmark_script_has_a_tiny_run():
  scripts = sorted(f for f in os.listdir(BENCHMARKS)
                   if f.endswith(".py") and not f.startswith("_"))  # _common: shared code
  assert scripts == sorted(TINY)


# accelerators.py compiles for 8 H100s (about a minute): the README's command runs it in the
# default tests (tests/test_readme.py), this tiny run joins the slow ones.
@pytest.mark.parametrize("script", [
    pytest.param(script, marks=[pytest.mark.slow] if script == "accelerators.py" else [])
    for script in sorted(TINY)])
def test_benchmark_runs(script, tmp_path):
  if script in ("throughput.py", "op_profile.py"):
    pytest.importorskip("torch")
  flags, expected = TINY[script]
  output = tmp_path / "results.json"
  extra = [f"--output={output}"] if script == "throughput.py" else []
  result = subprocess.run([sys.executable, os.path.join(BENCHMARKS, script), *flags, *extra],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert expected in result.stdout, result.stdout[-2000:]
  if extra:
    assert json.loads(output.read_text())  # the results file a README table is made from


def test_accelerators_table_rows_are_the_variants_measured():
  """`--table --variant=lite3,lite4` fills in part of the README's table (a TPU cell takes
  three compiles of minutes each): its rows are those variants, chips = ceil(4096 / batch)."""
  import importlib.util
  spec = importlib.util.spec_from_file_location("accelerators",
                                                os.path.join(BENCHMARKS, "accelerators.py"))
  accelerators = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(accelerators)
  rows = [{"variant": v, "target": "h100x8", "largest_per_chip_batch": b,
           "temp_mib_per_image_at_largest": m} for v, b, m in (("lite3", 1000, 60.04),
                                                               ("lite4", 400, 151.0))]
  lines = accelerators.table(rows, ["h100x8"], ["lite3", "lite4"]).splitlines()
  assert lines[2:] == ["| lite3 | 280 | 60.0 | 1000 | 5 |", "| lite4 | 300 | 151.0 | 400 | 11 |"]


def _throughput_rows(result: dict) -> list[str]:
  """throughput.markdown_table(result)'s rows, in a process of its own (its absl flags
  would clash with another benchmark's loaded here)."""
  code = ("import json, sys, throughput; "
          "print(throughput.markdown_table(json.load(sys.stdin)), end='')")
  table = subprocess.run([sys.executable, "-c", code], input=json.dumps(result), cwd=BENCHMARKS,
                         capture_output=True, text=True, timeout=120, check=True).stdout
  return table.splitlines()[4:]


def test_throughput_table_dashes_the_frameworks_that_did_not_run():
  """`--no_torch`: PyTorch's cells say it did not run ("—"), not "nan"; with it, its
  figures and the ratio as measured."""
  machine = {"device": "cpu", "cpus": 2, "backend": "cpu", "date": "2026-12-05",
             "peaks": {"float32": {"gflops": 200.0, "source": "measured"}}}
  ours = {"task": "train", "dtype": "float32", "ours_images_per_sec": 50.0,
          "ours_fraction_of_peak": 0.3, "ours_faults_per_step": 700}
  result = {"variant": "lite0", "resolution": 160, "batch": 16, "rounds": 1, "machine": machine,
            "rows": [ours], "peak_training_memory_gb": {"ours": [1.5]}}
  assert _throughput_rows(result)[0] == "| train | float32 | 50.0 | — | — |  | 30.0% | — | — |"
  result["rows"] = [dict(ours, theirs_images_per_sec=40.0, ratio=1.25, round_ratios=[1.25],
                         theirs_fraction_of_peak=0.24)]
  assert _throughput_rows(result)[0] == (
      "| train | float32 | 50.0 | 40.0 | 1.25 | 1.25 | 30.0% | 24.0% | — |")
