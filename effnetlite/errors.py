"""User-facing errors: bad input gets one line and a non-zero exit, no traceback."""

from __future__ import annotations

import logging
import sys
from typing import NoReturn


class UserError(ValueError):
  """Something the user can fix; the message says what is wrong and how to fix it."""


def exit_with(error: BaseException, code: int = 2) -> NoReturn:
  print(f"error: {error}", file=sys.stderr)
  sys.exit(code)


def quiet_library_logs() -> None:
  """Keeps JAX's backend probing ("Unable to initialize backend 'tpu'") off the console."""
  from absl import logging as absl_logging
  absl_logging.set_verbosity(absl_logging.WARNING)
  logging.getLogger("jax").setLevel(logging.WARNING)
