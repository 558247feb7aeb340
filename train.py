"""Trains EfficientNet-Lite with the TF/TPU recipe.

  python train.py --config=configs/lite3.py --workdir=DIR [--config.batch_size=128 ...]
"""

import effnetlite  # noqa: F401  (first: quiets TensorFlow before anything imports it)
from absl import app, flags
from ml_collections import config_flags

from effnetlite.errors import UserError, exit_with, parse_flags_or_exit, quiet_library_logs
from effnetlite.training import train_and_evaluate

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Checkpoints, logs and summaries go here.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    exit_with(UserError(f"unexpected arguments {argv[1:]}; use --config.KEY=VALUE overrides"))
  quiet_library_logs()
  try:
    train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  except UserError as error:
    exit_with(error)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags_or_exit)
