"""Where a run's training state comes from: the ladder fresh, resume, fine-tune, pretrained.

`initial_state` takes the first rung that applies: the run's newest readable checkpoint
(resume), else the TF initialisation with `config.init_from`'s weights loaded into it
('pretrained': the offline ImageNet weights; a run or a file: fine-tuning), else the TF
initialisation itself (fresh). A QAT run that does not resume starts its activation
ranges from the weights' own activations.

Resuming continues the same run, so `check_resume` refuses, before anything compiles,
the changes a checkpoint cannot honour: a resumed run must equal an uninterrupted one.
"""

from __future__ import annotations

import itertools
from typing import Any, Iterable

import jax
import ml_collections
import optax
import orbax.checkpoint as ocp

from effnetlite import quant, runs
from effnetlite.errors import UserError
from effnetlite.train import steps
from effnetlite.weights import checkpoints, factory, loading

# Keys a resumed session may change and still equal an uninterrupted run: when and how
# it logs, evaluates and saves, and how the same arithmetic is formulated (`model.depthwise`
# on another platform). `init_from` only chooses the weights of a run's first step.
HONOURED_ON_RESUME = (
    "log_every_steps", "eval_every_steps", "eval_batch_size", "checkpoint_every_steps",
    "checkpoint_every_minutes", "keep_checkpoints", "init_from", "model.name",
    "model.depthwise", "model.pointwise", "rematerialize", "dataset.eval_split",
    "model.eval_crop_fraction", "accept_changes_on_resume")
# Keys that change what a checkpoint's train state holds (the optimizer's state): no opt-in
# resumes across them, a new run starts from the weights.
STATE_KEYS = ("optimizer.name",)
# The training length: honoured unless the schedule's shape depends on the total.
LENGTH_KEYS = ("num_epochs", "max_steps")
SCHEDULES_OF_THE_TOTAL = ("cosine",)
# Training batches whose activations start a QAT run's moving-average ranges.
QAT_OBSERVED_BATCHES = 4


def total_steps(config: ml_collections.ConfigDict, steps_per_epoch: int) -> int:
  return (config.max_steps if config.max_steps > 0
          else int(round(config.num_epochs * steps_per_epoch)))


def check_resume(run: runs.Run, previous: ml_collections.ConfigDict,
                 config: ml_collections.ConfigDict, steps_per_epoch: int
                 ) -> tuple[list[tuple[str, Any, Any]], bool]:
  """(changed keys, whether the continuation is reproducible) of resuming `run`.

  Changes outside HONOURED_ON_RESUME (and a new total under a schedule that depends on
  it) are one UserError naming the first of them, unless
  `config.accept_changes_on_resume` accepts them for this session.
  """
  changes = [c for c in runs.differences(previous, config)
             if c[0] != "accept_changes_on_resume" and not c[0].startswith("search.")]
  same_total = (total_steps(previous, steps_per_epoch) == total_steps(config, steps_per_epoch))
  refused = [(key, old, new) for key, old, new in changes
             if key not in HONOURED_ON_RESUME and not (
                 key in LENGTH_KEYS and (config.optimizer.schedule not in SCHEDULES_OF_THE_TOTAL
                                         or same_total))]
  structural = [c for c in refused if c[0] in STATE_KEYS]
  if structural:
    key, old, new = structural[0]
    raise UserError(
        f"resuming {run.path} would change config.{key} from {old!r} to {new!r}, and its "
        f"checkpoints hold the state of the {old!r} optimizer; pass a new --workdir, or start "
        f"a new run from these weights with --config.init_from={run.path}")
  if refused and not config.accept_changes_on_resume:
    key, old, new = refused[0]
    why = (f" (the {config.optimizer.schedule} schedule depends on the total)"
           if key in LENGTH_KEYS else "")
    more = f" and {len(refused) - 1} more ({runs.describe(refused[1:])})" if refused[1:] else ""
    raise UserError(
        f"resuming {run.path} would change config.{key} from {old!r} to {new!r}{why}{more}, "
        "which its checkpoints cannot honour; pass a new --workdir, start a new run from these "
        f"weights with --config.init_from={run.path}, or continue anyway with "
        "--config.accept_changes_on_resume=True (recorded as a non-reproducible continuation)")
  return changes, not refused


def fresh_variables(module: Any, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The TF initialisation (its shapes also tell orbax what a checkpoint holds)."""
  return factory.init_variables(module, config.model.resolution, config.seed)


def resumed_state(manager: ocp.CheckpointManager, template: steps.TrainState,
                  sharding: jax.sharding.Sharding) -> steps.TrainState | None:
  """The newest readable checkpoint's state, placed by `sharding`; None without one."""
  abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
                          template)
  return checkpoints.restore_state(manager, abstract)


def pretrained_variables(config: ml_collections.ConfigDict, variables: dict[str, Any]
                         ) -> dict[str, Any]:
  """The offline ImageNet weights of the variant; another class count gets a new head."""
  return loading.load_weights("pretrained", config, variables, reset_classifier=None)


def finetuned_variables(config: ml_collections.ConfigDict, variables: dict[str, Any]
                        ) -> dict[str, Any]:
  """Another run's (or a file's) weights; another class count gets a new head."""
  return loading.load_weights(config.init_from, config, variables, reset_classifier=None)


def observed_ranges(module: Any, variables: dict[str, Any],
                    images: Iterable[jax.Array]) -> dict[str, Any]:
  """A QAT run's variables with each activation range averaged over `images` (BN statistics
  and weights unchanged), so the first steps train with ranges of these weights rather
  than of one batch."""
  from effnetlite.quant import model as qmodel
  return jax.device_get(qmodel.observe_ranges(module, variables, images))


def initial_state(module: Any, config: ml_collections.ConfigDict,
                  optimizer: optax.GradientTransformation, manager: ocp.CheckpointManager,
                  sharding: jax.sharding.Sharding, first_images: Iterable[jax.Array]
                  ) -> tuple[steps.TrainState, bool]:
  """(state, whether it was resumed): the first rung of the ladder that applies.

  `first_images`: normalised training batches, read only by a QAT run that starts.
  """
  variables = fresh_variables(module, config)
  key = jax.random.PRNGKey(config.seed)
  restored = resumed_state(manager, steps.create_train_state(variables, optimizer, key), sharding)
  if restored is not None:
    return restored, True
  if config.init_from == "pretrained":
    variables = pretrained_variables(config, variables)
  elif config.init_from:
    variables = finetuned_variables(config, variables)
  if quant.qat_enabled(config):
    variables = observed_ranges(module, variables, itertools.islice(first_images,
                                                                    QAT_OBSERVED_BATCHES))
  state = steps.create_train_state(variables, optimizer, key)
  return jax.device_put(state, sharding), False
