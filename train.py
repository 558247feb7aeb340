"""Trains EfficientNet-Lite with the TF/TPU recipe.

  python train.py --config=configs/lite3.py --workdir=DIR [--config.batch_size=128 ...]
"""

from effnetlite.utils import cli
from effnetlite.validation import validate_config

_CONFIG = cli.DEFINE_config_file("config", required=True)
_WORKDIR = cli.DEFINE_path("workdir", None, "Checkpoints, logs and summaries go here.",
                           required=True)


def main(argv):
  cli.no_positional_arguments(argv)
  config = validate_config(_CONFIG.value)
  from effnetlite.train.loop import train_and_evaluate  # JAX/TF: after the checks
  train_and_evaluate(config, _WORKDIR.value)


if __name__ == "__main__":
  cli.run(main)
