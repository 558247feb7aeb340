"""Class probabilities of images and their top-k names: predict.py and tflite_predict.py."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from effnetlite.data import labels


def make_predict_fn(module: Any) -> Callable[[Any, np.ndarray], Any]:
  """jit(variables, pixels) -> class probabilities; normalises like training."""
  import jax

  from effnetlite.data.preprocessing import normalize

  def predict(variables, pixels):
    logits = module.apply(variables, normalize(pixels), train=False)
    return jax.nn.softmax(logits.astype(np.float32), axis=-1)
  return jax.jit(predict)


def class_names(num_classes: int) -> Sequence[str]:
  if num_classes == 1000:
    return [labels.imagenet_label(i) for i in range(1000)]
  return [f"class_{i}" for i in range(num_classes)]


def top_k(probabilities: np.ndarray, k: int, names: Sequence[str]) -> list[dict[str, Any]]:
  """[{"index", "label", "prob"}] best first."""
  order = np.argsort(-probabilities, kind="stable")[:k]
  return [{"index": int(i), "label": names[i], "prob": float(probabilities[i])} for i in order]
