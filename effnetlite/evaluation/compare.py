"""Finished runs side by side: one table, and accuracy against multiply-adds as a plot.

Each run records what comparing needs (`RUN/final_metrics.json`): the EMA top-1/top-5
of its last evaluation, the identity of that evaluation split, the seed, the
training wall time, package versions and the code's commit. Runs whose configs
differ only in their seed are one point with an error bar (mean ± std). Runs
evaluated on different splits are not comparable and are refused; int8 top-1
and latency come from what eval.py and export.py wrote into the run directory.
"""

from __future__ import annotations

import dataclasses
import glob
import json
import os
import statistics
from typing import Any, Sequence

from effnetlite import runs
from effnetlite.errors import UserError
from effnetlite.nn import costs
from effnetlite.utils import plots
from effnetlite.validation import flatten, validate_config


@dataclasses.dataclass
class RunSummary:
  path: str
  name: str
  width: float
  depth: float
  resolution: int
  params: int
  macs: int
  steps: int
  train_seconds: float | None
  top1: float
  top5: float
  split: dict[str, Any]
  seed: int | None
  int8_top1: float | None
  latency_ms: float | None
  group: str                    # equal for runs that differ only in their seed
  commit: str | None


def _outputs(run: str) -> tuple[float | None, float | None]:
  """(int8 TFLite top-1 from an eval.py output, batch-1 latency from an export report)."""
  int8 = latency = None
  own = set(runs.Run.OWN_FILES)
  for path in sorted(glob.glob(os.path.join(run, "*.json"))):
    if os.path.basename(path) in own:
      continue
    try:
      with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    except (OSError, ValueError):
      continue
    if isinstance(data, dict) and str(data.get("weights", "")).endswith(".tflite") and (
        "top1" in data):
      int8 = data["top1"]
    if isinstance(data, dict) and path.endswith(".tflite.report.json"):
      latency = data.get("latency_ms_batch1", latency)
  return int8, latency


def split_label(split: dict[str, Any]) -> str:
  carved = (f", {split['holdout_fraction']:.0%} held out of train"
            if split.get("holdout_fraction") else "")
  digest = (split.get("ids_sha256") or "ids not recorded")[:8]
  return f"{split['dataset']}/{split['split']} ({split['examples']} images{carved}, {digest})"


def summarise(path: str) -> RunSummary:
  """One finished run, or one line saying why `path` is not one."""
  run = runs.Run(path)
  if not run.is_run():
    raise UserError(f"{path} is not a run directory (RUN/{runs.Run.CONFIG} and checkpoints); "
                    "pass the --workdir of a train.py run")
  final = run.final_metrics()
  if final is None:
    raise UserError(f"run {path} has not finished ({runs.Run.FINAL_METRICS} missing); let it "
                    "finish (rerun its train.py command) or leave it out")
  config = validate_config(run.load_config())
  split = final.get("eval_split") or {
      "dataset": config.dataset.name, "split": config.dataset.eval_split,
      "holdout_fraction": config.dataset.holdout_fraction, "examples": final.get("ema_eval_count"),
      "ids_sha256": None}
  int8, latency = _outputs(run.path)
  identity = {k: v for k, v in flatten(config.to_dict()).items()
              if k not in ("seed", "model.name")}
  return RunSummary(
      path=run.path, name=config.model.name, width=config.model.width, depth=config.model.depth,
      resolution=config.model.resolution, params=costs.config_params(config),
      macs=costs.config_macs(config), steps=int(final["step"]),
      train_seconds=(final.get("session") or {}).get("wall_seconds"),
      top1=final["ema_eval_top1"], top5=final["ema_eval_top5"], split=split,
      seed=final.get("seed", config.seed), int8_top1=int8, latency_ms=latency,
      group=json.dumps(identity, sort_keys=True, default=str), commit=final.get("commit"))


def check_same_split(summaries: Sequence[RunSummary]) -> None:
  """Top-1 on different examples is not comparable: one line naming two runs."""
  def key(s: RunSummary) -> tuple:
    split = s.split
    return (split["dataset"], split["split"], split.get("holdout_fraction") or 0.0,
            split.get("examples"), split.get("ids_sha256"))
  first = summaries[0]
  for other in summaries[1:]:
    if key(other) != key(first):
      raise UserError(
          f"runs {first.path} and {other.path} were evaluated on different splits "
          f"({split_label(first.split)} vs {split_label(other.split)}); compare runs evaluated "
          "on one split (eval.py --split=... gives another split's numbers)")


def groups(summaries: Sequence[RunSummary]) -> list[list[RunSummary]]:
  """Runs that differ only in their seed, in the order given."""
  grouped: dict[str, list[RunSummary]] = {}
  for summary in summaries:
    grouped.setdefault(summary.group, []).append(summary)
  return list(grouped.values())


def _mean_std(values: list[float]) -> str:
  if len(values) == 1:
    return f"{values[0]:.4f}"
  return f"{statistics.fmean(values):.4f} ± {statistics.stdev(values):.4f}"


def _label(path: str, summaries: Sequence[RunSummary]) -> str:
  """A run's path below the runs' common folder (seed0, seed1 of two candidates differ)."""
  if len(summaries) == 1:
    return os.path.basename(path)
  return os.path.relpath(path, os.path.commonpath([s.path for s in summaries]))


def table(summaries: Sequence[RunSummary]) -> str:
  """Markdown: a row per run, then a row per group of seeds (mean ± std)."""
  split = split_label(summaries[0].split)
  lines = ["| run | name | width | depth | res | params | MACs | steps | train s | seed | "
           "EMA top-1 | EMA top-5 | int8 top-1 | latency ms |", "|" + "---|" * 14]
  for s in summaries:
    lines.append(
        f"| {_label(s.path, summaries)} | {s.name} | {s.width:g} | {s.depth:g} | {s.resolution} | "
        f"{s.params:,} | {s.macs / 1e6:.1f}M | {s.steps} | "
        f"{'-' if s.train_seconds is None else f'{s.train_seconds:.0f}'} | "
        f"{'-' if s.seed is None else s.seed} | {s.top1:.4f} | {s.top5:.4f} | "
        f"{'-' if s.int8_top1 is None else f'{s.int8_top1:.4f}'} | "
        f"{'-' if s.latency_ms is None else f'{s.latency_ms:.2f}'} |")
  seeded = [g for g in groups(summaries) if len(g) > 1]
  if seeded:
    lines += ["", "| network | seeds | EMA top-1 (mean ± std) | EMA top-5 (mean ± std) |",
              "|---|---|---|---|"]
    for g in seeded:
      lines.append(f"| {g[0].name} (w{g[0].width:g} d{g[0].depth:g} r{g[0].resolution}) | "
                   f"{len(g)} | {_mean_std([s.top1 for s in g])} | "
                   f"{_mean_std([s.top5 for s in g])} |")
  lines.append(f"\nevaluated on {split}; train s: the run's last training session")
  commits = sorted({s.commit[:12] + ("-dirty" if s.commit.endswith("-dirty") else "")
                    for s in summaries if s.commit})
  if commits:
    lines.append(f"code: {', '.join(commits)}" + (" (runs from different code)"
                                                  if len(commits) > 1 else ""))
  return "\n".join(lines)


def plot(summaries: Sequence[RunSummary]) -> bytes:
  """EMA top-1 against multiply-adds, error bars over seeds: the family's scaling curve."""
  figure, axes = plots.new_axes()
  points = sorted(groups(summaries), key=lambda g: g[0].macs)
  x = [g[0].macs / 1e6 for g in points]
  y = [statistics.fmean(s.top1 for s in g) for g in points]
  error = [statistics.stdev([s.top1 for s in g]) if len(g) > 1 else 0.0 for g in points]
  axes.errorbar(x, y, yerr=error, fmt="-o", capsize=3, label="EMA top-1 (mean ± std over seeds)")
  for xi, yi, g in zip(x, y, points):
    axes.annotate(g[0].name, (xi, yi), fontsize=6)
  int8 = [(g[0].macs / 1e6, g[0].int8_top1) for g in points if g[0].int8_top1 is not None]
  if int8:
    axes.plot(*zip(*int8), "s", label="int8 TFLite top-1")
  axes.set_xlabel("multiply-adds (M)")
  return plots.finish_png(figure, axes, "accuracy against cost",
                          f"top-1, {summaries[0].split['split']}")
