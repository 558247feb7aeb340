"""Held-out splits: carved per class by a hash of example ids, for tfds and image folders."""

import collections
import os
import random
import shutil

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


def _folder(root, per_class=10, split="train", classes=("cat", "dog")):
  rng = np.random.default_rng(0)
  for name in classes:
    os.makedirs(root / split / name)
    for i in range(per_class):
      Image.fromarray(rng.integers(0, 255, (8, 8, 3), np.uint8)).save(
          root / split / name / f"{i}.png")


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


def test_processes_that_start_together_prepare_the_bundled_data_once(tmp_path):
  """Two processes on an empty data_dir (two tasks of a job): one prepares, the other waits
  and reads the same data; neither fails on the other's half-written files."""
  import subprocess
  import sys

  from helpers import PYTHONPATH, ROOT
  code = ("import sys; from helpers import tiny_config; from effnetlite.data import sources; "
          "s = sources.make_source(tiny_config(data_dir=sys.argv[1]).dataset, 'train'); "
          "print(s.num_examples)")
  env = dict(os.environ, PYTHONPATH=PYTHONPATH, TF_CPP_MIN_LOG_LEVEL="3")
  both = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for _ in range(2)]
  results = [process.communicate(timeout=600) + (process.returncode,) for process in both]
  assert [code for _, _, code in results] == [0, 0], [err[-2000:] for _, err, _ in results]
  assert [out.splitlines()[-1] for out, _, _ in results] == ["1438", "1438"]  # digits' train
  assert sum("Downloading and preparing" in out for out, _, _ in results) == 1
  assert os.listdir(tmp_path / "effnetlite_digits") == ["1.0.0"]  # no half-prepared copy


def test_folder_class_that_training_lacks_is_one_line(tmp_path):
  """Its images cannot be scored (the model has no output for it), and dropping them would
  change the split without a word."""
  _folder(tmp_path)
  _folder(tmp_path, per_class=2, split="val", classes=("bird", "cat", "dog", "fox"))
  os.makedirs(tmp_path / "val" / "notes")  # no images: no class, nothing dropped
  config = tiny_config("folder", data_dir=str(tmp_path), train_split="train", eval_split="val")
  with pytest.raises(sources.DataError) as error:
    sources.make_source(config.dataset, "val")
  assert str(error.value) == (
      f"image folder {tmp_path / 'val'} has class folder(s) bird, fox that the training folder "
      f"{tmp_path / 'train'} lacks, so the model cannot predict them; add them to "
      f"{tmp_path / 'train'} and train, or move them out of {tmp_path / 'val'}")
  for extra in ("bird", "fox"):
    shutil.rmtree(tmp_path / "val" / extra)
  val = sources.make_source(config.dataset, "val")
  assert val.class_names == ("cat", "dog") and val.total_examples == 4
  _folder(tmp_path, per_class=2, split="few", classes=("dog",))  # a subset of training's: fine
  few = sources.make_source(config.dataset, "few")
  assert [int(e["label"]) for e in few.dataset().as_numpy_iterator()] == [1, 1]
