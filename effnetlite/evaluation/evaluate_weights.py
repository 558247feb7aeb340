"""eval.py's work: the metrics of any weights (pretrained, checkpoint, file, .tflite) on a split."""

from __future__ import annotations

from typing import Any, Callable

from effnetlite.data import pipeline, sources
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


def evaluate_weights(config: Any, weights: str, split: str, ema: bool = True
                     ) -> dict[str, Any]:
  """Metrics of pretrained weights, a checkpoint, a weights file or a .tflite on a split.

  The weights are read and checked against the config before the dataset is opened.
  """
  weights = absolute_path(weights) if weights not in WEIGHT_KEYWORDS else weights
  if weights.endswith(".tflite"):
    from effnetlite.evaluation.tflite_eval import evaluate_tflite
    from effnetlite.export.runtime import TFLiteModel
    model = TFLiteModel(weights)
    model.check_matches(config.model.resolution, config.dataset.num_classes)
    source = sources.make_source(config.dataset, split)
    metrics = evaluate_tflite(model, config, source,
                              progress=_progress(source.num_examples, "eval tflite"))
  else:
    from effnetlite.evaluation import jax_eval
    from effnetlite.weights import factory, loading
    module, variables = factory.create_model(config)
    variables = loading.load_weights(weights, config, variables, ema=ema)
    source = sources.make_source(config.dataset, split)
    mesh = pipeline.make_mesh()
    evaluator = jax_eval.make_evaluator(module, config.dataset.num_classes, mesh)
    metrics = jax_eval.evaluate(evaluator, variables, pipeline.eval_batches(config, source),
                                mesh, pipeline.eval_steps(source, config.eval_batch_size),
                                progress=_progress(source.total_examples, "eval"))
  return {**metrics, "weights": weights, "ema": ema and not weights.endswith(".tflite"),
          "split": split, "variant": config.model.name, "dataset": config.dataset.name}
