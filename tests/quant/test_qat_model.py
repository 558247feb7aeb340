"""The quantised twin: the float model's variables, the integer arithmetic of the file, and
training with frozen BN statistics and moving-average ranges."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from int8_reference import Int8Reference, dequantize

from effnetlite.quant import model as qm
from conftest import ARCH


def test_reads_the_float_models_variables_plus_ranges(tiny_qat):
  module, twin, qat, _, images = tiny_qat
  float_names = set(traverse_util.flatten_dict(qm.without_ranges(qat), sep="/"))
  fresh = module.init(jax.random.PRNGKey(0), images[:1])
  assert float_names == set(traverse_util.flatten_dict(fresh, sep="/"))
  extra = set(traverse_util.flatten_dict(qat, sep="/")) - float_names
  assert extra and all(name.startswith(f"batch_stats/{qm.RANGES}/") for name in extra)
  assert {name.split("/")[2] for name in extra} >= {"stem", "head", "logits", "block_0_add"}
  module.apply(qat, images[:2])  # the float model ignores the ranges


def test_each_layer_is_the_integer_arithmetic_of_the_file(tiny_qat):
  """Layer by layer (each starting from the twin's own previous activation) the twin's
  activations are an independent NumPy integer inference's, up to float32 rounding:
  at most 1 quantisation step on at most 0.1% of the values."""
  _, twin, qat, _, images = tiny_qat
  logits, captured = twin.apply(qat, images, mutable=[qm.ACTIVATIONS])
  activations = jax.device_get(captured[qm.ACTIVATIONS])
  reference = Int8Reference(qat, ARCH["width"], ARCH["depth"], ARCH["stem_channels"])
  reference.forced = activations
  reference(images.astype(np.float64))
  assert set(reference.activations) == set(activations)
  for point, expected in reference.activations.items():
    steps = np.abs(np.asarray(activations[point]).reshape(expected.shape) - expected)
    steps /= reference.act(point)[0]
    assert steps.max() <= 1.0 + 1e-3, point
    assert (steps > 0.5).mean() <= 1e-3, point
  np.testing.assert_allclose(activations["logits"], logits)


def test_training_updates_weights_and_ranges_never_bn_statistics(tiny_qat):
  _, twin, qat, _, images = tiny_qat
  labels = jnp.arange(len(images)) % 10

  def loss(params, stats):
    logits, updated = twin.apply({"params": params, "batch_stats": stats}, images, train=True,
                                 mutable=["batch_stats"], rngs={"dropout": jax.random.PRNGKey(0)})
    one_hot = jax.nn.one_hot(labels, 10)
    return -(jax.nn.log_softmax(logits) * one_hot).sum(-1).mean(), updated

  grads, updated = jax.jit(jax.grad(loss, has_aux=True))(qat["params"], qat["batch_stats"])
  flat = traverse_util.flatten_dict(grads, sep="/")
  assert all(np.isfinite(g).all() for g in flat.values())
  for name in ("stem_conv/kernel", "stem_bn/scale", "head_bn/bias", "classifier/kernel",
               "block_1/depthwise_conv/kernel"):
    assert np.abs(flat[name]).max() > 0, name  # gradients reach kernels and BN through folding
  before = traverse_util.flatten_dict(qm.without_ranges(qat)["batch_stats"], sep="/")
  after = traverse_util.flatten_dict(
      qm.without_ranges(jax.device_get(updated))["batch_stats"], sep="/")
  assert all(np.array_equal(before[k], after[k]) for k in before)  # BN frozen
  old, new = qat["batch_stats"][qm.RANGES]["stem"], updated["batch_stats"][qm.RANGES]["stem"]
  assert float(new["count"]) == float(old["count"]) + 1
  assert float(new["min"]) == 0.0 and 0 < float(new["max"]) <= 6.0


def test_table_is_what_the_simulation_uses(tiny_qat):
  _, twin, qat, _, _ = tiny_qat
  table, _ = qm.export_parameters(twin, qat, 64)
  stem = qat["batch_stats"][qm.RANGES]["stem"]
  low, high = min(float(stem["min"]), 0.0), max(float(stem["max"]), 0.0)
  assert np.isclose(table["stem"]["scale"][0], (high - low) / 255, rtol=1e-6)
  assert table["stem.kernel"]["scale"].shape == (8,)
  fresh = qm.with_ranges(twin, qm.without_ranges(qat), 64)
  try:
    qm.export_parameters(twin, fresh, 64)
  except ValueError as error:
    assert "never observed" in str(error)
  else:
    raise AssertionError("a model whose ranges were never observed must not export")


def test_a_channel_with_tiny_weights_keeps_its_bias_code_within_2_to_the_21(tiny_qat):
  """Stem channel 0's kernel is a millionth of the others (conftest): at max|w| / 127 its
  bias would need ~1e9 codes, which float32 cannot hold exactly; its weight scale becomes
  |b| / (input scale x 2^21) instead, by hand from the float variables."""
  _, twin, qat, _, _ = tiny_qat
  table, _ = qm.export_parameters(twin, qat, 64)
  params, stats = qat["params"], qat["batch_stats"]
  factor = params["stem_bn"]["scale"] / np.sqrt(stats["stem_bn"]["var"] + 1e-3)
  kernel = np.asarray(params["stem_conv"]["kernel"]) * factor
  bias = params["stem_bn"]["bias"] - stats["stem_bn"]["mean"] * factor
  natural = np.abs(kernel).max(axis=(0, 1, 2)) / 127
  floor = np.abs(bias) / (qm.INPUT_SCALE * 2.0 ** 21)
  assert floor[0] > natural[0] and np.all(floor[1:] < natural[1:])
  np.testing.assert_allclose(table["stem.kernel"]["scale"], np.maximum(natural, floor),
                             rtol=1e-5)
  _, captured = twin.apply(qat, np.zeros((1, 64, 64, 3), np.float32), mutable=[qm.TABLE])
  codes = np.asarray(captured[qm.TABLE]["stem" + qm.FOLDED_SUFFIX]["bias_codes"])
  assert abs(codes[0]) == 2 ** 21 and np.all(np.abs(codes) <= 2 ** 21)


def test_dequantize_helper_is_affine():
  np.testing.assert_allclose(dequantize(np.array([-128, 0, 127]), (0.5, -128)), [0, 64, 127.5])
