"""`train_and_evaluate(config, workdir)`: the TF/TPU recipe with sharded data parallelism.

One jit-compiled step over a Mesh of all devices of all processes (batch sharded, state
replicated), orbax checkpoints that resume exactly (the data position is the step), EMA
weights evaluated beside the raw ones, and the best EMA step kept apart in `RUN/best`.
The recipe reads top to bottom: set up, take the initial state, loop, finish; the
periodic work is `effnetlite.train.actions`, where the state comes from
`effnetlite.train.initial_state`, and the run's files are `effnetlite.runs.Run`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from typing import Any, Callable, Iterator

import jax
import ml_collections
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from effnetlite import quant, runs
from effnetlite.data import pipeline, sources
from effnetlite.data.preprocessing import normalize
from effnetlite.errors import UserError, warn
from effnetlite.evaluation import jax_eval
from effnetlite.nn import backend as backend_lib
from effnetlite.train import actions, initial_state, metrics_writer, steps, stop
from effnetlite.train import optimizer as optimizer_lib
from effnetlite.utils import files
from effnetlite.utils.progress import progress_bar
from effnetlite.validation import validate_config
from effnetlite.weights import checkpoints, factory

# train_and_evaluate calls in this process: times of a later one count from its own start.
_RUNS_STARTED = [0]


def initialize_distributed() -> None:
  """Joins a multi-process run when the usual environment says there is one."""
  if jax.distributed.is_initialized():
    return
  env = os.environ
  explicit = "JAX_COORDINATOR_ADDRESS" in env
  tasks = int(env.get("SLURM_NTASKS") or 1)
  if not explicit and tasks <= 1:
    return
  if not explicit and "SLURM_STEP_NODELIST" not in env:  # what JAX reads: set by srun only
    warn(f"SLURM_NTASKS={tasks}, but this process was not started by srun: it trains alone; "
         "run `srun python ...` in the batch script for one process per task")
    return
  # CPU arrays spanning processes need cross-process collectives, in a SLURM job as with
  # explicit addresses: gloo, JAX 0.10's default, set for older JAX whose default was none
  # (the first all-reduce failed); a choice of the user's (JAX_CPU_COLLECTIVES_IMPLEMENTATION
  # =mpi) stands. It concerns the CPU backend only.
  if (env.get("JAX_PLATFORMS", "cpu").startswith("cpu")
      and not env.get("JAX_CPU_COLLECTIVES_IMPLEMENTATION")):
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if explicit:
    jax.distributed.initialize(env["JAX_COORDINATOR_ADDRESS"], int(env["JAX_NUM_PROCESSES"]),
                               int(env["JAX_PROCESS_ID"]))
  else:  # SLURM: coordinator, process count and rank from the job's environment
    jax.distributed.initialize()
  stop.take_sigterm_from_jax()  # before training, SIGTERM ends the process at once


def check_run(config: ml_collections.ConfigDict, run: runs.Run
              ) -> ml_collections.ConfigDict | None:
  """The checks that need the devices or the file system, before any data or compilation.

  Returns the config of the run already in `run` (None for a new run), after checking
  that `config` describes the same variables. Nothing is created yet: a run that fails on
  its data leaves no empty workdir behind.
  """
  for name in ("batch_size", "eval_batch_size"):
    pipeline.local_batch_size(config[name], f"config.{name}")
  problem = files.unwritable_directory(run.path)
  if problem:
    raise UserError(f"workdir {run.path} is not writable ({problem}); pass a directory you "
                    "can write to")
  if not run.is_run() or not run.has_checkpoints():
    return None
  previous = validate_config(run.load_config())
  if quant.qat_enabled(previous) != quant.qat_enabled(config):
    kinds = ("a quantisation-aware (QAT)", "a float") if quant.qat_enabled(previous) else (
        "a float", "a QAT")
    raise UserError(f"workdir {run.path} holds {kinds[0]} run and the config asks for "
                    f"{kinds[1]} one; pass a new --workdir (QAT from this run: "
                    f"--config.init_from={run.path})")
  if config.dataset.num_classes == runs.FROM_DATA:
    config.dataset.num_classes = previous.dataset.num_classes
  runs.check_architecture(run, previous, config, fix="pass a new --workdir for this model, or "
                          f"resume with the run's own config (--config={run.path})")
  return previous


@dataclasses.dataclass
class Setup:
  """What a session builds before its first step: data, lengths, model and optimizer."""
  mesh: Mesh
  train_source: sources.Source
  eval_source: sources.Source
  class_names: list[str]
  steps_per_epoch: int
  total_steps: int
  eval_every: int
  module: Any
  schedule: optax.Schedule
  optimizer: optax.GradientTransformation

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec())


def _class_names(config: ml_collections.ConfigDict, source: sources.Source) -> list[str]:
  """The dataset's class names; fills config.dataset.num_classes=-1 from the data."""
  if config.dataset.num_classes == runs.FROM_DATA:
    config.dataset.num_classes = source.num_classes
  if source.num_classes != config.dataset.num_classes:
    raise UserError(f"dataset {config.dataset.name!r} has {source.num_classes} classes "
                    f"but config.dataset.num_classes={config.dataset.num_classes}; set it to "
                    f"{source.num_classes}, or to -1 to take the count from the data")
  return list(source.class_names) or [str(i) for i in range(source.num_classes)]


def set_up(config: ml_collections.ConfigDict) -> Setup:
  """Sources, class names, lengths, module and optimizer: nothing compiled yet."""
  index, count = jax.process_index(), jax.process_count()
  train_source = sources.make_source(config.dataset, config.dataset.train_split, index, count)
  eval_source = sources.make_source(config.dataset, config.dataset.eval_split, index, count)
  class_names = _class_names(config, train_source)
  full_batches = pipeline.steps_per_epoch(train_source, config.batch_size)  # checks the size
  per_epoch = config.steps_per_epoch if config.steps_per_epoch > 0 else full_batches
  total = initial_state.total_steps(config, per_epoch)
  schedule = optimizer_lib.learning_rate_schedule(config, config.batch_size, per_epoch, total)
  return Setup(pipeline.make_mesh(), train_source, eval_source, class_names, per_epoch, total,
               config.eval_every_steps or per_epoch, factory.module_from_config(config),
               schedule, optimizer_lib.make_optimizer(config, schedule))


def _say(message: str) -> None:
  if jax.process_index() == 0:
    print(message, flush=True)


def record_session(config: ml_collections.ConfigDict, run: runs.Run, start_step: int | None,
                   changes: list[tuple[str, Any, Any]], reproducible: bool,
                   class_names: list[str]) -> None:
  """Says what this session does and writes the run's config, backend and class names.

  A resumed run lists the keys that changed since its last session (kept in the run's
  history); the config file always holds the latest session's config, the backend file
  the layer formulations this platform resolved.
  """
  lead = jax.process_index() == 0
  backend, before = backend_lib.resolve_backend(config), run.backend()
  if start_step is not None:
    _say(f"resuming from step {start_step} (checkpoint {run.checkpoints_dir}/{start_step})")
    if changes:
      _say(f"config changed since the last session: {runs.describe(changes)} "
           + ("(recorded in the run's history)" if reproducible else
              "(accepted by config.accept_changes_on_resume; recorded in the run's history as "
              "a non-reproducible continuation)"))
      if lead:
        run.record_changes(start_step, changes, reproducible)
    if before is not None and before.get("platform") != backend.platform:
      chosen = ", ".join(f"{k} {v}" for k, v in backend.as_dict().items() if k != "platform")
      _say(f"resuming on {backend.platform}, trained on {before.get('platform')}: layers "
           f"re-resolved for {backend.platform} ({chosen})")
  _say(f"classes: {runs.format_class_names(class_names)}")
  if lead:
    saved = ml_collections.ConfigDict(config.to_dict())
    saved.accept_changes_on_resume = False  # this session's opt-in: a later resume decides anew
    run.save_config(saved)
    run.save_backend(backend.as_dict())
    run.save_class_names(class_names)


def _first_images(config: ml_collections.ConfigDict, setup: Setup) -> Iterator[jax.Array]:
  """The normalised training images from step 0 on, read only when iterated."""
  for batch in pipeline.train_batches(config, setup.train_source, 0):
    yield normalize(pipeline.to_global(batch, setup.mesh)["image"])


def _evaluator(config: ml_collections.ConfigDict, setup: Setup, writer: metrics_writer.MetricsWriter
               ) -> Callable[[Any, int, bool], dict[str, Any]]:
  """(state, step, final) -> raw and EMA metrics; the final one also each example's EMA top-1
  hit (one process: examples are spread over hosts otherwise)."""
  compiled = jax_eval.make_evaluator(setup.module, config.dataset.num_classes, setup.mesh)

  def evaluate(state: steps.TrainState, step: int, final: bool) -> dict[str, Any]:
    results = {}
    for prefix, variables in (("", {"params": state.params, "batch_stats": state.batch_stats}),
                              ("ema_", {"params": state.ema_params,
                                        "batch_stats": state.ema_batch_stats})):
      metrics = jax_eval.evaluate(
          compiled, variables, pipeline.eval_batches(config, setup.eval_source), setup.mesh,
          pipeline.eval_steps(setup.eval_source, config.eval_batch_size),
          per_example=final and prefix == "ema_" and jax.process_count() == 1)
      results.update({f"{prefix}eval_{k}": v for k, v in metrics.items()
                      if k in ("top1", "top5", "loss", "correct")})
      results[f"{prefix}eval_count"] = metrics["count"]
    writer.write(step, {k: v for k, v in results.items()
                        if not k.endswith(("count", "correct"))})
    return results
  return evaluate


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       on_eval: Callable[[int, dict[str, float]], None] | None = None
                       ) -> dict[str, float]:
  """Trains (resuming from `workdir` if it holds a checkpoint); returns the final metrics.

  `on_eval(step, metrics)` runs after every evaluation but the last (whose metrics are
  returned); it may raise to stop the run (the search's pruner does), after which the
  checkpoints already started are completed. A stop signal saves the step it reached and
  raises `effnetlite.train.stop.TrainingStopped`; another live writer of `workdir` is a
  `runs.RunLockedError`.
  """
  config = ml_collections.ConfigDict(validate_config(config).to_dict())  # detached from caller
  run, session_start = runs.Run(workdir), time.time()
  _RUNS_STARTED[0] += 1
  initialize_distributed()
  _agree_on(_probe_lock, run)  # a live writer is named before anything else is said
  previous = check_run(config, run)
  setup = set_up(config)
  changes, reproducible = (initial_state.check_resume(run, previous, config, setup.steps_per_epoch)
                           if previous is not None else ([], True))
  if _finished(run, setup.total_steps):
    return run.final_metrics()
  with _writer_lock(run), stop.StopRequests() as requests:
    manager = checkpoints.make_manager(run.checkpoints_dir, keep=config.keep_checkpoints,
                                       every_steps=config.checkpoint_every_steps,
                                       every_minutes=config.checkpoint_every_minutes)
    best = checkpoints.make_manager(run.best_dir, keep=1, best_metric="ema_top1")
    state, resumed = initial_state.initial_state(setup.module, config, setup.optimizer, manager,
                                                 setup.replicated, _first_images(config, setup))
    start_step = int(state.step)
    record_session(config, run, start_step if resumed else None, changes, reproducible,
                   setup.class_names)
    writer = metrics_writer.MetricsWriter(run, resume_step=start_step)
    evaluate = _evaluator(config, setup, writer)
    bar = progress_bar(setup.total_steps, start_step)
    say = bar.write if jax.process_index() == 0 else (lambda message: None)
    throughput = actions.Throughput(config.batch_size)
    first_step = actions.FirstStep(start_step, session_start, _RUNS_STARTED[0] == 1, say)
    evaluation = actions.Evaluate(setup.eval_every, setup.total_steps, evaluate, best, config,
                                  throughput, say, on_eval)
    periodic = [first_step, actions.RunAhead(),
                actions.LogMetrics(config.log_every_steps, setup.total_steps,
                                   setup.steps_per_epoch, config.nonfinite_loss, writer,
                                   throughput, bar),
                actions.StopOnRequest(requests, manager, config),  # before an evaluation
                evaluation, actions.SaveCheckpoint(manager, setup.total_steps, config, throughput)]
    try:
      state, step = _loop(config, setup, state, periodic)
    finally:  # a stopped run still completes the checkpoints it started
      bar.close()
      unfinished = checkpoints.finish(manager, best)
      writer.flush()
    if unfinished is not None:  # raised here: an error already on its way goes first
      raise unfinished
    final = evaluation.last or evaluate(state, step, True)  # finished, without final metrics
    writer.flush()
    return record_final(config, run, setup.eval_source, step, final, throughput.overall(),
                        first_step.seconds, start_step, time.time() - session_start)


def _loop(config: ml_collections.ConfigDict, setup: Setup, state: steps.TrainState,
          periodic: list[actions.Action]) -> tuple[steps.TrainState, int]:
  """The steps from the state's to the last, each followed by the periodic actions."""
  train_step = steps.jit_train_step(
      steps.make_train_step(setup.module, config, setup.optimizer, setup.schedule), setup.mesh)
  step = int(state.step)
  batches = pipeline.prefetch_to_device(
      pipeline.train_batches(config, setup.train_source, step), setup.mesh)
  try:
    while step < setup.total_steps:
      state, metrics = train_step(state, next(batches))
      step += 1
      for action in periodic:
        action(step, state, metrics)
  finally:  # stop the input pipeline now, not when a stop's traceback is freed
    batches.close()
  return state, step


def _agree_on(take: Callable[[runs.RunLock], None], run: runs.Run) -> runs.RunLock:
  """`take(lock)` on process 0; every process learns whether it refused, so a refused job
  stops everywhere, with process 0's one line (the others' follow it, unprinted)."""
  lock, refusal = run.lock(), None
  if jax.process_index() == 0:
    try:
      take(lock)
    except UserError as error:  # held by another run, or no file locks on this file system
      refusal = error
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    if not multihost_utils.broadcast_one_to_all(np.int32(refusal is None)) and refusal is None:
      refusal = runs.RunLockedError(f"workdir {run.path}: process 0 could not lock it")
  if refusal is not None:
    raise refusal
  return lock


def _probe_lock(lock: runs.RunLock) -> None:
  lock.acquire(record=False)
  lock.release()


@contextlib.contextmanager
def _writer_lock(run: runs.Run) -> Iterator[None]:
  """The run's one-writer lock, taken by process 0 for the whole job (the job's lock)."""
  lock = _agree_on(runs.RunLock.acquire, run)
  try:
    yield
  finally:
    lock.release()


def _finished(run: runs.Run, total_steps: int) -> bool:
  """Whether the run already reached `total_steps` and recorded its final metrics (a run
  that stopped before them is evaluated again)."""
  finished, latest = run.final_metrics(), run.latest_step()
  if not finished or latest is None or min(finished.get("step", -1), latest) < total_steps:
    return False
  _say(f"run {run.path} already finished at step {finished['step']} (of {total_steps}); "
       "nothing to train (raise config.num_epochs or config.max_steps to continue it)")
  return True


def record_final(config: ml_collections.ConfigDict, run: runs.Run, eval_source: sources.Source,
                 step: int, final: dict[str, Any], images_per_sec: float | None,
                 seconds_to_first_step: float | None, start_step: int,
                 session_seconds: float) -> dict[str, Any]:
  """The run's final metrics (returned) with what comparing runs needs, and the final EMA
  weights' per-example top-1 on the evaluation split."""
  final = dict(final)
  correct = final.pop("ema_eval_correct", None)
  if images_per_sec:
    final["train_images_per_sec"] = images_per_sec
  if seconds_to_first_step is not None:
    final["seconds_to_first_step"] = seconds_to_first_step
  ids = eval_source.example_ids()  # listed once: a tfds split's ids are a pass over its records
  split = eval_source.identity(ids)
  if correct is not None:
    run.save_eval_examples(split, ids, np.asarray(correct))
  if jax.process_index() == 0:
    from effnetlite.utils.provenance import provenance
    run.save_final_metrics({
        "step": step, **final, "eval_split": split, "seed": config.seed,
        "session": {"from_step": start_step, "wall_seconds": session_seconds},
        **provenance()})
  return final
