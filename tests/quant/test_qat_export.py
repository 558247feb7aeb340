"""QAT export: a full-integer file with the trained parameters, checked against the JAX
simulation, loadable by LiteRT and (uint8 I/O) MediaPipe."""

import numpy as np
import pytest

from effnetlite.export import qat as qexport
from effnetlite.quant import model as qm

pytest.importorskip("tensorflow")


@pytest.fixture(scope="module", params=["int8", "uint8"])
def exported(request, tiny_qat, tmp_path_factory):
  _, twin, qat, pixels, _ = tiny_qat
  path = str(tmp_path_factory.mktemp("qat") / f"tiny-{request.param}.tflite")
  with open(path, "wb") as handle:
    handle.write(qexport.convert_qat(twin, qat, 64, request.param))
  return request.param, path, qexport.check_against_simulation(path, twin, qat, pixels)


def test_file_is_full_integer_with_the_trained_parameters(exported, tiny_qat):
  io, _, report = exported
  _, twin, qat, _, _ = tiny_qat
  assert report["full_integer"], report["float_tensors"][:5]
  assert {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "AVERAGE_POOL_2D",
          "FULLY_CONNECTED"} <= set(report["ops"])
  offset = 128 if io == "uint8" else 0
  assert report["input"]["dtype"] == io and report["input"]["scale"] == 1 / 128
  assert report["input"]["zero_point"] == -1 + offset   # uint8: raw pixels as they are
  logits = qm.export_parameters(twin, qat, 64)[0]["logits"]      # no re-calibration: QAT's range
  assert np.isclose(report["output"]["scale"], logits["scale"][0], rtol=1e-6)
  assert report["output"]["zero_point"] == int(logits["zero_point"][0]) + offset


def test_file_agrees_with_the_simulation(exported):
  """LiteRT's default CPU path (XNNPACK, as MediaPipe runs it) computes exactly what the
  simulation computes: same top-1, same output codes."""
  _, _, report = exported
  assert report["top1_agreement_vs_simulation"] == 1.0
  assert report["max_output_steps_vs_simulation"] == 0.0


def test_file_stores_the_simulations_integer_kernels_and_biases(exported, tiny_qat):
  """The converter's int8 kernels and int32 biases are the simulation's codes, one for one,
  including the channels with tiny weights and huge biases (conftest). (With BN folded in
  the exported graph, TF's rounding of the fold moved a few weight codes, and the biases
  above 2^24 were rounded in float32 here and in double by the converter.)"""
  io, path, _ = exported
  if io != "int8":
    pytest.skip("one I/O type is enough")
  from ai_edge_litert.interpreter import Interpreter
  _, twin, qat, _, _ = tiny_qat
  table, _ = qm.export_parameters(twin, qat, 64)
  _, captured = twin.apply(qat, np.zeros((1, 64, 64, 3), np.float32), mutable=[qm.TABLE])
  layers = {name[:-len(qm.FOLDED_SUFFIX)]: entry for name, entry in captured[qm.TABLE].items()
            if name.endswith(qm.FOLDED_SUFFIX)}
  interpreter = Interpreter(model_path=path)
  interpreter.allocate_tensors()
  tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
  layouts = {"CONV_2D": (3, 0, 1, 2), "DEPTHWISE_CONV_2D": (2, 0, 1, 3),
             "FULLY_CONNECTED": (1, 0)}  # the file's kernel layouts, from HWIO / HW1C / IO
  compared = 0
  for op in interpreter._get_ops_details():
    if op["op_name"] not in layouts:
      continue
    kernel = tensors[op["inputs"][1]]
    scales = kernel["quantization_parameters"]["scales"].astype(np.float32)
    (point,) = [p for p in layers
                if np.array_equal(table[p + ".kernel"]["scale"], scales)]
    entry = layers.pop(point)
    expected = np.round(np.asarray(entry["kernel"]) / scales).astype(np.int8)
    np.testing.assert_array_equal(interpreter.get_tensor(kernel["index"]),
                                  np.transpose(expected, layouts[op["op_name"]]), err_msg=point)
    bias_codes = np.asarray(entry["bias_codes"]).astype(np.int32)
    if op["inputs"][2] < 0:  # the converter leaves out an all-zero bias
      assert not bias_codes.any(), point
    else:
      np.testing.assert_array_equal(interpreter.get_tensor(op["inputs"][2]), bias_codes,
                                    err_msg=point)
    compared += 1
  assert compared > 10 and not layers


def test_every_layer_of_the_file_is_the_simulation(exported, tiny_qat):
  """Each int8 tensor the file computes (XNNPACK) equals the simulation's activation at the
  same point, code for code: conv requantisation, residual ADD, average pool and classifier.
  (This untrained stand-in turns one differently rounded code into several output steps
  a few blocks later, so anything short of exact shows here.)"""
  io, path, _ = exported
  if io != "int8":
    pytest.skip("one I/O type is enough")
  from ai_edge_litert.interpreter import Interpreter
  _, twin, qat, _, images = tiny_qat
  _, captured = twin.apply(qat, images, mutable=[qm.ACTIVATIONS])
  simulated = {k: np.asarray(v) for k, v in captured[qm.ACTIVATIONS].items()}
  points = list(simulated)  # in the order the model computes them, as the file's operators
  interpreter = Interpreter(model_path=path, experimental_preserve_all_tensors=True)
  interpreter.allocate_tensors()
  tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
  ops = [op for op in interpreter._get_ops_details()
         if op["op_name"] not in ("AVERAGE_POOL_2D", "QUANTIZE", "RESHAPE", "DELEGATE")]
  assert len(ops) == len(points)
  source = interpreter.get_input_details()[0]
  for index, image in enumerate(images):
    codes = np.clip(np.round(image * 128) - 1, -128, 127).astype(np.int8)[None]
    interpreter.set_tensor(source["index"], codes)
    interpreter.invoke()
    for point, op in zip(points, ops):
      tensor = tensors[op["outputs"][0]]
      scale, zero_point = tensor["quantization"]
      file_codes = interpreter.get_tensor(tensor["index"])[0].astype(np.int32)
      expected = np.round(simulated[point][index] / scale).astype(np.int32) + zero_point
      np.testing.assert_array_equal(file_codes, expected.reshape(file_codes.shape),
                                    err_msg=f"image {index}, {point}")


def test_mediapipe_classifies_with_the_uint8_file(exported, tiny_qat):
  io, path, _ = exported
  if io != "uint8":
    pytest.skip("MediaPipe takes uint8 or float32 I/O only")
  mp = pytest.importorskip("mediapipe")
  from mediapipe.tasks.python import BaseOptions, vision
  _, _, _, pixels, _ = tiny_qat
  options = vision.ImageClassifierOptions(base_options=BaseOptions(model_asset_path=path),
                                          max_results=3)
  with vision.ImageClassifier.create_from_options(options) as classifier:
    image = mp.Image(image_format=mp.ImageFormat.SRGB, data=pixels[0].astype(np.uint8))
    result = classifier.classify(image)
  assert len(result.classifications[0].categories) == 3
