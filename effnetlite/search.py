"""EfficientNet's compound-scaling search: grid over alpha (depth), beta (width), gamma (resolution).

With phi fixed (1 in the paper), keep candidates whose *built* network - after
channel rounding to multiples of 8, ceil of repeats and the lite rules - costs
2^phi times the base network's multiply-adds within a tolerance; train each with
a short proxy schedule; report top-1 against cost. Results are one JSON file per
candidate under `workdir/results/`, written atomically through epath, so workers
on many machines can share one workdir (a bucket works) and a restarted search
skips what is finished.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
import traceback
from typing import Any, Callable

import ml_collections
from etils import epath

from effnetlite import files, scaling
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


def my_candidates(all_candidates: list[Candidate], worker: int, num_workers: int
                  ) -> list[Candidate]:
  """A disjoint, covering share per worker: worker i takes every num_workers-th candidate."""
  if num_workers < 1 or not 0 <= worker < num_workers:
    raise UserError(f"--worker={worker} must be in [0, --num_workers={num_workers})")
  return all_candidates[worker::num_workers]


def read_results(workdir: str) -> list[dict[str, Any]]:
  directory = epath.Path(workdir) / "results"
  if not directory.exists():
    return []
  return [json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))]


def run_search(config: ml_collections.ConfigDict, workdir: str, worker: int = 0,
               num_workers: int = 1,
               train: Callable[[ml_collections.ConfigDict, str], dict] | None = None
               ) -> list[dict[str, Any]]:
  """Trains this worker's unfinished candidates; returns this worker's rows."""
  if train is None:
    from effnetlite.training import train_and_evaluate as train
  share = my_candidates(candidates(config), worker, num_workers)
  results = epath.Path(workdir) / "results"
  results.mkdir(parents=True, exist_ok=True)
  rows = []
  for candidate in share:
    path = results / f"{candidate.key}.json"
    if path.exists() and json.loads(path.read_text())["status"] == "ok":
      continue  # finished by an earlier run
    row = {**dataclasses.asdict(candidate), "key": candidate.key, "worker": worker}
    start = time.time()
    try:
      metrics = train(candidate_config(config, candidate),
                      str(epath.Path(workdir) / "runs" / candidate.key))
      seconds = time.time() - start
      row.update(status="ok", top1=metrics["eval_top1"], ema_top1=metrics["ema_eval_top1"],
                 train_seconds=seconds,
                 images_per_sec=metrics.get("train_images_per_sec", float("nan")))
    except Exception as error:  # noqa: BLE001 - a failed candidate is recorded, search goes on
      row.update(status=f"failed: {type(error).__name__}: {error}", top1=None, ema_top1=None,
                 train_seconds=time.time() - start, traceback=traceback.format_exc(limit=5))
    files.write_atomically(path, json.dumps(row, indent=2))
    rows.append(row)
  return rows


def pareto_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Finished rows that no other row beats on both cost (lower) and EMA top-1 (higher)."""
  done = sorted((r for r in rows if r["status"] == "ok"), key=lambda r: (r["macs"], -r["ema_top1"]))
  front, best = [], -1.0
  for row in done:
    if row["ema_top1"] > best:
      front.append(row)
      best = row["ema_top1"]
  return front


def write_report(workdir: str) -> tuple[str, dict[str, Any] | None]:
  """results.md (sorted by EMA top-1) and pareto.png in workdir; returns (markdown, best row)."""
  rows = read_results(workdir)
  ordered = sorted(rows, key=lambda r: -(r["ema_top1"] if r["ema_top1"] is not None else -1))
  lines = ["| alpha | beta | gamma | width | depth | res | params | MACs | nominal | realised | "
           "top-1 | EMA top-1 | train s | img/s | status |", "|" + "---|" * 15]
  for r in ordered:
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    lines.append(f"| {r['alpha']} | {r['beta']} | {r['gamma']} | {r['width']:.3f} | "
                 f"{r['depth']:.3f} | {r['resolution']} | {r['params']:,} | "
                 f"{r['macs'] / 1e6:.1f}M | {r['nominal']:.3f} | {r['realised']:.3f} | "
                 f"{fmt(r['top1'])} | {fmt(r['ema_top1'])} | {r['train_seconds']:.0f} | "
                 f"{r.get('images_per_sec', float('nan')):.1f} | {r['status'][:60]} |")
  best = next((r for r in ordered if r["status"] == "ok"), None)
  if best:
    lines.append(f"\nbest: alpha={best['alpha']}, beta={best['beta']}, gamma={best['gamma']} "
                 f"(EMA top-1 {best['ema_top1']:.4f})")
  markdown = "\n".join(lines) + "\n"
  root = epath.Path(workdir)
  files.write_atomically(root / "results.md", markdown)
  _plot(rows, root / "pareto.png")
  return markdown, best


def _plot(rows: list[dict[str, Any]], path: epath.Path) -> None:
  import io

  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  done = [r for r in rows if r["status"] == "ok"]
  figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
  axes.scatter([r["macs"] / 1e6 for r in done], [r["ema_top1"] for r in done], label="candidates")
  for r in done:
    axes.annotate(f"{r['alpha']},{r['beta']},{r['gamma']}", (r["macs"] / 1e6, r["ema_top1"]),
                  fontsize=6)
  front = pareto_front(rows)
  axes.plot([r["macs"] / 1e6 for r in front], [r["ema_top1"] for r in front], "r-o",
            label="Pareto front")
  axes.set_xlabel("multiply-adds (M)")
  axes.set_ylabel("EMA top-1")
  axes.set_title("compound-scaling search (alpha, beta, gamma)")
  axes.legend()
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png")
  plt.close(figure)
  files.write_atomically(path, buffer.getvalue())
