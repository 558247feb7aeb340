"""Exact evaluation of a .tflite file on a split, fed the images the JAX evaluation sees."""

from __future__ import annotations

from typing import Any, Callable

import jax

from effnetlite.data import pipeline
from effnetlite.evaluation import metrics
from effnetlite.export.runtime import TFLiteModel


def evaluate_tflite(model: TFLiteModel, config: Any, source: Any,
                    progress: Callable[[float], None] | None = None) -> dict[str, float]:
  """The metrics of `jax_eval.evaluate` for a loaded .tflite, batch by batch in LiteRT."""
  def batch_sums():
    for batch in pipeline.eval_batches(config, source, global_batch=jax.device_count()):
      keep = batch["mask"] > 0
      if keep.any():
        yield metrics.summed_metrics(model.logits(batch["image"][keep]), batch["label"][keep],
                                     batch["mask"][keep], model.num_classes)
  return metrics.average_over(batch_sums(), progress)
