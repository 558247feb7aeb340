"""The train step and its state. It knows the model and the optimiser, not files or data.

It takes global batches sharded over the mesh's batch axis and a replicated
state; under `jax.jit` the BN statistics are computed over the global batch.
"""

from __future__ import annotations

from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import ml_collections
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from effnetlite.data.pipeline import BATCH_AXIS
from effnetlite.data.preprocessing import normalize
from effnetlite.train import ema as ema_lib
from effnetlite.train import optimizer as optimizer_lib


@flax.struct.dataclass
class TrainState:
  """Everything a resumed run needs (the data position is `step`)."""
  step: jax.Array
  params: Any
  batch_stats: Any
  opt_state: Any
  ema_params: Any
  ema_batch_stats: Any
  rng: jax.Array


def create_train_state(variables: dict[str, Any], optimizer: optax.GradientTransformation,
                       rng: jax.Array) -> TrainState:
  params, batch_stats = variables["params"], variables.get("batch_stats", {})
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, batch_stats=batch_stats,
                    opt_state=optimizer.init(params), ema_params=params,
                    ema_batch_stats=batch_stats, rng=rng)


def cross_entropy(logits: jax.Array, labels: jax.Array, num_classes: int,
                  label_smoothing: float = 0.0) -> jax.Array:
  """Per-example softmax cross-entropy against smoothed one-hot labels (TF's rule:
  (1 - s) * one_hot + s / num_classes)."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, num_classes), label_smoothing)
  return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def _all_finite(tree: Any) -> jax.Array:
  return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(tree)]))


def make_train_step(module: Any, config: ml_collections.ConfigDict,
                    optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule) -> Callable[[TrainState, dict], tuple]:
  """(state, batch) -> (state, metrics). A non-finite loss or gradient never
  reaches the weights when `config.nonfinite_loss == "skip"`; with "stop" the
  update is applied and the caller stops on `metrics["finite"] == 0`."""
  num_classes = config.dataset.num_classes
  smoothing = config.optimizer.label_smoothing
  weight_decay = config.optimizer.weight_decay
  skip_nonfinite = config.nonfinite_loss == "skip"

  def step_fn(state: TrainState, batch: dict) -> tuple[TrainState, dict]:
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
      logits, updated = module.apply(
          {"params": params, "batch_stats": state.batch_stats}, normalize(batch["image"]),
          train=True, mutable=["batch_stats"], rngs={"dropout": rng})
      loss = cross_entropy(logits, batch["label"], num_classes, smoothing)
      if "mix" in batch:  # mixup: the batch's reverse supplies the second label
        mixed = cross_entropy(logits, batch["mix_label"], num_classes, smoothing)
        loss = batch["mix"] * loss + (1.0 - batch["mix"]) * mixed
      data_loss = loss.mean()
      return data_loss + weight_decay * optimizer_lib.l2_loss(params), (logits, updated, data_loss)

    (loss, (logits, updated, data_loss)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    batch_stats = updated["batch_stats"]
    num_updates = state.step + 1  # TF reads global_step after the increment
    new = state.replace(
        step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state,
        ema_params=ema_lib.update_ema(state.ema_params, params, num_updates, config.ema_decay),
        ema_batch_stats=ema_lib.update_ema(state.ema_batch_stats, batch_stats, num_updates,
                                           config.ema_decay))
    finite = jnp.isfinite(loss) & _all_finite(grads)
    if skip_nonfinite:
      new = jax.tree.map(lambda n, o: jnp.where(finite, n, o), new,
                         state.replace(step=state.step + 1))
    metrics = {
        "loss": loss, "cross_entropy": data_loss,
        "top1": jnp.mean(jnp.argmax(logits, -1) == batch["label"]),
        "learning_rate": schedule(state.step), "grad_norm": optax.tree.norm(grads),
        "finite": finite.astype(jnp.float32)}
    return new, metrics
  return step_fn


def jit_train_step(step_fn: Callable[[TrainState, dict], tuple], mesh: Mesh) -> Callable:
  """`step_fn` jitted as training runs it: the state replicated and donated (the new
  state reuses its buffers), the batch split over the mesh's batch axis. Also what
  `effnetlite.train.aot` compiles for accelerators."""
  replicated = NamedSharding(mesh, PartitionSpec())
  split = NamedSharding(mesh, PartitionSpec(BATCH_AXIS))
  return jax.jit(step_fn, in_shardings=(replicated, split),
                 out_shardings=(replicated, replicated), donate_argnums=0)
