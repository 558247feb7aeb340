"""Evaluates a checkpoint, imported weights or a .tflite file on a split, exactly.

  python eval.py --config=configs/lite0.py --weights=pretrained|CHECKPOINT_DIR|FILE.tflite \
      [--ema|--no-ema] [--split=validation] [--output=RESULT.json]
"""

import json
import sys

from absl import flags

from effnetlite.utils import cli, files
from effnetlite.validation import check_pretrained, validate_config

_CONFIG = cli.DEFINE_config_file("config", required=True)
_WEIGHTS = cli.DEFINE_weights(tflite=True, help_string="'pretrained', a weights file, a "
                              "training run directory or a .tflite file.")
_EMA = flags.DEFINE_bool("ema", True, "EMA weights of training checkpoints (--no-ema: raw).")
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: config's eval split).")
_OUTPUT = cli.DEFINE_path("output", "", "Write the metrics here as JSON.")


def main(argv):
  cli.no_positional_arguments(argv)
  config = validate_config(_CONFIG.value)
  if _WEIGHTS.value == "pretrained":
    check_pretrained(config)
  if _OUTPUT.value:
    files.check_writable(_OUTPUT.value, "--output")
  from effnetlite.evaluation.evaluate_weights import evaluate_weights  # JAX/TF: after the checks
  result = evaluate_weights(config, _WEIGHTS.value, _SPLIT.value or config.dataset.eval_split,
                            _EMA.value)
  if _OUTPUT.value:
    files.write_atomically(_OUTPUT.value, json.dumps(result, indent=2))
  print(f"{'weights':<16}{result['weights']}{' (EMA)' if result['ema'] else ''}")
  print(f"{'split':<16}{result['dataset']}/{result['split']}: {result['count']} images")
  print(f"{'top-1':<16}{result['top1']:.4%}")
  print(f"{'top-5':<16}{result['top5']:.4%}")
  print(f"{'loss':<16}{result['loss']:.4f}")
  print(f"{'images/s':<16}{result['images_per_sec']:.1f}")


if __name__ == "__main__":
  sys.argv = ["--noema" if arg == "--no-ema" else arg for arg in sys.argv]
  cli.run(main)
