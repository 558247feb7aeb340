"""Stopping a run on request, at a step boundary, with that step saved.

Clusters stop jobs as a matter of course: SLURM's preemption, `scontrol requeue` and time
limit send SIGTERM and, `KillWait` (30 s) later, SIGKILL; `--signal=USR1@N` warns N
seconds before the time limit; spot machines send SIGTERM; people press Ctrl-C. Each is a
request to stop at the next step boundary: the training loop saves that step, waits for
it to be committed, and the command exits with `exit_code` (128 + the signal's number;
130 for Ctrl-C). A second Ctrl-C exits at once.

A handler only sets a flag, so checking it costs the step nothing. The handlers are
installed for the duration of one training session (`StopRequests` is a context
manager) and the previous ones restored after it, so a notebook keeps its own Ctrl-C.

In a multi-process run all processes must stop at the same step: with `jax.distributed`,
a notice posted to the job's coordination service makes `reached_preemption_sync_point(step)`
turn True on every process at one agreed step: the furthest process's step at the notice,
plus one. JAX posts that notice from its own SIGTERM handler, but one posted before a
process has told JAX its step in this session (during start-up: data, restore, compilation)
is agreed at step 1, which a resumed run never reaches: it ignored the signal until SIGKILL.
So the signals are this module's here too: a session posts the notice itself once this
process has passed its first step (`reached`), and before a session SIGTERM ends the process
at once, as in one process (`take_sigterm_from_jax`, right after jax.distributed starts).
"""

from __future__ import annotations

import datetime
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

import jax
import numpy as np

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
# The coordination-service key of JAX's preemption notice (the death time, RFC 3339): what
# JAX's SIGTERM notifier posts, and what its sync protocol waits for on every process
# (xla/tsl/distributed_runtime/preemption/preemption_sync_manager.cc, jax 0.10).
_NOTICE_KEY = "RECEIVED_PREEMPTION_NOTICE"


class TrainingStopped(Exception):
  """A run stopped on request after saving the step it reached."""

  def __init__(self, signal_name: str, step: int, exit_code: int):
    self.signal_name, self.step, self.exit_code = signal_name, step, exit_code
    super().__init__(f"stopped by {signal_name} at step {step}; checkpoint saved; rerun the "
                     "same command to resume")


def _name(signum: int) -> str:
  return "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name


def _coordinated() -> bool:
  """Whether JAX's preemption sync point agrees on the stopping step: jax.distributed with
  its preemption service (on unless `jax_enable_preemption_service` is off)."""
  return jax.distributed.is_initialized() and jax.config.jax_enable_preemption_service


def take_sigterm_from_jax() -> None:
  """Called right after `jax.distributed.initialize()`, which installs JAX's SIGTERM
  notifier: SIGTERM ends the process at once again, until a training session takes it.

  Before training there is nothing to save, and a notice JAX posted then would fix the
  stopping step at 1 for the process's lifetime (it is agreed once).
  """
  if threading.current_thread() is threading.main_thread():
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _post_notice() -> None:
  """Posts the preemption notice, as JAX's SIGTERM notifier would: every process's sync
  point then agrees on a step. A notice already posted by another process is that one."""
  from jax._src import distributed
  now = datetime.datetime.now(datetime.timezone.utc).isoformat()
  try:
    distributed.global_state.client.key_value_set(_NOTICE_KEY, now)
  except Exception as error:  # noqa: BLE001 - JaxRuntimeError, or no client
    if "ALREADY_EXISTS" not in str(error):
      print(f"warning: could not tell the other processes to stop ({error}); training goes "
            "on until the job is killed", file=sys.stderr, flush=True)


class StopRequests:
  """The first stop signal received during a training session (or None)."""

  def __init__(self) -> None:
    self.signum: int | None = None
    self._previous: dict[int, Any] = {}
    self._coordinated = False
    self._posted = False  # the notice of this session's signal, to the other processes

  def __enter__(self) -> StopRequests:
    self._coordinated = _coordinated()
    if threading.current_thread() is not threading.main_thread():
      return self  # only the main thread may set handlers; a caller's thread keeps its own
    for signum in SIGNALS:
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info: Any) -> None:
    for signum, handler in self._previous.items():
      # None: a handler not set from Python (JAX's notifier): ending the process is the default
      signal.signal(signum, signal.SIG_DFL if handler is None else handler)
    self._previous.clear()

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    if self.signum is not None and signum == signal.SIGINT:
      # os.write, not print: the handler may interrupt a write to stderr (the progress bar).
      os.write(2, b"error: second Ctrl-C: exiting at once (the last saved checkpoint stays)\n")
      os._exit(130)  # at once: no waiting for threads or saves in flight
    if self.signum is None:
      self.signum = signum  # coordinated: posted to the other processes by `reached`

  def reached(self, step: int) -> bool:
    """Whether to stop after `step`: on every process at the same step when coordinated,
    all naming process 0's signal (one exit status for the job)."""
    if not self._coordinated:
      return self.signum is not None
    from jax.experimental import multihost_utils
    reached = multihost_utils.reached_preemption_sync_point(step)  # also: JAX now has our step
    if self.signum is not None and not self._posted:  # so the agreed step is still ahead
      self._posted = True
      _post_notice()
    if not reached:
      return False
    ours = np.int32(self.signum or signal.SIGTERM)
    self.signum = int(multihost_utils.broadcast_one_to_all(ours))
    return True

  def stopped(self, step: int) -> TrainingStopped:
    signum = self.signum or signal.SIGTERM
    return TrainingStopped(_name(signum), step, 128 + int(signum))
