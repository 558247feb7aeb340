"""EfficientNet-Lite3: width 1.2, depth 1.4, resolution 280, dropout 0.3.

Official resolution 280 (timm and an older JAX port evaluate lite3 at 300).
"""

from effnetlite.config import base_config


def get_config():
  return base_config("lite3", width=1.2, depth=1.4, resolution=280, dropout_rate=0.3)
