"""Exact evaluation of Flax variables on a split, over the device mesh: training and eval.py."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from effnetlite.data import pipeline
from effnetlite.data.preprocessing import normalize
from effnetlite.evaluation import metrics


def make_eval_step(module: Any, num_classes: int) -> Callable[[dict, dict], tuple[dict, Any]]:
  """(variables, batch) -> (summed metrics over the batch's unmasked examples, each
  example's top-1 hit): one compiled function serves totals and per-example results."""
  def eval_fn(variables: dict, batch: dict) -> tuple[dict, jax.Array]:
    logits = module.apply(variables, normalize(batch["image"]), train=False)
    hits = jax.numpy.argmax(logits, -1) == batch["label"]
    return metrics.summed_metrics(logits, batch["label"], batch["mask"], num_classes), hits
  return eval_fn


def make_evaluator(module: Any, num_classes: int, mesh: Mesh) -> Callable:
  """jit(variables, batch) -> (summed metrics, hits); variables replicated, batch sharded."""
  replicated = NamedSharding(mesh, PartitionSpec())
  sharded = NamedSharding(mesh, PartitionSpec(pipeline.BATCH_AXIS))
  return jax.jit(make_eval_step(module, num_classes),
                 in_shardings=(replicated, sharded), out_shardings=(replicated, sharded))


def evaluate(evaluator: Callable, variables: Any, batches: Iterator[dict], mesh: Mesh,
             num_steps: int, progress: Callable[[float], None] | None = None,
             per_example: bool = False) -> dict[str, Any]:
  """top1/top5 (fractions), mean loss, exact count and images/s over a split; with
  `per_example`, also "correct": each example's top-1 hit in the split's order (one
  process only: a multi-process job's examples are spread over hosts)."""
  if per_example and jax.process_count() > 1:
    raise ValueError("per-example results are gathered in single-process runs only")
  kept = []

  def sums() -> Iterator[dict]:
    for batch in pipeline.prefetch_to_device(batches, mesh):
      summed, hits = evaluator(variables, batch)
      if per_example:
        kept.append((hits, batch["mask"]))
      yield summed
  result = {**metrics.average_over(sums(), progress), "steps": num_steps}
  if per_example:
    result["correct"] = np.concatenate(
        [np.asarray(hits)[np.asarray(mask) > 0] for hits, mask in kept] or [np.zeros(0, bool)])
  return result
