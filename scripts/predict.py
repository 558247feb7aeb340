"""Top-k ImageNet (or fine-tuned) classes of image files.

  python scripts/predict.py chelsea.png coffee.png --config=configs/lite0.py \
      --weights=pretrained [--top=5] [--json]
"""

import json
import os

from absl import flags

from effnetlite.errors import UserError
from effnetlite.utils import cli
from effnetlite.validation import absolute_path, check_pretrained, validate_config

_CONFIG = cli.DEFINE_config_file("config", "configs/lite0.py", "Model config file.")
_WEIGHTS = cli.DEFINE_weights()
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
  config = validate_config(_CONFIG.value)
  if _WEIGHTS.value == "pretrained":
    check_pretrained(config)
  from effnetlite.data import images as images_lib  # JAX/TF: after the checks
  from effnetlite.evaluation import predict
  from effnetlite.weights import factory, loading
  for path in images:
    images_lib.read_image_bytes(path)  # an unreadable file fails before the model is built
  module, variables = factory.create_model(config)
  variables = loading.load_weights(_WEIGHTS.value, config, variables, ema=_EMA.value)
  probabilities = predict.make_predict_fn(module)
  names = predict.class_names(config.dataset.num_classes)
  for shown, path in zip(argv[1:], images):
    pixels = images_lib.load_eval_image(path, config.model.resolution,
                                        config.model.resize_method,
                                        config.model.eval_crop_fraction)
    top = predict.top_k(probabilities(variables, pixels[None])[0], _TOP.value, names)
    if _JSON.value:
      print(json.dumps({"image": shown, "top": top}))
    else:
      print(shown)
      for entry in top:
        print(f"  {entry['prob']:7.2%}  {entry['index']:4d}  {entry['label']}")


if __name__ == "__main__":
  cli.run(main)
