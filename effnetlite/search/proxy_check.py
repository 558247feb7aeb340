"""Does the proxy rank like real training? The top K retrained longer, ranks compared.

The search ranks candidates after a short proxy schedule; a researcher needs to
know whether a longer schedule would rank them the same. The top K candidates
(by the proxy's mean EMA top-1) are retrained, seed 0, for
`search.proxy_check_epochs` in WORKDIR/runs/<candidate>/long (resumable), scored
on the same ranking split, and Kendall's tau between the two rankings is
reported with its p-value (few candidates: a weak test, and said so).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Callable

import ml_collections

from effnetlite.errors import UserError
from effnetlite.search import grid as grid_lib
from effnetlite.search import report, study as study_lib
from effnetlite.utils import files

RESULT_FILE = "proxy_check.json"


def run_proxy_check(config: ml_collections.ConfigDict, study: Any, workdir: str,
                    train: Callable[..., dict] | None = None) -> dict[str, Any]:
  """Retrains the top K, writes WORKDIR/proxy_check.json and returns it."""
  from scipy import stats
  if train is None:
    from effnetlite.train.loop import train_and_evaluate as train
  k = config.search.proxy_check_top_k
  ranked = [s for s in report.snapshot(study).summaries if s["mean"] is not None]
  if len(ranked) < 2:
    raise UserError(f"--proxy_check needs at least 2 candidates with a complete trial; the study "
                    f"has {len(ranked)}: run the search to the end first")
  top = ranked[:k]
  by_key = {c.key: c for c in grid_lib.candidates(config)}
  rows = []
  for position, summary in enumerate(top, 1):
    candidate = by_key[summary["candidate"]]
    derived = study_lib.seeded_config(config, candidate, 0)
    derived.num_epochs = config.search.proxy_check_epochs
    run_dir = os.path.join(workdir, "runs", candidate.key, "long")
    print(f"proxy check {position}/{len(top)}: {candidate.short_name}, "
          f"{derived.num_epochs:g} epochs (the proxy: {config.num_epochs:g}) in {run_dir}",
          flush=True)
    metrics = train(derived, run_dir, None)
    rows.append({"candidate": candidate.short_name, "proxy_top1": summary["mean"],
                 "proxy_seeds": len(summary["complete"]), "long_top1": metrics["ema_eval_top1"],
                 "images": metrics.get("ema_eval_count")})
  tau = stats.kendalltau([r["proxy_top1"] for r in rows], [r["long_top1"] for r in rows])
  result = {"candidates": rows, "proxy_epochs": config.num_epochs,
            "long_epochs": config.search.proxy_check_epochs,
            "kendall_tau": float(tau.statistic), "p_value": float(tau.pvalue)}
  files.write_atomically(os.path.join(workdir, RESULT_FILE), json.dumps(result, indent=2))
  return result


def read_proxy_check(workdir: str) -> dict[str, Any] | None:
  path = os.path.join(workdir, RESULT_FILE)
  if not os.path.isfile(path):
    return None
  with open(path, encoding="utf-8") as handle:
    return json.load(handle)


def describe(result: dict[str, Any]) -> list[str]:
  """The proxy check as markdown lines."""
  tau, p = result["kendall_tau"], result["p_value"]
  n = len(result["candidates"])
  lines = [f"proxy check: the top {n} retrained for {result['long_epochs']:g} epochs "
           f"(the proxy: {result['proxy_epochs']:g}), EMA top-1 on the ranking split:",
           "| candidate | proxy (mean over seeds) | longer schedule (seed 1) |", "|---|---|---|"]
  lines += [f"| {r['candidate']} | {r['proxy_top1']:.4f} | {r['long_top1']:.4f} |"
            for r in result["candidates"]]
  agreement = ("no ranking to compare: the longer schedule scores them all the same"
               if math.isnan(tau) else "the proxy ranks like the longer schedule" if tau >= 0.99
               else "the proxy ranks partly like the longer schedule" if tau > 0
               else "the proxy's ranking is unrelated to the longer schedule's" if tau == 0
               else "the longer schedule reverses the proxy's ranking")
  lines.append(f"Kendall tau = {tau:.2f} (p = {p:.2g}, {n} candidates): {agreement}"
               + (f"; with {n} candidates even a perfect agreement is weak evidence"
                  if n < 5 else ""))
  images = result["candidates"][0].get("images")
  scores = [r["long_top1"] for r in result["candidates"]]
  if images:  # how far apart the longer schedule's scores are, in images
    spread = int(round((max(scores) - min(scores)) * images))
    lines.append(f"the longer schedule's scores span {spread} of {images} images"
                 + (": too close to rank on this split" if spread <= 2 else ""))
  return lines
