"""Is one candidate's lead over another real? Paired comparisons on the same images.

Two candidates scored on the same validation images are compared image by image:
what matters is the images one gets right and the other does not. With one seed
each, exact McNemar (a binomial test on those discordant images); with several,
each image's correctness is averaged over seeds first and a paired bootstrap
interval of the accuracy difference says how far the lead may be from zero
(scipy's, deterministic here). The standard error of a single accuracy,
sqrt(p(1-p)/n), says how large the noise of one number is.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np

CONFIDENCE = 0.95
SIGNIFICANCE = 0.05
BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0  # the same results give the same interval, run after run
ADVICE = "more seeds, more validation images or a longer proxy"


def standard_error(accuracy: float, images: int) -> float:
  """Standard error of an accuracy measured on `images` independent images."""
  return math.sqrt(accuracy * (1 - accuracy) / images) if images else float("nan")


@dataclasses.dataclass(frozen=True)
class Comparison:
  """The leader's accuracy minus the other's on the same images, and whether it is real."""
  leader: str
  other: str
  lead: float                 # in accuracy (fraction); >= 0 when `leader` leads
  low: float                  # CONFIDENCE paired bootstrap interval of the lead
  high: float
  images: int
  seeds: tuple[int, int]      # seeds behind each side's per-image correctness
  only_leader: int | None     # one seed each: images only the leader gets right
  only_other: int | None
  p_value: float | None       # exact McNemar (one seed each)

  @property
  def separable(self) -> bool:
    """McNemar below SIGNIFICANCE with one seed; else the interval excludes zero."""
    if self.p_value is not None:
      return self.p_value < SIGNIFICANCE and self.lead > 0
    return self.low > 0

  def statement(self) -> str:
    """"A leads B by 0.8 pt (95% interval -0.3...1.9, ...): not separable - ..." """
    evidence = f"{CONFIDENCE:.0%} interval {100 * self.low:.1f}…{100 * self.high:.1f}"
    if self.p_value is not None:
      evidence += (f"; exact McNemar p = {self.p_value:.2g}, {self.only_leader} vs "
                   f"{self.only_other} images only one of them gets right")
    seeds = (f"{self.seeds[0]} seed{'s' * (self.seeds[0] > 1)}" if self.seeds[0] == self.seeds[1]
             else f"{self.seeds[0]} and {self.seeds[1]} seeds")
    verdict = "separable" if self.separable else f"not separable — {ADVICE}"
    return (f"{self.leader} leads {self.other} by {100 * self.lead:.1f} pt ({evidence}; {seeds}, "
            f"{self.images} images): {verdict}")


def _bootstrap_interval(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
  difference = a - b
  if np.all(difference == difference[0]):  # no spread: the interval is the point
    return float(difference[0]), float(difference[0])
  from scipy import stats
  # Percentile, not scipy's default BCa: with few images disagreeing BCa's acceleration
  # estimate is unstable (2 of 100 discordant: BCa 0...7 points, percentile 0...5).
  result = stats.bootstrap(
      (a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), paired=True, vectorized=True,
      confidence_level=CONFIDENCE, n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
      random_state=np.random.default_rng(BOOTSTRAP_SEED))
  return float(result.confidence_interval.low), float(result.confidence_interval.high)


def compare(leader: str, other: str, correct_leader: Sequence[Sequence[bool]],
            correct_other: Sequence[Sequence[bool]]) -> Comparison:
  """Paired comparison of two candidates' per-image correctness, shaped (seeds, images)
  with the same images in the same order on both sides."""
  a, b = (np.asarray(c, np.float64) for c in (correct_leader, correct_other))
  if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or not a.size or not b.size:
    raise ValueError(f"per-image correctness shaped {a.shape} and {b.shape}: need (seeds, n) "
                     "on the same n images")
  per_image_a, per_image_b = a.mean(0), b.mean(0)
  low, high = _bootstrap_interval(per_image_a, per_image_b)
  only_leader = only_other = p_value = None
  if len(a) == 1 and len(b) == 1:
    from scipy import stats
    only_leader = int(np.sum((a[0] == 1) & (b[0] == 0)))
    only_other = int(np.sum((a[0] == 0) & (b[0] == 1)))
    discordant = only_leader + only_other
    p_value = (float(stats.binomtest(only_leader, discordant, 0.5).pvalue) if discordant
               else 1.0)
  return Comparison(leader, other, float(per_image_a.mean() - per_image_b.mean()), low, high,
                    a.shape[1], (len(a), len(b)), only_leader, only_other, p_value)
