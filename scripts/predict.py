"""Top-k ImageNet (or fine-tuned) classes of image files.

  python scripts/predict.py chelsea.png coffee.png --config=configs/lite0.py \
      --weights=pretrained [--top=5] [--json]
"""

import json

import effnetlite  # noqa: F401  (first: quiets TensorFlow before anything imports it)

from absl import app, flags
from ml_collections import config_flags

from effnetlite import factory, inference
from effnetlite.errors import UserError, exit_with, parse_flags_or_exit, quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file("config", "configs/lite0.py", "Model config file.")
_WEIGHTS = flags.DEFINE_string("weights", "pretrained",
                               "'pretrained', a weights file, or a checkpoint directory.")
_TOP = flags.DEFINE_integer("top", 5, "How many classes to print per image.")
_JSON = flags.DEFINE_bool("json", False, "Print one JSON object per image.")
_EMA = flags.DEFINE_bool("ema", True, "Use EMA weights of training checkpoints.")


def main(argv):
  quiet_library_logs()
  images = argv[1:]
  try:
    if not images:
      raise UserError("no image given; usage: predict.py IMAGE [IMAGE ...] --weights=...")
    config = _CONFIG.value
    module, variables = factory.create_model(config)
    variables = factory.load_variables(_WEIGHTS.value, config, variables, ema=_EMA.value)
    predict = inference.make_predict_fn(module)
    names = inference.class_names(config.dataset.num_classes)
    for path in images:
      pixels = inference.load_eval_image(path, config.model.resolution,
                                         config.model.resize_method,
                                         config.model.eval_crop_fraction)
      top = inference.top_k(predict(variables, pixels[None])[0], _TOP.value, names)
      if _JSON.value:
        print(json.dumps({"image": path, "top": top}))
      else:
        print(path)
        for entry in top:
          print(f"  {entry['prob']:7.2%}  {entry['index']:4d}  {entry['label']}")
  except UserError as error:
    exit_with(error)


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags_or_exit)
