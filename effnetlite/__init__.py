"""effnetlite: train, scale, evaluate and deploy EfficientNet-Lite in JAX/Flax.

Importing the package has no side effects and loads no framework: the public
names below import JAX/Flax on first use. Programs opt in to the process
settings the CLIs use with `effnetlite.configure_process()`.
"""

from __future__ import annotations

import importlib
from typing import Any

# public name -> module that defines it, imported on first access (PEP 562).
_EXPORTS = {
    "create_model": "effnetlite.weights.factory",
    "EfficientNetLite": "effnetlite.nn.model",
    "normalize": "effnetlite.data.preprocessing",
    "load_image": "effnetlite.data.images",
    "class_names": "effnetlite.data.labels",
    "configure_process": "effnetlite.utils.process",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
  if name not in _EXPORTS:
    raise AttributeError(f"module 'effnetlite' has no attribute {name!r}")
  value = getattr(importlib.import_module(_EXPORTS[name]), name)
  globals()[name] = value  # later lookups skip this function
  return value


def __dir__() -> list[str]:
  return sorted(list(globals()) + __all__)
