"""A tiny EfficientNet-Lite with BN statistics of its own inputs and observed activation
ranges: a stand-in for a trained network (activations of unit scale), in seconds."""

import numpy as np
import pytest

RESOLUTION = 64   # a 2x2 map before the pool: AVERAGE_POOL_2D is a real average
ARCH = dict(width=0.25, depth=0.25, num_classes=10, stem_channels=8, head_channels=32)


@pytest.fixture(scope="session")
def tiny_qat():
  """(float module, twin, QAT variables, float pixels (N, H, W, 3), normalised images)."""
  import jax

  from effnetlite.nn.model import EfficientNetLite
  from effnetlite.quant import model as qm
  rng = np.random.RandomState(0)
  pixels = rng.uniform(0, 255, (48, RESOLUTION, RESOLUTION, 3))
  pixels = np.clip(pixels + rng.uniform(-60, 60, (48, 1, 1, 3)), 0, 255).round()
  pixels = pixels.astype(np.float32)
  images = (pixels - 127.0) / 128.0
  module = EfficientNetLite(**ARCH, bn_momentum=0.0)  # momentum 0: the statistics of a batch
  variables = jax.device_get(module.init(jax.random.PRNGKey(0), images[:1]))
  _, stats = module.apply(variables, images, train=True, mutable=["batch_stats"],
                          rngs={"dropout": jax.random.PRNGKey(1)})
  variables = {"params": variables["params"], "batch_stats": jax.device_get(stats["batch_stats"])}
  # Channels whose kernels decayed to almost nothing next to their BN bias, as trained
  # networks have (pretrained lite0 has dozens): int8 codes of tiny weights, huge biases.
  for layer in ("stem_conv", "block_1/depthwise_conv"):
    params = variables["params"]
    for name in layer.split("/"):
      params = params[name]
    params["kernel"] = np.asarray(params["kernel"]).copy()
    params["kernel"][..., 0] *= 1e-6
  twin = qm.qat_module(module)
  qat = qm.observe_ranges(twin, qm.with_ranges(twin, variables, RESOLUTION),
                          [images[:24], images[24:]])
  return module, twin, jax.device_get(qat), pixels, images
