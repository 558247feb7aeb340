"""The one validation of a whole config, run before anything is built or compiled.

`SCHEMA` knows every key a config may hold: its type and its allowed values or
range. `validate_config` checks a config against it (unknown and missing keys
included: a typo in a config file is an error, not a silently ignored key), then
the rules that tie keys together, and returns a copy whose paths are absolute.
Every problem is a `UserError` naming the key, the bad value and what is allowed.
Plain Python on purpose: the CLIs run it before importing JAX or TensorFlow, so
bad input answers in a second.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Callable

import ml_collections

from effnetlite import config as config_lib
from effnetlite.errors import UserError


@dataclasses.dataclass(frozen=True)
class Rule:
  """What one key accepts: a kind of value and, optionally, a test on it."""
  kind: str                                  # int | float | str | bool | pair
  allowed: str = ""                          # the test in words, for the message
  test: Callable[[Any], bool] = lambda value: True
  bad_example: Any = None                    # a value the test refuses (for the tests)


def choice(values: tuple[str, ...]) -> Rule:
  return Rule("str", f"one of {', '.join(values)}", lambda v: v in values, "bogus")


def number(kind: str = "float", *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False, or_minus_one: bool = False) -> Rule:
  """A number in [low, high] (open ends with `low_open`/`high_open`); -1 may mean "unset"."""
  def test(value):
    if or_minus_one and value == -1:
      return True
    return ((low is None or (value > low if low_open else value >= low)) and
            (high is None or (value < high if high_open else value <= high)))
  if low is not None and high is not None:
    words = (f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}")
  elif low is not None:
    words = f"{'>' if low_open else '>='} {low:g}"
  else:
    words = f"{'<' if high_open else '<='} {high:g}"
  if or_minus_one:
    words += " (or -1: derived)"
  # A value just outside the range, for the bad-input tests.
  if low is None:
    bad = high + 1
  else:
    bad = low if low_open else low - 1
  if or_minus_one and bad == -1:
    bad = -2
  return Rule(kind, words, test, int(bad) if kind == "int" else float(bad))


def positive(kind: str = "float") -> Rule:
  return number(kind, low=0, low_open=True)


def fraction() -> Rule:
  """A rate: 0 <= value < 1."""
  return number(low=0, high=1, high_open=True)


def decay() -> Rule:
  """A moving-average decay: 0 < value < 1."""
  return number(low=0, high=1, low_open=True, high_open=True)


def increasing_pair(low: float) -> Rule:
  """(a, b) with low <= a <= b: a search range."""
  return Rule("pair", f"(a, b) with {low:g} <= a <= b", lambda v: low <= v[0] <= v[1],
              (low + 1, low))


TEXT = Rule("str", "a non-empty string", lambda v: bool(v.strip()), "")
FLAG = Rule("bool", "true or false", bad_example="maybe")
PATH = Rule("str", "a path ('' for none)")

SCHEMA: dict[str, Rule] = {
    "model.name": TEXT,
    "model.width": positive(),
    "model.depth": positive(),
    "model.resolution": number("int", low=32),
    "model.dropout_rate": fraction(),
    "model.drop_connect_rate": fraction(),
    "model.stem_channels": positive("int"),
    "model.head_channels": positive("int"),
    "model.bn_momentum": number(low=0, high=1, high_open=True),
    "model.bn_epsilon": positive(),
    "model.dtype": choice(config_lib.DTYPES),
    "model.depthwise": choice(config_lib.DEPTHWISE_IMPLS),
    "model.pointwise": choice(config_lib.POINTWISE_IMPLS),
    "model.resize_method": choice(config_lib.RESIZE_METHODS),
    "model.eval_crop_fraction": number(low=0, high=1, low_open=True),
    "dataset.name": TEXT,
    "dataset.data_dir": PATH,
    "dataset.manual_dir": PATH,
    "dataset.train_split": TEXT,
    "dataset.eval_split": TEXT,
    "dataset.holdout_fraction": fraction(),
    "dataset.num_classes": number("int", low=2, or_minus_one=True),
    "dataset.corrupt_images": choice(config_lib.CORRUPT_IMAGES),
    "dataset.shuffle_buffer": positive("int"),
    "augment.min_object_covered": number(low=0, high=1),
    "augment.aspect_ratio_range": Rule("pair", "(a, b) with 0 < a <= b",
                                       lambda v: 0 < v[0] <= v[1], (2.0, 1.0)),
    "augment.area_range": Rule("pair", "(a, b) with 0 < a <= b <= 1",
                               lambda v: 0 < v[0] <= v[1] <= 1, (0.5, 1.5)),
    "augment.max_attempts": positive("int"),
    "augment.random_flip": FLAG,
    "augment.policy": choice(config_lib.AUGMENT_POLICIES),
    "augment.randaugment_layers": number("int", low=0),
    "augment.randaugment_magnitude": number(low=0, high=30),
    "augment.mixup_alpha": number(low=0),
    "optimizer.name": choice(config_lib.OPTIMIZERS),
    "optimizer.base_learning_rate": positive(),
    "optimizer.learning_rate_batch_base": positive("int"),
    "optimizer.schedule": choice(config_lib.SCHEDULES),
    "optimizer.warmup_epochs": number(low=0),
    "optimizer.decay_epochs": positive(),
    "optimizer.decay_factor": number(low=0, high=1, low_open=True),
    "optimizer.rmsprop_decay": decay(),
    "optimizer.momentum": fraction(),
    "optimizer.epsilon": positive(),
    "optimizer.initial_scale": number(low=0),
    "optimizer.weight_decay": number(low=0),
    "optimizer.label_smoothing": fraction(),
    "ema_decay": decay(),
    "num_epochs": positive(),
    "batch_size": positive("int"),
    "eval_batch_size": positive("int"),
    "seed": number("int", low=0),
    "nonfinite_loss": choice(config_lib.NONFINITE_LOSS),
    "rematerialize": choice(config_lib.REMATERIALIZE),
    "log_every_steps": positive("int"),
    "eval_every_steps": number("int", low=0),
    "checkpoint_every_steps": positive("int"),
    "checkpoint_every_minutes": number(low=0),
    "keep_checkpoints": positive("int"),
    "init_from": PATH,
    "accept_changes_on_resume": FLAG,
    "steps_per_epoch": number("int", low=1, or_minus_one=True),
    "max_steps": number("int", low=1, or_minus_one=True),
    "quantization.qat": FLAG,
    "quantization.range_decay": decay(),
}

# Keys and sections a config saved before they existed may lack: filled with the base
# config's values, so older runs' config.json files still load (nothing else is defaulted).
# Sections and keys that configs saved by older versions lack: they get the base's default.
ADDED_LATER = ("rematerialize", "quantization", "dataset.holdout_fraction",
               "checkpoint_every_minutes", "accept_changes_on_resume")

# The compound-scaling search (configs/search_*.py); required by scripts/grid_search.py.
SEARCH_SCHEMA: dict[str, Rule] = {
    "search.phi": positive(),
    "search.alpha_range": increasing_pair(1.0),
    "search.beta_range": increasing_pair(1.0),
    "search.gamma_range": increasing_pair(1.0),
    "search.step": positive(),
    "search.tolerance": positive(),
    "search.target_resolution": number("int", low=32),
    "search.family_phis": positive("int"),
    "search.max_family_departure": number(low=0),
    "search.seeds": positive("int"),
    "search.test_split": PATH,
    "search.proxy_check_top_k": number("int", low=2),
    "search.proxy_check_epochs": positive(),
    "search.objective": choice(config_lib.SEARCH_OBJECTIVES),
    "search.pruner": choice(config_lib.SEARCH_PRUNERS),
    "search.heartbeat_seconds": positive("int"),
    "search.max_retries": number("int", low=0),
    "search.latency_format": choice(config_lib.LATENCY_FORMATS),
    "search.latency_target": choice(config_lib.LATENCY_TARGETS),
    "search.latency_threads": positive("int"),
    "search.latency_budget_ms": number(low=0),
}

# Keys holding paths: made absolute once, here, so every later use is independent of the
# current directory (orbax, for one, refuses relative paths).
PATH_KEYS = ("dataset.data_dir", "dataset.manual_dir", "init_from")
WEIGHT_KEYWORDS = ("pretrained", "random")


def absolute_path(path: str) -> str:
  """`~` expanded and made absolute against the current directory ('' stays '')."""
  return os.path.abspath(os.path.expanduser(path)) if path else path


def flatten(config: ml_collections.ConfigDict | dict, prefix: str = "") -> dict[str, Any]:
  """{"model.width": 1.0, ...}: one entry per leaf key of a config (or its dict/JSON form)."""
  flat = {}
  for key, value in config.items():
    if isinstance(value, (dict, ml_collections.ConfigDict)):
      flat.update(flatten(value, f"{prefix}{key}."))
    else:
      flat[f"{prefix}{key}"] = value
  return flat


def _has_kind(value: Any, kind: str) -> bool:
  if kind == "bool":
    return isinstance(value, bool)
  if kind == "int":
    return isinstance(value, int) and not isinstance(value, bool)
  if kind == "float":
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))
  if kind == "pair":
    return (isinstance(value, (tuple, list)) and len(value) == 2 and
            all(_has_kind(v, "float") for v in value))
  return isinstance(value, str)


_KIND_WORDS = {"int": "an integer", "float": "a number", "str": "a string",
               "bool": "true or false", "pair": "a pair of numbers like (0.5, 1.0)"}


def check_key(key: str, value: Any, rule: Rule) -> None:
  if not _has_kind(value, rule.kind):
    raise UserError(f"config.{key}={value!r} must be {_KIND_WORDS[rule.kind]}"
                    + (f", {rule.allowed}" if rule.allowed else ""))
  if not rule.test(value):
    raise UserError(f"config.{key}={value!r} is not allowed; use {rule.allowed}")


def validate_config(config: ml_collections.ConfigDict, search: bool = False,
                    data: bool = True) -> ml_collections.ConfigDict:
  """Checks every key and the cross-key rules; returns a copy with absolute paths.

  `search=True` also requires and checks the `search` section (grid_search.py);
  `data=False` is for commands that read no dataset (predict.py, scale.py).
  """
  if not isinstance(config, ml_collections.ConfigDict):
    raise UserError(f"the config file's get_config() returned {type(config).__name__}, not an "
                    "ml_collections.ConfigDict; start from effnetlite.config.base_config()")
  flat = flatten(config)
  missing_sections = [name for name in ADDED_LATER
                      if not any(k == name or k.startswith(name + ".") for k in flat)]
  if missing_sections:  # a config saved before the section or key existed: its default
    config = config.copy_and_resolve_references()
    defaults = config_lib.base_config()
    with config.unlocked():
      for name in missing_sections:
        section, _, key = name.rpartition(".")
        holder, default = ((config[section], defaults[section]) if section
                           else (config, defaults))
        holder[key] = default[key]
    flat = flatten(config)
  schema = {**SCHEMA, **(SEARCH_SCHEMA if search or "search" in config else {})}
  unknown = sorted(set(flat) - set(schema))
  if unknown:
    raise UserError(f"config.{unknown[0]} is not a key effnetlite reads; check its spelling "
                    "against effnetlite/config.py or remove it")
  missing = sorted(set(schema) - set(flat))
  if missing:
    what = ("a search config (with a `search` section, like configs/search_lite0.py)"
            if missing[0].startswith("search.") else "a config built on "
            "effnetlite.config.base_config()")
    raise UserError(f"the config has no key {missing[0]}; pass {what}")
  for key, rule in schema.items():
    check_key(key, flat[key], rule)

  if "search" in config and config.search.objective != "accuracy" and (
      config.search.pruner != "none"):
    raise UserError(f"config.search.pruner={config.search.pruner!r} needs "
                    "config.search.objective='accuracy': Optuna prunes single-objective studies "
                    "only; set config.search.pruner=none")
  if config.dataset.eval_split == "holdout" and not config.dataset.holdout_fraction > 0:
    raise UserError("config.dataset.eval_split='holdout' is the part of the training split held "
                    "out by config.dataset.holdout_fraction, which is 0; set it (e.g. "
                    "--config.dataset.holdout_fraction=0.1) or evaluate on another split")
  if "search" in config:
    check_selection_split(config)
  if "search" in config and config.search.latency_target != "litert" and (
      config.search.latency_format != "int8"):
    raise UserError(f"config.search.latency_target={config.search.latency_target!r} needs "
                    "config.search.latency_format='int8': Vela compiles int8 models only")
  if data and config.dataset.name == "folder" and not config.dataset.data_dir:
    raise UserError("config.dataset.name='folder' needs config.dataset.data_dir: the folder "
                    "holding <split>/<class>/<image> files")
  checked = config.copy_and_resolve_references()
  for key in PATH_KEYS:
    section, _, name = key.rpartition(".")
    holder = checked[section] if section else checked
    if key == "init_from":
      if holder[name] and checked.quantization.qat and holder[name] not in WEIGHT_KEYWORDS \
          and not os.path.exists(absolute_path(holder[name])):
        raise UserError(f"config.init_from={holder[name]} does not exist: QAT fine-tunes trained "
                        "float weights; train that run first (for configs/demo_qat.py: python "
                        "train.py --config=configs/demo.py --workdir=runs/demo) or pass "
                        "--config.init_from=RUN, 'pretrained' or a weights file")
      holder[name] = check_weights(holder[name], "config.init_from") if holder[name] else ""
    else:
      holder[name] = absolute_path(holder[name])
  if checked.init_from == "pretrained":
    check_pretrained(checked, "config.init_from")
  return checked


def check_selection_split(config: ml_collections.ConfigDict) -> None:
  """A search ranks on held-out data: never the split it reports, nor what it trains on."""
  dataset, test = config.dataset, config.search.test_split
  if dataset.eval_split == test:
    raise UserError(
        f"config.dataset.eval_split={test!r} is also config.search.test_split: the search would "
        "choose on the split it reports; rank on held-out training data "
        "(--config.dataset.holdout_fraction=0.1 --config.dataset.eval_split=holdout) or on the "
        "dataset's own validation split")
  if dataset.eval_split == dataset.train_split:
    raise UserError(
        f"config.dataset.eval_split={dataset.eval_split!r} is the training split: the search "
        "would rank on data it trained on; use --config.dataset.holdout_fraction=0.1 "
        "--config.dataset.eval_split=holdout")


def check_weights(weights: str, what: str = "--weights", tflite: bool = False) -> str:
  """`pretrained`, `random`, or an existing path (made absolute): cheap, before any data."""
  if weights in WEIGHT_KEYWORDS:
    return weights
  path = absolute_path(weights)
  if not path or not (os.path.exists(path) or os.path.exists(path + ".index")):
    raise UserError(f"{what}={weights}: {path or 'the path'} does not exist; pass 'pretrained', "
                    "a .pth/.safetensors file, a TF checkpoint, a training run directory"
                    + (" or a .tflite file" if tflite else ""))
  if path.endswith(".tflite") and not tflite:
    raise UserError(f"{what}={weights} is a TFLite file; this command needs JAX weights "
                    "(a training run directory, a .pth/.safetensors file or 'pretrained')")
  return path


def check_pretrained(config: ml_collections.ConfigDict, what: str = "--weights") -> None:
  """Offline ImageNet weights exist only for lite0-2, under their own names."""
  if config.model.name not in config_lib.PRETRAINED_VARIANTS:
    raise UserError(f"{what}=pretrained: no offline ImageNet weights for "
                    f"config.model.name={config.model.name!r} (only "
                    f"{', '.join(config_lib.PRETRAINED_VARIANTS)}); pass a weights file or "
                    "directory instead")


# What each key means, with its unit: `scripts/config_keys.py` prints these beside the
# schema's types and allowed values (a test keeps them in step with SCHEMA).
DESCRIPTIONS: dict[str, str] = {
    "model.name": "variant name, used in run and export names",
    "model.width": "width multiplier (channels), the compound coefficient beta^phi",
    "model.depth": "depth multiplier (blocks per stage), alpha^phi",
    "model.resolution": "input side in pixels for training, evaluation and export",
    "model.dropout_rate": "dropout before the classifier",
    "model.drop_connect_rate": "stochastic depth rate of the last block (linear in depth)",
    "model.stem_channels": "stem convolution channels (fixed in lite models, not scaled)",
    "model.head_channels": "1x1 head convolution channels (fixed in lite models)",
    "model.bn_momentum": "BatchNorm moving-average decay",
    "model.bn_epsilon": "BatchNorm epsilon",
    "model.dtype": "compute dtype; parameters and BN statistics stay float32",
    "model.depthwise": "depthwise convolution formulation (auto picks per backend)",
    "model.pointwise": "1x1 convolution formulation (auto picks per backend)",
    "model.resize_method": "image resize method of training, evaluation and export",
    "model.eval_crop_fraction": "centre-crop fraction of evaluation (TF: 0.875)",
    "dataset.name": "a tfds image dataset, 'folder' (data_dir/<split>/<class>/) or 'digits'",
    "dataset.data_dir": "tfds data_dir, or the image folder of dataset.name='folder'",
    "dataset.manual_dir": "where imagenet2012's archives are",
    "dataset.train_split": "training split (for 'folder', its sub-folders name the classes)",
    "dataset.eval_split": "evaluation split ('holdout': the part of train_split held out)",
    "dataset.holdout_fraction": "fraction of each class of train_split held out as split "
                                "'holdout' (0: none)",
    "dataset.num_classes": "classifier size; -1 takes the training data's class count",
    "dataset.corrupt_images": "unreadable images of a folder: skip with a warning, or error",
    "dataset.shuffle_buffer": "examples in the shuffle buffer (tfds datasets)",
    "augment.min_object_covered": "random crop: fraction of the image a crop must cover",
    "augment.aspect_ratio_range": "random crop: aspect ratio range",
    "augment.area_range": "random crop: area range, fractions of the image",
    "augment.max_attempts": "random crop: tries before the centre crop",
    "augment.random_flip": "random horizontal flips",
    "augment.policy": "extra augmentation policy",
    "augment.randaugment_layers": "RandAugment: ops per image",
    "augment.randaugment_magnitude": "RandAugment: magnitude (0-30)",
    "augment.mixup_alpha": "mixup Beta(alpha, alpha); 0 turns it off",
    "optimizer.name": "optimiser",
    "optimizer.base_learning_rate": "learning rate per learning_rate_batch_base images "
                                    "(scaled linearly with batch_size)",
    "optimizer.learning_rate_batch_base": "images per base_learning_rate (TF: 256)",
    "optimizer.schedule": "learning-rate schedule after warm-up",
    "optimizer.warmup_epochs": "linear warm-up, in epochs",
    "optimizer.decay_epochs": "exponential schedule: epochs between decays",
    "optimizer.decay_factor": "exponential schedule: factor per decay",
    "optimizer.rmsprop_decay": "RMSProp: moving-average decay of squared gradients",
    "optimizer.momentum": "momentum (RMSProp and SGD)",
    "optimizer.epsilon": "RMSProp epsilon (TF1: inside the square root)",
    "optimizer.initial_scale": "RMSProp: initial accumulator (TF1: 1.0)",
    "optimizer.weight_decay": "L2 on the loss, BatchNorm parameters excluded",
    "optimizer.label_smoothing": "label smoothing of the cross-entropy",
    "ema_decay": "EMA decay of weights and BN statistics (with TF's warm-up)",
    "num_epochs": "training length in epochs (max_steps overrides)",
    "batch_size": "global training batch, all devices",
    "eval_batch_size": "global evaluation batch",
    "seed": "seed of initialisation and of the batch order",
    "nonfinite_loss": "a NaN/inf loss: stop the run, or skip the step",
    "rematerialize": "backward pass: keep conv outputs, recompute BN + ReLU6 (auto: on GPUs)",
    "log_every_steps": "steps between logged training metrics",
    "eval_every_steps": "steps between evaluations (0: every epoch)",
    "checkpoint_every_steps": "steps between checkpoints",
    "checkpoint_every_minutes": "also save at least this often in wall-clock minutes (0: off)",
    "accept_changes_on_resume": "resume although keys changed that the run cannot honour "
                                "(batch, seed, data, optimizer...); recorded as a "
                                "non-reproducible continuation",
    "keep_checkpoints": "checkpoints kept in RUN/checkpoints (the best is kept apart)",
    "init_from": "fine-tune from: 'pretrained', a run directory or a weights file",
    "steps_per_epoch": "steps per epoch (-1: split size / batch size)",
    "max_steps": "training length in steps (-1: num_epochs * steps_per_epoch)",
    "quantization.qat": "quantisation-aware training: train (and evaluate, export) the int8 "
                        "network with BN folded, per-channel weights, averaged activation ranges",
    "quantization.range_decay": "QAT: moving-average decay of each activation's min and max",
    "search.phi": "compound coefficient of the search (the paper: 1)",
    "search.alpha_range": "depth coefficients searched",
    "search.beta_range": "width coefficients searched",
    "search.gamma_range": "resolution coefficients searched",
    "search.step": "grid step of alpha, beta and gamma",
    "search.tolerance": "accepted relative deviation of alpha*beta^2*gamma^2 from 2",
    "search.target_resolution": "base resolution the coefficients will be used at (realised "
                                "costs are counted there)",
    "search.family_phis": "phi = 1..N whose realised cost is counted per candidate",
    "search.max_family_departure": "drop candidates whose realised cost departs from 2^phi by "
                                   "more than this at some phi (0: keep all)",
    "search.seeds": "seeds per candidate (initialisation and data order); results show mean "
                    "+- std and paired comparisons",
    "search.test_split": "split every candidate is evaluated on after the ranking, reported "
                         "apart ('': none); never dataset.eval_split, which ranks",
    "search.proxy_check_top_k": "grid_search.py --proxy_check: candidates retrained with "
                                "proxy_check_epochs, ranks compared with the proxy's",
    "search.proxy_check_epochs": "epochs of the proxy check's longer schedule",
    "search.objective": "accuracy, or accuracy and measured latency (Pareto front)",
    "search.pruner": "early stopping of weak candidates (single objective only)",
    "search.heartbeat_seconds": "worker heartbeat; a silent worker's candidate is retried",
    "search.max_retries": "retries of a candidate whose worker died",
    "search.latency_format": "TFLite format whose latency is measured",
    "search.latency_target": "latency source: 'litert' (LiteRT on this host) or a Vela "
                             "accelerator (ethos-u65-256: i.MX 93), Vela's estimate",
    "search.latency_threads": "LiteRT threads of the latency measurement",
    "search.latency_budget_ms": "latency constraint in ms (0: none)",
}


def describe_keys(config: ml_collections.ConfigDict) -> list[tuple[str, Any, str, str, str]]:
  """(key, value in `config`, type, allowed values, meaning) for every key `config` holds."""
  flat = flatten(config)
  schema = {**SCHEMA, **(SEARCH_SCHEMA if "search" in config else {})}
  return [(key, flat.get(key), rule.kind, rule.allowed, DESCRIPTIONS[key])
          for key, rule in schema.items()]
