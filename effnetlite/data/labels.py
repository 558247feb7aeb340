"""ImageNet-1k class names (WordNet lemmas), shipped with the project."""

from __future__ import annotations

import functools
import os

_CLASSES_FILE = os.path.join(os.path.dirname(__file__), "resources", "imagenet_classes.tsv")


@functools.lru_cache(maxsize=None)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
  """(WordNet id, "name, synonym, ...") for the 1000 classes in label order."""
  with open(_CLASSES_FILE, encoding="utf-8") as handle:
    return tuple(tuple(line.rstrip("\n").split("\t", 1)) for line in handle)


def imagenet_label(index: int) -> str:
  """The first, most common name of an ImageNet class ("tabby", "espresso")."""
  return imagenet_classes()[index][1].split(",")[0]
