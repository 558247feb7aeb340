"""Compiles an int8 .tflite for Arm's Ethos-U NPUs with Vela, and reads what Vela reports.

The NXP i.MX 93's NPU is an Ethos-U65 with 256 MACs per cycle (`ethos-u65-256`): its
runtime executes the `NAME_vela.tflite` that Vela writes, and runs whatever Vela left
out of the NPU on the Cortex-A cores, much slower. Vela (`pip install ethos-u-vela`) is
an optional dependency, imported only when a target is asked for. It runs as a
subprocess into a temporary directory: its C++ core prints to the process's stdout and
changes the recursion limit, neither of which belongs in ours. Every figure of the report
is Vela's own: its summary CSV (estimated time, clock, SRAM and DRAM use), its per-layer
CSV (which operator runs where) and its console summary (operator counts, and the reason
for each operator left to the CPU). The time is Vela's estimate from its performance
model at the system configuration's clock, not a measurement on a board.
"""

from __future__ import annotations

import csv
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from typing import Any

from effnetlite.errors import UserError, warn
from effnetlite.utils import files

VELA_VERSION = "5.2.0"  # the version the recorded figures and the tests use
INSTALL = f"pip install ethos-u-vela=={VELA_VERSION} (or make setup)"
_COUNT = re.compile(r"^(CPU|NPU) operators = (\d+)", re.M)
# "Warning (supported operators) operator: QUANTIZE, ofm: 'name'", then "Reason: ..." lines
# up to a blank line: why Vela leaves that operator to the CPU.
_UNSUPPORTED = re.compile(r"^Warning \(supported operators\) operator: (\w+), ofm: '(.*)'\n"
                          r"((?:.+\n)*)", re.M)


def _architecture() -> Any:
  try:
    from ethosu.vela import architecture_features
  except ImportError:
    raise UserError("an Ethos-U target needs Arm's Vela compiler, which is not installed: "
                    f"{INSTALL}") from None
  return architecture_features


def accelerator_configs() -> tuple[str, ...]:
  """Vela's own accelerator configurations (its `Accelerator` enum), e.g. ethos-u65-256."""
  return tuple(_architecture().Accelerator.member_list())


def check_target(target: str, what: str = "--target", others: tuple[str, ...] = ("none",)
                 ) -> None:
  """One UserError when Vela is missing or does not know `target`; cheap, compiles nothing.

  `others`: the values besides Vela's configurations that `what` accepts (for the message).
  """
  allowed = accelerator_configs()
  if target not in allowed:
    raise UserError(f"{what}={target!r} is not a Vela accelerator configuration; use one of "
                    f"{', '.join(others + allowed)}")


def vela_path(path: str) -> str:
  """Where the compiled file of `path` goes: NAME_vela.tflite beside it (Vela's naming)."""
  return os.path.splitext(path)[0] + "_vela.tflite"


def compile_tflite(path: str, target: str, require_npu: bool = False) -> dict[str, Any]:
  """Compiles the int8 `path` for `target`, writes NAME_vela.tflite beside it; Vela's report.

  Operators left to the CPU are a warning naming them or, with `require_npu`, a
  UserError before anything is written (a partial NPU file is then not what was asked).
  """
  check_target(target)
  with tempfile.TemporaryDirectory(prefix="vela-") as directory:
    name = os.path.join(directory, "model.tflite")  # Vela names its outputs after the input
    shutil.copyfile(path, name)
    result = subprocess.run(
        [sys.executable, "-m", "ethosu.vela", name, "--accelerator-config", target,
         "--output-dir", directory, "--verbose-performance"],
        capture_output=True, text=True, check=False)
    if result.returncode != 0 or not os.path.exists(vela_path(name)):
      tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
      raise RuntimeError(f"Vela failed on {path} for {target} (exit {result.returncode}): "
                         + " | ".join(tail))
    report = read_report(directory, "model", result.stdout, target)
    check_npu_only(report, require_npu)
    with open(vela_path(name), "rb") as handle:
      compiled = handle.read()
  output = vela_path(path)
  files.write_atomically(output, compiled)
  return {**report, "file": os.path.abspath(output), "size_bytes": len(compiled)}


def read_report(directory: str, stem: str, console: str, target: str) -> dict[str, Any]:
  """The report of one Vela run from its output directory and its console output."""
  summaries = glob.glob(os.path.join(directory, f"{stem}_summary_*.csv"))
  layers = os.path.join(directory, f"{stem}_per-layer.csv")
  counts = dict((where, int(n)) for where, n in _COUNT.findall(console))
  if len(summaries) != 1 or not os.path.exists(layers) or set(counts) != {"CPU", "NPU"}:
    raise RuntimeError(f"Vela's report is not where ethos-u-vela=={VELA_VERSION} writes it "
                       f"(in {directory}: {sorted(os.listdir(directory))})")
  with open(summaries[0], newline="") as handle:
    summary = next(csv.DictReader(handle))
  with open(layers, newline="") as handle:
    operators = _original_operators(csv.DictReader(handle))
  reasons = {tensor: "; ".join(line.strip() for line in text.strip().splitlines()
                               ).removeprefix("Reason: ")
             for _, tensor, text in _UNSUPPORTED.findall(console)}
  npu_types: dict[str, int] = {}
  for operator, _, where in operators:
    if where == "NPU":
      npu_types[operator] = npu_types.get(operator, 0) + 1
  clock = float(summary["core_clock"])
  return {
      "accelerator": target,
      "vela_version": _version(),
      "system_config": summary["system_config"],
      "memory_mode": summary["memory_mode"],
      "operators": counts["NPU"] + counts["CPU"],
      "npu_operators": counts["NPU"],
      "cpu_operators": counts["CPU"],
      "npu_operator_types": dict(sorted(npu_types.items())),
      "cpu_fallback": [{"operator": operator, "tensor": tensor,
                        "reason": reasons.get(tensor, "")}
                       for operator, tensor, where in operators if where != "NPU"],
      "inference_ms": float(summary["inference_time"]) * 1e3,
      "inferences_per_second": float(summary["inferences_per_second"]),
      "clock_mhz": clock / 1e6,
      "sram_kib": float(summary["sram_memory_used"]),
      "dram_kib": float(summary["dram_memory_used"]),
      # Ethos-U55 systems keep the weights in flash (DRAM 0): Vela reports that apart.
      "flash_kib": (float(summary["on_chip_flash_memory_used"])
                    + float(summary["off_chip_flash_memory_used"])),
      "weights_in": summary["weights_storage_area"],
      "macs": int(float(summary["nn_macs"])),
      "estimate": "Vela's performance model, not a measurement on a board",
  }


def _original_operators(rows: Any) -> list[tuple[str, str, str]]:
  """(operator, output tensor, NPU|CPU) per operator of the input file, in Vela's order.

  The per-layer CSV has a row per operator of Vela's graph: an operator of the file
  may become several (CONV_2D with its fused ReLU6 is Conv2D and Relu6), each carrying the
  original operator's type and output tensor name.
  """
  seen: dict[tuple[str, str], str] = {}
  for row in rows:
    key = (row["Original Operator"], row["Name"])
    if key not in seen or row["Target"] != "NPU":
      seen[key] = row["Target"]
  return [(operator, tensor, where) for (operator, tensor), where in seen.items()]


def _version() -> str:
  from importlib import metadata
  return metadata.version("ethos-u-vela")


def fallback_message(report: dict[str, Any]) -> str | None:
  """What runs on the CPU instead of the NPU, in one line; None when nothing does."""
  if not report["cpu_operators"]:
    return None
  listed = ", ".join(f"{op['operator']} ({op['tensor']}" + (f": {op['reason']}" if op["reason"]
                                                              else "") + ")"
                     for op in report["cpu_fallback"]) or "names not reported"
  hint = ("; --io=int8 keeps the input and output quantisation on the NPU"
          if {"Quantize", "Dequantize"} & {op["operator"] for op in report["cpu_fallback"]}
          else "")
  return (f"{report['cpu_operators']} of {report['operators']} operators fall back to the CPU "
          f"on {report['accelerator']} (Vela): {listed}{hint}")


def check_npu_only(report: dict[str, Any], require_npu: bool) -> None:
  """CPU fallbacks: a warning, or with `require_npu` a UserError (exit 2)."""
  message = fallback_message(report)
  if message is None:
    return
  if require_npu:
    raise UserError(f"--require_npu: {message}")
  warn(message)


def format_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
  """Rows of the export's table (`verify.format_report`) for the `npu` report."""
  cpu = ", ".join(op["operator"] for op in report["cpu_fallback"]) or "-"
  return [
      (f"NPU ({report['accelerator']})", f"{report['npu_operators']} of {report['operators']} "
                                         f"operators on the NPU, CPU: {cpu}"),
      ("Vela estimate", f"{report['inference_ms']:.2f} ms ({report['inferences_per_second']:.0f}"
                        f"/s at {report['clock_mhz']:g} MHz, {report['system_config']})"),
      ("memory (Vela)", f"SRAM {report['sram_kib']:.1f} KiB, DRAM {report['dram_kib']:.1f} KiB"
                        + (f", flash {report['flash_kib']:.1f} KiB" if report["flash_kib"]
                           else "") + f" (weights in {report['weights_in']})"),
      ("NPU file", report["file"]),
  ]
