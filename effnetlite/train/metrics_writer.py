"""Training metrics as the person running it reads them: TensorBoard events and metrics.jsonl.

Only process 0 writes. `metrics.jsonl` holds one JSON row per logged step so
that runs can be compared without TensorBoard; a resumed run first drops rows
past its checkpoint, so no step is ever reported twice.
"""

from __future__ import annotations

import json
import os
from typing import Mapping

import jax

from effnetlite.runs import Run
from effnetlite.utils import files


class MetricsWriter:
  def __init__(self, run: Run, resume_step: int = 0, enabled: bool | None = None):
    self.enabled = jax.process_index() == 0 if enabled is None else enabled
    self.path = run.metrics_file
    self._summary = None
    if not self.enabled:
      return
    import tensorflow as tf
    self._summary = tf.summary.create_file_writer(run.tensorboard_dir)
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
