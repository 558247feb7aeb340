"""glibc malloc settings under which XLA:CPU stops page-faulting its buffers every step.

XLA:CPU allocates each step's temporaries (over a gigabyte for a lite0 training step)
with malloc from its worker threads. glibc serves those from per-thread
arenas, which cannot hold blocks of 64 MB or more, so such blocks are mmap-ed and
unmapped on every call, whatever M_MMAP_MAX says, and the next step faults every
page in again (the fault counts and their cost are in benchmarks/README.md).
One arena, no mmap and no trimming keep freed buffers for reuse; the price is
that freed memory stays with the process (its peak working set, plus some
fragmentation), which a training or serving process wants anyway.
PyTorch on CPU gains from the same settings, so the benchmark gives
them to both frameworks.

Settings take effect for threads that allocate after the call, so programs apply
them through `effnetlite.configure_process()` before JAX starts its thread pool
(the CLIs, benchmarks and tests do; importing effnetlite does not). Set
EFFNETLITE_MALLOC_TUNING=0 to leave the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8
# mallopt(3): "Setting M_TRIM_THRESHOLD to -1 disables trimming completely."
_NO_TRIMMING = -1


def tune_glibc_malloc() -> bool:
  """Applies the settings; False where they do not apply (not glibc, or opted out)."""
  if os.environ.get("EFFNETLITE_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):  # musl and other libcs have no mallopt
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NO_TRIMMING),
              (_M_TOP_PAD, 0))
  return all(mallopt(option, value) == 1 for option, value in settings)
