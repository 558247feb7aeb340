"""EfficientNet's compound-scaling grid: alpha (depth), beta (width), gamma (resolution).

With phi fixed (1 in the paper), the candidates are the grid points whose *built*
network - after channel rounding to multiples of 8, ceil of repeats and the lite
rules - costs 2^phi times the base network's multiply-adds within a tolerance.
`effnetlite.search.study` trains them as an Optuna study; this module is plain Python.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import ml_collections

from effnetlite.errors import UserError

# The FLOPs constraint counts the ImageNet (1000-class) classifier whatever the proxy
# dataset, as the paper and the published table do, so a search on a small proxy keeps
# the coefficients an ImageNet search would.
IMAGENET_CLASSES = 1000
from effnetlite.nn import architecture, costs, scaling


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


def _grid(bounds: tuple[float, float], step: float) -> list[float]:
  """low, low + step, ..., high (ranges are checked by `effnetlite.validation`)."""
  low, high = bounds
  return [round(low + i * step, 6) for i in range(int(round((high - low) / step)) + 1)]


def candidates(config: ml_collections.ConfigDict) -> list[Candidate]:
  """Grid points whose realised cost is 2^phi x base within the tolerance, cheapest first.

  Costs count every model key of the base config (stem and head channels included).
  """
  search, model = config.search, config.model
  phi = search.phi
  base_macs = costs.config_macs(config, IMAGENET_CLASSES)
  kept, built = [], set()
  for alpha, beta, gamma in itertools.product(*(_grid(bounds, search.step) for bounds in (
      search.alpha_range, search.beta_range, search.gamma_range))):
    scaled = scaling.compound_scale(model.width, model.depth, model.resolution, alpha, beta,
                                    gamma, phi)
    derived = scaled_config(config, scaled)
    macs = costs.config_macs(derived, IMAGENET_CLASSES)
    realised = macs / base_macs
    network = (tuple(architecture.stage_plan(scaled.width, scaled.depth)), scaled.resolution)
    if abs(realised - 2 ** phi) <= search.tolerance * 2 ** phi and network not in built:
      built.add(network)  # after rounding, several grid points can build the same network
      kept.append(Candidate(alpha, beta, gamma, scaled.width, scaled.depth, scaled.resolution,
                            round(alpha * beta ** 2 * gamma ** 2, 6), realised,
                            costs.config_params(derived), macs))
  if not kept:
    raise UserError(f"no grid point costs {2 ** phi}x the base within tolerance "
                    f"{search.tolerance}; widen the ranges or raise search.tolerance")
  return sorted(kept, key=lambda c: (c.macs, c.key))


def scaled_config(config: ml_collections.ConfigDict, scaled: scaling.ScaledModel
                  ) -> ml_collections.ConfigDict:
  """A copy of `config` with the scaled width, depth and resolution (other keys kept)."""
  derived = ml_collections.ConfigDict(config.to_dict())
  derived.model.width, derived.model.depth = scaled.width, scaled.depth
  derived.model.resolution = scaled.resolution
  return derived


def candidate_config(config: ml_collections.ConfigDict, candidate: Candidate
                     ) -> ml_collections.ConfigDict:
  """The base config scaled to the candidate, trained with the proxy schedule."""
  derived = scaled_config(config, scaling.ScaledModel(candidate.width, candidate.depth,
                                                      candidate.resolution))
  del derived["search"]
  derived.model.name = f"{config.model.name}_{candidate.key}"
  return derived


def find_candidate(grid: list[Candidate], params: dict[str, float]) -> Candidate:
  """The grid point with these (alpha, beta, gamma), as stored by the study."""
  for candidate in grid:
    if all(abs(candidate.coefficients[k] - params[k]) < 1e-9 for k in candidate.coefficients):
      return candidate
  raise UserError(f"the study holds a trial with alpha={params['alpha']}, "
                  f"beta={params['beta']}, gamma={params['gamma']}, which is not a candidate of "
                  "this config; pass the config the study was created with, or another --study")
