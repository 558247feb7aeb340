"""Small builders shared by tests: configs on tiny inputs and subprocess runners."""

import os
import subprocess
import sys

from effnetlite.config import base_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TESTS = os.path.join(ROOT, "tests")
# What a test's subprocess imports: the checkout, helpers, and the test modules themselves.
PYTHONPATH = os.pathsep.join([ROOT, _TESTS] + sorted(
    entry.path for entry in os.scandir(_TESTS) if entry.is_dir() and entry.name.isidentifier()))


def tiny_config(name: str = "digits", resolution: int = 32, batch: int = 16, **dataset):
  """lite0 at a small resolution: compiles and runs in seconds on CPU."""
  config = base_config("lite0", resolution=resolution)
  config.dataset.name = name
  config.dataset.update(dataset)
  config.batch_size = batch
  config.eval_batch_size = batch
  config.log_every_steps = 1
  config.dataset.shuffle_buffer = 256
  if name == "digits":
    config.dataset.num_classes = 10
    config.dataset.eval_split = "test"
    config.augment.random_flip = False
  return config



def tiny_run_flags(digits_dir: str, steps: int, every: int | None = None) -> list[str]:
  """train.py flags that make configs/demo.py (or a search config) tiny: lite0 at 32 px,
  batch 16, on digits prepared in `digits_dir`; checkpoints and evaluations every `every`
  steps when given (else the config's)."""
  flags = ["--config.model.resolution=32", "--config.batch_size=16",
           "--config.eval_batch_size=64", f"--config.max_steps={steps}",
           f"--config.dataset.data_dir={digits_dir}"]
  if every:
    flags += [f"--config.checkpoint_every_steps={every}", f"--config.eval_every_steps={every}"]
  return flags

def run_python(code: str, devices: int = 1, env: dict | None = None, timeout: int = 600):
  """Runs `code` in a fresh interpreter with `devices` simulated CPU devices."""
  environment = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
                     XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
                     PYTHONPATH=PYTHONPATH)
  environment.update(env or {})
  return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                        cwd=ROOT, env=environment, timeout=timeout)


def relative_error(ours, theirs) -> float:
  """max |ours - theirs| / max |theirs|."""
  import jax.numpy as jnp
  return float(jnp.abs(ours - theirs).max() / (jnp.abs(theirs).max() + 1e-12))


def grouped_depthwise_conv(x, kernel, stride: int):
  """XLA's grouped convolution with TF 'SAME' padding: the formulation TF uses."""
  from jax import lax
  return lax.conv_general_dilated(x, kernel, (stride, stride), "SAME",
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                  feature_group_count=x.shape[-1],
                                  precision=lax.Precision.HIGHEST)
