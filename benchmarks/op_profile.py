"""Side-by-side op profile of one training step: ours (jax.profiler's XLA:CPU trace) and the
PyTorch reference (torch.profiler), on the same shapes, grouped by what each op computes.

  python benchmarks/op_profile.py [--variant=lite0] [--batch=32] [--resolution=224]
      [--steps=3] [--markdown=profile.md]

Ours: every thunk XLA:CPU ran (a fusion, a matmul, a copy), attributed to the layer that
produced it through the HLO metadata's op name (the Flax module path; the backward pass
carries the same names under `transpose`). Theirs: every aten op's self time, attributed
by the convolution's weight shape (1x1, depthwise, the stem) or the op's kind, and to the
optimizer where it runs under `Optimizer.step`. Each framework's process settings are the
ones its throughput process has (benchmarks/throughput.py). The table gives ms per step
(the mean of `--steps` profiled steps after warm-up, scaled by the unprofiled step time
over the profiled one, both printed) and each group's share of the sum; XLA runs
independent thunks side by side on the cores, so its sum can exceed the step's wall time.
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import _common
import jax
from absl import flags

from effnetlite import config as config_lib
from effnetlite.utils import cli
from effnetlite.utils.files import write_atomically

_VARIANT = flags.DEFINE_enum("variant", "lite0", list(config_lib.VARIANTS), "Model variant.")
_BATCH = flags.DEFINE_integer("batch", 32, "Batch size.", lower_bound=1)
_RESOLUTION = flags.DEFINE_integer("resolution", 0, "Input side (0: the variant's).",
                                   lower_bound=0)
_STEPS = flags.DEFINE_integer("steps", 3, "Profiled steps (after 3 warm-up steps).",
                              lower_bound=1)
_CHILD = flags.DEFINE_enum("child", None, ["theirs"], "Internal: profile PyTorch here.")
_MARKDOWN = cli.DEFINE_path("markdown", "", "Write the table here.")

GROUPS = ("1x1 conv", "depthwise conv", "stem conv", "BatchNorm", "ReLU6 and residual",
          "head (pool, dense, loss)", "optimizer and EMA", "copies and layout", "other")
WARMUP = 3


def our_group(op_name: str, opcode: str) -> str:
  """The group of one XLA instruction, from its op name (the Flax module path)."""
  if opcode in ("copy", "transpose", "bitcast", "copy-start", "copy-done"):
    return "copies and layout"
  if "EfficientNetLite" not in op_name:  # outside the model: the loss, RMSProp, EMA, L2
    return "optimizer and EMA" if "jvp(" not in op_name else "head (pool, dense, loss)"
  layer = op_name.split("EfficientNetLite)", 1)[-1]
  for pattern, group in ((r"stem_conv", "stem conv"), (r"depthwise_conv", "depthwise conv"),
                         (r"(expand|project|head)_conv", "1x1 conv"), (r"_bn\b", "BatchNorm"),
                         (r"classifier|reduce_mean|head", "head (pool, dense, loss)")):
    if re.search(pattern, layer):
      return group
  return "ReLU6 and residual"  # what is left of a block: clipping, its mask, the residual


def hlo_groups(hlo_text: str) -> dict[str, str]:
  """Instruction name -> group, for every instruction that runs as a thunk. A fusion whose
  own metadata has no op name takes the first one inside its fused computation."""
  computations, first_op_name, current = {}, {}, None
  for line in hlo_text.splitlines():
    header = re.match(r"(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if header:
      current = header.group(1)
      continue
    # name = shape opcode(...); a multi-output fusion's shape is a tuple "(f32[..], ...)"
    match = re.match(r"\s*(?:ROOT )?%?([\w.\-]+) = (?:\([^)]*\)|\S+) ([\w\-]+)\(", line)
    if not match:
      continue
    op_name = re.search(r'op_name="([^"]*)"', line)
    called = re.search(r"calls=%?([\w.\-]+)", line)
    computations[match.group(1)] = (match.group(2), op_name.group(1) if op_name else "",
                                    called.group(1) if called else None)
    if op_name and current not in first_op_name:
      first_op_name[current] = op_name.group(1)
  return {name: our_group(op_name or first_op_name.get(called, ""), opcode)
          for name, (opcode, op_name, called) in computations.items()}


def trace_thunk_seconds(logdir: str) -> dict[str, float]:
  """Thunk name -> seconds summed over the trace (XLA:CPU's TraceMe events)."""
  path = glob.glob(os.path.join(logdir, "**", "*.trace.json.gz"), recursive=True)
  with gzip.open(path[0], "rt") as handle:
    events = json.load(handle)["traceEvents"]
  seconds = collections.Counter()
  for event in events:
    if event.get("ph") == "X" and "dur" in event:
      seconds[event["name"]] += event["dur"] / 1e6
  return seconds


def unprofiled_seconds(step, count: int) -> float:
  """Seconds per step after the warm-up, without a profiler."""
  for _ in range(WARMUP):
    step()
  start = time.perf_counter()
  for _ in range(count):
    step()
  return (time.perf_counter() - start) / count


def scaled(seconds_by_group: dict[str, float], wall: float, profiled: float) -> dict:
  """ms per step by group, scaled to the unprofiled step: a profiler slows each framework
  by its own factor (PyTorch's, recording ~3,000 aten ops a step, by ~40-70%)."""
  factor = wall / profiled
  return {"wall_ms": 1e3 * wall, "profiled_wall_ms": 1e3 * profiled,
          "groups_ms": {g: 1e3 * s * factor for g, s in seconds_by_group.items()}}


def profile_ours(config, batch: int, count: int) -> dict:
  config.model.dtype = "float32"
  training = _common.our_training(config, batch)
  state, data = training["state"], training["data"]
  compiled = training["step"].lower(state, data).compile()
  groups = hlo_groups(compiled.as_text())
  def step():
    nonlocal state
    state, metrics = compiled(state, data)
    metrics["loss"].block_until_ready()
  wall = unprofiled_seconds(step, count)
  with tempfile.TemporaryDirectory() as logdir:
    with jax.profiler.trace(logdir, create_perfetto_trace=True):
      start = time.perf_counter()
      for _ in range(count):
        step()
      profiled = (time.perf_counter() - start) / count
    thunks = trace_thunk_seconds(logdir)
  by_group = collections.Counter()
  for name, seconds in thunks.items():
    if name in groups:  # the rest: runtime events (the executable, the thread pool, Python)
      by_group[groups[name]] += seconds / count
  return scaled(by_group, wall, profiled)


def their_group(event) -> str:
  name, shapes = event.name, event.input_shapes
  parent = event.cpu_parent
  while parent is not None:
    if parent.name.startswith("Optimizer.step"):
      return "optimizer and EMA"
    parent = parent.cpu_parent
  weight = 2 if "backward" in name else 1  # (grad_output, input, weight) or (input, weight)
  if "convolution" in name and shapes and len(shapes) > weight and len(shapes[weight]) == 4:
    in_per_group, kernel = shapes[weight][1], shapes[weight][2]
    if kernel == 1:
      return "1x1 conv"
    return "depthwise conv" if in_per_group == 1 else "stem conv"
  if "batch_norm" in name:
    return "BatchNorm"
  if re.search(r"hardtanh|clamp|threshold|relu|add|mul_|bernoulli|div_", name):
    return "ReLU6 and residual"
  if re.search(r"linear|addmm|mm\b|mean|softmax|nll|cross_entropy|adaptive_avg", name):
    return "head (pool, dense, loss)"
  if re.search(r"copy|contiguous|clone|to_dense|reorder|as_strided|empty|fill_|zero_|pad",
               name):
    return "copies and layout"
  return "other"


def profile_theirs(variant: str, batch: int, resolution: int, count: int) -> dict:
  import contextlib

  import torch
  _, train_step, _ = _common.their_training(variant, batch, resolution)

  def step():
    train_step(contextlib.nullcontext())
  wall = unprofiled_seconds(step, count)
  activities = [torch.profiler.ProfilerActivity.CPU]
  with torch.profiler.profile(activities=activities, record_shapes=True) as profiler:
    start = time.perf_counter()
    for _ in range(count):
      step()
    profiled = (time.perf_counter() - start) / count
  by_group = collections.Counter()
  for event in profiler.events():
    if event.name.startswith("aten::") and event.self_cpu_time_total > 0:
      by_group[their_group(event)] += event.self_cpu_time_total / 1e6 / count
  return scaled(by_group, wall, profiled)


def markdown_table(ours: dict, theirs: dict, title: str) -> str:
  lines = [title, "", "| group | ours ms/step | share | PyTorch ms/step | share | "
           "ours/PyTorch time |", "|---|---|---|---|---|---|"]
  our_total = sum(ours["groups_ms"].values())
  their_total = sum(theirs["groups_ms"].values())
  for group in GROUPS:
    mine, other = ours["groups_ms"].get(group, 0.0), theirs["groups_ms"].get(group, 0.0)
    ratio = f"{mine / other:.2f}" if other else "-"
    lines.append(f"| {group} | {mine:.1f} | {mine / our_total:.0%} | {other:.1f} | "
                 f"{other / their_total:.0%} | {ratio} |")
  lines += [f"| sum of ops | {our_total:.1f} | | {their_total:.1f} | | "
            f"{our_total / their_total:.2f} |",
            f"| step wall time | {ours['wall_ms']:.1f} | | {theirs['wall_ms']:.1f} | | "
            f"{ours['wall_ms'] / theirs['wall_ms']:.2f} |",
            f"| profiled step, as measured | {ours['profiled_wall_ms']:.1f} | | "
            f"{theirs['profiled_wall_ms']:.1f} | | |"]
  return "\n".join(lines) + "\n"


def main(argv) -> None:
  cli.no_positional_arguments(argv)
  config = _common.benchmark_config(_VARIANT.value, _RESOLUTION.value)
  resolution, batch = config.model.resolution, _BATCH.value
  if _CHILD.value:
    print(json.dumps(profile_theirs(_VARIANT.value, batch, resolution, _STEPS.value)))
    return
  command = [sys.executable, os.path.abspath(__file__), "--child=theirs",
             f"--variant={_VARIANT.value}", f"--batch={batch}", f"--resolution={resolution}",
             f"--steps={_STEPS.value}"]
  done = subprocess.run(command, capture_output=True, text=True,
                        env=_common.child_environment("theirs"))
  if done.returncode:
    raise RuntimeError(f"the PyTorch profile failed: {done.stderr[-3000:]}")
  theirs = json.loads(done.stdout.strip().splitlines()[-1])
  ours = profile_ours(config, batch, _STEPS.value)
  table = markdown_table(ours, theirs, f"{_VARIANT.value} @ {resolution}, batch {batch}, "
                         f"float32 training step, {jax.devices()[0].device_kind} "
                         f"({os.cpu_count()} cpus), {time.strftime('%Y-%m-%d')}")
  print(table)
  if _MARKDOWN.value:
    write_atomically(_MARKDOWN.value, table)


if __name__ == "__main__":
  cli.run(main)
