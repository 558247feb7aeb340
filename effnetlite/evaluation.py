"""Exact evaluation of a Flax model on a split: used by training and by eval.py alike."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator

import jax
import jax.numpy as jnp
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from effnetlite import reporting, steps
from effnetlite.data import pipeline
from effnetlite.errors import UserError
from effnetlite.validation import WEIGHT_KEYWORDS, absolute_path


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
  return {**_averages(totals, time.perf_counter() - start), "steps": num_steps}


def _averages(totals: dict | None, seconds: float) -> dict[str, float]:
  """Summed metrics -> top1/top5 fractions, mean loss, exact count, images/s."""
  if totals is None:
    raise UserError("the evaluation split is empty; point config.dataset.eval_split (or --split) "
                    "at a split with examples")
  totals = jax.device_get(totals)
  count = float(totals["count"])
  return {"top1": float(totals["top1"]) / count, "top5": float(totals["top5"]) / count,
          "loss": float(totals["loss"]) / count, "count": int(round(count)),
          "images_per_sec": count / seconds}


def _progress(total_images: int, description: str) -> Callable[[int, float], None]:
  bar = reporting.progress_bar(total_images, description=description, unit="img")

  def update(_, count):
    bar.update(int(round(count)))
    if bar.n >= total_images:
      bar.close()
  return update


def evaluate_tflite(model: Any, config: Any, source: Any) -> dict[str, float]:
  """The same metrics for a loaded `TFLiteModel`, fed the same preprocessed images."""
  update = _progress(source.num_examples, "eval tflite")
  totals = None
  start = time.perf_counter()
  batches = pipeline.eval_batches(config, source, global_batch=jax.device_count())
  for step, batch in enumerate(batches):
    keep = batch["mask"] > 0
    if not keep.any():
      continue
    sums = steps.summed_metrics(model.logits(batch["image"][keep]), batch["label"][keep],
                                batch["mask"][keep], model.num_classes)
    totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    update(step, float(sums["count"]))
  return _averages(totals, time.perf_counter() - start)


def evaluate_weights(config: Any, weights: str, split: str, ema: bool = True
                     ) -> dict[str, Any]:
  """eval.py's work: metrics of pretrained weights, a checkpoint or a .tflite on a split.

  The weights are read and checked against the config before the dataset is opened.
  """
  from effnetlite import factory
  from effnetlite.data import sources
  weights = absolute_path(weights) if weights not in WEIGHT_KEYWORDS else weights
  if weights.endswith(".tflite"):
    from effnetlite.tflite import TFLiteModel
    model = TFLiteModel(weights)
    model.check_matches(config.model.resolution, config.dataset.num_classes)
    metrics = evaluate_tflite(model, config, sources.make_source(config.dataset, split))
  else:
    module, variables = factory.create_model(config)
    variables = factory.load_variables(weights, config, variables, ema=ema)
    source = sources.make_source(config.dataset, split)
    mesh = pipeline.make_mesh()
    evaluator = make_evaluator(module, config.dataset.num_classes, mesh)
    metrics = evaluate(evaluator, variables, pipeline.eval_batches(config, source), mesh,
                       pipeline.eval_steps(source, config.eval_batch_size),
                       progress=_progress(source.total_examples, "eval"))
  return {**metrics, "weights": weights, "ema": ema and not weights.endswith(".tflite"),
          "split": split, "variant": config.model.name, "dataset": config.dataset.name}
