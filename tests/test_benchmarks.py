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


@pytest.mark.parametrize("script", sorted(TINY))
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
