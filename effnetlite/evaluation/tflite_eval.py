"""Exact evaluation of a .tflite file on a split, fed the images the JAX evaluation sees."""

from __future__ import annotations

import time
from typing import Any, Callable

import jax

from effnetlite.data import pipeline
from effnetlite.evaluation import metrics
from effnetlite.export.runtime import TFLiteModel


def evaluate_tflite(model: TFLiteModel, config: Any, source: Any,
                    progress: Callable[[float], None] | None = None) -> dict[str, float]:
  """The metrics of `jax_eval.evaluate` for a loaded .tflite, batch by batch in LiteRT."""
  totals = None
  start = time.perf_counter()
  batches = pipeline.eval_batches(config, source, global_batch=jax.device_count())
  for batch in batches:
    keep = batch["mask"] > 0
    if not keep.any():
      continue
    sums = metrics.summed_metrics(model.logits(batch["image"][keep]), batch["label"][keep],
                                  batch["mask"][keep], model.num_classes)
    totals = metrics.add(totals, sums)
    if progress is not None:
      progress(float(sums["count"]))
  return metrics.averages(totals, time.perf_counter() - start)
