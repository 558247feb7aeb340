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
from effnetlite.errors import UserError
from effnetlite.nn.model import EfficientNetLite
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


def module_from_config(config: ml_collections.ConfigDict, **overrides: Any) -> EfficientNetLite:
  """The Flax module a full config describes (`overrides` win, e.g. depthwise='conv')."""
  model = config.model
  kwargs = dict(
      width=model.width, depth=model.depth, num_classes=config.dataset.num_classes,
      dropout_rate=model.dropout_rate, drop_connect_rate=model.drop_connect_rate,
      stem_channels=model.stem_channels, head_channels=model.head_channels,
      bn_momentum=model.bn_momentum, bn_epsilon=model.bn_epsilon,
      depthwise=model.depthwise, pointwise=model.pointwise, dtype=compute_dtype(model.dtype))
  kwargs.update(overrides)
  return EfficientNetLite(**kwargs)


def init_variables(module: EfficientNetLite, resolution: int, seed: int = 0) -> dict[str, Any]:
  """Fresh variables (TF initialisers) for inputs of side `resolution`."""
  images = jnp.zeros((1, resolution, resolution, 3), jnp.float32)
  init = jax.jit(lambda key: module.init({"params": key}, images, train=False))
  return jax.device_get(init(jax.random.PRNGKey(seed)))


def create_model(name_or_config: str | ml_collections.ConfigDict, pretrained: bool | str = False,
                 num_classes: int | None = None, dtype: str | None = None, seed: int = 0,
                 reset_classifier: bool | None = None,
                 **module_overrides: Any) -> tuple[EfficientNetLite, dict[str, Any]]:
  """(module, variables) of a variant; `module.apply(variables, images)` -> logits.

  Args:
    name_or_config: "lite0".."lite4" or a full config (`effnetlite.config`).
    pretrained: False (TF initialisers), True (offline ImageNet weights for
      lite0-2), or a path to weights in any supported format.
    num_classes: classifier size; when it differs from the weights' 1000 the
      backbone is kept and the classifier re-initialised (fine-tuning).
    dtype: compute dtype, "float32" or "bfloat16"; parameters stay float32.
    reset_classifier: force (True) or forbid (False) re-initialising the
      classifier; by default (None) only when the file's classifier does not
      fit `num_classes`.
  """
  config = resolve_config(name_or_config)
  if num_classes is not None or dtype is not None:
    config = config.copy_and_resolve_references()
    if num_classes is not None:
      config.dataset.num_classes = num_classes
    if dtype is not None:
      config.model.dtype = dtype
  module = module_from_config(config, **module_overrides)
  variables = init_variables(module, config.model.resolution, seed)
  if pretrained:
    weights = "pretrained" if pretrained is True else str(pretrained)
    variables = load_weights(weights, config, variables, reset_classifier)
  return module, variables
