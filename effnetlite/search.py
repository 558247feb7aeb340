"""EfficientNet's compound-scaling grid: alpha (depth), beta (width), gamma (resolution).

With phi fixed (1 in the paper), the candidates are the grid points whose *built*
network - after channel rounding to multiples of 8, ceil of repeats and the lite
rules - costs 2^phi times the base network's multiply-adds within a tolerance.
`effnetlite.study` trains them as an Optuna study; this module is plain Python.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import ml_collections

from effnetlite import scaling
from effnetlite.errors import UserError


@dataclasses.dataclass(frozen=True)
class Candidate:
  alpha: float
  beta: float
  gamma: float
  width: float
  depth: float
  resolution: int
  nominal: float        # alpha * beta^2 * gamma^2, per unit of phi
  realised: float       # MACs of the built network / MACs of the base network
  params: int
  macs: int

  @property
  def key(self) -> str:
    return f"a{self.alpha:.3f}_b{self.beta:.3f}_g{self.gamma:.3f}"

  @property
  def coefficients(self) -> dict[str, float]:
    """The Optuna trial parameters of this candidate."""
    return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma}

  def attributes(self) -> dict[str, Any]:
    """What the study records beside the parameters (the built network and its cost)."""
    return {"candidate": self.key, **{k: v for k, v in dataclasses.asdict(self).items()
                                      if k not in ("alpha", "beta", "gamma")}}


def _grid(bounds: tuple[float, float], step: float, name: str) -> list[float]:
  low, high = bounds
  if low < 1.0:
    raise UserError(f"search.{name}_range starts at {low}: coefficients must be >= 1")
  if high < low or step <= 0:
    raise UserError(f"search.{name}_range {tuple(bounds)} with step {step} is an empty grid; "
                    "use low <= high and a positive step")
  count = int(round((high - low) / step)) + 1
  return [round(low + i * step, 6) for i in range(count)]


def candidates(config: ml_collections.ConfigDict) -> list[Candidate]:
  """Grid points whose realised cost is 2^phi x base within the tolerance, cheapest first."""
  search, model = config.search, config.model
  phi = search.phi
  base_macs = scaling.count_macs(model.width, model.depth, model.resolution)
  kept, built = [], set()
  for alpha, beta, gamma in itertools.product(
      _grid(search.alpha_range, search.step, "alpha"), _grid(search.beta_range, search.step,
                                                               "beta"),
      _grid(search.gamma_range, search.step, "gamma")):
    width, depth = model.width * beta ** phi, model.depth * alpha ** phi
    resolution = max(8, int(round(model.resolution * gamma ** phi / 8)) * 8)
    macs = scaling.count_macs(width, depth, resolution)
    realised = macs / base_macs
    network = (tuple(scaling.stage_plan(width, depth)), resolution)
    if abs(realised - 2 ** phi) <= search.tolerance * 2 ** phi and network not in built:
      built.add(network)  # after rounding, several grid points can build the same network
      kept.append(Candidate(alpha, beta, gamma, round(width, 6), round(depth, 6), resolution,
                            round(alpha * beta ** 2 * gamma ** 2, 6), realised,
                            scaling.count_params(width, depth, config.dataset.num_classes), macs))
  if not kept:
    raise UserError(f"no grid point costs {2 ** phi}x the base within tolerance "
                    f"{search.tolerance}; widen the ranges or raise search.tolerance")
  return sorted(kept, key=lambda c: (c.macs, c.key))


def candidate_config(config: ml_collections.ConfigDict, candidate: Candidate
                     ) -> ml_collections.ConfigDict:
  """The base config scaled to the candidate, trained with the proxy schedule."""
  derived = ml_collections.ConfigDict(config.to_dict())
  del derived["search"]
  derived.model.name = f"{config.model.name}_{candidate.key}"
  derived.model.width, derived.model.depth = candidate.width, candidate.depth
  derived.model.resolution = candidate.resolution
  return derived


def find_candidate(grid: list[Candidate], params: dict[str, float]) -> Candidate:
  """The grid point with these (alpha, beta, gamma), as stored by the study."""
  for candidate in grid:
    if all(abs(candidate.coefficients[k] - params[k]) < 1e-9 for k in candidate.coefficients):
      return candidate
  raise UserError(f"the study holds a trial with alpha={params['alpha']}, "
                  f"beta={params['beta']}, gamma={params['gamma']}, which is not a candidate of "
                  "this config; pass the config the study was created with, or another --study")
