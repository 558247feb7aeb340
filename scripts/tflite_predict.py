"""Top-5 classes of an image with a .tflite classifier (model-zoo usage).

  python scripts/tflite_predict.py -i chelsea.png -m efficientnet-lite0-int8.tflite

Input size and quantisation are read from the file; the image gets the
evaluation preprocessing (centre crop with pad, bilinear resize).
"""

import os

from absl import flags

from effnetlite.config import RESIZE_METHODS
from effnetlite.errors import UserError
from effnetlite.utils import cli

_IMAGE = cli.DEFINE_path("image", None, "Image file.", required=True, short_name="i")
_MODEL = cli.DEFINE_path("model_file", None, ".tflite model.", required=True, short_name="m")
_TOP = flags.DEFINE_integer("top", 5, "How many classes to print.", lower_bound=1,
                            short_name="k")
_RESIZE = flags.DEFINE_enum("resize_method", "bilinear", RESIZE_METHODS, "Resize method.")
_THREADS = flags.DEFINE_integer("threads", None, "LiteRT threads.", lower_bound=1)


def main(argv):
  cli.no_positional_arguments(argv)
  for flag, path in (("--image", _IMAGE.value), ("--model_file", _MODEL.value)):
    if not os.path.isfile(path):
      raise UserError(f"{flag}={path} does not exist; pass an existing file")
  from scipy.special import softmax

  from effnetlite.data.images import load_eval_image  # TF/LiteRT: after the checks
  from effnetlite.evaluation import predict
  from effnetlite.export.runtime import TFLiteModel
  model = TFLiteModel(_MODEL.value, _THREADS.value)
  if model.height != model.width:
    raise UserError(f"{_MODEL.value} takes non-square {model.height}x{model.width} input")
  pixels = load_eval_image(_IMAGE.value, model.height, _RESIZE.value)
  outputs = model.logits(pixels[None])[0]
  probabilities = outputs if abs(outputs.sum() - 1) < 1e-2 and outputs.min() >= 0 else (
      softmax(outputs))
  for entry in predict.top_k(probabilities, _TOP.value, predict.class_names(model.num_classes)):
    print(f"{entry['prob']:7.2%}  {entry['index']:4d}  {entry['label']}")


if __name__ == "__main__":
  cli.run(main)
