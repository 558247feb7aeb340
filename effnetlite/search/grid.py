"""EfficientNet's compound-scaling grid: alpha (depth), beta (width), gamma (resolution).

The paper's rule keeps the grid points whose product alpha * beta^2 * gamma^2 is
within a tolerance of 2, all >= 1: FLOPs grow ~ depth * width^2 * resolution^2, so
the family at phi then costs ~2^phi. That product is the law; the network a
config builds is what rounding (channels to multiples of 8, ceil of repeats,
sides to multiples of 8) makes of it, which bends the family most at small
sizes. So each candidate also carries its *realised* family: the multiply-adds
of the networks built at phi = 1..N at the resolution the coefficients will be
used at (`search.target_resolution`), over the base's at that resolution.
Candidates that build the same family are one candidate; an option drops those
whose family departs from 2^phi by more than a bound. The proxy then trains the
phi = `search.phi` network of each at the proxy's own resolution.
`effnetlite.search.study` trains them as an Optuna study; this module is plain Python.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import ml_collections

from effnetlite.errors import UserError
from effnetlite.nn import architecture, costs, scaling

# The realised costs count the ImageNet (1000-class) classifier whatever the proxy
# dataset, as the paper and the published table do: the family is the one an ImageNet
# user of the coefficients builds.
IMAGENET_CLASSES = 1000
# The law: alpha * beta^2 * gamma^2 = 2 doubles the cost per unit of phi.
COST_PER_PHI = 2.0


def short_name(alpha: float, beta: float, gamma: float) -> str:
  """a1.2_b1.1_g1.15: a candidate as people write it (its `key` keeps three decimals)."""
  return f"a{alpha:g}_b{beta:g}_g{gamma:g}"


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One grid point: its coefficients, the family they build and the proxy it trains."""
  alpha: float
  beta: float
  gamma: float
  product: float               # alpha * beta^2 * gamma^2: the cost law's factor per phi
  family: tuple[float, ...]    # realised MACs / base MACs at phi = 1..N, target resolution
  target_resolution: int       # where `family` is counted
  width: float                 # the trained proxy network (phi = search.phi, proxy resolution)
  depth: float
  resolution: int
  params: int                  # of the trained proxy network (the dataset's classifier)
  macs: int

  @property
  def key(self) -> str:
    return f"a{self.alpha:.3f}_b{self.beta:.3f}_g{self.gamma:.3f}"

  @property
  def short_name(self) -> str:
    return short_name(self.alpha, self.beta, self.gamma)

  @property
  def coefficients(self) -> dict[str, float]:
    """The Optuna trial parameters of this candidate."""
    return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma}

  def departures(self) -> list[float]:
    """realised / 2^phi - 1 for phi = 1..N."""
    return [ratio / COST_PER_PHI ** phi - 1 for phi, ratio in enumerate(self.family, 1)]

  def worst_phi(self) -> int:
    """The phi whose realised cost departs most from 2^phi."""
    departures = [abs(d) for d in self.departures()]
    return departures.index(max(departures)) + 1

  def attributes(self) -> dict[str, Any]:
    """What the study records beside the parameters (the family and the trained network)."""
    return {"candidate": self.key, **{k: list(v) if isinstance(v, tuple) else v
                                      for k, v in dataclasses.asdict(self).items()}}


@dataclasses.dataclass(frozen=True)
class Grid:
  """The kept candidates (cheapest family first) and what the rule left out, and why."""
  kept: list[Candidate]
  points: int                  # grid points in the ranges
  within_law: int              # of which alpha*beta^2*gamma^2 is within tolerance of 2
  same_family: list[tuple[Candidate, Candidate]]  # (dropped, the kept one it equals)
  departed: list[Candidate]    # within the law, family beyond search.max_family_departure

  def summary(self, tolerance: float, bound: float) -> list[str]:
    """Lines saying how the kept set came about."""
    lines = [f"{self.within_law} of {self.points} grid points have alpha*beta^2*gamma^2 within "
             f"{tolerance:.0%} of 2 (all >= 1); {len(self.kept)} kept"]
    if self.same_family:
      lines.append(f"{len(self.same_family)} dropped: they build the same family as a kept "
                   "point (" + ", ".join(f"{a.short_name} = {b.short_name}"
                                          for a, b in self.same_family) + ")")
    if self.departed:
      lines.append(f"{len(self.departed)} dropped: their family departs from 2^phi by more "
                   f"than {bound:.0%} (search.max_family_departure) (" + ", ".join(
                       f"{c.short_name}: phi={c.worst_phi()} realises "
                       f"{c.family[c.worst_phi() - 1]:.2f}x, not {2 ** c.worst_phi()}x"
                       for c in self.departed) + ")")
    return lines


def grid_values(bounds: tuple[float, float], step: float) -> list[float]:
  """low, low + step, ..., high (ranges are checked by `effnetlite.validation`)."""
  low, high = bounds
  return [round(low + i * step, 6) for i in range(int(round((high - low) / step)) + 1)]


def _scaled(config: ml_collections.ConfigDict, alpha: float, beta: float, gamma: float,
            phi: float, resolution: int) -> ml_collections.ConfigDict:
  model = config.model
  return scaled_config(config, scaling.compound_scale(model.width, model.depth, resolution,
                                                      alpha, beta, gamma, phi))


def realised_ratio(config: ml_collections.ConfigDict, alpha: float, beta: float, gamma: float,
                   phi: float, resolution: int) -> float:
  """MACs of the network built at phi over the base's, both from `resolution` with the
  ImageNet classifier (the cost law's realised factor)."""
  base = costs.config_macs(_scaled(config, 1.0, 1.0, 1.0, 0, resolution), IMAGENET_CLASSES)
  return costs.config_macs(_scaled(config, alpha, beta, gamma, phi, resolution),
                           IMAGENET_CLASSES) / base


def _family(config: ml_collections.ConfigDict, alpha: float, beta: float, gamma: float
            ) -> tuple[tuple, tuple[float, ...]]:
  """What the family builds at phi = 1..search.family_phis from search.target_resolution
  (grid points with equal networks are one candidate), and `realised_ratio` of each."""
  resolution = config.search.target_resolution
  networks, ratios = [], []
  for phi in range(1, config.search.family_phis + 1):
    model = _scaled(config, alpha, beta, gamma, phi, resolution).model
    networks.append((tuple(architecture.stage_plan(model.width, model.depth)), model.resolution))
    ratios.append(round(realised_ratio(config, alpha, beta, gamma, phi, resolution), 6))
  return tuple(networks), tuple(ratios)


def make_candidate(config: ml_collections.ConfigDict, alpha: float, beta: float, gamma: float,
                   family: tuple[float, ...]) -> Candidate:
  model = config.model
  proxy = _scaled(config, alpha, beta, gamma, config.search.phi, model.resolution)
  return Candidate(
      alpha=alpha, beta=beta, gamma=gamma, product=round(alpha * beta ** 2 * gamma ** 2, 6),
      family=family,
      target_resolution=config.search.target_resolution,
      width=proxy.model.width, depth=proxy.model.depth, resolution=proxy.model.resolution,
      params=costs.config_params(proxy), macs=costs.config_macs(proxy))


def build_grid(config: ml_collections.ConfigDict) -> Grid:
  """The candidates of a search config: the law, then one per family, then the bound."""
  search = config.search
  points = list(itertools.product(*(grid_values(bounds, search.step) for bounds in (
      search.alpha_range, search.beta_range, search.gamma_range))))
  lawful = [p for p in points
            if abs(p[0] * p[1] ** 2 * p[2] ** 2 - COST_PER_PHI) <= search.tolerance * COST_PER_PHI]
  kept, same_family, departed, seen = [], [], [], {}
  for alpha, beta, gamma in lawful:
    networks, ratios = _family(config, alpha, beta, gamma)
    candidate = make_candidate(config, alpha, beta, gamma, ratios)
    if networks in seen:
      same_family.append((candidate, seen[networks]))
      continue
    seen[networks] = candidate
    bound = search.max_family_departure
    if bound > 0 and max(abs(d) for d in candidate.departures()) > bound:
      departed.append(candidate)
    else:
      kept.append(candidate)
  if not kept:
    raise UserError(
        f"no grid point is kept: {len(lawful)} of {len(points)} have alpha*beta^2*gamma^2 "
        f"within config.search.tolerance={search.tolerance} of 2"
        + (f", {len(departed)} of them with a family beyond config.search.max_family_departure="
           f"{search.max_family_departure}" if departed else "")
        + "; widen the ranges, raise search.tolerance or search.max_family_departure")
  kept.sort(key=lambda c: (c.family, c.key))
  return Grid(kept, len(points), len(lawful), same_family, departed)


def candidates(config: ml_collections.ConfigDict) -> list[Candidate]:
  """The kept candidates of a search config, cheapest family first."""
  return build_grid(config).kept


def family_table(grid: list[Candidate]) -> str:
  """Markdown: per candidate its product, realised cost ratio per phi and the proxy's size."""
  if not grid:
    return ""
  phis = len(grid[0].family)
  lines = ["| candidate | alpha*beta^2*gamma^2 | "
           + " | ".join(f"phi={phi} (2^{phi}={2 ** phi})" for phi in range(1, phis + 1))
           + " | proxy network | proxy params |",
           "|" + "---|" * (phis + 4)]
  for c in grid:
    lines.append(f"| {c.short_name} | {c.product:.3f} | "
                 + " | ".join(f"{r:.2f}x" for r in c.family)
                 + f" | w{c.width:g} d{c.depth:g} r{c.resolution} | {c.params:,} |")
  lines.append(f"\nrealised: MACs of the network built at phi over the base's, both at "
               f"{grid[0].target_resolution} px with the 1000-class ImageNet classifier")
  return "\n".join(lines)


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
