"""The compound-scaling search as one Optuna study that any number of workers share.

A trial is one candidate trained with one seed (initialisation and data order
together; `search.seeds` of them), in its own run directory WORKDIR/runs/<candidate>/
seed<k>. It is ranked on the config's evaluation split, which a search config
points at held-out training data, never at the test split; after training, its
EMA weights are also evaluated on `search.test_split`, reported apart, and its
per-image correctness on the ranking split is kept in the run directory for the
paired comparisons of `effnetlite.search.report`.

Storage (`effnetlite.search.storage`) is a SQLite file in the workdir by default (one
machine, nothing to set up) or any SQLAlchemy URL (PostgreSQL for many machines). The
worker that creates the study enqueues every trial once (seed 0 of every candidate
first); every worker then takes the next waiting trial until none is waiting or running, so N
workers are the same command run N times, anywhere. Workers send heartbeats: a
candidate whose worker died (silent for twice `search.heartbeat_seconds`) is
failed and re-enqueued by the next live worker that looks, and its training
resumes from the candidate's last checkpoint under the shared workdir. A worker
stopped by Ctrl-C, SIGTERM or SIGUSR1 (during training the session saves its step
first; between sessions the signal is raised where Ctrl-C would be) fails its trial and
re-enqueues the candidate at once (`WorkerStopped`).
A retry starts clean: the failed trial's evaluations stay with it, as a failure,
not a score. A restarted search re-enqueues candidates that failed. In a
multi-process JAX job only process 0 talks to the study; it broadcasts each
candidate and each pruning decision to the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import threading
import time
from typing import Any, Callable, Iterator

import ml_collections
import numpy as np

from effnetlite import runs
from effnetlite.errors import UserError
from effnetlite.search import grid as grid_lib
from effnetlite.search import storage as storage_lib

GRID_ATTR = "candidates"   # study user attribute, set once the grid is enqueued
LATENCY_CALIBRATION_IMAGES = 100  # latency, not accuracy, is measured: a short calibration
Trainer = Callable[..., dict]  # (config, workdir, on_eval) -> final metrics
TestEvaluator = Callable[..., dict]  # (config, run_dir) -> metrics on search.test_split


def trial_name(key: str, seed_index: int) -> str:
  """The name (and run directory under WORKDIR/runs) of one candidate trained with one seed."""
  return f"{key}/seed{seed_index}"


def run_directory(workdir: str, key: str, seed_index: int) -> str:
  return os.path.join(workdir, "runs", *trial_name(key, seed_index).split("/"))


def trial_units(grid: list[grid_lib.Candidate], seeds: int
                ) -> list[tuple[grid_lib.Candidate, int]]:
  """(candidate, seed index) in queue order: every candidate's first seed, then the next."""
  return [(candidate, seed) for seed in range(seeds) for candidate in grid]


class CandidateFailed(Exception):
  """A candidate's training failed for a reason of its own (recorded; the search goes on)."""


class NotACandidate(Exception):
  """A trial Optuna created after the queue ran dry in a race between workers (discarded)."""


class WorkerStopped(Exception):
  """A worker stopped on request, its trial failed and queued again: the message is the one
  line to print, then exit with `exit_code` (130 for Ctrl-C, 128 + the signal's number)."""

  def __init__(self, message: str, exit_code: int):
    super().__init__(message)
    self.exit_code = exit_code


class SignalOutsideTraining(KeyboardInterrupt):
  """SIGTERM or SIGUSR1 that reached a worker between training sessions (a session takes
  them itself and saves its step first), raised where Ctrl-C would be: the same path fails
  the trial and queues its candidate again, and the worker exits with 128 + its number."""

  def __init__(self, signum: int):
    super().__init__()
    self.signal_name, self.exit_code = signal.Signals(signum).name, 128 + signum


@contextlib.contextmanager
def _stop_signals_interrupt() -> Iterator[None]:
  """SIGTERM and SIGUSR1 raise `SignalOutsideTraining` while the worker runs (the default
  would end it silently, its trial left running until the heartbeats fail it)."""
  if threading.current_thread() is not threading.main_thread():
    yield  # only the main thread may set handlers; there the default stays
    return

  def interrupt(signum: int, frame: Any) -> None:
    raise SignalOutsideTraining(signum)
  previous = {signum: signal.signal(signum, interrupt)
              for signum in (signal.SIGTERM, signal.SIGUSR1)}
  try:
    yield
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)


def default_study_name(config: ml_collections.ConfigDict) -> str:
  """One study per objective, and per NPU for Vela latencies: ms of two targets never mix."""
  target = config.search.latency_target
  npu = (f"-{target}" if config.search.objective == "accuracy_latency" and target != "litert"
         else "")
  return (f"compound-{config.model.name}-phi{config.search.phi:g}-"
          f"{config.search.objective}{npu}")


def _directions(config: ml_collections.ConfigDict) -> list[str]:
  return ["maximize"] + (["minimize"] if config.search.objective == "accuracy_latency" else [])


def _pruner(config: ml_collections.ConfigDict) -> Any:
  import optuna
  name = config.search.pruner
  if name == "median":  # after two finished candidates, stop those below the median
    return optuna.pruners.MedianPruner(n_startup_trials=2)
  if name == "hyperband":
    return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
  return optuna.pruners.NopPruner()


def open_study(config: ml_collections.ConfigDict, url: str, study_name: str,
               enqueue: bool = True) -> Any:
  """Creates or joins the study; the creator enqueues the grid, a restart the failed."""
  import optuna
  storage = storage_lib.make_storage(url, config)
  # The sampler only matters for a trial created after the queue ran dry (discarded).
  sampler = optuna.samplers.RandomSampler(seed=config.seed)
  kwargs = dict(study_name=study_name, storage=storage, sampler=sampler, pruner=_pruner(config))
  created = False
  if enqueue:
    try:
      study = optuna.create_study(directions=_directions(config), **kwargs)
      created = True
    except optuna.exceptions.DuplicatedStudyError:
      study = optuna.load_study(**kwargs)
  else:
    try:
      study = optuna.load_study(**kwargs)
    except KeyError:
      raise UserError(f"there is no study {study_name!r} in {url}; run the search first, or "
                      "pass the --study and --storage it ran with") from None
  wanted = [optuna.study.StudyDirection[d.upper()] for d in _directions(config)]
  if study.directions != wanted:
    raise UserError(f"study {study_name!r} in {url} optimises {len(study.directions)} "
                    f"objective(s), but config.search.objective={config.search.objective!r}; "
                    "pass another --study")
  if enqueue:
    enqueue_candidates(study, grid_lib.candidates(config), created, config.search.seeds,
                       config.seed)
  return study


def enqueue_candidates(study: Any, grid: list[grid_lib.Candidate], created: bool,
                       seeds: int = 1, base_seed: int = 0) -> int:
  """Queues each (candidate, seed) not waiting, running, complete or pruned; returns how many.

  Optuna's `skip_if_exists` also skips failed trials and is racy between workers, so
  the creator of the study enqueues the grid and marks it done; the others wait for
  that mark (a creator that died before it is replaced).
  """
  from optuna.trial import TrialState
  if not created:
    for _ in range(60):
      if GRID_ATTR in study.user_attrs:
        break
      time.sleep(1.0)
  alive = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
  taken = {trial.user_attrs.get("trial_name")
           for trial in study.get_trials(deepcopy=False, states=alive)}
  queued = 0
  for candidate, seed in trial_units(grid, seeds):
    name = trial_name(candidate.key, seed)
    if name not in taken:
      study.enqueue_trial(candidate.coefficients, user_attrs={
          **candidate.attributes(), "trial_name": name, "seed_index": seed,
          "seed": base_seed + seed})
      queued += 1
  study.set_user_attr(GRID_ATTR, [candidate.key for candidate in grid])
  return queued


def _count(study: Any, state: Any) -> int:
  return len(study.get_trials(deepcopy=False, states=(state,)))


def _is_duplicate(study: Any, trial: Any, name: str) -> bool:
  """Another trial of this (candidate, seed) finished, or runs with a lower number."""
  from optuna.trial import TrialState
  for other in study.get_trials(deepcopy=False, states=(
      TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)):
    if other.user_attrs.get("trial_name") == name and other.number != trial.number and (
        other.state != TrialState.RUNNING or other.number < trial.number):
      return True
  return False


def seeded_config(config: ml_collections.ConfigDict, candidate: grid_lib.Candidate,
                  seed_index: int) -> ml_collections.ConfigDict:
  """The candidate's proxy config with its trial's seed (initialisation and data order)."""
  derived = grid_lib.candidate_config(config, candidate)
  derived.seed = config.seed + seed_index
  return derived


def evaluate_on_test(config: ml_collections.ConfigDict, run_dir: str, split: str
                     ) -> dict[str, Any]:
  """The final EMA weights of a trial's run on `split` (after ranking: reported only)."""
  from effnetlite.evaluation.evaluate_weights import evaluate_weights
  metrics = evaluate_weights(config, run_dir, split, ema=True, progress=False)
  return {"top1": metrics["top1"], "top5": metrics["top5"], "count": metrics["count"]}


def _broadcast(value: int) -> int:
  """Process 0's value on every process of a multi-process JAX job."""
  from jax.experimental import multihost_utils
  return int(multihost_utils.broadcast_one_to_all(np.int32(value)))


# How often a worker looks again at a candidate's run that another live worker holds.
LOCK_POLL_SECONDS = 10.0


def _train_when_free(train: Trainer, config: ml_collections.ConfigDict,
                     run_dir: str, on_eval: Callable[[int, dict[str, float]], None],
                     say: bool = True) -> dict[str, float]:
  """`train`, once no other worker holds the run: a retry can race a live worker whose
  heartbeat came late. Waiting, not failing: when the holder ends, its run is finished (read
  back at once) or resumable, and a holder that dies releases the lock with it."""
  waiting = False
  while True:
    try:
      return train(config, run_dir, on_eval)
    except runs.RunLockedError:
      if say and not waiting:
        print(f"{run_dir} is being trained by another worker "
              f"({runs.RunLock(runs.Run(run_dir)).holder()}); waiting for it", flush=True)
        waiting = True
      time.sleep(LOCK_POLL_SECONDS)


def make_objective(config: ml_collections.ConfigDict, study: Any, workdir: str,
                   train: Trainer, measure_latency: Callable[..., float] | None,
                   multihost: bool, interrupted: list[int],
                   evaluate_test: TestEvaluator | None = None) -> Callable[[Any], Any]:
  """The Optuna objective: train one (candidate, seed) reporting EMA top-1 on the ranking
  split, keep its per-image correctness, evaluate it on the test split, then time it.

  A stop (Ctrl-C, or the training's `TrainingStopped`) appends the trial's number to
  `interrupted` (for `run_worker`, to which Optuna passes on only the exception) and goes
  on to Optuna, which fails the trial.
  """
  import optuna

  from effnetlite.train.stop import TrainingStopped
  grid = grid_lib.candidates(config)
  by_key = {candidate.key: candidate for candidate in grid}
  units = trial_units(grid, config.search.seeds)
  test_split = config.search.test_split

  def objective(trial):
    attrs = trial.user_attrs
    if "trial_name" not in attrs:  # set when enqueued
      trial.set_user_attr("unused", "created after the queue ran dry")
      raise NotACandidate(trial.number)
    for name in ("alpha", "beta", "gamma"):  # the enqueued values, recorded as parameters
      trial.suggest_float(name, *config.search[f"{name}_range"])
    if attrs["candidate"] not in by_key:
      grid_lib.find_candidate(grid, trial.params)  # says which config the study needs
    candidate, seed = by_key[attrs["candidate"]], attrs["seed_index"]
    name = trial_name(candidate.key, seed)
    if _is_duplicate(study, trial, name):
      trial.set_user_attr("duplicate", True)
      raise NotACandidate(trial.number)
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
    derived = seeded_config(config, candidate, seed)
    run_dir = run_directory(workdir, candidate.key, seed)
    print(f"candidate {grid.index(candidate) + 1}/{len(grid)}, seed {seed + 1}/"
          f"{config.search.seeds}: {candidate.short_name} (trial {trial.number}, seed "
          f"{derived.seed}) in {run_dir}", flush=True)
    saved = runs.Run(run_dir).latest_step()  # where its training resumes
    if "retry" in attrs or saved is not None:
      what = (f"retry {attrs['retry']} of candidate" if "retry" in attrs else "candidate")
      print(f"{what} {candidate.short_name} seed {seed + 1}, " + (
          f"resuming from step {saved}" if saved is not None else
          "from step 0 (no checkpoint saved)"), flush=True)
    if multihost:
      _broadcast(units.index((candidate, seed)))

    def on_eval(step: int, metrics: dict[str, float]) -> None:
      value = metrics["ema_eval_top1"]
      trial.set_user_attr("top1", metrics["eval_top1"])
      trial.set_user_attr("ema_top1", value)
      if len(study.directions) == 1:  # Optuna reports and prunes single objectives only
        trial.report(value, step)
        prune = trial.should_prune()
        if multihost:
          _broadcast(int(prune))
        if prune:
          raise optuna.TrialPruned(f"EMA top-1 {value:.4f} at step {step}")

    start = time.time()
    try:
      metrics = _train_when_free(train, derived, run_dir, on_eval)
      if test_split and evaluate_test is not None and not multihost:
        test = evaluate_test(derived, run_dir, test_split)
        trial.set_user_attr("test_split", test_split)
        trial.set_user_attr("test_top1", test["top1"])
        trial.set_user_attr("test_top5", test["top5"])
        trial.set_user_attr("test_count", test["count"])
    except (optuna.TrialPruned, UserError, TrainingStopped):
      raise
    except Exception as error:  # noqa: BLE001 - a failed candidate is recorded
      trial.set_user_attr("error", f"{type(error).__name__}: {error}"[:500])
      raise CandidateFailed(name) from error
    finally:
      trial.set_user_attr("train_seconds", time.time() - start)
    trial.set_user_attr("top1", metrics["eval_top1"])  # also when resumed from a finished run
    trial.set_user_attr("ema_top1", metrics["ema_eval_top1"])
    trial.set_user_attr("images_per_sec", metrics.get("train_images_per_sec", float("nan")))
    run = runs.Run(run_dir)
    if run.eval_examples() is not None:  # the per-image record lives in the run; the trial
      trial.set_user_attr("eval_examples",  # points at it
                          os.path.relpath(run.file(runs.Run.EVAL_EXAMPLES), workdir))
      trial.set_user_attr("eval_split", (run.final_metrics() or {}).get("eval_split"))
    print(f"candidate {candidate.short_name}, seed {seed + 1}/{config.search.seeds}: EMA top-1 "
          f"{metrics['ema_eval_top1']:.4f} on {derived.dataset.eval_split!r} after "
          f"{time.time() - start:.0f} s", flush=True)
    if measure_latency is None:
      return metrics["ema_eval_top1"]
    latency = measure_latency(derived, run_dir,
                              run.export_path(config.search.latency_format))
    trial.set_user_attr("latency_ms", latency)
    trial.set_user_attr("latency_target", config.search.latency_target)  # what the ms are
    if config.search.latency_budget_ms > 0:  # feasible when <= 0: best_trials honours it
      trial.set_constraint("latency_budget_ms", latency - config.search.latency_budget_ms)
    return metrics["ema_eval_top1"], latency

  def stoppable(trial):
    try:
      return objective(trial)
    except (KeyboardInterrupt, TrainingStopped) as stop:
      name, step, _ = _stopped_by(stop)
      trial.set_user_attr("error", f"stopped by {name}" + (  # the report's note on the trial
          f" at step {step}" if step is not None else ""))
      interrupted.append(trial.number)
      raise
  return stoppable


def measure_tflite_latency(config: ml_collections.ConfigDict, weights: str, output: str,
                           fmt: str, threads: int, target: str = "litert") -> float:
  """Exports `weights` (EMA) as `fmt` TFLite to `output`; its batch-1 latency in ms.

  `target` litert: LiteRT's measurement on this host. An Ethos-U accelerator: Vela's
  estimate for the int8 file, exported with int8 input and output as it would be deployed
  (float I/O would leave its QUANTIZE and DEQUANTIZE to the CPU, outside Vela's time).
  """
  from effnetlite.export import export_model
  from effnetlite.export.options import ExportOptions
  npu = target != "litert"
  options = ExportOptions(weights=weights, quantize="int8" if fmt == "int8" else "none",
                          io="int8" if npu else "float32",
                          calibration_steps=LATENCY_CALIBRATION_IMAGES, threads=threads,
                          target=target if npu else "none")
  report = export_model.export_model(config, options, output)
  return float(report["npu"]["inference_ms"] if npu else report["latency_ms_batch1"])


def check_latency_target(config: ml_collections.ConfigDict) -> None:
  """Vela installed when the search's latencies come from it: one line before any training."""
  target = config.search.latency_target
  if config.search.objective == "accuracy_latency" and target != "litert":
    from effnetlite.export import vela
    vela.check_target(target, "config.search.latency_target", others=("litert",))


def run_worker(config: ml_collections.ConfigDict, study: Any, workdir: str,
               train: Trainer | None = None,
               measure_latency: Callable[..., float] | None = None,
               evaluate_test: TestEvaluator | None = None) -> None:
  """Trains waiting trials until none waits or runs anywhere (every process calls it).

  `study` is None on processes other than 0 of a multi-process job: they follow.
  Stopped by Ctrl-C, or by a stop signal its training saved a step for, it leaves
  the study consistent (the trial failed, its candidate queued again) and raises
  `WorkerStopped`.
  """
  import jax
  if train is None:
    from effnetlite.train.loop import train_and_evaluate as train
  if evaluate_test is None:
    evaluate_test = evaluate_on_test
  if measure_latency is None and config.search.objective == "accuracy_latency":
    check_latency_target(config)

    def measure_latency(candidate_config, weights, output):
      return measure_tflite_latency(candidate_config, weights, output,
                                    config.search.latency_format, config.search.latency_threads,
                                    config.search.latency_target)
  multihost = jax.process_count() > 1
  if jax.process_index() != 0:
    _follow(config, workdir, train)
    return
  import optuna
  from optuna.trial import TrialState

  from effnetlite.train.stop import TrainingStopped
  interrupted: list[int] = []
  objective = make_objective(config, study, workdir, train, measure_latency, multihost,
                             interrupted, evaluate_test)
  quiet = _QuietInterrupted(interrupted)
  optuna_log = logging.getLogger("optuna.study._optimize")  # where Optuna reports failed trials
  optuna_log.addFilter(quiet)
  # One process: a stop signal between sessions stops it as Ctrl-C does. Under
  # jax.distributed the default stays: the processes could not agree on where to stop.
  signals = contextlib.nullcontext() if multihost else _stop_signals_interrupt()
  try:
    with signals:
      while True:
        if _count(study, TrialState.WAITING):
          study.optimize(objective, n_trials=1, catch=(CandidateFailed, NotACandidate))
        elif _count(study, TrialState.RUNNING):  # other workers' candidates, or dead workers'
          optuna.storages.fail_stale_trials(study)
          time.sleep(min(5.0, config.search.heartbeat_seconds / 2))
        else:
          break
  except (KeyboardInterrupt, TrainingStopped) as stop:
    name, step, exit_code = _stopped_by(stop)
    retry = storage_lib.RetryCandidate(config.search.max_retries)
    raise WorkerStopped(_stop(study, interrupted[-1] if interrupted else None, name, step,
                              retry), exit_code) from None
  finally:
    optuna_log.removeFilter(quiet)
  if multihost:
    _broadcast(-1)


class _QuietInterrupted(logging.Filter):
  """Drops Optuna's warnings (a traceback among them) about the trials a stop interrupted:
  the worker says it in one line (`WorkerStopped`)."""

  def __init__(self, interrupted: list[int]):
    super().__init__()
    self.interrupted = interrupted

  def filter(self, record: logging.LogRecord) -> bool:
    return not any(record.getMessage().startswith(f"Trial {number} failed")
                   for number in self.interrupted)


def _stopped_by(stop: BaseException) -> tuple[str, int | None, int]:
  """(what stopped a worker, the step its training saved or None, the exit status): a
  Ctrl-C or stop signal outside a training session, or a session's own stop
  (`TrainingStopped`)."""
  if isinstance(stop, SignalOutsideTraining):
    return stop.signal_name, None, stop.exit_code
  if isinstance(stop, KeyboardInterrupt):
    return "Ctrl-C", None, 130
  return stop.signal_name, stop.step, stop.exit_code


def _stop(study: Any, number: int | None, name: str, step: int | None,
          retry: storage_lib.RetryCandidate) -> str:
  """Leaves the trial the stop interrupted failed and its candidate queued again; the line
  to say."""
  from optuna.trial import TrialState
  rerun = "rerun the same command to continue"
  trial = study.get_trials(deepcopy=False)[number] if number is not None else None
  if trial is None or "trial_name" not in trial.user_attrs:
    return f"stopped by {name} (no candidate was training in this worker); {rerun}"
  if trial.state == TrialState.RUNNING:  # a second Ctrl-C stopped Optuna before it failed it
    study.tell(number, state=TrialState.FAIL)
  attrs = trial.user_attrs
  retried = retry(study, trial)
  then = ("the next worker retries it" if retried is not None else
          f"its {retry.max_retries} retries are spent, so the next run of the search queues it")
  saved = f" at step {step}, checkpoint saved" if step is not None else ""
  candidate = grid_lib.short_name(attrs["alpha"], attrs["beta"], attrs["gamma"])
  return (f"stopped by {name} during candidate {candidate} seed {attrs['seed_index'] + 1} "
          f"(trial {number}){saved}; the trial is marked failed and {then}; {rerun}")


def _follow(config: ml_collections.ConfigDict, workdir: str, train: Trainer) -> None:
  """Processes other than 0: train what process 0 announces, prune when it says so."""
  import optuna
  units = trial_units(grid_lib.candidates(config), config.search.seeds)

  def on_eval(step: int, metrics: dict[str, float]) -> None:
    if config.search.objective == "accuracy" and _broadcast(0):  # as process 0 reports
      raise optuna.TrialPruned()
  while (index := _broadcast(0)) >= 0:
    candidate, seed = units[index]
    try:
      _train_when_free(train, seeded_config(config, candidate, seed),  # as process 0 does
                       run_directory(workdir, candidate.key, seed), on_eval, say=False)
    except optuna.TrialPruned:
      pass
