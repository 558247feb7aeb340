"""Progress bars for training steps and evaluated images, shown by process 0 only."""

from __future__ import annotations

import sys
from typing import Any


def progress_bar(total: int, initial: int = 0, description: str = "train",
                 unit: str = "step") -> Any:
  """A tqdm bar on process 0 (ETA built in); a silent stand-in elsewhere."""
  import jax
  from tqdm import tqdm
  return tqdm(total=total, initial=initial, desc=description, unit=unit, dynamic_ncols=True,
              disable=jax.process_index() != 0, file=sys.stderr, mininterval=1.0)
