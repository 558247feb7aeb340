"""glibc malloc for training on CPU: big blocks on transparent huge pages, the rest kept.

XLA:CPU allocates each execution's temporaries as one block (2.7 GB for a lite0
training step at batch 32) on the thread that runs it, and frees it on that thread
just after the outputs are ready. The next step, dispatched at that moment, often
allocates its own block first, on another thread (traced: 0.5 ms before the free):
two blocks are briefly alive. Kept in the heap (the earlier settings: one arena, no
mmap, no trimming), each such overlap left one more block in the heap for good,
and a process peaked at 3.4, 6.1, 8.7 or 11.4 GB by chance (benchmarks/README.md).
glibc's defaults mmap and unmap such blocks, so the overlap costs nothing, but
then every step faults 2.7 GB of 4 KiB pages back in.

So blocks of 64 MiB and more are mmap-ed on transparent huge pages
(`glibc.malloc.hugetlb=1`: 512x fewer faults and TLB misses, returned to the
system on free), and smaller ones stay in one arena that never trims (freed
memory is reused, not faulted in again). glibc reads tunables only when a program
starts, and mallopt has no huge-page setting, so `prefer_reexec` re-executes the
program once with them: its imports run twice, so the commands do it before they
parse flags (and config files). The re-executed program puts the user's own
GLIBC_TUNABLES back into its environment: the processes it starts (Vela, a shell, a
compiler) get what the user set, not ours. Where a re-exec is not possible (an
interactive session, a notebook, pytest, JAX already computing) or the kernel has no
transparent huge pages, `tune_in_process` applies what mallopt can: one arena,
no mmap, no trimming (fast, but exposed to the overlap above).
`EFFNETLITE_MALLOC_TUNING=0` leaves the allocator alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
import sys

OPT_OUT_ENV = "EFFNETLITE_MALLOC_TUNING"
# Carries the user's GLIBC_TUNABLES (JSON: a string, or null when unset) through the re-exec.
ORIGINAL_TUNABLES_ENV = "EFFNETLITE_ORIGINAL_GLIBC_TUNABLES"
# Blocks from this size on are mmap-ed (and so on huge pages); glibc's thread arenas cannot
# hold them anyway (their heaps are 64 MiB), so the size means the same in every thread.
MMAP_THRESHOLD = 64 << 20
_NEVER_TRIM = str(1 << 40)  # bytes of free heap top before glibc gives it back: never
TUNABLES = {
    "glibc.malloc.hugetlb": "1",
    "glibc.malloc.mmap_threshold": str(MMAP_THRESHOLD),
    "glibc.malloc.trim_threshold": _NEVER_TRIM,
    "glibc.malloc.arena_max": "1",
}
# `tune_in_process`'s settings as tunables, plus huge pages: for programs whose big blocks do
# not overlap (PyTorch's training on CPU is fastest under them, benchmarks/README.md).
HEAP_ON_HUGE_PAGES = ":".join(f"{name}={value}" for name, value in {
    "glibc.malloc.hugetlb": "1", "glibc.malloc.arena_max": "1", "glibc.malloc.mmap_max": "0",
    "glibc.malloc.trim_threshold": _NEVER_TRIM, "glibc.malloc.top_pad": "0"}.items())
# Hosts where a re-exec would break a connection or lose a session.
_NO_REEXEC_MODULES = ("IPython", "ipykernel", "pytest")
_state = {"reexecuted": False}  # this process is `prefer_reexec`'s, under our tunables

# mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -2, -4, -8
# mallopt(3): "Setting M_TRIM_THRESHOLD to -1 disables trimming completely."
_NO_TRIMMING = -1


def opted_out() -> bool:
  return os.environ.get(OPT_OUT_ENV, "1") == "0"


def is_glibc() -> bool:
  try:
    return sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith(
        "glibc")
  except (ValueError, OSError):
    return False


def transparent_huge_pages() -> bool:
  """The kernel gives huge pages to regions that ask (THP mode `always` or `madvise`)."""
  try:
    with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="ascii") as handle:
      return "[never]" not in handle.read()
  except OSError:
    return False


def tunables_value(current: str) -> str:
  """GLIBC_TUNABLES with ours added; a tunable the user set keeps their value."""
  pairs = [pair for pair in current.split(":") if pair]
  mine = {pair.split("=", 1)[0] for pair in pairs}
  return ":".join(pairs + [f"{name}={value}" for name, value in TUNABLES.items()
                           if name not in mine])


def tunables_active() -> bool:
  """This process started with huge-page tunables: ours (`prefer_reexec` started it; its
  environment holds the user's value again) or the user's own."""
  user_set = "glibc.malloc.hugetlb=" in os.environ.get("GLIBC_TUNABLES", "")
  return _state["reexecuted"] or user_set


def _restore_user_tunables() -> None:
  """After our re-exec: GLIBC_TUNABLES back to the user's value (unset if it was), so that
  the processes this one starts are not tuned unless they ask; ours re-execute on their own."""
  saved = os.environ.pop(ORIGINAL_TUNABLES_ENV, None)
  if saved is None:
    return
  _state["reexecuted"] = True
  original = json.loads(saved)
  if original is None:
    os.environ.pop("GLIBC_TUNABLES", None)
  else:
    os.environ["GLIBC_TUNABLES"] = original


def _command_line() -> list[str] | None:
  """The interpreter's command line if it can be run again as it is, else None."""
  argv = getattr(sys, "orig_argv", None)
  if not argv or sys.flags.interactive or not sys.argv or sys.argv[0] in ("", "-"):
    return None
  return [sys.executable] + argv[1:]


def _jax_started() -> bool:
  """JAX has computed (or compiled) something that a re-exec would throw away."""
  if "jax" not in sys.modules:
    return False
  from jax._src import xla_bridge
  return xla_bridge.backends_are_initialized()


def prefer_reexec() -> None:
  """Re-executes the program under `TUNABLES` where that is possible; returns otherwise.

  The program restarts from its first line with the same arguments and process id
  (exec), so callers do this first thing. In the re-executed program the call returns
  at once, with the user's GLIBC_TUNABLES back in the environment.
  """
  _restore_user_tunables()
  if opted_out() or tunables_active() or not is_glibc() or not transparent_huge_pages():
    return
  command = _command_line()
  if (command is None or any(name in sys.modules for name in _NO_REEXEC_MODULES)
      or _jax_started()):
    return
  sys.stdout.flush()
  sys.stderr.flush()
  original = os.environ.get("GLIBC_TUNABLES")
  os.execve(command[0], command,
            dict(os.environ, GLIBC_TUNABLES=tunables_value(original or ""),
                 **{ORIGINAL_TUNABLES_ENV: json.dumps(original)}))


def tune_in_process() -> bool:
  """mallopt's part, for processes that could not re-execute; False where it does not apply
  (opted out, not glibc, or the process runs under `TUNABLES` already)."""
  if opted_out() or not is_glibc() or tunables_active():
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
  settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _NO_TRIMMING),
              (_M_TOP_PAD, 0))
  return all(mallopt(option, value) == 1 for option, value in settings)
