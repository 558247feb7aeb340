"""The malloc settings of `configure_process`: a program re-executes itself once under glibc's
tunables (big blocks on huge pages, returned on free; the rest kept), falls back to mallopt
where it cannot, and importing effnetlite alone leaves the allocator alone. The processes a
tuned program starts get the user's GLIBC_TUNABLES, not ours."""

import json
import os
import subprocess
import sys

import pytest
from helpers import PYTHONPATH, ROOT, run_python

from effnetlite.utils import allocator

# Ten calls of a step with an 80 MB temporary (a matmul result feeding a matmul), as
# XLA:CPU's training steps have many. {setup} runs before JAX computes anything.
_STEP = """
import json, os, resource
import effnetlite
{setup}
import jax, jax.numpy as jnp
step = jax.jit(lambda a, b: ((a @ b) @ b.T).sum())
a, b = jnp.ones((5120, 64), jnp.float32), jnp.ones((64, 4096), jnp.float32)
step(a, b).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
  step(a, b).block_until_ready()
faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10
from effnetlite.utils import allocator
print(json.dumps({{"faults": faults, "pid": os.getpid(), "tuned": allocator.tunables_active(),
                  "tunables": os.environ.get("GLIBC_TUNABLES", "")}}))
"""
PAGES = 80 * 2**20 // 4096  # of the temporary, in 4 KiB pages
needs_glibc = pytest.mark.skipif(not allocator.is_glibc(), reason="glibc's allocator only")


def _run(setup: str, tuning: str = "1") -> dict:
  env = {"EFFNETLITE_MALLOC_TUNING": tuning, "GLIBC_TUNABLES": ""}
  result = run_python(_STEP.format(setup=setup), env=env)
  assert result.returncode == 0, result.stderr
  return json.loads(result.stdout.strip().splitlines()[-1])


@needs_glibc
@pytest.mark.skipif(not allocator.transparent_huge_pages(), reason="kernel without THP")
def test_configured_program_reexecutes_once_and_maps_big_blocks_on_huge_pages():
  run = _run("import os; pid = os.getpid(); effnetlite.configure_process(); "
             "assert os.getpid() == pid")
  assert run["tuned"] and run["tunables"] == ""  # the user's (empty) value is back
  # 80 MB in 2 MiB pages: 40 faults a call where 4 KiB pages take 20,480 (plus up to 1,022
  # small pages at the ends of a mapping that is not 2 MiB-aligned).
  assert run["faults"] < PAGES / 10


@needs_glibc
def test_without_the_call_or_opted_out_every_call_faults_its_temporary_in():
  assert _run("")["faults"] > PAGES / 2
  opted_out = _run("effnetlite.configure_process()", tuning="0")
  assert opted_out["tunables"] == "" and opted_out["faults"] > PAGES / 2


@needs_glibc
def test_where_it_cannot_reexecute_mallopt_keeps_freed_blocks():
  run = _run("import sys; sys.modules['IPython'] = sys; effnetlite.configure_process()")
  assert run["tunables"] == "" and not run["tuned"]  # a notebook's kernel is not restarted
  assert run["faults"] < PAGES / 20


def test_users_own_tunables_are_kept():
  value = allocator.tunables_value("glibc.malloc.arena_max=4:glibc.pthread.rseq=0")
  pairs = dict(pair.split("=") for pair in value.split(":"))
  assert pairs["glibc.malloc.arena_max"] == "4" and pairs["glibc.pthread.rseq"] == "0"
  assert pairs["glibc.malloc.hugetlb"] == "1"
  assert pairs["glibc.malloc.mmap_threshold"] == str(64 << 20)


def test_opt_out_leaves_the_allocator_alone(monkeypatch):
  monkeypatch.setenv("EFFNETLITE_MALLOC_TUNING", "0")
  assert allocator.tune_in_process() is False


# What a child process of a configured program sees of the allocator's variables.
_CHILD = """
import json, os, subprocess, sys
import effnetlite
effnetlite.configure_process()
from effnetlite.utils import allocator
child = subprocess.run([sys.executable, "-c", "import json, os; print(json.dumps("
                        "{k: v for k, v in os.environ.items() if 'TUNABLES' in k}))"],
                       capture_output=True, text=True, check=True)
print(json.dumps({"tuned": allocator.tunables_active(), "child": json.loads(child.stdout)}))
"""


@needs_glibc
@pytest.mark.skipif(not allocator.transparent_huge_pages(), reason="kernel without THP")
@pytest.mark.parametrize("users", [None, "glibc.pthread.rseq=0"])
def test_child_processes_get_the_users_tunables_not_ours(users):
  env = {k: v for k, v in os.environ.items() if "TUNABLES" not in k}
  env.update(PYTHONPATH=PYTHONPATH, **({"GLIBC_TUNABLES": users} if users is not None else {}))
  result = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=120)
  assert result.returncode == 0, result.stderr
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["tuned"]  # the program itself runs under ours
  assert report["child"] == ({} if users is None else {"GLIBC_TUNABLES": users})
