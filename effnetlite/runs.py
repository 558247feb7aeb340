"""A training run's directory, and the one place that names its files.

  RUN/config.json           the resolved config of the latest session; loads back as --config
  RUN/backend.json          the layer formulations the latest session resolved, and its platform
                            (beside the config: config.json stays reusable on another platform)
  RUN/labels.txt            the class names, one per line in label order, from the dataset
  RUN/config_history.jsonl  one row per resumed session that changed keys (step, old -> new)
  RUN/metrics.jsonl         one row per logged step; RUN/tensorboard/ the same as events
  RUN/checkpoints/<step>/   training checkpoints (orbax: the train state and the config)
  RUN/best/<step>/          the best EMA step's inference weights and config
  RUN/final_metrics.json    the last evaluation, the evaluation split's identity, the seed,
                            training wall time, package versions and the code's commit
  RUN/eval_examples.json    the final EMA weights' top-1 right or wrong per evaluation example,
                            with the examples' ids (paired comparisons between runs)
  RUN/model-<format>.tflite exports made inside the run (the search's latency files)
  RUN/lock                  the live writer's host, pid and start time

Weights are named by exactly these forms: RUN (its latest step), RUN/checkpoints,
RUN/checkpoints/<step>, RUN/best, RUN/best/<step>.

Plain Python and JSON on purpose: the commands find a run's config and compare it
with the requested one before JAX, TensorFlow or orbax load.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import time
from typing import Any, Sequence

import ml_collections

from effnetlite import validation
from effnetlite.errors import UserError

# config.dataset.num_classes=-1: the count of the training data, recorded in the run.
FROM_DATA = -1

# Keys that change the variables' shapes or what they mean: weights trained under one value
# cannot be resumed, evaluated or exported under another. The backbone's, then the class count
# (which fine-tuning may change, re-initialising the classifier).
BACKBONE_KEYS = ("model.width", "model.depth", "model.stem_channels", "model.head_channels",
                 "model.bn_epsilon")
ARCHITECTURE_KEYS = (*BACKBONE_KEYS, "dataset.num_classes")


def _read_json(path: str) -> Any:
  try:
    with open(path, encoding="utf-8") as handle:
      return json.load(handle)
  except (OSError, ValueError):
    return None


def _write(path: str, text: str) -> None:
  from effnetlite.utils import files
  files.write_atomically(path, text)


def _step_names(folder: str) -> list[int]:
  """The finalised steps in an orbax folder: orbax writes `STEP.orbax-checkpoint-tmp-*` and
  renames it to `STEP` when complete; a damaged step is renamed `STEP.damaged`."""
  if not os.path.isdir(folder):
    return []
  return sorted(int(name) for name in os.listdir(folder) if name.isdigit())


class Run:
  """A training run's directory: what it holds, read and written through one object."""

  CONFIG = "config.json"
  BACKEND = "backend.json"
  LABELS = "labels.txt"
  HISTORY = "config_history.jsonl"
  METRICS = "metrics.jsonl"
  TENSORBOARD = "tensorboard"
  CHECKPOINTS = "checkpoints"
  BEST = "best"
  FINAL_METRICS = "final_metrics.json"
  EVAL_EXAMPLES = "eval_examples.json"
  LOCK = "lock"
  # What the run writes itself (readers of a run's other files, such as compare.py's
  # search for eval.py outputs, skip these).
  OWN_FILES = (CONFIG, BACKEND, LABELS, HISTORY, METRICS, FINAL_METRICS, EVAL_EXAMPLES, LOCK)

  def __init__(self, path: str | os.PathLike):
    self.path = validation.absolute_path(os.fspath(path))  # orbax takes absolute paths only

  def __repr__(self) -> str:
    return f"Run({self.path!r})"

  def __eq__(self, other: object) -> bool:
    return isinstance(other, Run) and other.path == self.path

  def __hash__(self) -> int:
    return hash(self.path)

  def file(self, name: str) -> str:
    return os.path.join(self.path, name)

  @property
  def checkpoints_dir(self) -> str:
    return self.file(self.CHECKPOINTS)

  @property
  def best_dir(self) -> str:
    return self.file(self.BEST)

  @property
  def metrics_file(self) -> str:
    return self.file(self.METRICS)

  @property
  def tensorboard_dir(self) -> str:
    return self.file(self.TENSORBOARD)

  @property
  def lock_file(self) -> str:
    return self.file(self.LOCK)

  def lock(self, command: str = "train.py") -> RunLock:
    """The run's writer lock (`with run.lock(): ...`) for `command`; readers need none."""
    return RunLock(self, command)

  def export_path(self, fmt: str) -> str:
    """Where an export made inside the run goes (`model-int8.tflite`)."""
    return self.file(f"model-{fmt}.tflite")

  # What the directory is.
  def is_run(self) -> bool:
    """A saved config and a checkpoint folder: what train.py leaves from its first save on."""
    return os.path.isfile(self.file(self.CONFIG)) and any(
        os.path.isdir(self.file(folder)) for folder in (self.CHECKPOINTS, self.BEST))

  def saved_steps(self, best: bool = False) -> list[int]:
    return _step_names(self.best_dir if best else self.checkpoints_dir)

  def latest_step(self) -> int | None:
    """The newest complete training checkpoint's step (None before the first save)."""
    steps = self.saved_steps()
    return steps[-1] if steps else None

  def has_checkpoints(self) -> bool:
    """Whether the run holds a saved step (a run may stop before its first one)."""
    return bool(self.saved_steps() or self.saved_steps(best=True))

  # The config and what the run learnt about its data.
  def load_config(self) -> ml_collections.ConfigDict:
    return load_config(self.file(self.CONFIG))

  def save_config(self, config: ml_collections.ConfigDict) -> None:
    os.makedirs(self.path, exist_ok=True)
    _write(self.file(self.CONFIG), config.to_json_best_effort(indent=2))

  def backend(self) -> dict[str, Any] | None:
    """The formulations and platform of the latest session (None for runs from before)."""
    return _read_json(self.file(self.BACKEND))

  def save_backend(self, backend: dict[str, Any]) -> None:
    _write(self.file(self.BACKEND), json.dumps(backend, indent=2))

  def class_names(self) -> list[str] | None:
    """The class names recorded in the run, or None when it has none."""
    path = self.file(self.LABELS)
    if not os.path.isfile(path):
      return None
    with open(path, encoding="utf-8") as handle:
      return [line.rstrip("\n") for line in handle]

  def save_class_names(self, names: Sequence[str]) -> None:
    _write(self.file(self.LABELS), "".join(f"{n}\n" for n in names))

  def record_changes(self, step: int, changes: Sequence[tuple[str, Any, Any]],
                     reproducible: bool = True) -> None:
    """Appends a resumed session's changed keys to the history; `reproducible=False` marks a
    continuation the run's config alone no longer reproduces."""
    row = {"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
           "changed": {key: [old, new] for key, old, new in changes}}
    if not reproducible:
      row["reproducible"] = False
    with open(self.file(self.HISTORY), "a", encoding="utf-8") as handle:
      handle.write(json.dumps(row) + "\n")

  # What a finished run leaves.
  def final_metrics(self) -> dict[str, Any] | None:
    """The finished run's final metrics, or None (not finished, or unreadable)."""
    return _read_json(self.file(self.FINAL_METRICS))

  def save_final_metrics(self, metrics: dict[str, Any]) -> None:
    _write(self.file(self.FINAL_METRICS), json.dumps(metrics, indent=2))

  def eval_examples(self) -> dict[str, Any] | None:
    """{"split", "ids", "correct"} of a run that recorded them, or None."""
    return _read_json(self.file(self.EVAL_EXAMPLES))

  def save_eval_examples(self, split: dict[str, Any], ids: Sequence[str] | None,
                         correct: Sequence[bool]) -> None:
    """Per-example top-1 correctness on the evaluation split (`split`: its identity)."""
    _write(self.file(self.EVAL_EXAMPLES), json.dumps(
        {"split": split, "ids": list(ids) if ids is not None else None,
         "correct": [int(c) for c in correct]}))


class RunLockedError(UserError):
  """Another live process writes the run."""


class RunLock:
  """The run's one writer: an exclusive `flock` on RUN/lock, which the kernel drops when
  its holder dies (a SIGKILL leaves nothing to clean up).

  Written here rather than with `filelock`: its lock file is opened with O_TRUNC, so a
  second process that fails to take the lock would erase the holder's host, pid and start
  time, which the refusal names. `flock` holds across NFS clients (the Linux client maps
  it to NFS byte-range locks, served by NFSv4 or NFSv3's lockd); file systems without
  locking (some FUSE and object-store mounts) refuse it, and that is one error too.
  """

  def __init__(self, run: Run, command: str = "train.py"):
    self.run, self.command = run, command
    self._handle: Any = None

  def holder(self) -> str:
    try:
      with open(self.run.lock_file, encoding="utf-8") as handle:
        info = json.load(handle)
      return f"host {info['host']}, pid {info['pid']}, since {info['since']}"
    except (OSError, ValueError, KeyError):
      return "a process that has not yet written its name"

  def acquire(self, record: bool = True) -> None:
    """Takes the lock, or raises naming its holder; `record=False` writes nothing (a probe
    that releases at once)."""
    import fcntl
    import socket
    if not record and not os.path.exists(self.run.lock_file):
      return  # never held: a probe creates nothing
    os.makedirs(self.run.path, exist_ok=True)
    handle = open(self.run.lock_file, "a+", encoding="utf-8")  # noqa: SIM115 - held open
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as error:
      handle.close()
      if error.errno not in (errno.EAGAIN, errno.EACCES):  # held; anything else: no locks
        raise UserError(f"{self.run.lock_file} cannot be locked ({error.strerror}); put the "
                        "workdir on a file system with file locks (local disk, NFS)") from None
      raise RunLockedError(
          f"workdir {self.run.path} is being written by another live run ({self.holder()}); "
          f"wait for it to finish or stop it, or pass another {self._where()}") from None
    self._handle = handle
    if record:
      handle.seek(0)
      handle.truncate()
      handle.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                               "since": time.strftime("%Y-%m-%dT%H:%M:%S")}))
      handle.flush()

  def _where(self) -> str:
    return "--workdir to train.py" if self.command == "train.py" else (
        f"--output to {self.command}")

  def release(self) -> None:
    if self._handle is not None:
      self._handle.close()  # closing drops the flock; the file stays for the next holder
      self._handle = None

  def __enter__(self) -> RunLock:
    self.acquire()
    return self

  def __exit__(self, *exc_info: Any) -> None:
    self.release()


@dataclasses.dataclass(frozen=True)
class RunWeights:
  """Weights named inside a run: its latest or best step, or one given step."""
  run: Run
  kept_as: str            # "latest" (RUN/checkpoints) | "best" (RUN/best)
  step: int | None = None  # None: the newest readable one

  @property
  def folder(self) -> str:
    return self.run.best_dir if self.kept_as == "best" else self.run.checkpoints_dir


WEIGHTS_FORMS = "RUN, RUN/checkpoints, RUN/checkpoints/STEP, RUN/best or RUN/best/STEP"


def run_weights(path: str) -> RunWeights | None:
  """The run weights that `path` names in one of the documented forms; None when `path` is
  no part of a run (an external file or checkpoint); one UserError for any other path
  inside a run, rather than a guess."""
  path = validation.absolute_path(path)
  parent, name = os.path.split(path)
  grandparent, folder = os.path.split(parent)
  forms = [(path, Run.CHECKPOINTS, None), (parent, name, None)]
  if name.isdigit():
    forms.append((grandparent, folder, int(name)))
  for root, kept, step in forms:
    if kept in (Run.CHECKPOINTS, Run.BEST) and Run(root).is_run():
      return RunWeights(Run(root), "best" if kept == Run.BEST else "latest", step)
  inside = next((p for p in (parent, grandparent, os.path.dirname(grandparent))
                 if Run(p).is_run()), None)
  if inside is not None:
    raise UserError(f"{path} lies inside run {inside} but names no weights; pass one of "
                    f"{WEIGHTS_FORMS}")
  return None


def _tuples(value: Any) -> Any:
  """JSON arrays back to the tuples the configs hold (pairs such as area_range)."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return tuple(value) if isinstance(value, list) else value


def load_config(path: str) -> ml_collections.ConfigDict:
  """A saved config (a run's `config.json`, or a run directory) as a ConfigDict."""
  if os.path.isdir(path):
    path = Run(path).file(Run.CONFIG)
  try:
    with open(path, encoding="utf-8") as handle:
      data = json.load(handle)
  except (OSError, ValueError) as error:
    raise UserError(f"{path} is not a readable config ({type(error).__name__}: "
                    f"{str(error).splitlines()[0]}); pass a configs/*.py file") from None
  if not isinstance(data, dict):
    raise UserError(f"{path} holds no config object; pass a configs/*.py file")
  return ml_collections.ConfigDict(_tuples(data))


def differences(old: ml_collections.ConfigDict | dict, new: ml_collections.ConfigDict | dict,
                keys: Sequence[str] | None = None) -> list[tuple[str, Any, Any]]:
  """(key, old, new) for every key (or every one of `keys`) whose value differs; pairs
  compare as lists (a saved config's JSON has no tuples)."""
  old_flat, new_flat = (
      {k: list(v) if isinstance(v, tuple) else v for k, v in validation.flatten(c).items()}
      for c in (old, new))
  names = keys if keys is not None else sorted(set(old_flat) | set(new_flat))
  return [(k, old_flat.get(k), new_flat.get(k)) for k in names
          if old_flat.get(k) != new_flat.get(k)]


def describe(changes: Sequence[tuple[str, Any, Any]]) -> str:
  return ", ".join(f"{key} {old!r} -> {new!r}" for key, old, new in changes)


def check_architecture(run: Run, trained: ml_collections.ConfigDict,
                       config: ml_collections.ConfigDict, fix: str) -> None:
  """One UserError when `config` describes other variables than `trained`, the config of
  the run's checkpoints."""
  changed = differences(trained, config, ARCHITECTURE_KEYS)
  if changed:
    listed = "; ".join(f"config.{k}={new!r} but the run has {old!r}" for k, old, new in changed)
    raise UserError(f"run directory {run.path} holds weights of another model ({listed}); {fix}")


def config_for_weights(config: ml_collections.ConfigDict, weights: str
                       ) -> ml_collections.ConfigDict:
  """`config` checked against the run that `weights` names (if it names one).

  num_classes=-1 takes the run's count; any other architecture key that differs from
  the run's is one UserError. Without a run, -1 cannot be resolved and is an error.
  """
  named = run_weights(weights) if os.path.isdir(weights) else None
  if named is not None:
    trained = named.run.load_config()
    if config.dataset.num_classes == FROM_DATA:
      config.dataset.num_classes = trained.dataset.num_classes
    check_architecture(named.run, trained, config, fix="leave --config out to use the run's own "
                       f"config, or pass --config={named.run.file(Run.CONFIG)}")
  elif config.dataset.num_classes == FROM_DATA:
    raise UserError("config.dataset.num_classes=-1 (the training data's count) is known only "
                    "to a training run: pass --weights=RUN, or set config.dataset.num_classes")
  return config


def format_class_names(names: Sequence[str], shown: int = 20) -> str:
  """"0 astronaut, 1 cat, 2 coffee" (the first `shown` of a long list)."""
  listed = ", ".join(f"{i} {name}" for i, name in enumerate(names[:shown]))
  return listed + (f", ... ({len(names)} in all)" if len(names) > shown else "")
