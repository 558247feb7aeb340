"""Scaling rules and exact costs against the published table and an independent builder."""

import pathlib

import jax
import pytest

from effnetlite import config as config_lib
from effnetlite import factory, scaling

# variant: (params, MACs in millions) from the TF/TPU lite README and REFERENCE.md.
CONFIGS = pathlib.Path(__file__).parent.parent / "configs"
PUBLISHED = {"lite0": (4_652_008, 385.19), "lite1": (5_416_680, 600.19),
             "lite2": (6_092_072, 859.74), "lite3": (8_197_096, 1383.32),
             "lite4": (13_006_568, 2553.03)}


def test_round_filters_by_hand():
  # g = f * width; new = max(8, int(g + 4) // 8 * 8); +8 when below 0.9 g.
  assert scaling.round_filters(32, 1.2) == 40
  assert scaling.round_filters(32, 1.4) == 48
  assert scaling.round_filters(40, 1.1) == 48   # 44 -> int(48)//8*8 = 48
  assert scaling.round_filters(80, 1.1) == 88
  assert scaling.round_filters(16, 0.25) == 8   # never below the divisor
  assert scaling.round_filters(112, 1.2) == 136  # 134.4 -> 136
  assert scaling.round_filters(24, 0.5) == 16   # 12 -> 16


def test_round_repeats_is_ceil():
  assert [scaling.round_repeats(r, 1.1) for r in (1, 2, 3, 4)] == [2, 3, 4, 5]
  assert scaling.round_repeats(3, 1.0) == 3


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_counts_match_published(name):
  width, depth, resolution, _ = config_lib.VARIANTS[name]
  params, macs = PUBLISHED[name]
  assert scaling.count_params(width, depth) == params
  assert abs(scaling.count_macs(width, depth, resolution) / 1e6 - macs) / macs < 0.01


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_built_module_has_published_params(name):
  config = config_lib.variant_config(name)
  module = factory.module_from_config(config)
  shapes = jax.eval_shape(lambda: module.init(
      jax.random.PRNGKey(0), jax.numpy.zeros((1, 64, 64, 3)), train=False))
  assert sum(x.size for x in jax.tree.leaves(shapes["params"])) == PUBLISHED[name][0]


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_stage_plan_matches_reference_builder(name):
  """(channels, repeats) per stage vs the efficientnet-lite-pytorch block decoder."""
  utils = pytest.importorskip("efficientnet_lite_pytorch.utils")
  blocks_args, global_params = utils.get_model_params(f"efficientnet-{name}", {})
  expected = []
  for index, args in enumerate(blocks_args):
    fixed = index in (0, len(blocks_args) - 1)
    out = utils.round_filters(args.output_filters, global_params)
    repeats = args.num_repeat if fixed else utils.round_repeats(args.num_repeat, global_params)
    expected.append((out, repeats))
  width, depth, _, _ = config_lib.VARIANTS[name]
  assert scaling.stage_plan(width, depth) == expected


def test_block_specs_rules():
  specs = scaling.block_specs(1.2, 1.4)
  assert specs[0].in_channels == 32  # stem stays 32 although round_filters(32) is 40
  assert specs[0].drop_connect_rate == 0.0
  assert specs[-1].drop_connect_rate == pytest.approx(0.2 * (len(specs) - 1) / len(specs))
  assert [s.stride for s in specs if s.stride > 1] == [2, 2, 2, 2]
  assert scaling.final_feature_size(224) == 7 and scaling.final_feature_size(300) == 10


def test_config_files_match_library_table():
  import importlib.util
  for name, row in config_lib.VARIANTS.items():
    spec = importlib.util.spec_from_file_location(name, CONFIGS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    model = module.get_config().model
    assert (model.width, model.depth, model.resolution, model.dropout_rate) == row
