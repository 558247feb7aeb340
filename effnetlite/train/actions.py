"""The periodic work of a training loop, one small action each (clu's periodic actions).

The loop calls every action after every step, `action(step, state, metrics)`; each
decides for itself whether the step is one of its own (every N steps, at a time, at the
last step) and does nothing otherwise, without touching the device (`RunAhead` aside: its
job is to wait for it). A new kind of
periodic work (a stop signal, a timed checkpoint) is one more action, not an edit of
the loop.
"""

from __future__ import annotations

import collections
import contextlib
import time
from typing import Any, Callable, Iterator, Protocol

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from effnetlite.errors import UserError
from effnetlite.train.metrics_writer import MetricsWriter
from effnetlite.utils.process import seconds_since_start
from effnetlite.weights import checkpoints


class Action(Protocol):
  def __call__(self, step: int, state: Any, metrics: dict[str, jax.Array]) -> None: ...


class NonFiniteLossError(UserError):
  """The loss or a gradient became NaN/inf."""


class Throughput:
  """Training images per second, over windows that leave out evaluation and saving."""

  def __init__(self, batch_size: int):
    self.batch_size = batch_size
    self.window_start, self.window_images = time.perf_counter(), 0
    self.seconds, self.images = 0.0, 0

  def count_step(self) -> None:
    self.window_images += self.batch_size

  @contextlib.contextmanager
  def paused(self) -> Iterator[None]:
    """Work that is not training (evaluation, a blocking save) is not counted."""
    start = time.perf_counter()
    try:
      yield
    finally:
      self.window_start += time.perf_counter() - start

  def close_window(self) -> float:
    """The window's images per second; the next window starts now."""
    elapsed = time.perf_counter() - self.window_start
    rate = self.window_images / elapsed
    self.seconds, self.images = self.seconds + elapsed, self.images + self.window_images
    self.window_start, self.window_images = time.perf_counter(), 0
    return rate

  def overall(self) -> float | None:
    return self.images / self.seconds if self.seconds else None



class RunAhead:
  """Keeps the host at most `steps` steps ahead of the device: each step waits for the
  metrics of the step `steps` before it. Without it, dispatch runs ahead until the next
  metrics read-back (`log_every_steps` steps), and a stop's save or an evaluation would
  first wait for every queued step: up to 100 of them in the base config, seconds each on
  a large batch, past SLURM's 30 s grace. Two steps keep the device busy (the next is
  queued while one runs)."""

  def __init__(self, steps: int = 2):
    self.steps = steps
    self.pending: collections.deque[dict[str, jax.Array]] = collections.deque()

  def __call__(self, step: int, state: Any, metrics: dict[str, jax.Array]) -> None:
    self.pending.append(metrics)
    if len(self.pending) > self.steps:
      jax.block_until_ready(self.pending.popleft())

class FirstStep:
  """Says how long the first step took to be ready (compiled, or read from the cache).

  The process's first run counts from the process's start (imports included); a later
  run in the same process (a search's next trial) from its own start.
  """

  def __init__(self, start_step: int, session_start: float, first_in_process: bool,
               say: Callable[[str], None]):
    self.start_step, self.session_start = start_step, session_start
    self.first_in_process, self.say = first_in_process, say
    self.seconds: float | None = None

  def __call__(self, step: int, state: Any, metrics: dict[str, jax.Array]) -> None:
    if step != self.start_step + 1:
      return
    jax.block_until_ready(metrics)
    if self.first_in_process:
      self.seconds = seconds_since_start()
      self.say(f"first step done {self.seconds:.1f} s after the start")
    else:
      self.seconds = time.time() - self.session_start
      self.say(f"first step done {self.seconds:.1f} s after this run's start")


class LogMetrics:
  """Every `every` steps (and at the last): the window's mean metrics, images per second
  and epoch to the writer and the progress bar; a non-finite loss stops the run here
  (`nonfinite_loss="stop"`), naming its first step."""

  def __init__(self, every: int, total_steps: int, steps_per_epoch: int, nonfinite_loss: str,
               writer: MetricsWriter, throughput: Throughput, bar: Any):
    self.every, self.total_steps, self.steps_per_epoch = every, total_steps, steps_per_epoch
    self.nonfinite_loss, self.writer, self.throughput, self.bar = (
        nonfinite_loss, writer, throughput, bar)
    self.history: list[dict[str, jax.Array]] = []

  def __call__(self, step: int, state: Any, metrics: dict[str, jax.Array]) -> None:
    self.history.append(metrics)
    self.throughput.count_step()
    if step % self.every and step != self.total_steps:
      self.bar.update(1)
      return
    history, self.history = self.history, []
    logged = {k: float(np.mean([float(m[k]) for m in history])) for k in history[0]}
    if logged.pop("finite") < 1.0 and self.nonfinite_loss == "stop":
      first = next(i for i, m in enumerate(history) if float(m["finite"]) < 1.0)
      raise NonFiniteLossError(
          f"loss or gradients became non-finite at step {step - len(history) + first + 1}; "
          "lower config.optimizer.base_learning_rate or set config.nonfinite_loss=skip")
    logged["images_per_sec"] = self.throughput.close_window()
    logged["epoch"] = step / self.steps_per_epoch
    self.writer.write(step, logged)
    self.bar.set_postfix(epoch=f"{logged['epoch']:.2f}", xent=f"{logged['cross_entropy']:.4f}",
                         lr=f"{logged['learning_rate']:.3g}",
                         img_s=f"{logged['images_per_sec']:.1f}", refresh=False)
    self.bar.update(1)


class Evaluate:
  """Every `every` steps (and at the last): raw and EMA metrics on the evaluation split,
  the EMA weights kept in `best` when they are the best so far, and `on_eval(step,
  metrics)` (not after the last: its metrics are the run's result). The last evaluation
  also records each example's EMA top-1 hit."""

  def __init__(self, every: int, total_steps: int,
               evaluate: Callable[[Any, int, bool], dict[str, Any]],
               best: ocp.CheckpointManager, config: ml_collections.ConfigDict,
               throughput: Throughput, say: Callable[[str], None],
               on_eval: Callable[[int, dict[str, float]], None] | None = None):
    self.every, self.total_steps, self.evaluate, self.best = every, total_steps, evaluate, best
    self.config, self.throughput, self.say, self.on_eval = config, throughput, say, on_eval
    self.last: dict[str, Any] = {}

  def __call__(self, step: int, state: Any, metrics: dict[str, jax.Array]) -> None:
    is_last = step == self.total_steps
    if step % self.every and not is_last:
      return
    with self.throughput.paused():
      self.last = self.evaluate(state, step, is_last)
      checkpoints.save(self.best, step, state, self.config.to_dict(),
                       metrics={"ema_top1": self.last["ema_eval_top1"]}, inference_only=True,
                       force=True)
    self.say(f"step {step}: top-1 {self.last['eval_top1']:.4f} "
             f"(EMA {self.last['ema_eval_top1']:.4f}) on {self.last['eval_count']} images")
    if self.on_eval is not None and not is_last:
      self.on_eval(step, self.last)


class SaveCheckpoint:
  """The train state when the manager's policy says so (steps, minutes, a preemption
  notice) and at the last step."""

  def __init__(self, manager: ocp.CheckpointManager, total_steps: int,
               config: ml_collections.ConfigDict, throughput: Throughput):
    self.manager, self.total_steps, self.config, self.throughput = (
        manager, total_steps, config, throughput)

  def __call__(self, step: int, state: Any, metrics: dict[str, jax.Array]) -> None:
    if step == self.total_steps or self.manager.should_save(step):  # the policy asked once
      with self.throughput.paused():
        checkpoints.save(self.manager, step, state, self.config.to_dict(), force=True)


class StopOnRequest:
  """A stop signal (`effnetlite.train.stop`): this step saved and committed, then
  `TrainingStopped` ends the loop. Checking costs no device synchronisation."""

  def __init__(self, requests: Any, manager: ocp.CheckpointManager,
               config: ml_collections.ConfigDict):
    self.requests, self.manager, self.config = requests, manager, config

  def __call__(self, step: int, state: Any, metrics: dict[str, jax.Array]) -> None:
    if not self.requests.reached(step):
      return
    checkpoints.save(self.manager, step, state, self.config.to_dict(), force=True)
    checkpoints.wait(self.manager)
    raise self.requests.stopped(step)
