"""eval.py's work: the metrics of any weights (pretrained, checkpoint, file, .tflite) on a split."""

from __future__ import annotations

import os
from typing import Any, Callable

from effnetlite import quant, runs
from effnetlite.data import labels, pipeline, sources
from effnetlite.utils.progress import progress_bar
from effnetlite.validation import WEIGHT_KEYWORDS, absolute_path


def _progress(total_images: int, description: str) -> Callable[[float], None]:
  """Advances a progress bar by each batch's image count; closes it at the end."""
  bar = progress_bar(total_images, description=description, unit="img")

  def update(count: float) -> None:
    bar.update(int(round(count)))
    if bar.n >= total_images:
      bar.close()
  return update


def evaluate_weights(config: Any, weights: str, split: str, ema: bool = True,
                     progress: bool = True) -> dict[str, Any]:
  """Metrics of pretrained weights, a checkpoint, a weights file or a .tflite on a split.

  The weights are read and checked against the config before the dataset is opened.
  A training checkpoint's step is reported, and whether it is the run's latest or
  its best (`RUN/best`); per-class top-1 comes with the class names. With a QAT config
  (`quantization.qat`) the JAX model is the int8 twin: `simulated_int8` says so, and its
  metrics are those of the integer network the exported file computes.
  """
  weights = absolute_path(weights) if weights not in WEIGHT_KEYWORDS else weights
  described: dict[str, Any] = {}
  if weights.endswith(".tflite"):
    from effnetlite.evaluation.tflite_eval import evaluate_tflite
    from effnetlite.export.runtime import TFLiteModel
    model = TFLiteModel(weights)
    model.check_matches(config.model.resolution, config.dataset.num_classes)
    source = sources.make_source(config.dataset, split)
    metrics = evaluate_tflite(
        model, config, source,
        progress=_progress(source.num_examples, "eval tflite") if progress else None)
  else:
    from effnetlite.evaluation import jax_eval
    from effnetlite.weights import checkpoints, factory, loading
    module, variables = factory.create_model(config)
    if weights not in WEIGHT_KEYWORDS and checkpoints.is_training_checkpoint(weights):
      step, variables = loading.load_checkpoint(weights, config, variables, ema=ema)
      named = runs.run_weights(weights)
      described["checkpoint"] = step
      described["step"] = int(os.path.basename(step))
      described["kept_as"] = named.kept_as if named is not None else "latest"
    else:
      variables = loading.load_weights(weights, config, variables, ema=ema)
    source = sources.make_source(config.dataset, split)
    mesh = pipeline.make_mesh()
    evaluator = jax_eval.make_evaluator(module, config.dataset.num_classes, mesh)
    metrics = jax_eval.evaluate(evaluator, variables, pipeline.eval_batches(config, source),
                                mesh, pipeline.eval_steps(source, config.eval_batch_size),
                                progress=(_progress(source.total_examples, "eval") if progress
                                          else None))
  if not weights.endswith(".tflite"):  # a QAT config evaluates its int8 twin
    described["simulated_int8"] = quant.qat_enabled(config)
  return {**metrics, "weights": weights, **described,
          "ema": ema and not weights.endswith(".tflite"), "split": split,
          "variant": config.model.name, "dataset": config.dataset.name,
          "class_names": class_names(weights, config.dataset.num_classes)}


def class_names(weights: str, num_classes: int) -> list[str]:
  """The names of the classes of any weights eval.py takes, .tflite files included."""
  if weights.endswith(".tflite"):
    from effnetlite.export.metadata import read_labels
    names = read_labels(weights)
    if names is not None and len(names) == num_classes:
      return names
    weights = "pretrained"  # a file without names: ImageNet's for 1000 classes
  return labels.class_names(weights, num_classes)
