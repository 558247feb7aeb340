"""Accelerator compilers for ahead-of-time compiles on a machine without the accelerator.

Each toolchain is a set of pip packages installed on its own (`make toolchains`:
`pip install --no-deps --target DIR -r requirements-<name>.txt`), because the CUDA 12
and CUDA 13 plugins both register JAX's 'cuda' platform and cannot share a process.
A compile runs in a child process whose environment holds exactly one toolchain:
its directory on PYTHONPATH, JAX on the CPU, and no system CUDA toolkit on PATH —
a system ptxas would otherwise hide what the pip toolchain does (CUDA 13's ptxas
accepts programs that CUDA 12.9's, which `jax[cuda12]` installs, rejects).
"""

from __future__ import annotations

import os
import sys

from effnetlite.errors import UserError

TOOLCHAINS = ("tpu", "cuda12", "cuda13")
TOOLCHAIN_DIR_ENV = "EFFNETLITE_TOOLCHAINS"
# Programs whose presence marks a directory as part of a CUDA toolkit.
_CUDA_PROGRAMS = ("ptxas", "nvcc", "nvlink", "fatbinary")
_CUDA_VARIABLES = ("CUDA_HOME", "CUDA_PATH", "CUDA_ROOT", "CUDA_DIR")


def toolchain_root() -> str:
  """Where the toolchains are installed: $EFFNETLITE_TOOLCHAINS, else the environment's
  own `toolchains/` (`.venv/toolchains` for `make toolchains`)."""
  return os.environ.get(TOOLCHAIN_DIR_ENV) or os.path.join(sys.prefix, "toolchains")


def toolchain_dir(name: str) -> str:
  """The installed toolchain's directory; a UserError naming the fix if it is missing."""
  if name not in TOOLCHAINS:
    raise UserError(f"unknown toolchain {name!r}; choose one of {', '.join(TOOLCHAINS)}")
  directory = os.path.join(toolchain_root(), name)
  if not os.path.isfile(os.path.join(directory, ".installed")):
    raise UserError(f"the {name} toolchain is not installed in {directory}; run "
                    f"`make toolchains` (or pip install --no-deps --target {directory} "
                    f"-r requirements-{name}.txt, then touch {directory}/.installed)")
  return directory


def is_installed(name: str) -> bool:
  try:
    toolchain_dir(name)
  except UserError:
    return False
  return True


def _holds_cuda(directory: str) -> bool:
  return any(os.path.exists(os.path.join(directory, program)) for program in _CUDA_PROGRAMS)


def environment(name: str, base: dict[str, str] | None = None) -> dict[str, str]:
  """`base` (default: this process's environment) for a child that compiles with the
  `name` toolchain and nothing else."""
  env = dict(os.environ if base is None else base)
  for variable in _CUDA_VARIABLES:
    env.pop(variable, None)
  env["PATH"] = os.pathsep.join(d for d in env.get("PATH", "").split(os.pathsep)
                                if d and not _holds_cuda(d))
  env["LD_LIBRARY_PATH"] = os.pathsep.join(
      d for d in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if d and "cuda" not in d)
  env["PYTHONPATH"] = toolchain_dir(name)
  env["JAX_PLATFORMS"] = "cpu"  # the target is described, not attached
  if name == "tpu":  # compiles only, so several may run at once (libtpu locks the chips)
    env["ALLOW_MULTIPLE_LIBTPU_LOAD"] = "1"
  return env
