"""RandAugment / AutoAugment ops against PIL's ImageOps (the TF code's own reference)."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageOps

from effnetlite.config import base_config
from effnetlite.data import augment


@pytest.fixture(scope="module")
def photo():
  import skimage.data
  return np.asarray(Image.fromarray(skimage.data.chelsea()).resize((64, 48)))


def _ours(name, image, level=5.0, sign=False):
  return augment.apply_op(name, tf.constant(image, tf.float32), level, tf.constant(sign)).numpy()


@pytest.mark.parametrize("name,reference", [
    ("Invert", ImageOps.invert),
    ("Equalize", ImageOps.equalize),
    ("AutoContrast", ImageOps.autocontrast),
    ("Solarize", lambda im: ImageOps.solarize(im, threshold=128)),   # level 5: 256 - 128
    ("Posterize", lambda im: ImageOps.posterize(im, 6)),            # level 5: 8 - int(2.0)
])
def test_ops_match_pil(photo, name, reference):
  expected = np.asarray(reference(Image.fromarray(photo))).astype(np.float32)
  ours = _ours(name, photo)
  # AutoContrast: PIL rounds through a lookup table; ours scales in float.
  assert np.abs(ours - expected).max() <= (1.0 if name == "AutoContrast" else 0.0)


@pytest.mark.parametrize("name", augment.RANDAUGMENT_OPS + ("Identity",))
def test_every_op_keeps_shape_and_range(photo, name):
  for sign in (False, True):
    out = _ours(name, photo, 10.0, sign)
    assert out.shape == photo.shape and out.min() >= 0 and out.max() <= 255


def test_policies_are_seeded_and_change_images(photo):
  config = base_config().augment
  image = tf.constant(photo, tf.float32)
  for policy in ("randaugment", "autoaugment"):
    config.policy = policy
    seed = tf.constant([3, 4], tf.int64)
    a = augment.apply_policy(image, config, seed).numpy()
    np.testing.assert_array_equal(a, augment.apply_policy(image, config, seed).numpy())
    outs = [augment.apply_policy(image, config, tf.constant([s, 0], tf.int64)).numpy()
            for s in range(8)]
    assert any(not np.array_equal(o, photo) for o in outs)


def test_translate_and_rotate_fill_grey(photo):
  shifted = _ours("TranslateX", photo, 10.0)
  assert (shifted[:, :28] == augment.FILL).all()  # content moves right by 0.45 * 64 = 28.8 px
  assert (shifted[:, 30:] != augment.FILL).any()
  np.testing.assert_array_equal(_ours("Rotate", photo, 0.0), photo)
