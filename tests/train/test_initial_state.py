"""The initial-state ladder: what a resume honours or refuses, and each rung's weights
against an independent source (the saved arrays, the offline .pth file)."""

import os

import jax
import numpy as np
import pytest
from helpers import tiny_config

from effnetlite import runs
from effnetlite.errors import UserError
from effnetlite.train import initial_state, steps
from effnetlite.train import optimizer as optimizer_lib
from effnetlite.validation import validate_config
from effnetlite.weights import checkpoints, factory

RUN = runs.Run("/tmp/some/run")


def _configs(**changes):
  old = validate_config(tiny_config())
  new = validate_config(tiny_config())
  for key, value in changes.items():
    holder = new
    *sections, name = key.split(".")
    for section in sections:
      holder = holder[section]
    holder[name] = value
  return old, new


@pytest.mark.parametrize("key, value", [
    ("log_every_steps", 7), ("eval_every_steps", 3), ("checkpoint_every_minutes", 5.0),
    ("keep_checkpoints", 1), ("eval_batch_size", 8), ("model.depthwise", "conv"),
    ("num_epochs", 700.0), ("max_steps", 40)])
def test_a_resume_honours_intervals_formulations_and_the_length_of_a_staircase(key, value):
  old, new = _configs(**{key: value})
  changes, reproducible = initial_state.check_resume(RUN, old, new, steps_per_epoch=10)
  assert [c[0] for c in changes] == [key] and reproducible


@pytest.mark.parametrize("key, value, old_value", [
    ("batch_size", 32, 16), ("seed", 1, 0), ("dataset.train_split", "train[:50%]", "train"),
    ("optimizer.base_learning_rate", 0.008, 0.016), ("optimizer.momentum", 0.8, 0.9),
    ("optimizer.warmup_epochs", 1.0, 5.0), ("ema_decay", 0.99, 0.9999)])
def test_a_resume_refuses_what_it_cannot_honour_in_one_line(key, value, old_value):
  old, new = _configs(**{key: value})
  with pytest.raises(UserError) as error:
    initial_state.check_resume(RUN, old, new, steps_per_epoch=10)
  message = str(error.value)
  assert "\n" not in message
  assert message.startswith(f"resuming /tmp/some/run would change config.{key} from "
                            f"{old_value!r} to {value!r}, which its checkpoints cannot honour")
  assert "--config.init_from=/tmp/some/run" in message
  assert "--config.accept_changes_on_resume=True" in message


def test_the_total_under_cosine_is_refused_and_an_unchanged_total_is_not():
  old, new = _configs(**{"optimizer.schedule": "cosine"})
  old.optimizer.schedule = "cosine"
  new.num_epochs = old.num_epochs * 2
  with pytest.raises(UserError, match=r"config.num_epochs from 350.0 to 700.0 \(the cosine "
                                      r"schedule depends on the total\)"):
    initial_state.check_resume(RUN, old, new, steps_per_epoch=10)
  old.max_steps = new.max_steps = 100  # max_steps fixes the total: epochs no longer count
  assert initial_state.check_resume(RUN, old, new, steps_per_epoch=10)[1]


def test_no_opt_in_resumes_into_another_optimizers_state():
  old, new = _configs(**{"optimizer.name": "sgd"})
  new.accept_changes_on_resume = True
  with pytest.raises(UserError, match=r"^resuming /tmp/some/run would change config.optimizer."
                                      r"name from 'rmsprop' to 'sgd', and its checkpoints hold "
                                      r"the state of the 'rmsprop' optimizer; pass a new "):
    initial_state.check_resume(RUN, old, new, steps_per_epoch=10)


def test_the_opt_in_continues_and_marks_the_session_non_reproducible():
  old, new = _configs(batch_size=32, log_every_steps=5)
  new.accept_changes_on_resume = True
  changes, reproducible = initial_state.check_resume(RUN, old, new, steps_per_epoch=10)
  assert [c[0] for c in changes] == ["batch_size", "log_every_steps"]
  assert not reproducible


def _module_and_optimizer(config):
  module = factory.module_from_config(config)
  schedule = optimizer_lib.learning_rate_schedule(config, config.batch_size, 10, 100)
  return module, optimizer_lib.make_optimizer(config, schedule)


def test_the_ladder_resumes_a_saved_state_and_otherwise_starts_fresh(tmp_path):
  config = validate_config(tiny_config())
  module, optimizer = _module_and_optimizer(config)
  sharding = jax.sharding.SingleDeviceSharding(jax.devices()[0])
  manager = checkpoints.make_manager(str(tmp_path / "checkpoints"), asynchronous=False)
  state, resumed = initial_state.initial_state(module, config, optimizer, manager, sharding,
                                               iter(()))
  assert not resumed and int(state.step) == 0
  fresh = initial_state.fresh_variables(module, config)  # the TF initialisation, seeded
  np.testing.assert_array_equal(state.params["stem_conv"]["kernel"],
                                fresh["params"]["stem_conv"]["kernel"])
  saved = state.replace(step=state.step + 7, params=jax.tree.map(lambda x: x + 1, state.params))
  checkpoints.save(manager, 7, saved, config.to_dict(), force=True)
  checkpoints.wait(manager)
  state, resumed = initial_state.initial_state(module, config, optimizer, manager, sharding,
                                               iter(()))
  assert resumed and int(state.step) == 7
  np.testing.assert_array_equal(state.params["stem_conv"]["kernel"],
                                fresh["params"]["stem_conv"]["kernel"] + 1)


def test_pretrained_takes_the_offline_pth_and_a_new_head():
  torch = pytest.importorskip("torch")
  from effnetlite.weights.loading import pretrained_weights_path
  config = validate_config(tiny_config())  # lite0 with 10 classes
  module, _ = _module_and_optimizer(config)
  fresh = initial_state.fresh_variables(module, config)
  variables = initial_state.pretrained_variables(config, fresh)
  stem = torch.load(pretrained_weights_path("lite0"), map_location="cpu")
  stem = next(v for k, v in stem.items() if k.endswith("conv_stem.weight")).numpy()
  np.testing.assert_allclose(variables["params"]["stem_conv"]["kernel"],
                             stem.transpose(2, 3, 1, 0), rtol=0, atol=0)  # OIHW -> HWIO
  assert variables["params"]["classifier"]["kernel"].shape[-1] == 10


def test_finetuning_takes_a_runs_ema_weights(tmp_path):
  config = validate_config(tiny_config())
  module, optimizer = _module_and_optimizer(config)
  variables = initial_state.fresh_variables(module, config)
  state = steps.create_train_state(variables, optimizer, jax.random.PRNGKey(0))
  state = state.replace(ema_params=jax.tree.map(lambda x: x * 0 + 0.5, state.params))
  run = runs.Run(str(tmp_path / "source"))
  run.save_config(config)
  manager = checkpoints.make_manager(run.checkpoints_dir, asynchronous=False)
  checkpoints.save(manager, 3, state, config.to_dict(), force=True)
  checkpoints.wait(manager)
  config.init_from = run.path
  tuned = initial_state.finetuned_variables(config, variables)
  assert float(np.asarray(tuned["params"]["stem_conv"]["kernel"]).max()) == 0.5
  assert os.path.isdir(os.path.join(run.checkpoints_dir, "3", "state"))
