"""EfficientNet-Lite2: width 1.1, depth 1.2, resolution 260, dropout 0.3."""

from effnetlite.config import base_config


def get_config():
  return base_config("lite2", width=1.1, depth=1.2, resolution=260, dropout_rate=0.3)
