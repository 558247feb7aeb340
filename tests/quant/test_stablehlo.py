"""The StableHLO serialisation fix: the version written, its scope, and TF 2.21 reading it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effnetlite.quant import fake_quant as fq
from effnetlite.export import stablehlo


def _quantized(x):
  return fq.fake_quant_composite(jnp.tanh(x), np.float32([1 / 127.5]), np.float32([0]))


def _export():
  return jax.export.export(jax.jit(_quantized))(jax.ShapeDtypeStruct((1, 8), jnp.float32))


def test_serialises_for_the_converter_inside_the_block_only():
  default = stablehlo.serialized_version(_export())
  with stablehlo.serialized_for_converter():
    assert stablehlo.serialized_version(_export()) == stablehlo.CONVERTER_STABLEHLO_VERSION
  assert stablehlo.serialized_version(_export()) == default
  # jax 0.10.2 writes a version TF 2.21 cannot read: the reason this module exists.
  assert tuple(map(int, default.split("."))) > (1, 13, 7)


def test_tf_converter_reads_the_composite_only_with_the_fix():
  tf = pytest.importorskip("tensorflow")
  from jax.experimental import jax2tf

  def convert():
    holder = tf.Module()
    holder.serve = tf.function(jax2tf.convert(_quantized, with_gradient=False),
                               autograph=False,
                               input_signature=[tf.TensorSpec([1, 8], tf.float32)])
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [holder.serve.get_concrete_function()], holder)
    converter._experimental_strict_qdq = True
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    return converter.convert()

  with stablehlo.serialized_for_converter():
    data = convert()
  from ai_edge_litert.interpreter import Interpreter
  interpreter = Interpreter(model_content=data)
  interpreter.allocate_tensors()
  quantized = [t for t in interpreter.get_tensor_details() if t["dtype"] == np.int8]
  assert quantized and np.isclose(quantized[0]["quantization"][0], 1 / 127.5)
  with pytest.raises(Exception, match="composite"):
    convert()
