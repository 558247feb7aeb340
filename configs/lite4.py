"""EfficientNet-Lite4: width 1.4, depth 1.8, resolution 300, dropout 0.3.

Official resolution 300 (timm and an older JAX port evaluate lite4 at 380).
"""

from effnetlite.config import base_config


def get_config():
  return base_config("lite4", width=1.4, depth=1.8, resolution=300, dropout_rate=0.3)
