"""EfficientNet-Lite1: width 1.0, depth 1.1, resolution 240, dropout 0.2."""

from effnetlite.config import base_config


def get_config():
  return base_config("lite1", width=1.0, depth=1.1, resolution=240, dropout_rate=0.2)
