"""Exact evaluation of a Flax model on a split: used by training and by eval.py alike."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from effnetlite import steps
from effnetlite.data import pipeline


def make_evaluator(module: Any, num_classes: int, mesh: Mesh) -> Callable:
  """jit(variables, batch) -> summed metrics; variables replicated, batch sharded."""
  replicated = NamedSharding(mesh, PartitionSpec())
  sharded = NamedSharding(mesh, PartitionSpec(pipeline.BATCH_AXIS))
  return jax.jit(steps.make_eval_step(module, num_classes),
                 in_shardings=(replicated, sharded), out_shardings=replicated)


def evaluate(evaluator: Callable, variables: Any, batches: Iterator[dict], mesh: Mesh,
             num_steps: int, progress: Callable[[int, float], None] | None = None
             ) -> dict[str, float]:
  """top1/top5 (fractions), mean loss, exact example count and images/s over a split."""
  totals = None
  start = time.perf_counter()
  for index, batch in enumerate(pipeline.prefetch_to_device(batches, mesh)):
    sums = evaluator(variables, batch)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    if progress is not None:
      progress(index + 1, float(sums["count"]))
  if totals is None:
    raise ValueError("evaluation split is empty")
  totals = jax.device_get(totals)
  count = float(totals["count"])
  seconds = time.perf_counter() - start
  return {"top1": float(totals["top1"]) / count, "top5": float(totals["top5"]) / count,
          "loss": float(totals["loss"]) / count, "count": int(round(count)),
          "images_per_sec": count / seconds, "steps": num_steps}
