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


def test_known_grid_gives_expected_candidates():
  keys = [c.key for c in grid.candidates(_config())]
  # Hand-checked: realised cost within 8% of 2x lite0@64 after rounding; grid points that
  # build an already-kept network (e.g. depth 1.1 vs 1.2 give the same repeats) are dropped.
  assert keys == ["a1.000_b1.100_g1.100", "a1.100_b1.200_g1.000", "a1.300_b1.200_g1.000",
                  "a1.000_b1.100_g1.200", "a1.100_b1.000_g1.100"]


def test_realised_cost_is_measured_on_the_built_network():
  config = _config()
  base = costs.count_macs(1.0, 1.0, 64)  # the constraint counts the ImageNet classifier
  for candidate in grid.candidates(config):
    assert abs(candidate.macs / base - 2) <= 0.08 * 2
    assert candidate.macs == costs.count_macs(candidate.width, candidate.depth,
                                              candidate.resolution)
    assert candidate.params == costs.count_params(candidate.width, candidate.depth, 10)
    assert candidate.nominal == pytest.approx(candidate.alpha * candidate.beta ** 2 *
                                              candidate.gamma ** 2)
    assert candidate.resolution % 8 == 0


def test_constraint_counts_the_stem_and_head_the_config_builds():
  config = _config(tolerance=0.5)
  config.model.stem_channels, config.model.head_channels = 48, 1536
  for candidate in grid.candidates(config):
    assert candidate.macs == costs.count_macs(candidate.width, candidate.depth,
                                              candidate.resolution, 1000, 48, 1536)
    assert candidate.params == costs.count_params(candidate.width, candidate.depth, 10, 48, 1536)


@pytest.mark.parametrize("overrides,message", [
    ({"alpha_range": (0.9, 1.2)}, r"search.alpha_range=\(0.9, 1.2\).*1 <= a <= b"),
    ({"beta_range": (1.2, 1.0)}, r"search.beta_range=\(1.2, 1.0\).*1 <= a <= b"),
])
def test_bad_ranges_are_refused_by_the_config_check(overrides, message):
  with pytest.raises(UserError, match=message):
    validate_config(_config(**overrides), search=True)


def test_a_grid_with_no_point_at_the_cost_says_what_to_change():
  with pytest.raises(UserError, match="no grid point costs 2x the base within tolerance"):
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
