"""`train_and_evaluate(config, workdir)`: the TF/TPU recipe with sharded data parallelism.

One jit-compiled step over a Mesh of all devices of all processes (batch
sharded, state replicated), orbax checkpoints that resume exactly (the data
position is the step), EMA weights evaluated beside the raw ones, and the best
EMA checkpoint kept apart in `workdir/best`.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Any, Callable

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from effnetlite import quant, runs
from effnetlite.data import pipeline, sources
from effnetlite.errors import UserError
from effnetlite.evaluation import jax_eval
from effnetlite.train import metrics_writer, steps
from effnetlite.train import optimizer as optimizer_lib
from effnetlite.utils import files
from effnetlite.utils.process import seconds_since_start
from effnetlite.utils.progress import progress_bar
from effnetlite.validation import absolute_path, validate_config
from effnetlite.weights import checkpoints, factory, loading


class NonFiniteLossError(UserError):
  """The loss or a gradient became NaN/inf."""


def initialize_distributed() -> None:
  """Joins a multi-process run when the usual environment says there is one."""
  if jax.distributed.is_initialized():
    return
  env = os.environ
  if "JAX_COORDINATOR_ADDRESS" in env:
    if env.get("JAX_PLATFORMS", "cpu").startswith("cpu"):
      jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(env["JAX_COORDINATOR_ADDRESS"], int(env["JAX_NUM_PROCESSES"]),
                               int(env["JAX_PROCESS_ID"]))
  elif "SLURM_NTASKS" in env and int(env["SLURM_NTASKS"]) > 1:
    jax.distributed.initialize()


def check_run(config: ml_collections.ConfigDict, workdir: str
              ) -> ml_collections.ConfigDict | None:
  """The checks that need the devices or the file system, before any data or compilation.

  Returns the config of the run already in `workdir` (None for a new run), after checking
  that `config` describes the same variables. Nothing is created yet: a run that fails on
  its data leaves no empty workdir behind.
  """
  for name in ("batch_size", "eval_batch_size"):
    pipeline.local_batch_size(config[name], f"config.{name}")
  problem = files.unwritable_directory(workdir)
  if problem:
    raise UserError(f"workdir {workdir} is not writable ({problem}); pass a directory you "
                    "can write to")
  if runs.find_run(workdir) != workdir or not runs.has_checkpoints(workdir):
    return None
  previous = runs.load_config(workdir)
  if quant.qat_enabled(previous) != quant.qat_enabled(config):
    kinds = ("a quantisation-aware (QAT)", "a float") if quant.qat_enabled(previous) else (
        "a float", "a QAT")
    raise UserError(f"workdir {workdir} holds {kinds[0]} run and the config asks for {kinds[1]} "
                    "one; pass a new --workdir (QAT from this run: --config.init_from="
                    f"{workdir})")
  if config.dataset.num_classes == runs.FROM_DATA:
    config.dataset.num_classes = previous.dataset.num_classes
  runs.check_architecture(workdir, previous, config, fix="pass a new --workdir for this model, or "
                          f"resume with the run's own config (--config={workdir}/config.json)")
  return previous


def _resolve_classes(config: ml_collections.ConfigDict, source: sources.Source) -> list[str]:
  """The dataset's class names; fills config.dataset.num_classes=-1 from the data."""
  if config.dataset.num_classes == runs.FROM_DATA:
    config.dataset.num_classes = source.num_classes
  if source.num_classes != config.dataset.num_classes:
    raise UserError(f"dataset {config.dataset.name!r} has {source.num_classes} classes "
                    f"but config.dataset.num_classes={config.dataset.num_classes}; set it to "
                    f"{source.num_classes}, or to -1 to take the count from the data")
  return list(source.class_names) or [str(i) for i in range(source.num_classes)]


def _finished_run(workdir: str, step: int, total_steps: int) -> dict[str, float] | None:
  """What re-running a finished run reports: its final metrics, with nothing written
  (None when a run stopped before writing them: it is evaluated again)."""
  finished = runs.read_final_metrics(workdir)
  if finished is None:
    return None
  print(f"run {workdir} already finished at step {step} (of {total_steps}); nothing to "
        "train (raise config.num_epochs or config.max_steps to continue it)", flush=True)
  return finished


def _record_session(config: ml_collections.ConfigDict, workdir: str,
                    previous: ml_collections.ConfigDict | None, resumed: int | None,
                    class_names: list[str]) -> None:
  """Says what this session does and writes the run's config and class names.

  A resumed run lists the keys that changed since its last session (kept in
  config_history.jsonl); config.json always holds the latest session's config.
  """
  lead = jax.process_index() == 0
  if resumed is not None:
    print(f"resuming from step {resumed} (checkpoint {workdir}/checkpoints/{resumed})",
          flush=True)
    changes = runs.differences(previous, config) if previous is not None else []
    if changes:
      print(f"config changed since the last session: {runs.describe(changes)} (recorded in "
            f"{runs.HISTORY_FILE})", flush=True)
      if lead:
        runs.record_changes(workdir, resumed, changes)
  print(f"classes: {runs.format_class_names(class_names)}", flush=True)
  if lead:
    os.makedirs(workdir, exist_ok=True)
    runs.save_config(workdir, config)
    runs.save_class_names(workdir, class_names)


# train_and_evaluate calls in this process: times of a later one count from its own start.
_RUNS_STARTED = [0]
# Training batches whose activations start a QAT run's moving-average ranges.
QAT_OBSERVED_BATCHES = 4


def _observe_ranges(module, variables: dict, config: ml_collections.ConfigDict,
                    source: sources.Source, mesh) -> dict:
  """A fresh QAT run's variables with each activation range averaged over the first
  training batches (BN statistics and weights unchanged), so the first steps already
  train with ranges of these weights rather than of one batch."""
  from effnetlite.data.preprocessing import normalize
  from effnetlite.quant import model as qmodel
  batches = itertools.islice(pipeline.train_batches(config, source, 0), QAT_OBSERVED_BATCHES)
  images = (normalize(pipeline.to_global(batch, mesh)["image"]) for batch in batches)
  return jax.device_get(qmodel.observe_ranges(module, variables, images))


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       on_eval: Callable[[int, dict[str, float]], None] | None = None
                       ) -> dict[str, float]:
  """Trains (resuming from `workdir` if it holds a checkpoint); returns the final metrics.

  `on_eval(step, metrics)` runs after every evaluation but the last (whose metrics are
  returned); it may raise to stop the run (the search's pruner does), after which the
  checkpoints already started are completed.
  """
  config = ml_collections.ConfigDict(validate_config(config).to_dict())  # detached from caller
  workdir = absolute_path(workdir)  # orbax takes absolute paths only
  session_start = time.time()
  _RUNS_STARTED[0] += 1
  initialize_distributed()
  previous = check_run(config, workdir)
  mesh = pipeline.make_mesh()
  train_source = sources.make_source(config.dataset, config.dataset.train_split,
                                     jax.process_index(), jax.process_count())
  eval_source = sources.make_source(config.dataset, config.dataset.eval_split,
                                    jax.process_index(), jax.process_count())
  class_names = _resolve_classes(config, train_source)
  full_batches = pipeline.steps_per_epoch(train_source, config.batch_size)  # checks the size
  per_epoch = config.steps_per_epoch if config.steps_per_epoch > 0 else full_batches
  total_steps = (config.max_steps if config.max_steps > 0
                 else int(round(config.num_epochs * per_epoch)))
  eval_every = config.eval_every_steps or per_epoch

  module = factory.module_from_config(config)
  schedule = optimizer_lib.learning_rate_schedule(config, config.batch_size, per_epoch, total_steps)
  optimizer = optimizer_lib.make_optimizer(config, schedule)
  replicated = NamedSharding(mesh, PartitionSpec())

  manager = checkpoints.make_manager(os.path.join(workdir, "checkpoints"),
                                     keep=config.keep_checkpoints)
  best = checkpoints.make_manager(os.path.join(workdir, "best"), keep=1,
                                  best_metric="ema_top1")
  # TF-initialised (one init: its shapes also tell orbax what a checkpoint should hold).
  variables = factory.init_variables(module, config.model.resolution, config.seed)
  state = steps.create_train_state(variables, optimizer, jax.random.PRNGKey(config.seed))
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
                          state)
  restored = checkpoints.restore_state(manager, abstract)  # newest readable step
  if restored is not None:
    finished = (_finished_run(workdir, int(restored.step), total_steps)
                if int(restored.step) >= total_steps else None)
    if finished is not None:
      return finished
    state = restored
  else:
    if config.init_from:  # fine-tuning: another class count re-initialises the classifier
      variables = loading.load_weights(config.init_from, config, variables,
                                       reset_classifier=None)
    if quant.qat_enabled(config):  # the int8 ranges start from the weights' activations
      variables = _observe_ranges(module, variables, config, train_source, mesh)
    if config.init_from or quant.qat_enabled(config):
      state = steps.create_train_state(variables, optimizer, jax.random.PRNGKey(config.seed))
    state = jax.device_put(state, replicated)
  start_step = int(state.step)
  _record_session(config, workdir, previous, start_step if restored is not None else None,
                  class_names)

  train_step = steps.jit_train_step(steps.make_train_step(module, config, optimizer, schedule),
                                    mesh)
  evaluator = jax_eval.make_evaluator(module, config.dataset.num_classes, mesh)
  writer = metrics_writer.MetricsWriter(workdir, resume_step=start_step)
  batches = pipeline.prefetch_to_device(
      pipeline.train_batches(config, train_source, start_step), mesh)

  def run_eval(step: int, final: bool = False) -> dict[str, Any]:
    """Raw and EMA metrics; the final one also each example's EMA top-1 hit (one process)."""
    results = {}
    for prefix, variables in (("", {"params": state.params, "batch_stats": state.batch_stats}),
                              ("ema_", {"params": state.ema_params,
                                        "batch_stats": state.ema_batch_stats})):
      metrics = jax_eval.evaluate(
          evaluator, variables, pipeline.eval_batches(config, eval_source), mesh,
          pipeline.eval_steps(eval_source, config.eval_batch_size),
          per_example=final and prefix == "ema_" and jax.process_count() == 1)
      results.update({f"{prefix}eval_{k}": v for k, v in metrics.items()
                      if k in ("top1", "top5", "loss", "correct")})
      results[f"{prefix}eval_count"] = metrics["count"]
    writer.write(step, {k: v for k, v in results.items()
                        if not k.endswith(("count", "correct"))})
    return results

  bar = progress_bar(total_steps, start_step)
  history, last_eval, seconds_to_first_step = [], {}, None
  window_start, window_images = time.perf_counter(), 0
  train_seconds, train_images = 0.0, 0
  step = start_step
  try:
    while step < total_steps:
      state, metrics = train_step(state, next(batches))
      step += 1
      window_images += config.batch_size
      history.append(metrics)
      if step == start_step + 1:  # compiled, or loaded from the compilation cache, and run
        jax.block_until_ready(metrics)
        if _RUNS_STARTED[0] == 1:  # the process's first run: its start includes the imports
          seconds_to_first_step = seconds_since_start()
          bar.write(f"first step done {seconds_to_first_step:.1f} s after the start")
        else:  # a later run of this process (a search's next trial): from this run's start
          seconds_to_first_step = time.time() - session_start
          bar.write(f"first step done {seconds_to_first_step:.1f} s after this run's start")
      if step % config.log_every_steps == 0 or step == total_steps:
        logged = {k: float(np.mean([float(m[k]) for m in history])) for k in history[0]}
        if logged.pop("finite") < 1.0 and config.nonfinite_loss == "stop":
          first = next(i for i, m in enumerate(history) if float(m["finite"]) < 1.0)
          raise NonFiniteLossError(
              f"loss or gradients became non-finite at step {step - len(history) + first + 1}; "
              "lower config.optimizer.base_learning_rate or set config.nonfinite_loss=skip")
        elapsed = time.perf_counter() - window_start
        logged["images_per_sec"] = window_images / elapsed
        train_seconds, train_images = train_seconds + elapsed, train_images + window_images
        logged["epoch"] = step / per_epoch
        writer.write(step, logged)
        bar.set_postfix(epoch=f"{logged['epoch']:.2f}", xent=f"{logged['cross_entropy']:.4f}",
                        lr=f"{logged['learning_rate']:.3g}",
                        img_s=f"{logged['images_per_sec']:.1f}", refresh=False)
        history, window_start, window_images = [], time.perf_counter(), 0
      bar.update(1)
      is_last = step == total_steps
      if step % eval_every == 0 or is_last:
        last_eval = run_eval(step, final=is_last)
        checkpoints.save(best, step, state, config.to_dict(), include_state=False,
                         metrics={"ema_top1": last_eval["ema_eval_top1"]}, force=True)
        bar.write(f"step {step}: top-1 {last_eval['eval_top1']:.4f} "
                  f"(EMA {last_eval['ema_eval_top1']:.4f}) on {last_eval['eval_count']} images")
        window_start = time.perf_counter()  # evaluation time is not training throughput
        if on_eval is not None and not is_last:
          on_eval(step, last_eval)
      if step % config.checkpoint_every_steps == 0 or is_last:
        checkpoints.save(manager, step, state, config.to_dict(), force=is_last)
  finally:  # a stopped run still completes the checkpoints it started
    bar.close()
    unfinished = checkpoints.finish(manager, best)
    writer.flush()
  if unfinished is not None:  # raised here: an error already on its way goes first
    raise unfinished
  if not last_eval:  # a finished run that stopped before its final metrics
    last_eval = run_eval(step, final=True)
    writer.flush()
  correct = last_eval.pop("ema_eval_correct", None)
  if train_seconds:
    last_eval["train_images_per_sec"] = train_images / train_seconds
  if seconds_to_first_step is not None:
    last_eval["seconds_to_first_step"] = seconds_to_first_step
  _record_final(config, workdir, step, last_eval, eval_source, correct, start_step,
                time.time() - session_start)
  return last_eval


def _record_final(config: ml_collections.ConfigDict, workdir: str, step: int, last_eval: dict,
                  eval_source: sources.Source, correct: np.ndarray | None, start_step: int,
                  session_seconds: float) -> None:
  """final_metrics.json with what comparing runs needs, and the final EMA weights' per-example
  top-1 on the evaluation split (single-process runs: examples are spread over hosts)."""
  ids = eval_source.example_ids()  # listed once: a tfds split's ids are a pass over its records
  split = eval_source.identity(ids)
  if correct is not None:
    runs.save_eval_examples(workdir, split, ids, correct)
  if jax.process_index() == 0:
    from effnetlite.utils.provenance import provenance
    runs.save_final_metrics(workdir, {
        "step": step, **last_eval, "eval_split": split, "seed": config.seed,
        "session": {"from_step": start_step, "wall_seconds": session_seconds},
        **provenance()})
