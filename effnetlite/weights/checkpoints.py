"""This project's training checkpoints: orbax directories, written atomically.

A training step (RUN/checkpoints/<step>) holds two items:
  `state`  - everything training needs to resume (params, optimizer, EMA, step, RNG), saved
             once: the inference variables are read as a view of it;
  `config` - the resolved config as JSON, so a reader can check the variant.
The best step (RUN/best/<step>) keeps an inference-only copy, `model` (raw and EMA params
and BN statistics) beside its `config`. Runs written before one `state` sufficed also hold
a `model` item in every training step; it is read where present.
Orbax writes each step into a temporary directory and renames it when complete,
so a run killed mid-save never leaves a step that a reader would pick up.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import logging
import os
import shutil
import sys
from typing import Any, Callable, Iterator, Mapping, TypeVar

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from flax import traverse_util

from effnetlite import runs
from effnetlite.errors import UserError, WeightsError, warn
from effnetlite.weights import importers

STATE, MODEL, CONFIG = "state", "model", "config"
INFERENCE_KEYS = ("params", "batch_stats", "ema_params", "ema_batch_stats")
T = TypeVar("T")


def make_manager(directory: str, keep: int | None = 3, asynchronous: bool = True,
                 best_metric: str | None = None, every_steps: int | None = None,
                 every_minutes: float = 0.0) -> ocp.CheckpointManager:
  """A manager of training steps keeping `keep` of them, or with `best_metric` one of
  inference-only steps keeping the best `keep`.

  `should_save(step)` answers orbax's policy: every `every_steps` steps, at least every
  `every_minutes` (decided on process 0 and shared, so all processes save together), and
  at the step all processes agree on after a preemption notice (with jax.distributed).
  """
  policies = [ocp.checkpoint_managers.PreemptionCheckpointingPolicy()]
  if every_steps:
    policies.append(ocp.checkpoint_managers.FixedIntervalPolicy(every_steps))
  if every_minutes:
    policies.append(ocp.checkpoint_managers.ContinuousCheckpointingPolicy(
        minimum_interval_secs=max(1, round(every_minutes * 60))))
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, enable_async_checkpointing=asynchronous,
      best_fn=(lambda metrics: metrics[best_metric]) if best_metric else None,
      best_mode="max", keep_checkpoints_without_metrics=best_metric is None,
      cleanup_tmp_directories=True,
      save_decision_policy=ocp.checkpoint_managers.AnySavePolicy(policies),
      # Own barrier keys per directory: best/ and checkpoints/ may save the same step, and
      # orbax's default keys (step-based) would collide across the two managers.
      multiprocessing_options=ocp.options.MultiprocessingOptions(
          barrier_sync_key_prefix=epath.Path(directory).name))
  items = (MODEL, CONFIG) if best_metric else (STATE, CONFIG)
  return ocp.CheckpointManager(epath.Path(directory), options=options, item_names=items)


def inference_variables(state: Any) -> dict[str, Any]:
  """Raw and EMA variables of a training state (an object, or its restored dict)."""
  get = state.get if isinstance(state, Mapping) else lambda key: getattr(state, key)
  return {key: get(key) for key in INFERENCE_KEYS}


class DiskFullError(UserError):
  """A checkpoint that does not fit on the workdir's file system."""


def _is_disk_full(error: BaseException | None) -> bool:
  while error is not None:  # orbax and TensorStore wrap the OSError, or only quote it
    if getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error):
      return True
    error = error.__cause__ or error.__context__
  return False


def _disk_full(manager: ocp.CheckpointManager, what: str) -> DiskFullError:
  return DiskFullError(f"no space left on device in {manager.directory} {what}; free space (or "
                       "pass another --workdir) and rerun: the run resumes from its last "
                       "complete checkpoint")


def wait(manager: ocp.CheckpointManager) -> None:
  """Waits for the manager's save in progress; a full disk is one DiskFullError."""
  try:
    manager.wait_until_finished()
  except Exception as error:
    if _is_disk_full(error):
      raise _disk_full(manager, "while a checkpoint was written (it was not kept)") from None
    raise


def finish(*managers: ocp.CheckpointManager) -> Exception | None:
  """Waits for every manager's save, even after one failed; returns the first error."""
  first = None
  for manager in managers:
    try:
      wait(manager)
    except Exception as error:  # noqa: BLE001 - returned for the caller to raise
      first = first or error
  return first


def _bytes_needed(manager: ocp.CheckpointManager, items: Mapping[str, Any]) -> int:
  """What the next step will take on disk: the last step's size, or the arrays' bytes."""
  latest = manager.latest_step()
  if latest is not None:
    on_disk = sum(os.path.getsize(os.path.join(folder, name)) for folder, _, names in
                  os.walk(str(manager.directory / str(latest))) for name in names)
    if on_disk:
      return int(on_disk * 1.1)
  return int(sum(x.nbytes for x in jax.tree.leaves(dict(items))) * 1.1)


def save(manager: ocp.CheckpointManager, step: int, state: Any, config: Mapping[str, Any],
         metrics: Mapping[str, float] | None = None, inference_only: bool = False,
         force: bool = False) -> bool:
  """Saves one step: the train state, or (`inference_only`, for a best-step manager) the
  inference variables alone.

  A step that would not fit on the file system is refused before anything is written
  (DiskFullError): the previous step stays the latest, complete one.
  """
  wait(manager)  # the previous save is on disk before its space is counted
  if step in manager.all_steps():  # a resumed run recomputes, identically, a step it had kept
    return False
  arrays = {MODEL: inference_variables(state)} if inference_only else {STATE: state}
  needed = _bytes_needed(manager, arrays)
  free = shutil.disk_usage(str(manager.directory)).free
  if free < needed:
    raise _disk_full(manager, f"for checkpoint step {step}: it needs about {needed / 1e6:.0f} MB "
                     f"and {free / 1e6:.0f} MB are free")
  items = {name: ocp.args.StandardSave(value) for name, value in arrays.items()}
  items[CONFIG] = ocp.args.JsonSave(dict(config))
  try:
    return manager.save(step, args=ocp.args.Composite(**items), metrics=metrics, force=force)
  except Exception as error:
    if _is_disk_full(error):
      raise _disk_full(manager, f"while checkpoint step {step} was written (it was not "
                       "kept)") from None
    raise


def _is_read_debris(unraisable: Any) -> bool:
  """An aftermath of a failed orbax read: a data-read coroutine's error, or a TensorStore
  callback that found orbax's event loop closed."""
  error = unraisable.exc_value
  return ("reading array index" in str(error) or "Event loop is closed" in str(error)
          or "_read_array_index" in repr(unraisable.object))


@contextlib.contextmanager
def _drop_read_debris() -> Iterator[list[BaseException]]:
  """Hooks that drop the read debris (and pass everything else on) while the block runs,
  then the hooks found before: a library call leaves the process's hooks as they were.

  TensorStore's threads report theirs through sys.excepthook (PyErr_Print), coroutines
  through sys.unraisablehook. Yields the list of what was dropped so far.
  """
  unraisable_hook, except_hook = sys.unraisablehook, sys.excepthook
  dropped: list[BaseException] = []

  def on_unraisable(unraisable: Any) -> None:
    if _is_read_debris(unraisable):
      dropped.append(unraisable.exc_value)
    else:
      unraisable_hook(unraisable)

  def on_exception(kind: type, error: BaseException, trace: Any) -> None:
    if isinstance(error, RuntimeError) and "Event loop is closed" in str(error):
      dropped.append(error)
    else:
      except_hook(kind, error, trace)
  sys.unraisablehook, sys.excepthook = on_unraisable, on_exception
  try:
    yield dropped
  finally:
    if sys.unraisablehook is on_unraisable:  # else someone set theirs meanwhile: kept
      sys.unraisablehook = unraisable_hook
    if sys.excepthook is on_exception:
      sys.excepthook = except_hook


@contextlib.contextmanager
def _quiet_read_failures() -> Iterator[None]:
  """Keeps a failed read to the one exception orbax raises; logging and hooks are as
  they were afterwards.

  A damaged array makes orbax's concurrent reads fail one after another; each prints a
  traceback from a coroutine or a callback, reported as "ignored" (unraisable), some of
  them after orbax raised: TensorStore's threads finish the other reads over the next
  milliseconds (tens, on a busy machine more). So a failed read returns once half a
  second has passed without debris (10 s at most), with the hooks and loggers still
  dropping it: a damaged step is rare, and every traceback it would print later is noise.
  """
  import time  # here: only a failed read waits
  loggers = [logging.getLogger(name) for name in ("asyncio", "concurrent.futures")]
  disabled = [logger.disabled for logger in loggers]
  for logger in loggers:
    logger.disabled = True
  try:
    with _drop_read_debris() as dropped:
      try:
        yield
      except Exception:
        for _ in range(20):  # half-second rounds until one brings no debris, 10 s at most
          seen = len(dropped)
          time.sleep(0.5)
          gc.collect()  # the failed reads' coroutines are finalised (and dropped) now
          if len(dropped) == seen:
            break
        raise
  finally:
    for logger, was in zip(loggers, disabled):
      logger.disabled = was


def _reason(error: BaseException) -> str:
  text = str(error).splitlines()[0] if str(error) else type(error).__name__
  if "reading array index" in text:  # orbax's message names an index, not the cause
    return "an array's data cannot be read"
  return text[:200]


def _newest_readable(steps: list[epath.Path], read: Callable[[epath.Path], T], where: str,
                     move_aside: bool = False) -> tuple[epath.Path, T, list[epath.Path]]:
  """(step, what `read` returned, damaged newer steps): the newest step orbax can read.

  "Readable" is orbax's own verdict: its restore of the step completes (metadata,
  sharding and every array's data). A damaged step is passed over with a warning and
  kept on disk; `move_aside` renames it to `STEP.damaged`, out of the way of the step
  a resumed run will save again.
  """
  damaged = []
  for step in sorted(steps, key=lambda path: int(path.name), reverse=True):
    try:
      with _quiet_read_failures():
        return step, read(step), damaged
    except Exception as error:  # noqa: BLE001 - orbax raises bare Exception for lost data
      damaged.append(step)
      kept = step
      if move_aside and jax.process_index() == 0:  # one process renames on a shared disk
        kept = step.parent / f"{step.name}.damaged"
        step.rename(kept)
      warn(f"checkpoint step {step.name} in {step.parent} cannot be read ({_reason(error)}); "
           f"using the step before it (the damaged one is kept as {kept})")
  raise WeightsError(f"no readable checkpoint in {where}: step(s) "
                     f"{', '.join(p.name for p in damaged)} are damaged (kept on disk); "
                     "restore them from a copy, or start a new --workdir")


def restore_state(manager: ocp.CheckpointManager, abstract_state: Any) -> Any | None:
  """The newest readable training state, or None when the directory has no step; damaged
  newer steps are moved aside to `STEP.damaged` with a warning."""
  steps = [manager.directory / str(step) for step in manager.all_steps()]
  if not steps:
    return None

  def read(step: epath.Path) -> Any:
    return manager.restore(int(step.name), args=ocp.args.Composite(
        **{STATE: ocp.args.StandardRestore(abstract_state)}))[STATE]

  _, state, damaged = _newest_readable(steps, read, str(manager.directory), move_aside=True)
  if damaged:
    manager.reload()
  return state


def _is_step(path: epath.Path) -> bool:
  return ((path / STATE).is_dir() or (path / MODEL).is_dir()) and (path / CONFIG).exists()


def step_directories(path: str) -> list[epath.Path]:
  """The finalised step directories `path` names: a step itself, or every step of a
  checkpoint directory (a run directory names its `checkpoints/`)."""
  root = epath.Path(path)
  if _is_step(root):
    return [root]
  named = runs.run_weights(path)
  directory = epath.Path(named.folder) if named is not None else root
  if not directory.is_dir():
    return []
  return [m.path for m in ocp.step.standard_name_format().find_all(directory) if _is_step(m.path)]


def is_training_checkpoint(path: str) -> bool:
  return os.path.isdir(path) and bool(step_directories(path))


def _read_inference_variables(step: epath.Path) -> dict[str, Any]:
  """A step's inference variables: its `model` item (best steps, older runs), or the
  matching part of its `state` (the optimizer's state is not read)."""
  if (step / MODEL).is_dir():
    return ocp.StandardCheckpointer().restore(step / MODEL)
  with ocp.PyTreeCheckpointer() as checkpointer:
    tree = checkpointer.metadata(step / STATE).item_metadata.tree
    wanted = {key: tree[key] for key in INFERENCE_KEYS}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), wanted)
    return dict(checkpointer.restore(step / STATE, args=ocp.args.PyTreeRestore(
        item=wanted, restore_args=restore_args, partial_restore=True)))


def read_newest(path: str) -> tuple[epath.Path, dict[str, Any], dict[str, Any]]:
  """(step directory, config, inference variables) of the newest readable step of `path`."""
  steps = step_directories(path)
  if not steps:
    raise WeightsError(f"{path} holds no training checkpoint")

  def read(step: epath.Path) -> tuple[dict[str, Any], dict[str, Any]]:
    config = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(step / CONFIG)
    return config, _read_inference_variables(step)

  step, (config, variables), _ = _newest_readable(steps, read, path)
  return step, config, variables


def inference_variables_from(stored: Mapping[str, Any], template: Mapping[str, Any],
                             ema: bool = True, reset_classifier: bool | None = False,
                             model_name: str = "the model") -> dict[str, Any]:
  """The raw or EMA copy of a step's inference variables, checked against `template`."""
  prefix = "ema_" if ema else ""
  tensors = traverse_util.flatten_dict(dict(stored), sep="/")
  flat_template = traverse_util.flatten_dict(dict(template), sep="/")
  names = {ours: (prefix + ours, lambda a: a) for ours in flat_template}
  # Only the requested copy (raw or EMA) is compared; the other is there by design.
  tensors = {k: v for k, v in tensors.items() if k.startswith("ema_") == ema}
  return importers.assign(template, tensors, names, reset_classifier, model_name=model_name)
