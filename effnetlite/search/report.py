"""The search's results from its Optuna study: `results.md`, `pareto.png` and the best.

Rows are the study's candidate trials (complete, pruned with their last EMA top-1,
running, failed); the best is the top EMA top-1 for `accuracy` and the Pareto
front of EMA top-1 against latency for `accuracy_latency`. The plot shows EMA
top-1 against MACs (or latency) with the Pareto front. Table, front and plot name
where the latencies come from: LiteRT on this host, or Vela's estimate for an Ethos-U.
"""

from __future__ import annotations

import io
import math
import os
from typing import Any

from effnetlite.utils import files

_HEADER = ("| trial | alpha | beta | gamma | width | depth | res | params | MACs | realised | "
           "top-1 | EMA top-1 | {latency} | train s | state |")


def latency_label(target: str) -> str:
  """What a latency of `target` (config.search.latency_target) is, in a few words."""
  return "LiteRT ms on this host" if target == "litert" else f"Vela ms, {target}"


def latency_source(rows: list[dict[str, Any]]) -> str | None:
  """The label of the rows' latencies (None without any); studies before the attribute
  existed measured with LiteRT."""
  targets = sorted({r.get("latency_target", "litert") for r in rows if "latency_ms" in r})
  return " / ".join(latency_label(t) for t in targets) or None


def candidate_rows(study: Any) -> list[dict[str, Any]]:
  """One dict per trial that trained a candidate, best EMA top-1 first."""
  rows = []
  for trial in study.get_trials(deepcopy=False):
    attrs = trial.user_attrs
    if "candidate" not in attrs or "unused" in attrs or "duplicate" in attrs:
      continue
    rows.append({**attrs, **trial.params, "trial": trial.number, "state": trial.state.name,
                 "retry_of": trial.system_attrs.get("failed_trial")})
  return sorted(rows, key=lambda r: (-(r.get("ema_top1") or -1.0), r["trial"]))


def best_rows(study: Any) -> list[dict[str, Any]]:
  """The best complete candidate, or the Pareto front (feasible trials) for two objectives."""
  if not any(t.state.name == "COMPLETE" for t in study.get_trials(deepcopy=False)):
    return []
  best = study.best_trials if len(study.directions) > 1 else [study.best_trial]
  numbers = {trial.number for trial in best}
  front = [row for row in candidate_rows(study) if row["trial"] in numbers]
  return sorted(front, key=lambda r: r.get("latency_ms", r["macs"]))


def _number(value: Any, digits: int = 4) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return "-"
  return f"{value:.{digits}f}"


def markdown(study: Any) -> str:
  rows = candidate_rows(study)
  source = latency_source(rows)
  lines = [_HEADER.format(latency=source or "latency ms"), "|" + "---|" * 15]
  for r in rows:
    lines.append(
        f"| {r['trial']} | {r['alpha']} | {r['beta']} | {r['gamma']} | {r['width']:.3f} | "
        f"{r['depth']:.3f} | {r['resolution']} | {r['params']:,} | {r['macs'] / 1e6:.1f}M | "
        f"{r['realised']:.3f} | {_number(r.get('top1'))} | {_number(r.get('ema_top1'))} | "
        f"{_number(r.get('latency_ms'), 3)} | {_number(r.get('train_seconds'), 0)} | "
        f"{r['state'].lower()}{' (retry)' if r['retry_of'] is not None else ''} |")
  best = best_rows(study)
  if len(study.directions) == 1 and best:
    b = best[0]
    lines.append(f"\nbest: alpha={b['alpha']}, beta={b['beta']}, gamma={b['gamma']} "
                 f"(EMA top-1 {b['ema_top1']:.4f})")
  elif best:
    lines.append("\nPareto front (EMA top-1 up, latency down):")
    lines += [f"- alpha={b['alpha']}, beta={b['beta']}, gamma={b['gamma']}: EMA top-1 "
              f"{b['ema_top1']:.4f}, {b['latency_ms']:.3f} ms" for b in best]
    lines.append(f"\nlatencies: {source}"
                 + (" (Vela's estimate for the int8 file, not a measurement)"
                    if source and source.startswith("Vela") else ""))
  return "\n".join(lines) + "\n"


def write_report(study: Any, workdir: str) -> tuple[str, list[dict[str, Any]]]:
  """results.md and pareto.png in the workdir; returns (markdown, best rows)."""
  os.makedirs(workdir, exist_ok=True)
  text = markdown(study)
  files.write_atomically(os.path.join(workdir, "results.md"), text)
  files.write_atomically(os.path.join(workdir, "pareto.png"), _plot(study))
  return text, best_rows(study)


def _cost_front(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """Complete candidates that no other beats on both MACs (lower) and EMA top-1 (higher)."""
  front, best = [], -1.0
  for row in sorted((r for r in rows if r["state"] == "COMPLETE"),
                    key=lambda r: (r["macs"], -r["ema_top1"])):
    if row["ema_top1"] > best:
      front.append(row)
      best = row["ema_top1"]
  return front


def _plot(study: Any) -> bytes:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  latency = len(study.directions) > 1
  x_of = (lambda r: r["latency_ms"]) if latency else (lambda r: r["macs"] / 1e6)
  rows = [r for r in candidate_rows(study) if r.get("ema_top1") is not None
          and (not latency or "latency_ms" in r)]
  figure, axes = plt.subplots(figsize=(6, 4), dpi=120)
  for state, marker in (("COMPLETE", "o"), ("PRUNED", "x")):
    chosen = [r for r in rows if r["state"] == state]
    axes.scatter([x_of(r) for r in chosen], [r["ema_top1"] for r in chosen], marker=marker,
                 label=state.lower())
  for r in rows:
    axes.annotate(f"{r['alpha']},{r['beta']},{r['gamma']}", (x_of(r), r["ema_top1"]),
                  fontsize=6)
  front = best_rows(study) if latency else _cost_front(rows)
  axes.plot([x_of(r) for r in front], [r["ema_top1"] for r in front], "r-o",
            label="Pareto front")
  axes.set_xlabel(f"latency, batch 1 ({latency_source(rows) or 'ms'})" if latency
                  else "multiply-adds (M)")
  axes.set_ylabel("EMA top-1")
  axes.set_title("compound-scaling search (alpha, beta, gamma)")
  axes.legend()
  figure.tight_layout()
  buffer = io.BytesIO()
  figure.savefig(buffer, format="png")
  plt.close(figure)
  return buffer.getvalue()
