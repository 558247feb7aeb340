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
SIGTERM is JAX's preemption notice (its coordination service keeps the handler), and
`reached_preemption_sync_point(step)` turns True on every process at one agreed step;
USR1 and Ctrl-C are passed on to it as SIGTERM to this process.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

import jax
import numpy as np

SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


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


class StopRequests:
  """The first stop signal received during a training session (or None)."""

  def __init__(self) -> None:
    self.signum: int | None = None
    self._previous: dict[int, Any] = {}
    self._coordinated = False

  def __enter__(self) -> StopRequests:
    self._coordinated = _coordinated()
    if threading.current_thread() is not threading.main_thread():
      return self  # only the main thread may set handlers; a caller's thread keeps its own
    for signum in SIGNALS:
      if signum == signal.SIGTERM and self._coordinated:
        continue  # JAX's preemption notifier holds SIGTERM
      self._previous[signum] = signal.signal(signum, self._handle)
    return self

  def __exit__(self, *exc_info: Any) -> None:
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)
    self._previous.clear()

  def _handle(self, signum: int, frame: FrameType | None) -> None:
    if self.signum is not None and signum == signal.SIGINT:
      # os.write, not print: the handler may interrupt a write to stderr (the progress bar).
      os.write(2, b"error: second Ctrl-C: exiting at once (the last saved checkpoint stays)\n")
      os._exit(130)  # at once: no waiting for threads or saves in flight
    if self.signum is None:
      self.signum = signum
      if self._coordinated:  # let every process agree on the step through JAX's notice
        os.kill(os.getpid(), signal.SIGTERM)

  def reached(self, step: int) -> bool:
    """Whether to stop after `step`: on every process at the same step when coordinated,
    all naming process 0's signal (one exit status for the job)."""
    if not self._coordinated:
      return self.signum is not None
    from jax.experimental import multihost_utils
    if not multihost_utils.reached_preemption_sync_point(step):
      return False
    ours = np.int32(self.signum or signal.SIGTERM)
    self.signum = int(multihost_utils.broadcast_one_to_all(ours))
    return True

  def stopped(self, step: int) -> TrainingStopped:
    signum = self.signum or signal.SIGTERM
    return TrainingStopped(_name(signum), step, 128 + int(signum))
