"""The compound-scaling rule and its rounding, by hand and against the official lite table."""

import pytest

from effnetlite import config as config_lib
from effnetlite.nn import scaling


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


def test_round_resolution_to_multiples_of_eight():
  # 257.6 / 8 = 32.2 -> 256; at least 8; halves go to the even multiple (Python's round):
  # 260 / 8 = 32.5 -> 256, 268 / 8 = 33.5 -> 272.
  assert [scaling.round_resolution(r) for r in (224 * 1.15, 3.0, 260.0, 268.0)] == [
      256, 8, 256, 272]


def test_compound_scale_by_hand():
  # depth 1.2^2 = 1.44, width 1.1^2 = 1.21, resolution 224 * 1.15^2 = 296.24 -> 296.
  scaled = scaling.compound_scale(1.0, 1.0, 224, alpha=1.2, beta=1.1, gamma=1.15, phi=2)
  assert (scaled.width, scaled.depth, scaled.resolution) == (1.21, 1.44, 296)
  # It scales a scaled base again: lite2 (1.1, 1.2, 260) by phi = 1.
  scaled = scaling.compound_scale(1.1, 1.2, 260, alpha=1.2, beta=1.1, gamma=1.15, phi=1)
  assert (scaled.width, scaled.depth, scaled.resolution) == (1.21, 1.44, 296)


@pytest.mark.parametrize("name", ["lite1", "lite2"])
def test_official_table_is_near_the_compound_rule(name):
  """The lite table was hand-tuned, not generated: lite1 and lite2 sit within one rounding
  step of alpha=1.2, beta=1.1, gamma=1.15 at phi = 0.5 and 1 (width off by the 8-channel
  rounding, resolution within 16 pixels)."""
  width, depth, resolution, _ = config_lib.VARIANTS[name]
  phi = {"lite1": 0.5, "lite2": 1.0}[name]
  scaled = scaling.compound_scale(1.0, 1.0, 224, 1.2, 1.1, 1.15, phi)
  assert abs(scaled.depth - depth) <= 0.1 and abs(scaled.width - width) <= 0.1
  assert abs(scaled.resolution - resolution) <= 16
