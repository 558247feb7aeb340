"""`create_model`: a variant name or config in, (module, variables) out.

The timm-style entry point: `create_model("lite0", pretrained=True)` builds the
module a config describes, initialises it as TF does, and fills it with the
offline ImageNet weights; `pretrained=PATH` reads any file `weights.loading` knows.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections

from effnetlite import config as config_lib
from effnetlite import quant, runs
from effnetlite.errors import UserError
from effnetlite.nn.backend import resolve_backend
from effnetlite.nn.model import EfficientNetLite
from effnetlite.utils import process
from effnetlite.validation import WEIGHT_KEYWORDS, absolute_path
from effnetlite.weights.loading import load_weights

_DTYPES = {name: jnp.dtype(name) for name in config_lib.DTYPES}


def resolve_config(name_or_config: str | ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """A variant name (`lite0`, `efficientnet-lite0`, ...) or a full config, as given."""
  if isinstance(name_or_config, str):
    return config_lib.variant_config(name_or_config)
  return name_or_config


def compute_dtype(name: str) -> Any:
  if name not in _DTYPES:
    raise UserError(f"unknown dtype {name!r}; choose one of {', '.join(_DTYPES)}")
  return _DTYPES[name]


def module_from_config(config: ml_collections.ConfigDict, platform: str | None = None,
                       **overrides: Any) -> EfficientNetLite:
  """The Flax module a full config describes (`overrides`, module fields, win: e.g.
  depthwise='conv' or 'auto'): EfficientNetLite, or with `config.quantization.qat`
  its int8 twin (`effnetlite.quant.model.QuantizedEfficientNetLite`), which reads the same
  variables.

  The layer formulations are `resolve_backend(config, platform)`'s ('cpu', 'gpu', 'tpu';
  default: JAX's default backend), so a step compiled ahead of time for an accelerator on
  a CPU host gets the accelerator's formulation.
  """
  model = config.model
  if config.dataset.num_classes == runs.FROM_DATA:
    raise UserError("config.dataset.num_classes=-1 (the training data's count) is unresolved "
                    "here; build the model from a training run or set a class count")
  formulations = {k: overrides.pop(k) for k in ("depthwise", "pointwise") if k in overrides}
  if formulations:  # 'auto' and bad values as from the config: one way to resolve them
    config = ml_collections.ConfigDict(config.to_dict())
    config.model.update(formulations)
  backend = resolve_backend(config, platform)
  kwargs = dict(
      width=model.width, depth=model.depth, num_classes=config.dataset.num_classes,
      dropout_rate=model.dropout_rate, drop_connect_rate=model.drop_connect_rate,
      stem_channels=model.stem_channels, head_channels=model.head_channels,
      bn_momentum=model.bn_momentum, bn_epsilon=model.bn_epsilon,
      depthwise=backend.depthwise, pointwise=backend.pointwise,
      dtype=compute_dtype(model.dtype),
      rematerialize=backend.rematerialize)
  kwargs.update(overrides)
  module = EfficientNetLite(**kwargs)
  if quant.qat_enabled(config):  # the int8 twin: the same variables plus activation ranges
    from effnetlite.quant import model as qmodel
    return qmodel.qat_module(module, config.quantization.range_decay)
  return module


def init_variables(module: EfficientNetLite, resolution: int, seed: int = 0) -> dict[str, Any]:
  """Fresh variables (TF initialisers) for inputs of side `resolution`."""
  images = jnp.zeros((1, resolution, resolution, 3), jnp.float32)
  init = jax.jit(lambda key: module.init({"params": key}, images, train=False))
  return jax.device_get(init(jax.random.PRNGKey(seed)))


def _run_config(requested: ml_collections.ConfigDict | None, named: bool, run: runs.Run,
                num_classes: int | None, reset_classifier: bool | None
                ) -> ml_collections.ConfigDict:
  """The config to build for a training run's weights: the run's model and head.

  Another class count replaces the trained head only when asked for
  (`reset_classifier=True`); loading the checkpoint checks the backbone against it.
  """
  trained = run.load_config()
  config = (trained if requested is None else requested).copy_and_resolve_references()
  trained_classes = trained.dataset.num_classes
  if num_classes is not None:
    config.dataset.num_classes = num_classes
  elif named or config.dataset.num_classes == runs.FROM_DATA:  # a variant's 1000 is no request
    config.dataset.num_classes = trained_classes
  if config.dataset.num_classes != trained_classes and reset_classifier is not True:
    raise UserError(f"pretrained={run.path} has a {trained_classes}-class classifier but "
                    f"num_classes={config.dataset.num_classes} was asked for; leave num_classes "
                    "out to get the trained head, or pass reset_classifier=True for a new, "
                    "randomly initialised one")
  return config


def create_model(name_or_config: str | ml_collections.ConfigDict | None = None,
                 pretrained: bool | str = False, num_classes: int | None = None,
                 dtype: str | None = None, seed: int = 0, reset_classifier: bool | None = None,
                 **module_overrides: Any) -> tuple[EfficientNetLite, dict[str, Any]]:
  """(module, variables) of a variant; `module.apply(variables, images)` -> logits.

  A program that trains or serves on CPU calls `effnetlite.configure_process()` first
  thing (before JAX computes): the commands' malloc settings, ~1.4x the speed of glibc's
  defaults for a lite0 training step; without it the first call here says so, once.

  Args:
    name_or_config: "lite0".."lite4" or a full config (`effnetlite.config`); may be left
      out when `pretrained` is a training run (its own config is used).
    pretrained: False (TF initialisers), True (offline ImageNet weights for
      lite0-2), or a path to weights in any supported format. A training run's
      directory (or RUN/best) gives the run's model with its trained classifier
      and class count.
    num_classes: classifier size. With ImageNet weights (1000 classes) another count
      keeps the backbone and re-initialises the classifier (fine-tuning); with a
      run's weights another count than the run's is an error unless
      `reset_classifier=True`.
    dtype: compute dtype, "float32" or "bfloat16"; parameters stay float32.
    reset_classifier: force (True) or forbid (False) re-initialising the
      classifier; by default (None) only when an external file's classifier does
      not fit `num_classes`.
  """
  process.notice_unconfigured_cpu_process()
  run = None
  if isinstance(pretrained, str) and pretrained not in WEIGHT_KEYWORDS:
    named = runs.run_weights(absolute_path(pretrained))
    run = named.run if named is not None else None
  if run is not None:
    requested = None if name_or_config is None else resolve_config(name_or_config)
    config = _run_config(requested, isinstance(name_or_config, str), run, num_classes,
                         reset_classifier)
  elif name_or_config is None:
    raise UserError("create_model needs a variant name ('lite0'..'lite4') or a config, unless "
                    "pretrained is a training run directory")
  else:
    config = resolve_config(name_or_config)
    if num_classes is not None:
      config = config.copy_and_resolve_references()
      config.dataset.num_classes = num_classes
  if dtype is not None:
    config = config.copy_and_resolve_references()
    config.model.dtype = dtype
  module = module_from_config(config, **module_overrides)
  variables = init_variables(module, config.model.resolution, seed)
  if pretrained:
    weights = "pretrained" if pretrained is True else str(pretrained)
    variables = load_weights(weights, config, variables, reset_classifier)
  return module, variables
