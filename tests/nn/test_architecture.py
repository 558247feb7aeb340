"""The block table of every variant against the reference builder and the lite rules."""

import pytest

from effnetlite import config as config_lib
from effnetlite.nn import architecture

VARIANTS = list(config_lib.VARIANTS)


@pytest.mark.parametrize("name", VARIANTS)
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
  assert architecture.stage_plan(width, depth) == expected


def test_block_specs_rules():
  specs = architecture.block_specs(1.2, 1.4)
  assert specs[0].in_channels == 32  # stem stays 32 although round_filters(32) is 40
  assert specs[0].drop_connect_rate == 0.0
  assert specs[-1].drop_connect_rate == pytest.approx(0.2 * (len(specs) - 1) / len(specs))
  assert [s.stride for s in specs if s.stride > 1] == [2, 2, 2, 2]
  assert architecture.final_feature_size(224) == 7 and architecture.final_feature_size(300) == 10


def test_stem_channels_feed_the_first_block():
  assert architecture.block_specs(1.0, 1.0, stem_channels=48)[0].in_channels == 48
