"""Exact parameter and MAC counts: the published table, the built module, every model key."""

import jax
import pytest

from effnetlite import config as config_lib
from effnetlite.nn import architecture, costs
from effnetlite.weights import factory

# variant: (params, MACs in millions) from the TF/TPU lite README.
PUBLISHED = {"lite0": (4_652_008, 385.19), "lite1": (5_416_680, 600.19),
             "lite2": (6_092_072, 859.74), "lite3": (8_197_096, 1383.32),
             "lite4": (13_006_568, 2553.03)}


def _module_params(config) -> int:
  module = factory.module_from_config(config)
  shapes = jax.eval_shape(lambda: module.init(
      jax.random.PRNGKey(0), jax.numpy.zeros((1, 64, 64, 3)), train=False))
  return sum(x.size for x in jax.tree.leaves(shapes["params"]))


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_counts_match_published(name):
  width, depth, resolution, _ = config_lib.VARIANTS[name]
  params, macs = PUBLISHED[name]
  assert costs.count_params(width, depth) == params
  assert abs(costs.count_macs(width, depth, resolution) / 1e6 - macs) / macs < 0.01


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_built_module_has_published_params(name):
  assert _module_params(config_lib.variant_config(name)) == PUBLISHED[name][0]


def test_config_costs_count_every_model_key():
  config = config_lib.variant_config("lite0")
  config.model.stem_channels, config.model.head_channels = 48, 1536
  config.dataset.num_classes = 10
  assert costs.config_params(config) == _module_params(config)
  # By hand against lite0: the head's 1x1 conv (7x7 map, 320 inputs) and the classifier
  # change with head channels and classes; the stem conv and the first block's depthwise
  # and projection with the stem.
  base = costs.count_macs(1.0, 1.0, 224)
  first = architecture.block_specs(1.0, 1.0)[0]
  stem = 112 * 112 * (27 + 9 + first.out_channels) * (48 - 32)
  head = 7 * 7 * 320 * (1536 - 1280) + 1536 * 10 - 1280 * 1000
  assert costs.config_macs(config) == base + stem + head
