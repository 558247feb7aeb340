"""Classification metrics as sums over a batch's unmasked examples, then averaged exactly.

Sums, not means, so that padded and masked examples of the last batch and batches
of unequal size combine into exact figures over a whole split.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

import jax
import jax.numpy as jnp
import optax

from effnetlite.errors import UserError


def summed_metrics(logits: jax.Array, labels: jax.Array, mask: jax.Array,
                   num_classes: int) -> dict[str, jax.Array]:
  """count, loss, top-1 and top-5 hits summed over the unmasked examples, and the
  examples and top-1 hits of each class."""
  logits = jnp.asarray(logits, jnp.float32)
  top5 = jax.lax.top_k(logits, min(5, num_classes))[1]
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  hits = (jnp.argmax(logits, -1) == labels) * mask
  per_class = jax.nn.one_hot(labels, num_classes, dtype=jnp.float32)
  return {
      "count": mask.sum(),
      "loss": (loss * mask).sum(),
      "top1": hits.sum(),
      "top5": ((top5 == labels[:, None]).any(-1) * mask).sum(),
      "class_count": (per_class * mask[:, None]).sum(0),
      "class_top1": (per_class * hits[:, None]).sum(0)}


def add(totals: dict[str, Any] | None, sums: dict[str, Any]) -> dict[str, Any]:
  """Running totals of `summed_metrics` (None before the first batch)."""
  return sums if totals is None else jax.tree.map(jnp.add, totals, sums)


def averages(totals: dict | None, seconds: float) -> dict[str, float]:
  """Summed metrics -> top1/top5 fractions, mean loss, exact count, images/s."""
  if totals is None:
    raise UserError("the evaluation split is empty; point config.dataset.eval_split (or --split) "
                    "at a split with examples")
  totals = jax.device_get(totals)
  count = float(totals["count"])
  class_count = totals["class_count"]
  return {"top1": float(totals["top1"]) / count, "top5": float(totals["top5"]) / count,
          "loss": float(totals["loss"]) / count, "count": int(round(count)),
          "images_per_sec": count / seconds,
          # None for classes without examples in the split
          "class_top1": [float(h / n) if n else None
                         for h, n in zip(totals["class_top1"], class_count)],
          "class_count": [int(round(n)) for n in class_count]}


def average_over(batch_sums: Iterable[dict[str, Any]],
                 progress: Callable[[float], None] | None = None) -> dict[str, float]:
  """Adds up the `summed_metrics` of every batch, timing them, and averages them exactly."""
  totals, start = None, time.perf_counter()
  for sums in batch_sums:
    totals = add(totals, sums)
    if progress is not None:
      progress(float(sums["count"]))
  return averages(totals, time.perf_counter() - start)
