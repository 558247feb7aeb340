"""The malloc settings of `configure_process` keep XLA:CPU's big buffers mapped between steps;
importing effnetlite alone leaves the allocator alone."""

import json
import os

import pytest
from helpers import run_python

from effnetlite.utils import allocator

# Ten calls of a step with an 80 MB temporary (a matmul result feeding a matmul), as
# XLA:CPU's training steps have many. {setup} runs before JAX computes anything.
_FAULTS_PER_CALL = """
import json, resource
import effnetlite
{setup}
import jax, jax.numpy as jnp
step = jax.jit(lambda a, b: ((a @ b) @ b.T).sum())
a, b = jnp.ones((5120, 64), jnp.float32), jnp.ones((64, 4096), jnp.float32)
step(a, b).block_until_ready()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
  step(a, b).block_until_ready()
print(json.dumps((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 10))
"""


def _faults_per_call(setup: str, tuning: str = "1") -> float:
  result = run_python(_FAULTS_PER_CALL.format(setup=setup),
                      env={"EFFNETLITE_MALLOC_TUNING": tuning})
  assert result.returncode == 0, result.stderr
  return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not allocator.tune_glibc_malloc(), reason="needs glibc's mallopt")
def test_big_buffers_are_faulted_in_every_call_unless_the_process_opts_in(monkeypatch):
  for name in [name for name in os.environ if name.startswith("MALLOC_")]:
    monkeypatch.delenv(name)  # the baseline is glibc's defaults
  pages = 80 * 2**20 // 4096
  imported_only = _faults_per_call("")
  opted_out = _faults_per_call("effnetlite.configure_process()", tuning="0")
  tuned = _faults_per_call("effnetlite.configure_process()")
  # glibc unmaps the 80 MB block on free: every page faults again.
  assert imported_only > pages / 2
  assert opted_out > pages / 2
  assert tuned < pages / 20


def test_opt_out_leaves_the_allocator_alone(monkeypatch):
  monkeypatch.setenv("EFFNETLITE_MALLOC_TUNING", "0")
  assert allocator.tune_glibc_malloc() is False
