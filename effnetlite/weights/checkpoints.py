"""This project's training checkpoints: orbax directories, written atomically.

A checkpoint step holds three items:
  `state`  - everything training needs to resume (params, optimizer, EMA, step, RNG),
  `model`  - the inference variables alone: raw and EMA params and BN statistics,
  `config` - the resolved config as JSON, so a reader can check the variant.
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
import orbax.checkpoint as ocp
from etils import epath
from flax import traverse_util

from effnetlite.errors import UserError, WeightsError, warn
from effnetlite.weights import importers

ITEMS = ("state", "model", "config")
T = TypeVar("T")


def make_manager(directory: str, keep: int | None = 3, asynchronous: bool = True,
                 best_metric: str | None = None) -> ocp.CheckpointManager:
  """A manager keeping `keep` steps (or, with `best_metric`, the best `keep`)."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, create=True, enable_async_checkpointing=asynchronous,
      best_fn=(lambda metrics: metrics[best_metric]) if best_metric else None,
      best_mode="max", keep_checkpoints_without_metrics=best_metric is None,
      cleanup_tmp_directories=True)
  return ocp.CheckpointManager(epath.Path(directory), options=options, item_names=ITEMS)


def inference_variables(state: Any) -> dict[str, Any]:
  """The `model` item: raw and EMA variables of a training state."""
  return {"params": state.params, "batch_stats": state.batch_stats,
          "ema_params": state.ema_params, "ema_batch_stats": state.ema_batch_stats}


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
         metrics: Mapping[str, float] | None = None, include_state: bool = True,
         force: bool = False) -> bool:
  """Saves one step; `include_state=False` stores only the inference variables.

  A step that would not fit on the file system is refused before anything is written
  (DiskFullError): the previous step stays the latest, complete one.
  """
  wait(manager)  # the previous save is on disk before its space is counted
  if step in manager.all_steps():  # a resumed run recomputes, identically, a step it had kept
    return False
  arrays = {"model": inference_variables(state), **({"state": state} if include_state else {})}
  needed = _bytes_needed(manager, arrays)
  free = shutil.disk_usage(str(manager.directory)).free
  if free < needed:
    raise _disk_full(manager, f"for checkpoint step {step}: it needs about {needed / 1e6:.0f} MB "
                     f"and {free / 1e6:.0f} MB are free")
  items = {name: ocp.args.StandardSave(value) for name, value in arrays.items()}
  items["config"] = ocp.args.JsonSave(dict(config))
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


def _drop_read_debris() -> None:
  """Hooks that drop the read debris (and pass everything else on), installed once.

  TensorStore's threads report theirs through sys.excepthook (PyErr_Print), coroutines
  through sys.unraisablehook.
  """
  if getattr(sys.unraisablehook, "drops_read_debris", False):
    return
  unraisable_hook, except_hook = sys.unraisablehook, sys.excepthook

  def on_unraisable(unraisable: Any) -> None:
    if not _is_read_debris(unraisable):
      unraisable_hook(unraisable)

  def on_exception(kind: type, error: BaseException, trace: Any) -> None:
    if not (isinstance(error, RuntimeError) and "Event loop is closed" in str(error)):
      except_hook(kind, error, trace)
  on_unraisable.drops_read_debris = True
  sys.unraisablehook, sys.excepthook = on_unraisable, on_exception


@contextlib.contextmanager
def _quiet_read_failures() -> Iterator[None]:
  """Keeps a failed read to the one exception orbax raises.

  A damaged array makes orbax's concurrent reads fail one after another; each prints a
  traceback from a coroutine or a callback, reported as "ignored" (unraisable), some of
  them long after the read. Once a read has failed, those (and only those) stay quiet.
  """
  loggers = [logging.getLogger(name) for name in ("asyncio", "concurrent.futures")]
  disabled = [logger.disabled for logger in loggers]
  for logger in loggers:
    logger.disabled = True
  try:
    yield
  except Exception:
    _drop_read_debris()
    gc.collect()  # the failed reads' coroutines are finalised (and dropped) now
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
        state=ocp.args.StandardRestore(abstract_state))).state

  _, state, damaged = _newest_readable(steps, read, str(manager.directory), move_aside=True)
  if damaged:
    manager.reload()
  return state


def step_directories(path: str) -> list[epath.Path]:
  """The finalised step directories `path` names: a step itself, or every step of a
  checkpoint directory or of a workdir's `checkpoints/`."""
  root = epath.Path(path)
  if (root / "model").is_dir() and (root / "config").exists():
    return [root]
  name_format = ocp.step.standard_name_format()
  for directory in (root, root / "checkpoints"):
    if directory.is_dir():
      steps = [m.path for m in name_format.find_all(directory) if (m.path / "model").is_dir()]
      if steps:
        return steps
  return []


def is_training_checkpoint(path: str) -> bool:
  return os.path.isdir(path) and bool(step_directories(path))


def read_newest(path: str) -> tuple[epath.Path, dict[str, Any], dict[str, Any]]:
  """(step directory, config, inference variables) of the newest readable step of `path`."""
  steps = step_directories(path)
  if not steps:
    raise WeightsError(f"{path} holds no training checkpoint")

  def read(step: epath.Path) -> tuple[dict[str, Any], dict[str, Any]]:
    config = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(step / "config")
    return config, ocp.StandardCheckpointer().restore(step / "model")

  step, (config, variables), _ = _newest_readable(steps, read, path)
  return step, config, variables


def inference_variables_from(stored: Mapping[str, Any], template: Mapping[str, Any],
                             ema: bool = True, reset_classifier: bool | None = False,
                             model_name: str = "the model") -> dict[str, Any]:
  """The raw or EMA copy of a `model` item, checked against `template`."""
  prefix = "ema_" if ema else ""
  tensors = traverse_util.flatten_dict(dict(stored), sep="/")
  flat_template = traverse_util.flatten_dict(dict(template), sep="/")
  names = {ours: (prefix + ours, lambda a: a) for ours in flat_template}
  # Only the requested copy (raw or EMA) is compared; the other is there by design.
  tensors = {k: v for k, v in tensors.items() if k.startswith("ema_") == ema}
  return importers.assign(template, tensors, names, reset_classifier, model_name=model_name)
