"""effnetlite: train, scale, evaluate and deploy EfficientNet-Lite in JAX/Flax."""

import os

from effnetlite.allocator import tune_glibc_malloc

# Before JAX starts its threads: keeps XLA:CPU's buffers out of mmap (see allocator.py).
tune_glibc_malloc()
# TensorFlow is only our input pipeline and exporter: keep its start-up chatter quiet.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from effnetlite.factory import create_model  # noqa: E402
from effnetlite.model import EfficientNetLite  # noqa: E402
from effnetlite.preprocessing import normalize  # noqa: E402

__all__ = ["create_model", "EfficientNetLite", "normalize"]
