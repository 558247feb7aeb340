"""Batches for training and evaluation, sharded over the mesh's batch axis.

Training order is a pure function of (seed, step): epoch e shuffles with a seed
derived from (seed, e), each example's crop/flip seed is (seed, e, position), and
a run resumed at step k skips the k batches it already saw before decoding. So a
resumed run sees exactly the batches an uninterrupted one would have.

Training images leave the host as uint8 pixels (the train step normalises them
on the device); evaluation images as float32 pixels, as the TF evaluation code.
Each epoch is its own tf.data pipeline (the source's file order is seeded per
epoch); the next one is built and started in a background thread while the last
batches of the current one are consumed, so an epoch boundary does not stall.

Evaluation sees every example once: the last partial batch is padded and
masked, and processes with fewer examples add fully masked batches so that all
of them take the same number of steps.
"""

from __future__ import annotations

import collections
import concurrent.futures
import functools
import itertools
import math
import os
import types
from typing import Any, Iterator

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from effnetlite.data import preprocessing
from effnetlite.data.sources import Source
from effnetlite.errors import UserError

Batch = dict[str, np.ndarray]
BATCH_AXIS = "batch"


def _tf():
  import tensorflow as tf
  try:  # the input pipeline must not take accelerator memory from JAX
    tf.config.set_visible_devices([], "GPU")
  except RuntimeError:  # already initialised: it was hidden by the first call
    pass
  return tf


def make_mesh() -> Mesh:
  """One data-parallel mesh over every device of every process."""
  return Mesh(np.asarray(jax.devices()), (BATCH_AXIS,))


def local_batch_size(global_batch: int, what: str = "config.batch_size") -> int:
  """This process's share of a global batch; checks it divides over the devices."""
  devices = jax.device_count()
  if global_batch <= 0 or global_batch % devices:
    raise UserError(f"{what}={global_batch} is not a positive multiple of the {devices} "
                    f"devices; use a multiple of {devices}")
  return global_batch // jax.process_count()


def steps_per_epoch(source: Source, global_batch: int) -> int:
  """Full global batches per epoch (every process must take the same number).

  A split smaller than one batch is an error: its epochs would hold no batch at all.
  """
  smallest_share = source.total_examples // jax.process_count()
  if smallest_share < global_batch // jax.process_count():
    raise UserError(f"the {source.split!r} split of {source.name!r} holds "
                    f"{source.total_examples} examples, fewer than one batch "
                    f"(config.batch_size={global_batch}); set config.batch_size to at most "
                    f"{source.total_examples}")
  return smallest_share // (global_batch // jax.process_count())


def _epoch_seed(seed: int, epoch: int) -> int:
  return (seed * 1_000_003 + epoch * 7919 + 17) % (2 ** 31 - 1)


def _train_preprocess(config: ml_collections.ConfigDict, seed: int, epoch: int):
  tf = _tf()
  model, augment = config.model, config.augment
  base = tf.constant([_epoch_seed(seed, epoch), 0], tf.int64)

  def preprocess(position, example):
    crop_seed, flip_seed, augment_seed = tf.unstack(
        tf.random.experimental.stateless_split(base + tf.stack([0, position]), 3))
    image = preprocessing.decode_and_random_crop(
        example["image"], model.resolution, crop_seed, model.resize_method,
        augment.min_object_covered, tuple(augment.aspect_ratio_range),
        tuple(augment.area_range), augment.max_attempts, model.eval_crop_fraction)
    image = preprocessing.to_uint8(image)  # rounding commutes with the flip: flip 1/4 the bytes
    if augment.random_flip:
      image = tf.image.stateless_random_flip_left_right(image, flip_seed)
    if augment.policy != "none":  # on the uint8 pixels, as the TF code (which truncates)
      from effnetlite.data import augment as augment_lib
      image = preprocessing.to_uint8(
          augment_lib.apply_policy(tf.cast(image, tf.float32), augment, augment_seed))
    return {"image": image, "label": tf.cast(example["label"], tf.int32)}
  return preprocess


@functools.cache
def _mixup_blend():
  """weight * images + (1 - weight) * reversed images, rounded to uint8, as one XLA loop
  compiled once per process: TF's separate ops (cast, reverse, two products, sum, round,
  clip, cast) each made a pass over the batch and cost about a fifth of the host's time
  per image."""
  tf = _tf()

  def blend(images, weight):
    pixels = tf.cast(images, tf.float32)
    return preprocessing.to_uint8(weight * pixels + (1 - weight) * tf.reverse(pixels, [0]))
  return tf.function(blend, jit_compile=True)


def _mixup(alpha: float, seed: int, epoch: int):
  """Mixes each batch with its reverse; the loss weighs both labels by `mix`."""
  tf = _tf()
  blend = _mixup_blend()

  def mix(step, batch):
    seeds = tf.random.experimental.stateless_split(
        tf.constant([_epoch_seed(seed, epoch), 1], tf.int64) + tf.stack([0, step]), 2)
    a = tf.random.stateless_gamma([], seeds[0], alpha)
    b = tf.random.stateless_gamma([], seeds[1], alpha)
    weight = a / (a + b)
    size = tf.shape(batch["label"])[0]
    return {"image": blend(batch["image"], weight),
            "label": batch["label"], "mix_label": tf.reverse(batch["label"], [0]),
            "mix": tf.fill([size], weight)}
  return mix


def _options(dataset):
  """Deterministic order; AUTOTUNE maps on every core this process may use, prefetch
  buffers sized by tf.data's per-buffer tuner, and no autotuning model.

  The model's thread is what a deleted iterator waits for: in TF 2.21 it sleeps out its
  optimisation period (doubling up to 60 s) before it notices, so a stop, the end of
  training and each evaluation could wait up to a minute, past SLURM's 30 s grace
  (benchmarks/README.md). Without the model, an AUTOTUNE map runs `initial_parallelism`
  calls at once.
  """
  tf = _tf()
  options = tf.data.Options()
  options.deterministic = True
  options.autotune.enabled = False
  options.autotune.initial_parallelism = len(os.sched_getaffinity(0))  # TF's default caps 16
  options.threading.private_threadpool_size = 0
  return dataset.with_options(options)


# Batches before the end of an epoch at which the next epoch's pipeline is built and
# its first batch requested: tracing, iterator start-up and the shuffle buffer's fill
# (16,384 encoded images for ImageNet) then overlap the end of the current epoch.
NEXT_EPOCH_LEAD = 4


def _epoch_batches(config: ml_collections.ConfigDict, source: Source, epoch: int, skip: int,
                   batch: int, per_epoch: int) -> Iterator[Batch]:
  """Epoch `epoch`'s local batches after its first `skip` ones, as a tf.data iterator."""
  tf = _tf()
  seed = _epoch_seed(config.seed, epoch)
  ds = source.dataset(shuffle_seed=seed)
  ds = ds.shuffle(config.dataset.shuffle_buffer, seed=seed, reshuffle_each_iteration=False)
  ds = ds.take(per_epoch * batch).enumerate().skip(skip * batch)  # skip before decoding
  ds = ds.map(_train_preprocess(config, config.seed, epoch), tf.data.AUTOTUNE,
              deterministic=True)
  ds = ds.batch(batch, drop_remainder=True)
  if config.augment.mixup_alpha > 0:
    ds = ds.enumerate(skip).map(_mixup(config.augment.mixup_alpha, config.seed, epoch))
  return _options(ds.prefetch(tf.data.AUTOTUNE)).as_numpy_iterator()


def train_batches(config: ml_collections.ConfigDict, source: Source, start_step: int = 0,
                  global_batch: int | None = None) -> Iterator[Batch]:
  """Endless local training batches from global step `start_step` on."""
  global_batch = global_batch or config.batch_size
  batch = local_batch_size(global_batch)
  per_epoch = steps_per_epoch(source, global_batch)
  first_epoch = start_step // per_epoch

  def start(epoch: int) -> Iterator[Batch]:
    skip = start_step - epoch * per_epoch if epoch == first_epoch else 0
    batches = _epoch_batches(config, source, epoch, skip, batch, per_epoch)
    return itertools.chain([next(batches)], batches)  # its first batch already made

  pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="next-epoch")
  upcoming = pool.submit(start, first_epoch)
  try:
    for epoch in itertools.count(first_epoch):
      batches, upcoming = upcoming.result(), None
      left = per_epoch - (start_step - epoch * per_epoch if epoch == first_epoch else 0)
      # Exactly `left` batches: asking the spent iterator for its end while the next
      # epoch's pipeline runs sometimes took 2 s, and so did deleting it here; the
      # worker deletes it once the next epoch has started.
      for index, item in enumerate(itertools.islice(batches, left)):
        if index == max(left - NEXT_EPOCH_LEAD, 0):
          upcoming = pool.submit(start, epoch + 1)
        yield item
      spent = [batches]
      del batches
      pool.submit(spent.clear)
  finally:  # closed early: a next epoch already started finishes its first batch, no more
    if upcoming is not None:
      upcoming.cancel()
    pool.shutdown(wait=False)


def train_batch_spec(config: ml_collections.ConfigDict, global_batch: int
                     ) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
  """(shape, dtype) of each array of a global training batch, as `train_batches` yields
  them: what a step compiled ahead of time (`effnetlite.train.aot`) is given."""
  side = config.model.resolution
  spec = {"image": ((global_batch, side, side, 3), np.dtype(np.uint8)),
          "label": ((global_batch,), np.dtype(np.int32))}
  if config.augment.mixup_alpha > 0:
    spec.update(mix_label=((global_batch,), np.dtype(np.int32)),
                mix=((global_batch,), np.dtype(np.float32)))
  return spec


def eval_batches(config: ml_collections.ConfigDict, source: Source,
                 global_batch: int | None = None) -> Iterator[Batch]:
  """Every example of the split once, as masked local batches (mask 0 = padding)."""
  tf = _tf()
  global_batch = global_batch or config.eval_batch_size
  batch = local_batch_size(global_batch, "config.eval_batch_size")
  model = config.model
  num_batches = eval_steps(source, global_batch)

  def preprocess(example):
    image = preprocessing.decode_and_center_crop(example["image"], model.resolution,
                                                 model.resize_method, model.eval_crop_fraction)
    return {"image": image, "label": tf.cast(example["label"], tf.int32),
            "mask": tf.constant(1.0, tf.float32)}
  ds = source.dataset().map(preprocess, tf.data.AUTOTUNE, deterministic=True)
  ds = _options(ds.batch(batch).prefetch(tf.data.AUTOTUNE))
  shape = (batch, model.resolution, model.resolution, 3)
  count = 0
  for count, local in enumerate(ds.as_numpy_iterator(), start=1):
    yield _pad(local, batch)
  for _ in range(num_batches - count):  # this process ran out: keep step with the others
    yield {"image": np.zeros(shape, np.float32), "label": np.zeros(batch, np.int32),
           "mask": np.zeros(batch, np.float32)}


def eval_steps(source: Source, global_batch: int) -> int:
  largest_share = math.ceil(source.total_examples / jax.process_count())
  return math.ceil(largest_share / (global_batch // jax.process_count()))


def _pad(batch: Batch, size: int) -> Batch:
  missing = size - len(batch["label"])
  if missing == 0:
    return batch
  return {k: np.concatenate([v, np.zeros((missing,) + v.shape[1:], v.dtype)])
          for k, v in batch.items()}


def to_global(batch: Batch, mesh: Mesh) -> dict[str, jax.Array]:
  """Local batches of all processes -> global arrays sharded over the batch axis."""
  sharding = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))
  return {k: jax.make_array_from_process_local_data(sharding, v) for k, v in batch.items()}


def prefetch_to_device(batches: Iterator[Batch], mesh: Mesh, size: int = 2
                       ) -> Iterator[dict[str, jax.Array]]:
  """Keeps `size` batches in flight to the devices (transfers overlap compute)."""
  queue: collections.deque[Any] = collections.deque()
  try:
    for batch in batches:
      queue.append(to_global(batch, mesh))
      if len(queue) > size:
        yield queue.popleft()
    while queue:
      yield queue.popleft()
  finally:  # closed early: close the source too, so its pipeline stops with us
    if isinstance(batches, types.GeneratorType):
      batches.close()
