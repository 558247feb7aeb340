"""EfficientNet-Lite0: width 1.0, depth 1.0, resolution 224, dropout 0.2."""

from effnetlite.config import base_config


def get_config():
  return base_config("lite0", width=1.0, depth=1.0, resolution=224, dropout_rate=0.2)
