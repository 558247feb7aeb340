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


def parse_flags_or_exit(argv: list[str]) -> list[str]:
  """absl flags parser for `app.run(..., flags_parser=...)`: bad flags get one line.

  ml_collections raises AttributeError/KeyError deep in flag parsing for an
  override of a key the config does not have.
  """
  from absl import flags
  try:
    return flags.FLAGS(argv)
  except (AttributeError, KeyError) as error:
    key = str(error).strip("'\"")
    exit_with(UserError(f"the config has no key {key!r}; check the --config.KEY=VALUE "
                        "overrides against the config file"))
  except (flags.Error, ValueError, TypeError) as error:
    exit_with(UserError(f"bad command-line flag: {error}"))
