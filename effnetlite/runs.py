"""A training run's directory as every command reads it: its config, class names, history.

  RUN/config.json           the resolved config of the latest session; loads back as --config
  RUN/labels.txt            the class names, one per line in label order, from the dataset
  RUN/config_history.jsonl  one row per resumed session that changed keys (step, old -> new)
  RUN/checkpoints/<step>/   training checkpoints; RUN/best/<step>/ the best EMA one (orbax)
  RUN/final_metrics.json    the last evaluation, the evaluation split's identity, the seed,
                            training wall time, package versions and the code's commit
  RUN/eval_examples.json    the final EMA weights' top-1 right or wrong per evaluation example,
                            with the examples' ids (paired comparisons between runs)

Plain Python and JSON on purpose: the commands find a run's config and compare it
with the requested one before JAX, TensorFlow or orbax load.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Sequence

import ml_collections

from effnetlite import validation
from effnetlite.errors import UserError

CONFIG_FILE = "config.json"
LABELS_FILE = "labels.txt"
HISTORY_FILE = "config_history.jsonl"
FINAL_METRICS_FILE = "final_metrics.json"
EVAL_EXAMPLES_FILE = "eval_examples.json"
CHECKPOINT_DIRS = ("checkpoints", "best")
# config.dataset.num_classes=-1: the count of the training data, recorded in the run.
FROM_DATA = -1

# Keys that change the variables' shapes or what they mean: weights trained under one value
# cannot be resumed, evaluated or exported under another. The backbone's, then the class count
# (which fine-tuning may change, re-initialising the classifier).
BACKBONE_KEYS = ("model.width", "model.depth", "model.stem_channels", "model.head_channels",
                 "model.bn_epsilon")
ARCHITECTURE_KEYS = (*BACKBONE_KEYS, "dataset.num_classes")


def find_run(path: str) -> str | None:
  """The run directory that `path` is or lies in (RUN, RUN/best, RUN/checkpoints/400)."""
  path = os.path.abspath(path)
  for _ in range(3):
    if os.path.isfile(os.path.join(path, CONFIG_FILE)) and any(
        os.path.isdir(os.path.join(path, d)) for d in CHECKPOINT_DIRS):
      return path
    path = os.path.dirname(path)
  return None


def has_checkpoints(run: str) -> bool:
  """Whether a run directory holds a saved step (a run may stop before its first one)."""
  return any(name.isdigit() for folder in CHECKPOINT_DIRS
             if os.path.isdir(os.path.join(run, folder))
             for name in os.listdir(os.path.join(run, folder)))


def _tuples(value: Any) -> Any:
  """JSON arrays back to the tuples the configs hold (pairs such as area_range)."""
  if isinstance(value, dict):
    return {k: _tuples(v) for k, v in value.items()}
  return tuple(value) if isinstance(value, list) else value


def load_config(path: str) -> ml_collections.ConfigDict:
  """A saved config (`config.json`, or a run directory holding one) as a ConfigDict."""
  if os.path.isdir(path):
    path = os.path.join(path, CONFIG_FILE)
  try:
    with open(path, encoding="utf-8") as handle:
      data = json.load(handle)
  except (OSError, ValueError) as error:
    raise UserError(f"{path} is not a readable config ({type(error).__name__}: "
                    f"{str(error).splitlines()[0]}); pass a configs/*.py file") from None
  if not isinstance(data, dict):
    raise UserError(f"{path} holds no config object; pass a configs/*.py file")
  return ml_collections.ConfigDict(_tuples(data))


def save_config(run: str, config: ml_collections.ConfigDict) -> None:
  from effnetlite.utils import files
  files.write_atomically(os.path.join(run, CONFIG_FILE), config.to_json_best_effort(indent=2))


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


def check_architecture(run: str, trained: ml_collections.ConfigDict,
                       config: ml_collections.ConfigDict, fix: str) -> None:
  """One UserError when `config` describes other variables than `trained`, the config of
  the run's checkpoints."""
  changed = differences(trained, config, ARCHITECTURE_KEYS)
  if changed:
    listed = "; ".join(f"config.{k}={new!r} but the run has {old!r}" for k, old, new in changed)
    raise UserError(f"run directory {run} holds weights of another model ({listed}); {fix}")


def config_for_weights(config: ml_collections.ConfigDict, weights: str
                       ) -> ml_collections.ConfigDict:
  """`config` checked against the run that `weights` names (if it names one).

  num_classes=-1 takes the run's count; any other architecture key that differs from
  the run's is one UserError. Without a run, -1 cannot be resolved and is an error.
  """
  run = find_run(weights) if os.path.isdir(weights) else None
  if run is not None:
    trained = load_config(run)
    if config.dataset.num_classes == FROM_DATA:
      config.dataset.num_classes = trained.dataset.num_classes
    check_architecture(run, trained, config, fix="leave --config out to use the run's own config, or "
                       f"pass --config={os.path.join(run, CONFIG_FILE)}")
  elif config.dataset.num_classes == FROM_DATA:
    raise UserError("config.dataset.num_classes=-1 (the training data's count) is known only "
                    "to a training run: pass --weights=RUN, or set config.dataset.num_classes")
  return config


def record_changes(run: str, step: int, changes: Sequence[tuple[str, Any, Any]]) -> None:
  """Appends a resumed session's changed keys to RUN/config_history.jsonl."""
  row = {"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
         "changed": {key: [old, new] for key, old, new in changes}}
  with open(os.path.join(run, HISTORY_FILE), "a", encoding="utf-8") as handle:
    handle.write(json.dumps(row) + "\n")


def save_class_names(run: str, names: Sequence[str]) -> None:
  from effnetlite.utils import files
  files.write_atomically(os.path.join(run, LABELS_FILE), "".join(f"{n}\n" for n in names))


def read_class_names(run: str) -> list[str] | None:
  """The class names recorded in a run directory, or None when it has none."""
  path = os.path.join(run, LABELS_FILE)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as handle:
    return [line.rstrip("\n") for line in handle]


def format_class_names(names: Sequence[str], shown: int = 20) -> str:
  """"0 astronaut, 1 cat, 2 coffee" (the first `shown` of a long list)."""
  listed = ", ".join(f"{i} {name}" for i, name in enumerate(names[:shown]))
  return listed + (f", ... ({len(names)} in all)" if len(names) > shown else "")


def _read_json(path: str) -> Any:
  try:
    with open(path, encoding="utf-8") as handle:
      return json.load(handle)
  except (OSError, ValueError):
    return None


def save_final_metrics(run: str, metrics: dict[str, Any]) -> None:
  from effnetlite.utils import files
  files.write_atomically(os.path.join(run, FINAL_METRICS_FILE), json.dumps(metrics, indent=2))


def read_final_metrics(run: str) -> dict[str, Any] | None:
  """The finished run's final metrics, or None (not finished, or unreadable)."""
  return _read_json(os.path.join(run, FINAL_METRICS_FILE))


def save_eval_examples(run: str, split: dict[str, Any], ids: Sequence[str] | None,
                       correct: Sequence[bool]) -> None:
  """Per-example top-1 correctness on the evaluation split (`split`: its identity)."""
  from effnetlite.utils import files
  files.write_atomically(os.path.join(run, EVAL_EXAMPLES_FILE), json.dumps(
      {"split": split, "ids": list(ids) if ids is not None else None,
       "correct": [int(c) for c in correct]}))


def read_eval_examples(run: str) -> dict[str, Any] | None:
  """{"split", "ids", "correct"} of a run that recorded them, or None."""
  return _read_json(os.path.join(run, EVAL_EXAMPLES_FILE))
