"""Process-wide settings for programs that train or serve: the one opt-in call.

`import effnetlite` changes nothing in the process. The CLIs (through
`effnetlite.cli.run`), the benchmarks and the tests call `configure_process()`
before JAX or TensorFlow start; a library user who wants the same speed and quiet
console calls it first thing too.
"""

from __future__ import annotations

import logging
import os

from effnetlite.utils import allocator


def quiet_library_logs() -> None:
  """Only errors from TensorFlow, tfds and orbax; JAX's backend probing stays off the console.

  Our own warnings (e.g. skipped unreadable images) go through the root logger
  and still show.
  """
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # read by TensorFlow's C++ at import
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.ERROR)  # tfds and orbax log through absl
  for name in ("absl", "tensorflow", "tensorflow_datasets", "orbax"):
    logging.getLogger(name).setLevel(logging.ERROR)
  logging.getLogger("jax").setLevel(logging.WARNING)


def configure_process(malloc_tuning: bool = True) -> None:
  """glibc malloc tuning (see `allocator`) and quiet framework logs, before JAX starts.

  Call it before the first JAX computation: the malloc settings apply to the
  threads XLA starts afterwards. `EFFNETLITE_MALLOC_TUNING=0` (or
  `malloc_tuning=False`) leaves the allocator alone.
  """
  if malloc_tuning:
    allocator.tune_glibc_malloc()
  quiet_library_logs()
