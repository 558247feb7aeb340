"""Evaluates a training run, imported weights or a .tflite file on a split, exactly.

  python eval.py --weights=RUN                      # the run's own config and eval split
  python eval.py --weights=RUN/best --no-ema        # the best checkpoint, raw weights
  python eval.py --weights=QAT_RUN                  # a QAT run: its simulated-int8 top-1
  python eval.py --config=configs/lite0.py --weights=pretrained|FILE|FILE.tflite \\
      [--split=validation] [--output=RESULT.json]
"""

import json
import sys

from absl import flags

from effnetlite import runs
from effnetlite.errors import UserError
from effnetlite.utils import cli, files
from effnetlite.validation import check_pretrained, validate_config

_CONFIG = cli.DEFINE_config_file("config", from_weights=True)
_WEIGHTS = cli.DEFINE_weights(tflite=True, help_string="'pretrained', a training run directory "
                              "(its latest checkpoint; RUN/best for the best EMA one), a weights "
                              "file or a .tflite file.")
_EMA = flags.DEFINE_bool("ema", True, "EMA weights of training checkpoints (--no-ema: raw).")
_SPLIT = flags.DEFINE_string("split", None, "Split to evaluate (default: config's eval split).")
_OUTPUT = cli.DEFINE_path("output", "", "Write the metrics here as JSON.")
# Per-class lines up to this many classes; more would bury the summary.
_MAX_CLASS_LINES = 20


def print_summary(result: dict) -> None:
  details = ["EMA"] if result["ema"] else []
  if "step" in result:
    details.append(f"step {result['step']}, the run's {result['kept_as']} checkpoint")
  print(f"{'weights':<16}{result['weights']}" + (f" ({', '.join(details)})" if details else ""))
  print(f"{'split':<16}{result['dataset']}/{result['split']}: {result['count']} images")
  if result.get("simulated_int8"):
    print(f"{'model':<16}simulated int8 (QAT: the integer network the exported file runs)")
  print(f"{'top-1':<16}{result['top1']:.4%}")
  if len(result["class_names"]) > 5:  # with 5 classes or fewer, top-5 is always 100%
    print(f"{'top-5':<16}{result['top5']:.4%}")
  print(f"{'loss':<16}{result['loss']:.4f}")
  print(f"{'images/s':<16}{result['images_per_sec']:.1f}")
  names = result["class_names"]
  if len(names) <= _MAX_CLASS_LINES:
    for index, (name, top1, count) in enumerate(zip(names, result["class_top1"],
                                                    result["class_count"])):
      accuracy = "-" if top1 is None else f"{top1:.2%}"
      print(f"  {index:4d}  {name:<24} top-1 {accuracy:>8} of {count}")


def main(argv):
  cli.no_positional_arguments(argv)
  if _CONFIG.value is None:
    raise UserError("--config is needed unless --weights is a training run directory (whose "
                    "config is used); pass e.g. --config=configs/lite0.py")
  config = runs.config_for_weights(validate_config(_CONFIG.value), _WEIGHTS.value)
  if _WEIGHTS.value == "pretrained":
    check_pretrained(config)
  if _OUTPUT.value:
    files.check_writable(_OUTPUT.value, "--output")
  from effnetlite.evaluation.evaluate_weights import evaluate_weights  # JAX/TF: after the checks
  result = evaluate_weights(config, _WEIGHTS.value, _SPLIT.value or config.dataset.eval_split,
                            _EMA.value)
  if _OUTPUT.value:
    files.write_atomically(_OUTPUT.value, json.dumps(result, indent=2))
  print_summary(result)


if __name__ == "__main__":
  sys.argv = ["--noema" if arg == "--no-ema" else arg for arg in sys.argv]
  cli.run(main)
