"""The compound-scaling grid: candidate set, realised cost, bad ranges; a real search (slow)."""

import os
import subprocess
import sys

import pytest
from helpers import ROOT

from configs import search_lite0
from effnetlite.errors import UserError
from effnetlite.nn import costs
from effnetlite.search import grid
from effnetlite.validation import validate_config


def _config(**search_overrides):
  config = search_lite0.get_config()
  config.search.update(search_overrides)
  return config


# The demo grid by hand: alpha 1.1..1.4, beta 1.0..1.1, gamma 1.1..1.2 (step 0.1). Its
# products alpha*beta^2*gamma^2 within 8% of 2 (1.84..2.16): 1.1*1.21*1.44 = 1.917,
# 1.2*1.21*1.44 = 2.091, 1.3*1*1.44 = 1.872, 1.3*1.21*1.21 = 1.903, 1.4*1*1.44 = 2.016,
# 1.4*1.21*1.21 = 2.050; the other ten (1.331 ... 2.439) are not.
LAWFUL = {"a1.100_b1.100_g1.200", "a1.200_b1.100_g1.200", "a1.300_b1.000_g1.200",
          "a1.300_b1.100_g1.100", "a1.400_b1.000_g1.200", "a1.400_b1.100_g1.100"}


def test_kept_set_is_the_cost_law_not_the_rounded_proxy():
  kept = grid.build_grid(_config(max_family_departure=0.0))
  assert {c.key for c in kept.kept} == LAWFUL
  assert (kept.points, kept.within_law) == (16, 6)
  for candidate in kept.kept:
    assert candidate.product == pytest.approx(candidate.alpha * candidate.beta ** 2 *
                                              candidate.gamma ** 2)


def test_families_far_from_two_to_the_phi_are_dropped_and_said():
  config = _config()  # max_family_departure 0.2
  built = grid.build_grid(config)
  # Counted at 224 px, phi = 4: 1.1/1.1/1.2 realises 12.77x, 1.3/1.0/1.2 11.86x and
  # 1.3/1.1/1.1 12.20x, each more than 20% below 16x.
  assert {c.key for c in built.departed} == {"a1.100_b1.100_g1.200", "a1.300_b1.000_g1.200",
                                             "a1.300_b1.100_g1.100"}
  assert {c.key for c in built.kept} == LAWFUL - {c.key for c in built.departed}
  summary = "\n".join(built.summary(0.08, 0.2))
  assert "6 of 16 grid points have alpha*beta^2*gamma^2 within 8% of 2" in summary
  assert "3 dropped: their family departs from 2^phi by more than 20%" in summary
  assert "a1.3_b1_g1.2: phi=4 realises 11.86x, not 16x" in summary


def _hand_macs(repeats: list[int], resolution: int) -> int:
  """lite0's width-1 network with these repeats per stage, counted layer by layer: the
  B0 table written out again, stride-2 'SAME' sides by ceil, 1000-class classifier."""
  table = [(1, 3, 1, 16), (6, 3, 2, 24), (6, 5, 2, 40), (6, 3, 2, 80), (6, 5, 1, 112),
           (6, 5, 2, 192), (6, 3, 1, 320)]   # expand, kernel, stride, out
  side = -(-resolution // 2)
  macs = side * side * 27 * 32                # stem: 3x3x3 -> 32
  channels = 32
  for (expand, kernel, stride, out), count in zip(table, repeats):
    for index in range(count):
      hidden = channels * expand
      if expand != 1:
        macs += side * side * channels * hidden
      if index == 0 and stride == 2:
        side = -(-side // 2)
      macs += side * side * kernel * kernel * hidden + side * side * hidden * out
      channels = out
  return macs + side * side * 320 * 1280 + 1280 * 1000


def test_one_realised_cost_against_a_hand_count():
  # alpha 1.4, beta 1.0, gamma 1.2 at phi = 1 from 224 px: repeats 1, ceil(2.8)=3, 3,
  # ceil(4.2)=5, 5, ceil(5.6)=6, 1 (first and last stage fixed); side 268.8 -> 272.
  base = _hand_macs([1, 2, 2, 3, 3, 4, 1], 224)
  assert base == costs.count_macs(1.0, 1.0, 224)
  expected = _hand_macs([1, 3, 3, 5, 5, 6, 1], 272) / base
  assert grid.realised_ratio(_config(), 1.4, 1.0, 1.2, 1, 224) == pytest.approx(expected, 1e-12)
  candidate = next(c for c in grid.candidates(_config()) if c.key == "a1.400_b1.000_g1.200")
  assert candidate.family[0] == pytest.approx(expected, abs=1e-6)
  assert len(candidate.family) == 4 and candidate.target_resolution == 224


def test_the_proxy_trains_phi_one_at_its_own_resolution():
  for candidate in grid.candidates(_config()):
    assert candidate.resolution == round(64 * candidate.gamma / 8) * 8
    assert candidate.macs == costs.count_macs(candidate.width, candidate.depth,
                                              candidate.resolution, 10)
    assert candidate.params == costs.count_params(candidate.width, candidate.depth, 10)


def test_points_that_build_the_same_family_are_one_candidate():
  # At phi = 1 alpha 1.3 and 1.33 give the same repeats (ceil of 2.6/2.66, 3.9/3.99,
  # 5.2/5.32), and gamma 1.24 the same side (277.8 -> 280): one network, one candidate.
  config = _config(alpha_range=(1.3, 1.33), beta_range=(1.0, 1.0), gamma_range=(1.24, 1.24),
                   step=0.03, family_phis=1, max_family_departure=0.0)
  built = grid.build_grid(config)
  assert [c.key for c in built.kept] == ["a1.300_b1.000_g1.240"]
  assert [(a.key, b.key) for a, b in built.same_family] == [
      ("a1.330_b1.000_g1.240", "a1.300_b1.000_g1.240")]
  # At phi = 1..2 they differ (4 * 1.69 = 6.76 -> 7 repeats, 4 * 1.7689 = 7.08 -> 8).
  config.search.family_phis = 2
  assert len(grid.candidates(config)) == 2
  assert "build the same family as a kept point" in "\n".join(built.summary(0.08, 0.0))


def test_constraint_counts_the_stem_and_head_the_config_builds():
  config = _config(max_family_departure=0.0)
  config.model.stem_channels, config.model.head_channels = 48, 1536
  for candidate in grid.candidates(config):
    assert candidate.macs == costs.count_macs(candidate.width, candidate.depth,
                                              candidate.resolution, 10, 48, 1536)
    base = costs.count_macs(1.0, 1.0, 224, 1000, 48, 1536)
    scaled = grid.scaling.compound_scale(1.0, 1.0, 224, candidate.alpha, candidate.beta,
                                         candidate.gamma, 1)
    assert candidate.family[0] == pytest.approx(costs.count_macs(
        scaled.width, scaled.depth, scaled.resolution, 1000, 48, 1536) / base, abs=1e-6)


@pytest.mark.parametrize("overrides,message", [
    ({"alpha_range": (0.9, 1.2)}, r"search.alpha_range=\(0.9, 1.2\).*1 <= a <= b"),
    ({"beta_range": (1.2, 1.0)}, r"search.beta_range=\(1.2, 1.0\).*1 <= a <= b"),
])
def test_bad_ranges_are_refused_by_the_config_check(overrides, message):
  with pytest.raises(UserError, match=message):
    validate_config(_config(**overrides), search=True)


def test_a_grid_with_no_point_at_the_cost_says_what_to_change():
  with pytest.raises(UserError, match="no grid point is kept: 0 of 16 have alpha.beta.2.gamma.2 "
                                     "within config.search.tolerance=0.0001 of 2"):
    grid.candidates(_config(tolerance=0.0001))


@pytest.mark.slow
def test_real_search_on_demo_data_with_two_workers(tmp_path):
  """Two workers on one SQLite study, one after the other, then the report: real training."""
  for _ in range(2):
    result = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "grid_search.py"),
                             f"--config={os.path.join(ROOT, 'configs', 'search_lite0.py')}",
                             f"--workdir={tmp_path}"],
                            capture_output=True, text=True, timeout=1800, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
  import optuna
  trials = optuna.load_study(study_name="compound-lite0-phi1-accuracy",
                             storage=f"sqlite:///{tmp_path}/study.db").trials
  assert sorted(t.user_attrs["candidate"] for t in trials) == sorted(
      c.key for c in grid.candidates(_config()))
  assert all(t.state.name in ("COMPLETE", "PRUNED") for t in trials)
  assert (tmp_path / "results.md").exists() and (tmp_path / "pareto.png").exists()
