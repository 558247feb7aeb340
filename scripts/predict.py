"""Top-k classes of image files, named: ImageNet's, or those a training run recorded.

  python scripts/predict.py cat.jpg --weights=runs/ft            # a run: its own config
  python scripts/predict.py chelsea.png coffee.png --config=configs/lite0.py \\
      --weights=pretrained [--top=5] [--json]
"""

import json
import os

from absl import flags

from effnetlite import runs
from effnetlite.errors import UserError
from effnetlite.utils import cli
from effnetlite.validation import absolute_path, check_pretrained, validate_config

_CONFIG = cli.DEFINE_config_file("config", "configs/lite0.py", from_weights=True)
_WEIGHTS = cli.DEFINE_weights(help_string="'pretrained', a training run directory (its config "
                              "is then used; RUN/best for the best checkpoint) or a weights file.")
_TOP = flags.DEFINE_integer("top", 5, "How many classes to print per image.", lower_bound=1)
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object per image.")
_EMA = flags.DEFINE_bool("ema", True, "Use EMA weights of training checkpoints.")


def main(argv):
  images = [absolute_path(path) for path in argv[1:]]
  if not images:
    raise UserError("no image given; usage: predict.py IMAGE [IMAGE ...] --weights=...")
  missing = [path for path in argv[1:] if not os.path.isfile(absolute_path(path))]
  if missing:
    raise UserError(f"image {missing[0]} does not exist; pass the path of an image file")
  # Prediction reads no dataset: a folder config needs no data_dir here.
  config = runs.config_for_weights(validate_config(_CONFIG.value, data=False), _WEIGHTS.value)
  if _WEIGHTS.value == "pretrained":
    check_pretrained(config)
  from effnetlite.data import images as images_lib  # JAX/TF: after the checks
  from effnetlite.data import labels
  from effnetlite.evaluation import predict
  from effnetlite.weights import factory, loading
  for path in images:
    images_lib.read_image_bytes(path)  # an unreadable file fails before the model is built
  names = labels.class_names(_WEIGHTS.value, config.dataset.num_classes)
  module, variables = factory.create_model(config)
  variables = loading.load_weights(_WEIGHTS.value, config, variables, ema=_EMA.value)
  probabilities = predict.make_predict_fn(module)
  for shown, path in zip(argv[1:], images):
    pixels = images_lib.load_image(path, config.model.resolution, config.model.resize_method,
                                   config.model.eval_crop_fraction)
    top = predict.top_k(probabilities(variables, pixels[None])[0], _TOP.value, names)
    if _JSON.value:
      print(json.dumps({"image": shown, "top": top}))
    else:
      predict.print_top(shown, top)


if __name__ == "__main__":
  cli.run(main)
