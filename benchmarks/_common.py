"""What throughput.py and op_profile.py share: the variant's config, train.py's step on
random images, the PyTorch reference's training setup and each framework's process
environment (not a benchmark itself: no tiny run of its own)."""

from __future__ import annotations

import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from effnetlite import config as config_lib
from effnetlite.train import optimizer as optimizer_lib
from effnetlite.train import steps
from effnetlite.utils import allocator
from effnetlite.weights import factory


def benchmark_config(variant: str, resolution: int) -> ml_collections.ConfigDict:
  """The variant's config, at `resolution` (0: the variant's own)."""
  config = config_lib.variant_config(variant)
  if resolution:
    config.model.resolution = resolution
  return config


def our_training(config: ml_collections.ConfigDict, batch: int) -> dict[str, Any]:
  """train.py's jitted step (RMSProp, EMA, L2, label smoothing; state donated), its first
  state and a batch of uint8 pixels as the pipeline sends them (the step normalises)."""
  module = factory.module_from_config(config)
  variables = factory.init_variables(module, config.model.resolution)
  schedule = optimizer_lib.learning_rate_schedule(config, batch, 100, 1000)
  optimizer = optimizer_lib.make_optimizer(config, schedule)
  resolution = config.model.resolution
  images = jnp.asarray(np.random.RandomState(0).randint(0, 256, (batch, resolution,
                                                                 resolution, 3), np.uint8))
  return {"module": module, "variables": variables,
          "state": steps.create_train_state(variables, optimizer, jax.random.PRNGKey(0)),
          "step": jax.jit(steps.make_train_step(module, config, optimizer, schedule),
                          donate_argnums=0),
          "data": {"image": images, "label": jnp.zeros((batch,), jnp.int32)}}


def their_training(variant: str, batch: int, resolution: int, device: str = "cpu"
                   ) -> tuple[Any, Callable[[Any], None], Any]:
  """(model, step(autocast), images) of efficientnet-lite-pytorch: channels_last, threads =
  cores, RMSprop as the TF recipe sets it."""
  import torch
  from efficientnet_lite_pytorch import EfficientNet
  torch.set_num_threads(os.cpu_count())
  model = EfficientNet.from_name(f"efficientnet-{variant}").to(device)
  model = model.to(memory_format=torch.channels_last)
  optimizer = torch.optim.RMSprop(model.parameters(), lr=1e-4, alpha=0.9, eps=1e-3,
                                  momentum=0.9)
  images = torch.rand(batch, 3, resolution, resolution, device=device).to(
      memory_format=torch.channels_last)
  labels = torch.zeros(batch, dtype=torch.long, device=device)

  def step(autocast) -> None:
    model.train()
    with autocast:
      loss = torch.nn.functional.cross_entropy(model(images), labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
  return model, step, images


def child_environment(framework: str) -> dict[str, str]:
  """A measuring process's environment: ours re-executes under its own tunables
  (configure_process), PyTorch runs under its best, a plain loop under glibc's defaults."""
  env = dict(os.environ)
  env.pop("GLIBC_TUNABLES", None)  # a user's own: each side gets exactly the tunables it names
  if framework == "theirs":
    env["GLIBC_TUNABLES"] = allocator.HEAP_ON_HUGE_PAGES
  elif framework == "plain":  # cli.run's configure_process leaves malloc as glibc starts it
    env[allocator.OPT_OUT_ENV] = "0"
  return env
