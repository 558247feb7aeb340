"""Trains EfficientNet-Lite with the TF/TPU recipe; resumes the run in --workdir.

  python train.py --config=configs/lite3.py --workdir=DIR [--config.batch_size=128 ...]
  python train.py --config=DIR/config.json --workdir=DIR --config.num_epochs=40  # extend

SIGTERM, SIGUSR1 (SLURM's warning before a time limit) and Ctrl-C stop at the next step
boundary with that step saved: exit status 143, 138 and 130; the same command resumes.

Every config key is set with --config.KEY=VALUE (`python scripts/config_keys.py` lists
them with their defaults and units, e.g. optimizer.base_learning_rate per 256 images).
"""

import sys

from effnetlite.utils import cli
from effnetlite.validation import validate_config

_CONFIG = cli.DEFINE_config_file("config", required=True)
_WORKDIR = cli.DEFINE_path("workdir", None, "The run directory: checkpoints, config, class "
                           "names, metrics; an existing run resumes from its latest checkpoint.",
                           required=True)


def main(argv):
  cli.no_positional_arguments(argv)
  config = validate_config(_CONFIG.value)
  from effnetlite.train.loop import train_and_evaluate  # JAX/TF: after the checks
  from effnetlite.train.stop import TrainingStopped
  try:
    train_and_evaluate(config, _WORKDIR.value)
  except TrainingStopped as stopped:  # SIGTERM, SIGUSR1, Ctrl-C: the step is saved
    import jax
    if jax.process_index() == 0:  # every process stopped at the same step: one line a job
      print(stopped, file=sys.stderr, flush=True)
    sys.exit(stopped.exit_code)


if __name__ == "__main__":
  cli.run(main)
