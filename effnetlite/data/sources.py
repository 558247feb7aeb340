"""Where examples come from: tfds datasets (ImageNet included), image folders, bundled digits.

A `Source` yields encoded images and integer labels for one split and one
process's disjoint share of it, and knows how many examples that share holds.
Decoding happens later, fused with cropping, in `effnetlite.data.pipeline`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import os
from typing import Any, Callable, Sequence

import ml_collections

from effnetlite.config import DEFAULT_DATA_DIR
from effnetlite.errors import UserError, warn

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# The split carved from train_split by config.dataset.holdout_fraction.
HOLDOUT_SPLIT = "holdout"
IMAGENET_ARCHIVES = ("ILSVRC2012_img_train.tar", "ILSVRC2012_img_val.tar")


class DataError(UserError):
  """A dataset that cannot be read as configured."""


@dataclasses.dataclass
class Source:
  """One split's examples for one process: a tf.data of {image: bytes, label: int}."""
  name: str
  split: str
  num_examples: int          # in this process's share
  total_examples: int        # in the whole split, all processes
  num_classes: int
  make_dataset: Any          # (shuffle_seed: int | None) -> tf.data.Dataset
  class_names: tuple[str, ...] = ()
  # The ids of the split's examples in unshuffled `dataset()` order (tfds ids, or image
  # paths relative to the folder); None in a multi-process job, where a process reads a share.
  list_ids: Callable[[], list[str]] | None = None
  holdout_fraction: float = 0.0  # > 0: a part of (or all but) a held-out split

  def dataset(self, shuffle_seed: int | None = None):
    return self.make_dataset(shuffle_seed)

  def example_ids(self) -> list[str] | None:
    return self.list_ids() if self.list_ids is not None else None

  def identity(self, ids: Sequence[str] | None = None) -> dict[str, Any]:
    """What makes two evaluations comparable: the split, its carving and its examples
    (`ids`: `example_ids()` when the caller has listed them already)."""
    ids = self.example_ids() if ids is None else ids
    return {"dataset": self.name, "split": self.split, "holdout_fraction": self.holdout_fraction,
            "examples": self.total_examples,
            "ids_sha256": ids_digest(ids) if ids is not None else None}


def ids_digest(ids: Sequence[str]) -> str:
  """sha256 of the sorted example ids: equal for the same examples in any order."""
  return hashlib.sha256("\n".join(sorted(ids)).encode()).hexdigest()


def _rank(example_id: str) -> str:
  """A fixed pseudo-random order of examples that no reading order changes."""
  return hashlib.sha1(example_id.encode()).hexdigest()


def holdout_ids(ids: Sequence[str], labels: Sequence[int], fraction: float) -> set[str]:
  """round(fraction * n) examples of each class of n (at least one of a class of two or
  more), chosen by a hash of their ids: the same on every machine and in every run."""
  by_class: dict[int, list[str]] = {}
  for example_id, label in zip(ids, labels):
    by_class.setdefault(int(label), []).append(example_id)
  held = set()
  for members in by_class.values():
    count = int(round(fraction * len(members)))
    if len(members) >= 2:
      count = min(max(count, 1), len(members) - 1)
    else:
      count = 0
    held.update(sorted(members, key=_rank)[:count])
  return held


def _data_dir(config: ml_collections.ConfigDict) -> str:
  return os.path.expanduser(config.data_dir or DEFAULT_DATA_DIR)


def make_source(dataset_config: ml_collections.ConfigDict, split: str,
                process_index: int = 0, process_count: int = 1) -> Source:
  """The source a config names: "folder", "digits", or any tfds image dataset."""
  name = dataset_config.name
  fraction = dataset_config.get("holdout_fraction", 0.0)
  if split == HOLDOUT_SPLIT and not fraction > 0:
    raise DataError(f"split {HOLDOUT_SPLIT!r} is the part of config.dataset.train_split held out "
                    "by config.dataset.holdout_fraction, which is 0; set it (e.g. 0.1) or name "
                    "another split")
  carve = fraction > 0 and split in (HOLDOUT_SPLIT, dataset_config.train_split)
  if name == "folder":
    return folder_source(dataset_config, split, process_index, process_count, carve)
  if name == "digits":
    from effnetlite.data import digits  # noqa: F401  registers effnetlite_digits
    name = "effnetlite_digits"
  if carve:
    return tfds_holdout_source(dataset_config, name, split == HOLDOUT_SPLIT, process_index,
                               process_count)
  return tfds_source(dataset_config, name, split, process_index, process_count)


def _tfds_builder(dataset_config: ml_collections.ConfigDict, name: str):
  import tensorflow_datasets as tfds
  try:
    return tfds.builder(name, data_dir=_data_dir(dataset_config))
  except tfds.core.registered.DatasetNotFoundError:
    raise DataError(f"unknown dataset {name!r}; set config.dataset.name to a tfds image "
                    "dataset, 'folder' (config.dataset.data_dir/<split>/<class>/*.jpg) or "
                    "'digits' (bundled, offline)") from None


def _prepare(builder, dataset_config: ml_collections.ConfigDict, name: str) -> None:
  """Builds datasets whose data is local (bundled digits, ImageNet's manual archives).

  Once: processes and runs that start together (the tasks of a job, a search's workers)
  take a file lock beside the data; the first prepares, the others wait and read it.
  """
  import filelock
  if builder.is_prepared():  # a shared, read-only copy needs no lock
    return
  lock = os.path.join(_data_dir(dataset_config), f".{builder.name}.prepare.lock")
  try:
    os.makedirs(os.path.dirname(lock), exist_ok=True)
    with filelock.FileLock(lock):
      if builder.is_prepared():  # by another process meanwhile: this builder's info is stale
        builder.info.read_from_directory(builder.data_dir)
        return
      _prepare_now(builder, dataset_config, name)
  except PermissionError as error:
    raise DataError(f"dataset {name!r} is not prepared and {error.filename} is not writable; "
                    "set config.dataset.data_dir to a folder you can write to") from None


def _prepare_now(builder, dataset_config: ml_collections.ConfigDict, name: str) -> None:
  import tensorflow_datasets as tfds
  if name == "effnetlite_digits":
    builder.download_and_prepare()
    return
  if name == "imagenet2012":
    manual = os.path.expanduser(dataset_config.manual_dir or
                                os.path.join(_data_dir(dataset_config), "downloads", "manual"))
    absent = [a for a in IMAGENET_ARCHIVES if not os.path.exists(os.path.join(manual, a))]
    if absent:
      raise DataError(
          f"imagenet2012 is not prepared in {_data_dir(dataset_config)} and {manual} lacks "
          f"{', '.join(absent)}: download them from image-net.org into that folder "
          "(config.dataset.manual_dir), then rerun to build the tfds files")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=manual))


def _split_size(builder, split: Any, read: Any) -> int:
  """Examples in a split: from the metadata, preparing the data first if needed."""
  try:
    return builder.info.splits[split].num_examples
  except (KeyError, ValueError):
    dataset = read(split)  # builds the data if we can, or says why not
  try:
    return builder.info.splits[split].num_examples
  except (KeyError, ValueError):  # e.g. under tfds.testing.mock_data: count instead
    count = int(dataset.cardinality())
    return count if count >= 0 else int(dataset.reduce(0, lambda n, _: n + 1))


def _empty(split: str, name: str) -> str:
  return (f"split {split!r} of dataset {name!r} is empty; point config.dataset.train_split / "
          "eval_split (or --split) at a split with examples")


def tfds_source(dataset_config: ml_collections.ConfigDict, name: str, split: str,
                process_index: int = 0, process_count: int = 1) -> Source:
  import tensorflow_datasets as tfds
  builder = _tfds_builder(dataset_config, name)
  features = builder.info.features
  if "image" not in features or "label" not in features:
    raise DataError(f"dataset {name!r} has features {sorted(features)}, not 'image' and "
                    "'label'; pick an image classification dataset")
  num_classes = features["label"].num_classes
  share = tfds.even_splits(split, n=process_count, drop_remainder=False)[process_index]

  def read(subsplit, shuffle_seed=None):
    kwargs = dict(split=subsplit, shuffle_files=shuffle_seed is not None,
                  decoders={"image": tfds.decode.SkipDecoding()},
                  read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed))
    try:
      return builder.as_dataset(**kwargs)
    except AssertionError:  # tfds' "could not find data": build it if we can, once
      _prepare(builder, dataset_config, name)
      return builder.as_dataset(**kwargs)
    except (ValueError, KeyError) as error:
      if "corresponds to no data" in str(error):
        raise DataError(_empty(split, name)) from None
      raise DataError(f"dataset {name!r} has no split {split!r} ({error}); set "
                      "config.dataset.train_split / eval_split") from None

  def dataset(shuffle_seed=None):
    return read(share, shuffle_seed).map(lambda ex: {"image": ex["image"], "label": ex["label"]})

  total = _split_size(builder, split, read)
  if total == 0:
    raise DataError(_empty(split, name))
  local = total if process_count == 1 else _split_size(builder, share, read)
  return Source(name, split, local, total, num_classes, dataset, _class_names(name, features),
                list_ids=(lambda: [i for i, _ in _tfds_index(builder, split, lambda: read(split))])
                if process_count == 1 else None)


def _class_names(name: str, features: Any) -> tuple[str, ...]:
  if name == "imagenet2012":  # tfds names its classes by WordNet id; people read the lemmas
    from effnetlite.data import labels
    return tuple(labels.imagenet_names())
  return tuple(getattr(features["label"], "names", ()))


def _tfds_index(builder, split: str, prepare: Callable[[], Any]) -> list[tuple[str, int]]:
  """(tfds id, label) of every example of a split in reading order, listed once (a pass
  over the records, images not decoded) and kept beside the prepared data."""
  import tensorflow_datasets as tfds

  from effnetlite.utils import files
  safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in split)  # "train[:90%]"
  cache = os.path.join(builder.data_dir, f"effnetlite-index-{safe}.json")
  if os.path.isfile(cache):
    with open(cache, encoding="utf-8") as handle:
      return [(i, int(label)) for i, label in json.load(handle)]
  prepare()  # prepares the data if it can, or says why not
  dataset = builder.as_dataset(split=split, decoders={"image": tfds.decode.SkipDecoding()},
                               read_config=tfds.ReadConfig(add_tfds_id=True))
  index = [(i.decode(), int(label)) for i, label in
           dataset.map(lambda ex: (ex["tfds_id"], ex["label"])).as_numpy_iterator()]
  try:
    files.write_atomically(cache, json.dumps(index))
  except OSError:  # a read-only data_dir: listed again next time
    pass
  return index


def tfds_holdout_source(dataset_config: ml_collections.ConfigDict, name: str, held_out: bool,
                        process_index: int = 0, process_count: int = 1) -> Source:
  """train_split without (held_out=False) or with only (True) its held-out examples."""
  import tensorflow as tf
  import tensorflow_datasets as tfds
  train_split = dataset_config.train_split
  whole = tfds_source(dataset_config, name, train_split)
  builder = _tfds_builder(dataset_config, name)

  def read(subsplit, shuffle_seed=None):
    return builder.as_dataset(split=subsplit, shuffle_files=shuffle_seed is not None,
                              decoders={"image": tfds.decode.SkipDecoding()},
                              read_config=tfds.ReadConfig(shuffle_seed=shuffle_seed,
                                                          add_tfds_id=True))
  index = _tfds_index(builder, train_split, whole.dataset)  # whole.dataset() prepares
  fraction = dataset_config.holdout_fraction
  held = holdout_ids([i for i, _ in index], [label for _, label in index], fraction)
  chosen = [i for i, _ in index if (i in held) == held_out]
  split = HOLDOUT_SPLIT if held_out else train_split
  if not chosen:
    raise DataError(_empty(split, name))
  mine = chosen[process_index::process_count]  # what ds.shard gives this process

  def dataset(shuffle_seed=None):
    table = tf.lookup.StaticHashTable(tf.lookup.KeyValueTensorInitializer(
        tf.constant(sorted(held)), tf.ones(len(held), tf.int64)), default_value=0)
    ds = read(train_split, shuffle_seed).filter(
        lambda ex: tf.equal(table.lookup(ex["tfds_id"]), int(held_out)))
    if process_count > 1:
      ds = ds.shard(process_count, process_index)
    return ds.map(lambda ex: {"image": ex["image"], "label": ex["label"]})
  return Source(name, split, len(mine), len(chosen), whole.num_classes, dataset,
                whole.class_names, list_ids=(lambda: list(chosen)) if process_count == 1 else None,
                holdout_fraction=fraction)


def _readable(path: str) -> bool:
  from PIL import Image
  try:
    with Image.open(path) as image:
      image.verify()
    return True
  except Exception:  # noqa: BLE001 - PIL raises many types for broken files
    return False


def _check_classes_trained(class_root: str, split_root: str, classes: list[str]) -> None:
  """Every class folder of `split_root` that holds images is one of training's `classes`.

  The model has no output for a class that training lacks: its images cannot be
  scored, and leaving them out would change the split without a word.
  """
  def has_images(folder: str) -> bool:
    return os.path.isdir(folder) and any(f.lower().endswith(IMAGE_EXTENSIONS)
                                         for f in os.listdir(folder))
  extra = sorted(d for d in set(os.listdir(split_root)) - set(classes)
                 if has_images(os.path.join(split_root, d)))
  if extra:
    named = ", ".join(extra[:5]) + (f" and {len(extra) - 5} more" if len(extra) > 5 else "")
    raise DataError(f"image folder {split_root} has class folder(s) {named} that the training "
                    f"folder {class_root} lacks, so the model cannot predict them; add them to "
                    f"{class_root} and train, or move them out of {split_root}")


def folder_source(dataset_config: ml_collections.ConfigDict, split: str,
                  process_index: int = 0, process_count: int = 1,
                  carve: bool = False) -> Source:
  """data_dir/<split>/<class>/<image>; classes are the train split's sorted sub-folders.

  With `carve`, `split` is train_split without its held-out images, or HOLDOUT_SPLIT:
  only them (config.dataset.holdout_fraction of each class).
  """
  import tensorflow as tf
  root = os.path.expanduser(dataset_config.data_dir)
  listed_split = dataset_config.train_split if carve else split
  class_root = os.path.join(root, dataset_config.train_split)
  split_root = os.path.join(root, listed_split)
  for folder in (class_root, split_root):
    if not os.path.isdir(folder):
      raise DataError(f"image folder {folder} does not exist; lay images out as "
                      f"{root}/<split>/<class>/<image>.jpg (config.dataset.data_dir)")
  classes = sorted(d for d in os.listdir(class_root)
                   if os.path.isdir(os.path.join(class_root, d)))
  if split_root != class_root:
    _check_classes_trained(class_root, split_root, classes)
  files, labels = [], []
  for label, name in enumerate(classes):
    directory = os.path.join(split_root, name)
    if os.path.isdir(directory):
      for filename in sorted(os.listdir(directory)):
        if filename.lower().endswith(IMAGE_EXTENSIONS):
          files.append(os.path.join(directory, filename))
          labels.append(label)
  if not files:
    raise DataError(f"image folder {split_root} holds no images in class sub-folders; add "
                    f"<class>/<image>.jpg files ({', '.join(IMAGE_EXTENSIONS)})")
  with concurrent.futures.ThreadPoolExecutor(8) as pool:
    readable = list(pool.map(_readable, files))
  broken = [f for f, ok in zip(files, readable) if not ok]
  if broken:
    if dataset_config.corrupt_images == "error":
      raise DataError(f"{len(broken)} unreadable image(s) in {split_root}, first {broken[0]}; "
                      "remove them or set config.dataset.corrupt_images=skip")
    warn(f"skipping {len(broken)} unreadable image(s) in {split_root}, first {broken[0]}")
    files = [f for f, ok in zip(files, readable) if ok]
    labels = [label for label, ok in zip(labels, readable) if ok]
  ids = [os.path.relpath(f, root) for f in files]
  fraction = 0.0
  if carve:
    fraction = dataset_config.holdout_fraction
    held = holdout_ids(ids, labels, fraction)
    keep = [(i in held) == (split == HOLDOUT_SPLIT) for i in ids]
    files, labels, ids = ([v for v, k in zip(values, keep) if k] for values in (files, labels, ids))
    if not files:
      raise DataError(_empty(split, "folder"))
  total = len(files)
  files, labels = files[process_index::process_count], labels[process_index::process_count]

  def dataset(shuffle_seed=None):
    ds = tf.data.Dataset.from_tensor_slices((files, labels))
    if shuffle_seed is not None:  # the file list is small: shuffle it whole
      ds = ds.shuffle(len(files), seed=shuffle_seed, reshuffle_each_iteration=False)
    return ds.map(lambda f, y: {"image": tf.io.read_file(f), "label": tf.cast(y, tf.int64)},
                  num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
  return Source("folder", split, len(files), total, len(classes), dataset, tuple(classes),
                list_ids=(lambda: list(ids)) if process_count == 1 else None,
                holdout_fraction=fraction)
