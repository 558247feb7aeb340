"""What the person running training sees: TensorBoard events, metrics.jsonl, a progress bar.

Only process 0 writes. `metrics.jsonl` holds one JSON row per logged step so
that runs can be compared without TensorBoard; a resumed run first drops rows
past its checkpoint, so no step is ever reported twice.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Mapping

import jax

from effnetlite import files


class MetricsWriter:
  def __init__(self, workdir: str, resume_step: int = 0, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = os.path.join(workdir, "metrics.jsonl")
    self._summary = None
    if not self.enabled:
      return
    import tensorflow as tf
    self._summary = tf.summary.create_file_writer(os.path.join(workdir, "tensorboard"))
    self._drop_rows_after(resume_step)

  def _drop_rows_after(self, step: int) -> None:
    if not os.path.exists(self.path):
      return
    with open(self.path, encoding="utf-8") as handle:
      rows = [line for line in handle if line.strip() and json.loads(line)["step"] <= step]
    files.write_atomically(self.path, "".join(rows))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if not self.enabled:
      return
    import tensorflow as tf
    with self._summary.as_default():
      for name, value in scalars.items():
        tf.summary.scalar(name, value, step=step)
    with open(self.path, "a", encoding="utf-8") as handle:
      handle.write(json.dumps({"step": step, **{k: float(v) for k, v in scalars.items()}}) + "\n")

  def flush(self) -> None:
    if self._summary is not None:
      self._summary.flush()


def progress_bar(total: int, initial: int = 0, description: str = "train",
                 unit: str = "step") -> Any:
  """A tqdm bar on process 0 (ETA built in); a silent stand-in elsewhere."""
  from tqdm import tqdm
  return tqdm(total=total, initial=initial, desc=description, unit=unit, dynamic_ncols=True,
              disable=jax.process_index() != 0, file=sys.stderr, mininterval=1.0)
