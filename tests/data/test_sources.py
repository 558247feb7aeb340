"""Held-out splits: carved per class by a hash of example ids, for tfds and image folders."""

import collections
import os
import random

import numpy as np
import pytest
from helpers import tiny_config
from PIL import Image

from effnetlite.data import sources


def test_holdout_ids_by_hand():
  ids = [f"a{i}" for i in range(10)] + ["b0", "b1", "b2"] + ["c0"]
  labels = [0] * 10 + [1] * 3 + [2]
  held = sources.holdout_ids(ids, labels, 0.2)
  counts = collections.Counter(label for i, label in zip(ids, labels) if i in held)
  # round(0.2 * 10) = 2, round(0.2 * 3) = 1, and a class of one keeps its only example.
  assert counts == {0: 2, 1: 1}
  # Chosen by a hash of the id, so any reading order gives the same examples.
  pairs = list(zip(ids, labels))
  random.Random(3).shuffle(pairs)
  assert sources.holdout_ids(*zip(*pairs), 0.2) == held


def _folder(root, per_class=10):
  rng = np.random.default_rng(0)
  for name in ("cat", "dog"):
    os.makedirs(root / "train" / name)
    for i in range(per_class):
      Image.fromarray(rng.integers(0, 255, (8, 8, 3), np.uint8)).save(
          root / "train" / name / f"{i}.png")


def test_folder_holdout_is_disjoint_and_per_class(tmp_path):
  _folder(tmp_path)
  config = tiny_config("folder", data_dir=str(tmp_path), holdout_fraction=0.2,
                       eval_split="holdout", train_split="train")
  train = sources.make_source(config.dataset, "train")
  held = sources.make_source(config.dataset, "holdout")
  assert (train.total_examples, held.total_examples) == (16, 4)
  train_ids, held_ids = set(train.example_ids()), set(held.example_ids())
  assert not train_ids & held_ids and len(train_ids | held_ids) == 20
  labels = collections.Counter(int(e["label"]) for e in held.dataset().as_numpy_iterator())
  assert labels == {0: 2, 1: 2}
  assert [i.split(os.sep)[1] for i in sorted(held_ids)] == ["cat"] * 2 + ["dog"] * 2
  assert held.identity()["ids_sha256"] == sources.ids_digest(sorted(held_ids, reverse=True))
  # The order the dataset yields is the order of example_ids: per-example results line up.
  yielded = [e["image"] for e in held.dataset().as_numpy_iterator()]
  for image_id, data in zip(held.example_ids(), yielded):
    assert open(tmp_path / image_id, "rb").read() == data


def test_tfds_holdout_of_the_digits(tmp_path):
  config = tiny_config(data_dir=str(tmp_path / "tfds"), holdout_fraction=0.1)
  whole = sources.make_source(tiny_config(data_dir=str(tmp_path / "tfds")).dataset, "train")
  labels = collections.Counter(int(e["label"]) for e in whole.dataset().as_numpy_iterator())
  train = sources.make_source(config.dataset, "train")
  held = sources.make_source(config.dataset, "holdout")
  expected = sum(int(round(0.1 * n)) for n in labels.values())  # per class, by hand
  assert held.total_examples == expected and train.total_examples == whole.total_examples - expected
  assert sum(1 for _ in held.dataset()) == expected
  assert sum(1 for _ in train.dataset(shuffle_seed=5)) == train.total_examples
  held_ids, train_ids = set(held.example_ids()), set(train.example_ids())
  assert not held_ids & train_ids and held_ids | train_ids == set(whole.example_ids())
  test = sources.make_source(config.dataset, "test")  # other splits are untouched
  assert test.total_examples == 359 and test.holdout_fraction == 0.0


def test_holdout_without_a_fraction_is_one_line(tmp_path):
  config = tiny_config(data_dir=str(tmp_path / "tfds"))
  with pytest.raises(sources.DataError, match="split 'holdout' is the part of "
                                              "config.dataset.train_split held out"):
    sources.make_source(config.dataset, "holdout")
