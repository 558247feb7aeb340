"""Paired comparisons: built results with known separation, checked both ways."""

import numpy as np
import pytest
from scipy import stats as scipy_stats

from effnetlite.search import stats


def _pair(n: int, both: int, only_a: int, only_b: int) -> tuple[np.ndarray, np.ndarray]:
  """One seed each on n images: `both` right for both, then the discordant ones."""
  a = np.zeros(n, bool)
  b = np.zeros(n, bool)
  a[:both] = b[:both] = True
  a[both:both + only_a] = True
  b[both + only_a:both + only_a + only_b] = True
  return a, b


def test_reference_example_is_not_separable():
  # REFERENCE §12: a 1.7-point lead on 359 images, 9 vs 3 discordant: p = 0.15, interval
  # 0.0 ... 3.6 points.
  a, b = _pair(359, 300, 9, 3)
  result = stats.compare("A", "B", [a], [b])
  assert result.lead == pytest.approx(6 / 359)
  assert (result.only_leader, result.only_other) == (9, 3)
  assert result.p_value == pytest.approx(2 * sum(
      scipy_stats.binom.pmf(k, 12, 0.5) for k in range(9, 13)))  # 0.146, by hand
  assert result.low == pytest.approx(0.0, abs=0.003) and result.high == pytest.approx(
      0.036, abs=0.003)
  assert not result.separable
  assert result.statement() == (
      "A leads B by 1.7 pt (95% interval 0.0…3.6; exact McNemar p = 0.15, 9 vs 3 images only "
      "one of them gets right; 1 seed, 359 images): not separable — more seeds, more "
      "validation images or a longer proxy")


def test_a_large_one_seed_lead_is_separable():
  a, b = _pair(359, 280, 30, 2)
  result = stats.compare("A", "B", [a], [b])
  assert result.p_value < 1e-6 and result.separable
  assert result.statement().endswith("1 seed, 359 images): separable")


def test_several_seeds_average_each_image_then_bootstrap():
  rng = np.random.default_rng(1)
  truth_a, truth_b = rng.random(400) < 0.9, rng.random(400) < 0.6  # far apart
  a = np.stack([truth_a ^ (rng.random(400) < 0.02) for _ in range(3)])
  b = np.stack([truth_b ^ (rng.random(400) < 0.02) for _ in range(3)])
  result = stats.compare("A", "B", a, b)
  assert result.p_value is None and result.seeds == (3, 3)
  assert result.lead == pytest.approx(a.mean() - b.mean())
  assert 0 < result.low < result.lead < result.high
  assert result.separable and "3 seeds, 400 images): separable" in result.statement()
  # The same seeds against themselves shuffled by seed: a lead of zero, not separable.
  tie = stats.compare("A", "A'", a, a[::-1])
  assert tie.lead == 0 and not tie.separable
  assert "not separable — more seeds" in tie.statement()


def test_identical_results_have_a_point_interval():
  a, _ = _pair(50, 40, 0, 0)
  result = stats.compare("A", "B", [a], [a])
  assert (result.lead, result.low, result.high, result.p_value) == (0.0, 0.0, 0.0, 1.0)


def test_mismatched_images_are_refused():
  with pytest.raises(ValueError, match="same n images"):
    stats.compare("A", "B", [[1, 0, 1]], [[1, 0]])


def test_standard_error_by_hand():
  # REFERENCE §12: 1.6 points at p = 0.9 on 359 images.
  assert stats.standard_error(0.9, 359) == pytest.approx(0.0158, abs=1e-4)
