"""The int8 rules, the straight-through gradient and the composite the converter reads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effnetlite.quant import fake_quant as fq


def test_activation_params_hold_zero_and_map_relu6_onto_int8():
  scale, zero_point = fq.activation_params(0.0, 6.0)
  assert np.isclose(scale, 6.0 / 255.0) and zero_point == -128
  scale, zero_point = fq.activation_params(0.5, 2.0)  # widened to hold 0
  assert np.isclose(scale, 2.0 / 255.0) and zero_point == -128
  scale, zero_point = fq.activation_params(-1.0, 1.0)
  assert np.isclose(scale, 2.0 / 255.0) and zero_point in (-1, 0)  # round(-128 + 127.5)
  assert fq.activation_params(0.0, 0.0)[0] > 0


def test_fake_quant_lands_on_the_grid_and_saturates():
  scale, zero_point = fq.activation_params(-1.0, 3.0)
  x = jnp.linspace(-2.0, 4.0, 101)
  y = np.asarray(fq.fake_quant(x, scale, zero_point))
  codes = y / scale + zero_point
  assert np.allclose(codes, np.round(codes), atol=1e-3)
  assert codes.min() >= -128 - 1e-3 and codes.max() <= 127 + 1e-3
  assert np.abs(y - np.clip(x, -1.0, 3.0)).max() <= scale / 2 + 1e-6


def test_straight_through_gradient_inside_the_range_only():
  scale, zero_point = fq.activation_params(0.0, 1.0)
  grad = jax.grad(lambda x: fq.fake_quant(x, scale, zero_point).sum())(
      jnp.array([-0.5, 0.1, 0.5, 0.9, 1.5]))
  np.testing.assert_array_equal(grad, [0.0, 1.0, 1.0, 1.0, 0.0])


def test_weights_per_channel_symmetric_narrow_range():
  kernel = np.random.RandomState(0).normal(size=(3, 3, 4, 5)).astype(np.float32)
  scale = fq.weight_scale(kernel)
  np.testing.assert_allclose(scale, np.abs(kernel).max((0, 1, 2)) / 127, rtol=1e-6)
  q = np.asarray(fq.fake_quant(jnp.asarray(kernel), scale, 0.0, narrow_range=True)) / scale
  assert np.abs(q).max() == pytest.approx(127, abs=1e-3)  # never -128
  assert np.allclose(q, np.round(q), atol=1e-3)


def test_composite_carries_static_parameters_and_computes_the_same():
  x = jnp.linspace(-1.0, 1.0, 12).reshape(3, 4)
  scale = np.float32([0.01, 0.02, 0.03, 0.04])

  def per_channel(v):
    return fq.fake_quant_composite(v, scale, None, narrow_range=True, quantization_dimension=1)
  text = jax.jit(per_channel).lower(x).as_text()
  assert 'stablehlo.composite "quant.fake_quant"' in text
  assert "quantization_dimension = 1" in text and "narrow_range = true" in text
  assert 'dtype = "i8"' in text and "zero_point" not in text.split("decomposition")[0]
  np.testing.assert_allclose(per_channel(x), fq.fake_quant(x, scale, 0.0, narrow_range=True),
                             atol=1e-7)
  activation = jax.jit(lambda v: fq.fake_quant_composite(v, np.float32([0.01]),
                                                         np.float32([3]))).lower(x).as_text()
  assert "zero_point = dense<3> : tensor<1xi64>" in activation
  with pytest.raises(ValueError, match="invalid quantisation scale"):
    fq.fake_quant_composite(x, np.float32([0.0]), np.float32([0]))
