"""The search's results from its Optuna study: `results.md`, `pareto.png` and the best.

A trial is a candidate trained with one seed. Candidates are ranked by their mean
EMA top-1 over complete seeds on the ranking split (the candidate configs'
evaluation split: held-out training data); the test split, evaluated after
training, is shown in its own column and chooses nothing. The winner is compared
with every other candidate on the same ranking images (`effnetlite.search.stats`),
and each comparison says whether the lead is separable from noise. Running,
pruned and failed trials are shown as such, so the report can be written at any
moment; a trial that did not finish shows no accuracy (its last evaluation is
progress, not a result). For `accuracy_latency` the Pareto front of EMA top-1
against latency is listed; table, front and plot name where the latencies come
from.
"""

from __future__ import annotations

import dataclasses
import math
import os
import statistics
from typing import Any

from effnetlite.search import grid, stats
from effnetlite.utils import files, plots


def latency_label(target: str) -> str:
  """What a latency of `target` (config.search.latency_target) is, in a few words."""
  return "LiteRT ms on this host" if target == "litert" else f"Vela ms, {target}"


def latency_source(rows: list[dict[str, Any]]) -> str | None:
  """The label of the rows' latencies (None without any); studies before the attribute
  existed measured with LiteRT."""
  targets = sorted({r.get("latency_target", "litert") for r in rows if "latency_ms" in r})
  return " / ".join(latency_label(t) for t in targets) or None


# What a trial measured. Kept for complete trials, and for pruned ones (the value they were
# stopped at); a running or failed trial's are its last evaluation so far, not a result.
RESULT_ATTRS = ("top1", "ema_top1", "test_split", "test_top1", "test_top5", "test_count",
                "images_per_sec", "latency_ms")
FINISHED = ("COMPLETE", "PRUNED")


def candidate_rows(study: Any) -> list[dict[str, Any]]:
  """One dict per trial that trained a candidate with a seed, best EMA top-1 first."""
  rows = []
  for trial in study.get_trials(deepcopy=False):
    attrs = trial.user_attrs
    if "candidate" not in attrs or "unused" in attrs or "duplicate" in attrs:
      continue
    if trial.state.name not in FINISHED:
      attrs = {k: v for k, v in attrs.items() if k not in RESULT_ATTRS}
    # The coefficients come from the attributes set at enqueue time: a trial that failed
    # before Optuna recorded its parameters still has them.
    rows.append({"seed_index": 0, **trial.params, **attrs, "trial": trial.number,
                 "state": trial.state.name, "retry_of": trial.system_attrs.get("failed_trial")})
  return sorted(rows, key=lambda r: (-(r.get("ema_top1") or -1.0), r["trial"]))


def _short(row: dict[str, Any]) -> str:
  return grid.short_name(row["alpha"], row["beta"], row["gamma"])


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
  if not values:
    return None, None
  return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """One dict per candidate of `candidate_rows`, ranked by mean EMA top-1 over its complete
  seeds (candidates without a complete seed last, in queue order)."""
  by_key: dict[str, list[dict[str, Any]]] = {}
  for row in sorted(rows, key=lambda r: r["trial"]):
    by_key.setdefault(row["candidate"], []).append(row)
  summaries = []
  for order, trials in enumerate(by_key.values()):
    done = {r["seed_index"]: r for r in trials if r["state"] == "COMPLETE"}
    mean, std = _mean_std([r["ema_top1"] for r in done.values()])
    test_mean, test_std = _mean_std([r["test_top1"] for r in done.values() if "test_top1" in r])
    states: dict[str, int] = {}
    for r in trials:
      states[r["state"].lower()] = states.get(r["state"].lower(), 0) + 1
    summaries.append({**trials[0], "name": _short(trials[0]), "order": order, "complete": done,
                      "mean": mean, "std": std, "test_mean": test_mean, "test_std": test_std,
                      "states": states,
                      "train_seconds": sum(r.get("train_seconds") or 0.0 for r in trials)})
  return sorted(summaries, key=lambda s: (s["mean"] is None, -(s["mean"] or 0.0), s["order"]))


@dataclasses.dataclass(frozen=True)
class Snapshot:
  """The study read once: its trials, its candidates ranked, and the best."""
  rows: list[dict[str, Any]]
  summaries: list[dict[str, Any]]
  best: list[dict[str, Any]]    # the best candidate, or the Pareto front's trials
  objectives: int


def snapshot(study: Any) -> Snapshot:
  rows = candidate_rows(study)
  summaries = summarise(rows)
  objectives = len(study.directions)
  if objectives == 1:
    best = [s for s in summaries if s["mean"] is not None][:1]
  elif any(r["state"] == "COMPLETE" for r in rows):  # feasible trials only
    numbers = {trial.number for trial in study.best_trials}
    best = sorted((r for r in rows if r["trial"] in numbers),
                  key=lambda r: r.get("latency_ms", r["macs"]))
  else:
    best = []
  return Snapshot(rows, summaries, best, objectives)


def best_rows(study: Any) -> list[dict[str, Any]]:
  """The best candidate (summary) for one objective, or the trials of the Pareto front
  (feasible trials) for two."""
  return snapshot(study).best


def _number(value: Any, digits: int = 4) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "-"
  return f"{value:.{digits}f}"


def _pm(mean: float | None, std: float | None) -> str:
  if mean is None:
    return "-"
  return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}"


def _load_correct(row: dict[str, Any], workdir: str | None) -> dict[str, Any] | None:
  path = row.get("eval_examples")
  if workdir is None or not path:
    return None
  from effnetlite import runs
  return runs.Run(os.path.dirname(os.path.join(workdir, path))).eval_examples()


def per_image_correct(summary: dict[str, Any], workdir: str | None
                      ) -> tuple[list[str], list[list[int]]] | None:
  """(ids, correctness per complete seed) of a candidate, aligned on its first seed's ids."""
  ids, seeds = None, []
  for row in summary["complete"].values():
    record = _load_correct(row, workdir)
    if record is None or record.get("ids") is None:
      continue
    order = dict(zip(record["ids"], record["correct"]))
    if ids is None:
      ids = sorted(order)
    if set(order) != set(ids):
      return None  # seeds on different images: nothing to pair
    seeds.append([order[i] for i in ids])
  return (ids, seeds) if ids is not None else None


def comparisons(summaries: list[dict[str, Any]], workdir: str | None) -> list[str]:
  """The winner against every other ranked candidate, paired on the same images."""
  ranked = [s for s in summaries if s["mean"] is not None]
  if len(ranked) < 2:
    return []
  winner = per_image_correct(ranked[0], workdir)
  if winner is None:
    return ["(no per-image results recorded: paired comparisons unavailable)"]
  lines = []
  for other in ranked[1:]:
    theirs = per_image_correct(other, workdir)
    if theirs is None or theirs[0] != winner[0]:
      lines.append(f"- {ranked[0]['name']} vs {other['name']}: not on the same images; "
                   "no paired comparison")
      continue
    lines.append("- " + stats.compare(ranked[0]["name"], other["name"], winner[1],
                                      theirs[1]).statement())
  return lines


def _split_line(summaries: list[dict[str, Any]]) -> str | None:
  """Which split ranked, which reported, how many seeds."""
  rows = [r for s in summaries for r in s["complete"].values()]
  splits = [r["eval_split"] for r in rows if r.get("eval_split")]
  if not rows:
    return None
  seeds = sorted({len(s["complete"]) for s in summaries if s["complete"]})
  if splits:
    split = splits[0]
    carved = (f"{split['holdout_fraction']:.0%} of each class of the training split, held out "
              "and never trained on" if split.get("holdout_fraction") else "the dataset's own")
    ranking = (f"ranked on split {split['split']!r} of {split['dataset']} ({carved}; "
               f"{split['examples']} images)")
    if len({s.get("ids_sha256") for s in splits}) > 1:
      ranking += " — WARNING: the trials were evaluated on different examples"
  else:
    ranking = "ranked on the candidates' evaluation split"
  tests = ", ".join(repr(t) for t in sorted({r.get("test_split", "") for r in rows} - {""}))
  reported = (f"; test top-1 (split {tests}) measured after the ranking, which it did not "
              "influence" if tests else "; no test split evaluated")
  return (f"{ranking}; mean ± std over {'/'.join(map(str, seeds))} seed(s) per candidate "
          f"(initialisation and data order){reported}")


def markdown(study: Any, workdir: str | None = None) -> str:
  return _markdown(snapshot(study), workdir)


def _markdown(results: Snapshot, workdir: str | None) -> str:
  summaries, rows = results.summaries, results.rows
  source = latency_source(rows)
  phis = max((len(s.get("family") or ()) for s in summaries), default=0)
  target = next((s.get("target_resolution") for s in summaries), None)
  lines = [
      "| rank | candidate | alpha | beta | gamma | alpha*beta^2*gamma^2 | "
      f"realised cost, phi=1..{phis} at {target} px | proxy params | proxy MACs | "
      "EMA top-1, ranking split (mean ± std) | seeds | test top-1 (after ranking) | "
      f"{source or 'latency ms'} | train s | trials |",
      "|" + "---|" * 15]
  for rank, s in enumerate(summaries, 1):
    latencies = [r["latency_ms"] for r in s["complete"].values() if "latency_ms" in r]
    family = " / ".join(f"{r:.2f}x" for r in s.get("family") or ())
    lines.append(
        f"| {rank if s['mean'] is not None else '-'} | {s['name']} | {s['alpha']} | {s['beta']} | "
        f"{s['gamma']} | {s.get('product', float('nan')):.3f} | {family or '-'} | "
        f"{s['params']:,} | {s['macs'] / 1e6:.1f}M | {_pm(s['mean'], s['std'])} | "
        f"{len(s['complete'])} | {_pm(s['test_mean'], s['test_std'])} | "
        f"{_number(statistics.fmean(latencies) if latencies else None, 3)} | "
        f"{s['train_seconds']:.0f} | "
        + ", ".join(f"{n} {state}" for state, n in sorted(s["states"].items())) + " |")
  split_line = _split_line(summaries)
  if split_line:
    lines.append(f"\n{split_line}.")
  best = results.best
  if results.objectives == 1 and best:
    b = best[0]
    seeds = len(b["complete"])
    lines.append(f"\nbest: alpha={b['alpha']}, beta={b['beta']}, gamma={b['gamma']} "
                 f"(EMA top-1 {b['mean']:.4f} on the ranking split, mean of {seeds} "
                 f"seed{'s' * (seeds > 1)}; noise of one such accuracy: ± "
                 f"{100 * stats.standard_error(b['mean'], _images(b)):.1f} pt standard error)")
    compared = comparisons(summaries, workdir)
    if compared:
      lines.append("\npaired comparisons with the winner on the same ranking images:")
      lines += compared
  elif best:
    lines.append("\nPareto front (EMA top-1 up, latency down):")
    lines += [f"- alpha={b['alpha']}, beta={b['beta']}, gamma={b['gamma']} (seed "
              f"{b['seed_index'] + 1}): EMA top-1 {b['ema_top1']:.4f}, {b['latency_ms']:.3f} ms"
              for b in best]
    lines.append(f"\nlatencies: {source}"
                 + (" (Vela's estimate for the int8 file, not a measurement)"
                    if source and source.startswith("Vela") else ""))
  if workdir is not None:
    from effnetlite.search import proxy_check
    checked = proxy_check.read_proxy_check(workdir)
    if checked is not None:
      lines += [""] + proxy_check.describe(checked)
  lines += ["", "trials:", "| trial | candidate | seed | state | EMA top-1 | test top-1 | "
            "train s | note |", "|" + "---|" * 8]
  for r in sorted(rows, key=lambda r: r["trial"]):
    notes = [f"retry of trial {r['retry_of']}"] if r["retry_of"] is not None else []
    if r["state"] == "RUNNING" and r.get("worker"):
      notes.append(f"on {r['worker']}")
    if r.get("error"):
      notes.append(r["error"][:80].replace("|", "/"))
    note = "; ".join(notes)
    lines.append(f"| {r['trial']} | {_short(r)} | {r['seed_index'] + 1} | "
                 f"{r['state'].lower()} | {_number(r.get('ema_top1'))} | "
                 f"{_number(r.get('test_top1'))} | {_number(r.get('train_seconds'), 0)} | "
                 f"{note} |")
  return "\n".join(lines) + "\n"


def _images(summary: dict[str, Any]) -> int:
  for row in summary["complete"].values():
    if row.get("eval_split"):
      return row["eval_split"]["examples"]
  return 0


def write_report(study: Any, workdir: str) -> tuple[str, list[dict[str, Any]]]:
  """results.md and pareto.png in the workdir; returns (markdown, best rows)."""
  os.makedirs(workdir, exist_ok=True)
  results = snapshot(study)
  text = _markdown(results, workdir)
  files.write_atomically(os.path.join(workdir, "results.md"), text)
  files.write_atomically(os.path.join(workdir, "pareto.png"), _plot(results))
  return text, results.best


def _cost_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Complete candidates that no other beats on both MACs (lower) and EMA top-1 (higher)."""
  front, best = [], -1.0
  for row in sorted((r for r in rows if r["state"] == "COMPLETE"),
                    key=lambda r: (r["macs"], -r["ema_top1"])):
    if row["ema_top1"] > best:
      front.append(row)
      best = row["ema_top1"]
  return front


def _plot(results: Snapshot) -> bytes:
  figure, axes = plots.new_axes()
  if results.objectives > 1:
    rows = [r for r in results.rows if r.get("ema_top1") is not None and "latency_ms" in r]
    axes.scatter([r["latency_ms"] for r in rows], [r["ema_top1"] for r in rows], label="trials")
    front = results.best
    axes.plot([r["latency_ms"] for r in front], [r["ema_top1"] for r in front], "r-o",
              label="Pareto front")
    axes.set_xlabel(f"latency, batch 1 ({latency_source(rows) or 'ms'})")
  else:
    ranked = [s for s in results.summaries if s["mean"] is not None]
    points = [{**s, "ema_top1": s["mean"], "state": "COMPLETE"} for s in ranked]
    axes.errorbar([s["macs"] / 1e6 for s in ranked], [s["mean"] for s in ranked],
                  yerr=[s["std"] or 0.0 for s in ranked], fmt="o", capsize=3,
                  label="candidates (mean ± std over seeds)")
    for s in ranked:
      axes.annotate(s["name"], (s["macs"] / 1e6, s["mean"]), fontsize=6)
    front = _cost_front(points)
    axes.plot([r["macs"] / 1e6 for r in front], [r["ema_top1"] for r in front], "r-",
              label="Pareto front")
    axes.set_xlabel("multiply-adds of the proxy network (M)")
  return plots.finish_png(figure, axes, "compound-scaling search (alpha, beta, gamma)",
                          "EMA top-1, ranking split")
