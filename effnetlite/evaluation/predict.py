"""Class probabilities of images and their top-k names: predict.py and tflite_predict.py."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np


def make_predict_fn(module: Any) -> Callable[[Any, np.ndarray], Any]:
  """jit(variables, pixels) -> class probabilities; normalises like training."""
  import jax

  from effnetlite.data.preprocessing import normalize

  def predict(variables, pixels):
    logits = module.apply(variables, normalize(pixels), train=False)
    return jax.nn.softmax(logits.astype(np.float32), axis=-1)
  return jax.jit(predict)


def top_k(probabilities: np.ndarray, k: int, names: Sequence[str]) -> list[dict[str, Any]]:
  """[{"index", "label", "prob"}] best first."""
  order = np.argsort(-probabilities, kind="stable")[:k]
  return [{"index": int(i), "label": names[i], "prob": float(probabilities[i])} for i in order]


def print_top(image: str, top: list[dict[str, Any]]) -> None:
  """The image's name, then one line per class: probability, index, name."""
  print(image)
  for entry in top:
    print(f"  {entry['prob']:7.2%}  {entry['index']:4d}  {entry['label']}")
