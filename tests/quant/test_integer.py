"""XNNPACK's int8 arithmetic against NumPy re-implementations and hand computations."""

import jax.numpy as jnp
import numpy as np
from int8_reference import round_half_away

from effnetlite.quant import integer


def test_average_pool_rounds_the_mean_code_half_away_from_zero():
  scale, zero_point = 0.5, 3.0
  codes = np.array([[-7, -6, -6, -6], [1, 2, 2, 2], [-128, -128, -128, -127], [5, 5, 6, 6]],
                   np.float32)  # sums -25 (-6.25), 7 (1.75), -511 (-127.75), 22 (5.5)
  x = integer.QTensor(jnp.asarray((codes - zero_point) * scale).reshape(4, 2, 2, 1), scale,
                 zero_point)
  pooled = np.asarray(integer.avg_pool_int8(x).value)[:, 0] / scale + zero_point
  total = codes.sum(1)
  np.testing.assert_allclose(pooled, np.sign(total) * ((np.abs(total) + 2) // 4))
  np.testing.assert_allclose(pooled, [-6, 2, -128, 6])
  np.testing.assert_allclose(round_half_away(np.array([5.5, -6.5])), [6, -7])


def _xnnpack_add(a, b, a_q, b_q, out_q):
  """XNNPACK's int8 ADD (xnn_init_qs8_add_minmax_scalar_params and the scalar kernel),
  in NumPy: 21-bit fixed-point multipliers, a rounding constant, an arithmetic shift."""
  ratio_a = np.float32(a_q[0]) / np.float32(out_q[0])
  ratio_b = np.float32(b_q[0]) / np.float32(out_q[0])
  exponent = int((np.float32(max(ratio_a, ratio_b)).view(np.int32) >> 23) - 127)
  shift = 20 - exponent
  multiplier_a = int(np.rint(np.float32(ratio_a) * np.float32(2.0 ** shift)))
  multiplier_b = int(np.rint(np.float32(ratio_b) * np.float32(2.0 ** shift)))
  total = (multiplier_a * (a.astype(np.int64) - a_q[1]) + multiplier_b * (b.astype(np.int64) - b_q[1])
           + (1 << (shift - 1)))
  return np.clip((total >> shift) + out_q[1], -128, 127)


def test_residual_add_is_xnnpacks_fixed_point_arithmetic():
  rng = np.random.RandomState(0)
  for _ in range(20):
    a_q = (float(rng.uniform(0.005, 0.1)), int(rng.randint(-128, 128)))
    b_q = (float(rng.uniform(0.005, 0.1)), int(rng.randint(-128, 128)))
    low, high = -rng.uniform(0, 8), rng.uniform(0, 8)
    out_scale, out_zp = (float(np.asarray(v)) for v in fq_params(low, high))
    a = rng.randint(-128, 128, 4096)
    b = rng.randint(-128, 128, 4096)
    qa = integer.QTensor(jnp.asarray((a - a_q[1]) * np.float32(a_q[0]), jnp.float32),
                         jnp.float32(a_q[0]), jnp.float32(a_q[1]))
    qb = integer.QTensor(jnp.asarray((b - b_q[1]) * np.float32(b_q[0]), jnp.float32),
                         jnp.float32(b_q[0]), jnp.float32(b_q[1]))
    got = np.asarray(integer.fixed_point_add(qa, qb, jnp.float32(out_scale),
                                             jnp.float32(out_zp))) + out_zp
    np.testing.assert_array_equal(got, _xnnpack_add(a, b, a_q, b_q, (out_scale, int(out_zp))))


def fq_params(low, high):
  from effnetlite.quant import fake_quant as fq
  return fq.activation_params(np.float32(low), np.float32(high))
