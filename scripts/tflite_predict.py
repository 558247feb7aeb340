"""Top-5 classes of an image with a .tflite classifier (model-zoo usage).

  python scripts/tflite_predict.py -i chelsea.png -m efficientnet-lite0-int8.tflite

Input size and quantisation are read from the file; the image gets the
evaluation preprocessing (centre crop with pad, bilinear resize).
"""

import argparse
import sys

import effnetlite  # noqa: F401  (first: quiets TensorFlow before anything imports it)
from effnetlite import inference
from effnetlite.errors import UserError, exit_with
from effnetlite.tflite import TFLiteModel


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("-i", "--image", required=True, help="image file")
  parser.add_argument("-m", "--model_file", required=True, help=".tflite model")
  parser.add_argument("-k", "--top", type=int, default=5)
  parser.add_argument("--resize_method", default="bilinear")
  parser.add_argument("--threads", type=int, default=None)
  args = parser.parse_args()
  try:
    model = TFLiteModel(args.model_file, args.threads)
    if model.height != model.width:
      raise UserError(f"{args.model_file} takes non-square {model.height}x{model.width} input")
    pixels = inference.load_eval_image(args.image, model.height, args.resize_method)
    outputs = model.logits(pixels[None])[0]
  except UserError as error:
    exit_with(error)
  probabilities = outputs if abs(outputs.sum() - 1) < 1e-2 and outputs.min() >= 0 else (
      inference.softmax(outputs))
  for entry in inference.top_k(probabilities, args.top, inference.class_names(model.num_classes)):
    print(f"{entry['prob']:7.2%}  {entry['index']:4d}  {entry['label']}")


if __name__ == "__main__":
  sys.exit(main())
