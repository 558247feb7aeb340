"""Exact evaluation of Flax variables on a split, over the device mesh: training and eval.py."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from effnetlite.data import pipeline
from effnetlite.data.preprocessing import normalize
from effnetlite.evaluation import metrics


def make_eval_step(module: Any, num_classes: int) -> Callable[[dict, dict], dict]:
  """(variables, batch) -> summed metrics over the batch's unmasked examples."""
  def eval_fn(variables: dict, batch: dict) -> dict:
    logits = module.apply(variables, normalize(batch["image"]), train=False)
    return metrics.summed_metrics(logits, batch["label"], batch["mask"], num_classes)
  return eval_fn


def make_evaluator(module: Any, num_classes: int, mesh: Mesh) -> Callable:
  """jit(variables, batch) -> summed metrics; variables replicated, batch sharded."""
  replicated = NamedSharding(mesh, PartitionSpec())
  sharded = NamedSharding(mesh, PartitionSpec(pipeline.BATCH_AXIS))
  return jax.jit(make_eval_step(module, num_classes),
                 in_shardings=(replicated, sharded), out_shardings=replicated)


def evaluate(evaluator: Callable, variables: Any, batches: Iterator[dict], mesh: Mesh,
             num_steps: int, progress: Callable[[float], None] | None = None
             ) -> dict[str, float]:
  """top1/top5 (fractions), mean loss, exact example count and images/s over a split."""
  sums = (evaluator(variables, batch) for batch in pipeline.prefetch_to_device(batches, mesh))
  return {**metrics.average_over(sums, progress), "steps": num_steps}


def make_prediction_step(module: Any, mesh: Mesh) -> Callable[[dict, dict], jax.Array]:
  """jit(variables, batch) -> top-1 class per example, sharded like the batch."""
  replicated = NamedSharding(mesh, PartitionSpec())
  sharded = NamedSharding(mesh, PartitionSpec(pipeline.BATCH_AXIS))

  def predict(variables: dict, batch: dict) -> jax.Array:
    return jax.numpy.argmax(module.apply(variables, normalize(batch["image"]), train=False), -1)
  return jax.jit(predict, in_shardings=(replicated, sharded), out_shardings=sharded)


def example_hits(predict: Callable, variables: Any, batches: Iterator[dict], mesh: Mesh
                 ) -> np.ndarray:
  """Whether each example's top-1 is right, in the split's order (one process: a
  multi-process job's examples are spread over hosts, so only totals are exact there)."""
  if jax.process_count() > 1:
    raise ValueError("per-example results are gathered in single-process runs only")
  hits = []
  for batch in pipeline.prefetch_to_device(batches, mesh):
    predicted = np.asarray(jax.device_get(predict(variables, batch)))
    label, mask = (np.asarray(jax.device_get(batch[k])) for k in ("label", "mask"))
    hits.append((predicted == label)[mask > 0])
  return np.concatenate(hits) if hits else np.zeros(0, bool)
