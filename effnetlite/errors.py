"""User-facing errors: bad input gets one line and exit status 2, no traceback."""

from __future__ import annotations

import sys
from typing import NoReturn


class UserError(ValueError):
  """Something the user can fix; the message says what is wrong and how to fix it."""


class WeightsError(UserError):
  """Weights that cannot be loaded into the requested model (one-line message)."""


def exit_with(error: BaseException, code: int = 2) -> NoReturn:
  print(f"error: {error}", file=sys.stderr)
  sys.exit(code)


def warn(message: str) -> None:
  """One line, `warning: ...`, on stderr: something the user should know, not an error.

  Not through `logging`: the commands silence library logs (absl, TF, orbax) and a
  warning meant for the user must not go with them.
  """
  print(f"warning: {message}", file=sys.stderr, flush=True)
