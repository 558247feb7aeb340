"""Class names: ImageNet-1k's (WordNet lemmas, shipped with the project) or a run's own."""

from __future__ import annotations

import functools
import os

from effnetlite import runs
from effnetlite.errors import UserError

_CLASSES_FILE = os.path.join(os.path.dirname(__file__), "resources", "imagenet_classes.tsv")
IMAGENET_CLASSES = 1000


@functools.lru_cache(maxsize=None)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
  """(WordNet id, "name, synonym, ...") for the 1000 classes in label order."""
  with open(_CLASSES_FILE, encoding="utf-8") as handle:
    return tuple(tuple(line.rstrip("\n").split("\t", 1)) for line in handle)


def imagenet_label(index: int) -> str:
  """The first, most common name of an ImageNet class ("tabby", "espresso")."""
  return imagenet_classes()[index][1].split(",")[0]


def imagenet_names() -> tuple[str, ...]:
  return tuple(imagenet_label(i) for i in range(IMAGENET_CLASSES))


def class_names(pretrained: bool | str = True, num_classes: int | None = None) -> list[str]:
  """The names of the classes a model's outputs stand for, in output order.

  `pretrained` as `create_model(pretrained=...)` takes it: a training run directory (or
  RUN/best) gives the names recorded from its dataset; True, "pretrained" and ImageNet
  weight files give ImageNet's. Weights without recorded names and a class count other
  than 1000 (`num_classes`) fall back to "class_0", "class_1", ...
  """
  if isinstance(pretrained, str) and pretrained not in ("pretrained", "random"):
    named = runs.run_weights(os.path.abspath(os.path.expanduser(pretrained)))
    run = named.run.path if named else None
    names = named.run.class_names() if named else None
    if names is not None:
      if num_classes is not None and len(names) != num_classes:
        raise UserError(f"run {run} has {len(names)} classes, not {num_classes}; pass the "
                        "run's own config (or leave --config out)")
      return names
  count = IMAGENET_CLASSES if num_classes is None else num_classes
  if count == IMAGENET_CLASSES:
    return list(imagenet_names())
  return [f"class_{i}" for i in range(count)]
