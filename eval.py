"""Evaluates a checkpoint, imported weights or a .tflite file on a split, exactly.

  python eval.py --config=configs/lite0.py --weights=pretrained|CHECKPOINT_DIR|FILE.tflite \
      [--ema|--no-ema] [--split=validation] [--output=RESULT.json]
"""

import json
import sys

import effnetlite  # noqa: F401  (first: quiets TensorFlow before anything imports it)
from absl import app, flags
from ml_collections import config_flags

from effnetlite.errors import UserError, exit_with, parse_flags_or_exit, quiet_library_logs
from effnetlite.evaluation import evaluate_weights
from effnetlite.export import write_atomically

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file.")
_WEIGHTS = flags.DEFINE_string("weights", "pretrained",
                               "'pretrained', a weights file, a checkpoint dir or a .tflite.")
_EMA = flags.DEFINE_bool("ema", True, "EMA weights of training checkpoints (--no-ema: raw).")
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: config's eval split).")
_OUTPUT = flags.DEFINE_string("output", "", "Write the metrics here as JSON.")
flags.mark_flag_as_required("config")


def main(argv):
  del argv
  quiet_library_logs()
  config = _CONFIG.value
  try:
    result = evaluate_weights(config, _WEIGHTS.value, _SPLIT.value or config.dataset.eval_split,
                              _EMA.value)
    if _OUTPUT.value:
      write_atomically(json.dumps(result, indent=2).encode(), _OUTPUT.value)
  except UserError as error:
    exit_with(error)
  print(f"{'weights':<16}{result['weights']}{' (EMA)' if result['ema'] else ''}")
  print(f"{'split':<16}{result['dataset']}/{result['split']}: {result['count']} images")
  print(f"{'top-1':<16}{result['top1']:.4%}")
  print(f"{'top-5':<16}{result['top5']:.4%}")
  print(f"{'loss':<16}{result['loss']:.4f}")
  print(f"{'images/s':<16}{result['images_per_sec']:.1f}")


if __name__ == "__main__":
  sys.argv = ["--noema" if arg == "--no-ema" else arg for arg in sys.argv]
  app.run(main, flags_parser=parse_flags_or_exit)
