"""The training step compiled ahead of time for accelerators this machine does not have.

JAX compiles without the hardware: libtpu describes a TPU slice (`v5e:2x2`), the CUDA
plugin a GPU host from XLA's target description (`resources/h100_sxm.txtpb`). What is
compiled is what train.py runs — `make_train_step` under `jit_train_step`'s shardings
and donation, with the layer formulations `resolve_backend` gives the target's platform
rather than this CPU host's — so a compile here is the compile there, and its
`memory_analysis()` is the memory each chip will need.

Compiles run in a child process holding one toolchain (`effnetlite.utils.toolchains`);
`measure` is that child's work, `measure_with_toolchain` the parent's call.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import time
from typing import Any

import ml_collections

from effnetlite.errors import UserError
from effnetlite.utils import toolchains

MiB = 1 << 20
GiB = 1 << 30
_RESOURCES = os.path.join(os.path.dirname(__file__), "resources")
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
H100_DESCRIPTION = os.path.join(_RESOURCES, "h100_sxm.txtpb")
# Per-chip batches are kept multiples of this (the sublane/warp-friendly size).
BATCH_GRANULE = 8


@dataclasses.dataclass(frozen=True)
class Target:
  """An accelerator slice: `topology` as JAX's `get_topology_desc` takes it."""
  name: str
  platform: str        # 'tpu' | 'gpu': what `resolve_backend` resolves 'auto' for
  topology: str
  chips: int
  memory_bytes: int    # per chip
  description: str


def _h100_memory() -> int:
  with open(H100_DESCRIPTION) as f:
    return int(re.search(r"device_memory_size:\s*(\d+)", f.read()).group(1))


# HBM per chip from Google Cloud's TPU pages (v5e 16 GiB, v6e 32, v4 32, v5p 95); the
# H100's from XLA's description (84,942,979,072 bytes, "80GB").
TARGETS = {
    "h100x8": Target("h100x8", "gpu", "1x1x8", 8, _h100_memory(), "8 NVIDIA H100 SXM 80GB"),
    "v5e:2x2": Target("v5e:2x2", "tpu", "v5e:2x2", 4, 16 * GiB, "TPU v5e, 4 chips"),
    "v5e:4x4": Target("v5e:4x4", "tpu", "v5e:4x4", 16, 16 * GiB, "TPU v5e, 16 chips"),
    "v6e:2x2": Target("v6e:2x2", "tpu", "v6e:2x2", 4, 32 * GiB, "TPU v6e, 4 chips"),
    "v4:2x2x1": Target("v4:2x2x1", "tpu", "v4:2x2x1", 4, 32 * GiB, "TPU v4, 4 chips"),
    "v5p:2x2x1": Target("v5p:2x2x1", "tpu", "v5p:2x2x1", 4, 95 * GiB, "TPU v5p, 4 chips"),
}
CUDA_TOOLCHAINS = ("cuda12", "cuda13")


def get_target(name: str) -> Target:
  if name not in TARGETS:
    raise UserError(f"unknown target {name!r}; choose one of {', '.join(TARGETS)}")
  return TARGETS[name]


def default_toolchain(target: Target, cuda: str = "cuda12") -> str:
  return "tpu" if target.platform == "tpu" else cuda


@dataclasses.dataclass(frozen=True)
class StepMemory:
  """One compile of the training step: its time and `memory_analysis()` per chip."""
  target: str
  toolchain: str
  per_chip_batch: int
  compile_seconds: float
  argument_bytes: int
  output_bytes: int
  alias_bytes: int
  temp_bytes: int

  @property
  def peak_bytes(self) -> int:
    """What the chip holds at once: arguments, outputs not written in place (the
    donated state is aliased), and the step's temporaries."""
    return self.argument_bytes + self.output_bytes - self.alias_bytes + self.temp_bytes

  @property
  def temp_mib_per_image(self) -> float:
    return self.temp_bytes / MiB / self.per_chip_batch

  def fits(self) -> bool:
    return self.peak_bytes <= TARGETS[self.target].memory_bytes


class OutOfMemory(Exception):
  """The compiler refused the program for the chip's memory (TPU: RESOURCE_EXHAUSTED)."""


def topology_devices(target: Target) -> list[Any]:
  """The target's abstract devices (needs its toolchain in this process)."""
  from jax.experimental import topologies
  if target.platform == "gpu":
    with open(H100_DESCRIPTION) as f:
      description = f.read()
    return topologies.get_topology_desc(platform="cuda", topology=target.topology,
                                        target_config=description).devices
  return topologies.get_topology_desc(topology_name=target.topology, platform="tpu").devices


def _abstract_inputs(config: ml_collections.ConfigDict, module: Any, optimizer: Any,
                     mesh: Any, global_batch: int) -> tuple[Any, dict[str, Any]]:
  """Shapes, dtypes and shardings of (state, batch) as training passes them."""
  import jax
  import jax.numpy as jnp
  from jax.sharding import NamedSharding, PartitionSpec

  from effnetlite.data import pipeline
  from effnetlite.train import steps

  resolution = config.model.resolution
  images = jnp.zeros((1, resolution, resolution, 3), jnp.float32)

  def init_state():
    variables = module.init({"params": jax.random.PRNGKey(0)}, images, train=False)
    return steps.create_train_state(variables, optimizer, jax.random.PRNGKey(config.seed))

  replicated = NamedSharding(mesh, PartitionSpec())
  split = NamedSharding(mesh, PartitionSpec(pipeline.BATCH_AXIS))
  state = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                       jax.eval_shape(init_state))
  spec = pipeline.train_batch_spec(config, global_batch)
  batch = {key: jax.ShapeDtypeStruct(shape, dtype, sharding=split)
           for key, (shape, dtype) in spec.items()}
  return state, batch


def measure(config: ml_collections.ConfigDict, target: Target, per_chip_batch: int,
            toolchain: str) -> StepMemory:
  """Compiles the training step for `target` in this process (its toolchain loaded)."""
  import numpy as np
  from jax.sharding import Mesh

  from effnetlite.data import pipeline
  from effnetlite.train import optimizer as optimizer_lib
  from effnetlite.train import steps
  from effnetlite.weights import factory

  devices = topology_devices(target)
  mesh = Mesh(np.asarray(devices), (pipeline.BATCH_AXIS,))
  global_batch = per_chip_batch * len(devices)
  config = ml_collections.ConfigDict(config.to_dict())
  config.batch_size = global_batch
  module = factory.module_from_config(config, platform=target.platform)
  steps_per_epoch = 1000  # any length: the schedule is traced, not evaluated
  schedule = optimizer_lib.learning_rate_schedule(config, global_batch, steps_per_epoch,
                                                  steps_per_epoch * 100)
  optimizer = optimizer_lib.make_optimizer(config, schedule)
  step = steps.jit_train_step(steps.make_train_step(module, config, optimizer, schedule), mesh)
  state, batch = _abstract_inputs(config, module, optimizer, mesh, global_batch)
  started = time.perf_counter()
  try:
    compiled = step.lower(state, batch).compile()
  except Exception as e:  # XlaRuntimeError: the TPU compiler's memory check
    if "RESOURCE_EXHAUSTED" in str(e):
      raise OutOfMemory(str(e).splitlines()[0]) from e
    raise
  seconds = time.perf_counter() - started
  memory = compiled.memory_analysis()
  return StepMemory(target.name, toolchain, per_chip_batch, seconds,
                    memory.argument_size_in_bytes, memory.output_size_in_bytes,
                    memory.alias_size_in_bytes, memory.temp_size_in_bytes)


def measure_with_toolchain(config: ml_collections.ConfigDict, target: Target,
                           per_chip_batch: int, toolchain: str | None = None
                           ) -> StepMemory | None:
  """`measure` in a child process that sees only `toolchain` (default: the target's;
  CUDA 12 for GPUs). None when the compiler refuses the program for the chip's memory;
  any other compiler failure is a RuntimeError with the compiler's message."""
  toolchain = toolchain or default_toolchain(target)
  if (target.platform == "gpu") != (toolchain in CUDA_TOOLCHAINS):
    raise UserError(f"toolchain {toolchain!r} cannot compile for {target.name} "
                    f"({target.platform})")
  request = json.dumps({"config": config.to_dict(), "target": target.name,
                        "per_chip_batch": per_chip_batch, "toolchain": toolchain})
  env = toolchains.environment(toolchain)
  env["PYTHONPATH"] += os.pathsep + _PACKAGE_PARENT  # this effnetlite, however it was found
  child = subprocess.run([sys.executable, "-m", "effnetlite.train.aot"], input=request,
                         capture_output=True, text=True, env=env)
  reply = child.stdout.strip().splitlines()
  if child.returncode or not reply:
    details = "\n".join((child.stderr or child.stdout).strip().splitlines()[-15:])
    raise RuntimeError(f"compiling for {target.name} with {toolchain} failed:\n{details}")
  result = json.loads(reply[-1])
  if result.get("out_of_memory"):
    return None
  return StepMemory(**result)


def _rounded(batch: float) -> int:
  return int(batch) // BATCH_GRANULE * BATCH_GRANULE


def largest_batch(config: ml_collections.ConfigDict, target: Target,
                  toolchain: str | None = None, probe: int = 64
                  ) -> tuple[int, StepMemory]:
  """The largest per-chip batch (a multiple of BATCH_GRANULE) whose compiled step fits
  the chip, as far as three compiles find it, and that compile.

  A TPU compile takes minutes here, so no bisection. The probe's temporaries, all
  counted as per-image, overstate the memory per image (part of them is per-step:
  gradients, optimizer updates), so the batch they predict fits: it is compiled (and
  shrunk by tenths in the rare case it does not fit). The peak grows linearly with the
  batch, so the line through those two compiles predicts the largest batch, which is
  compiled last and kept if it fits. The GPU compiler accepts oversized programs, so
  fitting is always judged against the chip's memory. XLA:TPU rematerialises more as
  the batch nears its memory, so its peak grows more slowly than the line there and a
  larger batch than the one found may still compile: on TPUs the result is a batch
  that fits, a lower bound of the largest.
  """
  small = measure_with_toolchain(config, target, probe, toolchain)
  if small is None or not small.fits():
    raise UserError(f"{config.model.name} at {probe} images per chip does not fit "
                    f"{target.description}; try a smaller probe")
  fixed = small.peak_bytes - small.temp_bytes
  batch = _rounded((target.memory_bytes - fixed) / (small.temp_bytes / probe))
  tried = []
  for _ in range(5):
    if batch <= probe:
      return probe, small
    best = measure_with_toolchain(config, target, batch, toolchain)
    if best is not None and best.fits():
      break
    tried.append(batch)
    batch = _rounded(batch * 0.9)
  else:  # five compiles, none fitting: no batch above the probe is known to fit
    raise UserError(f"{config.model.name} on {target.name}: {probe} images per chip fit but "
                    f"none of {', '.join(map(str, tried))} did; compile batches between them "
                    "with benchmarks/accelerators.py --per_chip_batch=N")
  slope = (best.peak_bytes - small.peak_bytes) / (batch - probe)
  line = _rounded(batch + (target.memory_bytes - best.peak_bytes) / slope)
  if line > batch:
    refined = measure_with_toolchain(config, target, line, toolchain)
    if refined is not None and refined.fits():
      return line, refined
  return batch, best


def _serve() -> None:
  """The child's side of `measure_with_toolchain`: a JSON request on stdin, the
  StepMemory (or `out_of_memory`) as the last line of stdout."""
  request = json.loads(sys.stdin.read())
  config = ml_collections.ConfigDict(request["config"])
  try:
    result = measure(config, get_target(request["target"]), request["per_chip_batch"],
                     request["toolchain"])
  except OutOfMemory as e:
    print(json.dumps({"out_of_memory": str(e)}))
    return
  print(json.dumps(dataclasses.asdict(result)))


if __name__ == "__main__":
  _serve()
