"""Top-k classes of images with a .tflite classifier (model-zoo usage).

  python scripts/tflite_predict.py -i chelsea.png -m efficientnet-lite0-int8.tflite

Input size and quantisation are read from the file, and the class names it carries
(files from scripts/export.py do; 1000-class files without names get ImageNet's).
Each image gets the evaluation preprocessing (centre crop with pad, resize).
"""

import os

from absl import flags

from effnetlite.config import RESIZE_METHODS
from effnetlite.errors import UserError
from effnetlite.utils import cli

_IMAGE = cli.DEFINE_path("image", None, "Image file (more images as arguments).",
                         short_name="i")
_MODEL = cli.DEFINE_path("model_file", None, ".tflite model.", required=True, short_name="m")
_TOP = flags.DEFINE_integer("top", 5, "How many classes to print.", lower_bound=1,
                            short_name="k")
_RESIZE = flags.DEFINE_enum("resize_method", "bilinear", RESIZE_METHODS, "Resize method.")
_THREADS = flags.DEFINE_integer("threads", None, "LiteRT threads.", lower_bound=1)


def main(argv):
  images = ([_IMAGE.value] if _IMAGE.value else []) + [os.path.abspath(p) for p in argv[1:]]
  if not images:
    raise UserError("no image given; usage: tflite_predict.py -i IMAGE [IMAGE ...] -m MODEL")
  for flag, path in [("--image", p) for p in images] + [("--model_file", _MODEL.value)]:
    if not os.path.isfile(path):
      raise UserError(f"{flag}={path} does not exist; pass an existing file")
  from scipy.special import softmax

  from effnetlite.data.images import load_image  # TF/LiteRT: after the checks
  from effnetlite.evaluation import predict
  from effnetlite.evaluation.evaluate_weights import class_names
  from effnetlite.export.runtime import TFLiteModel
  model = TFLiteModel(_MODEL.value, _THREADS.value)
  if model.height != model.width:
    raise UserError(f"{_MODEL.value} takes non-square {model.height}x{model.width} input")
  names = class_names(_MODEL.value, model.num_classes)
  for path in images:
    outputs = model.logits(load_image(path, model.height, _RESIZE.value)[None])[0]
    probabilities = outputs if abs(outputs.sum() - 1) < 1e-2 and outputs.min() >= 0 else (
        softmax(outputs))
    predict.print_top(os.path.relpath(path) if not os.path.relpath(path).startswith("..")
                      else path, predict.top_k(probabilities, _TOP.value, names))


if __name__ == "__main__":
  cli.run(main)
