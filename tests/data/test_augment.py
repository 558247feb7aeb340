"""RandAugment / AutoAugment ops against PIL (the TF code's own reference) or NumPy."""

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image, ImageEnhance, ImageOps

from effnetlite.config import base_config
from effnetlite.data import augment


@pytest.fixture(scope="module")
def photo():
  import skimage.data
  return np.asarray(Image.fromarray(skimage.data.chelsea()).resize((64, 48)))


@pytest.fixture(scope="module")
def square(photo):
  return np.ascontiguousarray(photo[:, 8:56])


def _ours(name, image, level=5.0, sign=False):
  return augment.apply_op(name, tf.constant(image, tf.float32), level, tf.constant(sign)).numpy()


def _signed(level, maximum, sign):
  return (-1.0 if sign else 1.0) * level / augment.MAX_LEVEL * maximum


def _pil_affine(image, coeffs):
  """PIL maps output pixel centres (x + 0.5, y + 0.5) to input ones and floors; grey outside."""
  return np.asarray(Image.fromarray(image).transform(
      image.shape[1::-1], Image.Transform.AFFINE, coeffs, Image.Resampling.NEAREST,
      fillcolor=(128, 128, 128)))


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


@pytest.mark.parametrize("sign", [False, True])
@pytest.mark.parametrize("level", [5.0, 10.0])
@pytest.mark.parametrize("name", ["Color", "Contrast", "Brightness", "Sharpness"])
def test_enhance_ops_match_pil(photo, name, level, sign):
  factor = 1.0 + _signed(level, 0.9, sign)
  expected = getattr(ImageEnhance, name)(Image.fromarray(photo)).enhance(factor)
  diff = np.abs(_ours(name, photo, level, sign) - np.asarray(expected))
  # PIL truncates the blend to uint8 (< 1). Its grey image, grey mean or smoothed image is
  # also rounded to uint8 (<= 0.5; TF's grey weights 0.2989/0.587/0.114 add < 0.03), an error
  # the blend scales by |1 - factor|. Brightness blends with exact black: truncation only.
  tolerance = 1.0 if name == "Brightness" else 1.0 + 0.55 * abs(1.0 - factor)
  assert diff.max() < tolerance


@pytest.mark.parametrize("sign", [False, True])
@pytest.mark.parametrize("level", [3.0, 7.0])
@pytest.mark.parametrize("name", ["ShearX", "ShearY"])
def test_shear_matches_pil(square, name, level, sign):
  shear = _signed(level, 0.3, sign)
  # TF samples at integer indices, PIL at pixel centres: an offset of -shear / 2 makes the maps
  # equal. Odd levels keep shear * index off k + 1/2 on 48 pixels, where TF rounds, PIL floors.
  coeffs = ((1, shear, -shear / 2, 0, 1, 0) if name == "ShearX"
            else (1, 0, 0, shear, 1, -shear / 2))
  np.testing.assert_array_equal(_ours(name, square, level, sign), _pil_affine(square, coeffs))


@pytest.mark.parametrize("sign", [False, True])
@pytest.mark.parametrize("level", [5.0, 10.0])
@pytest.mark.parametrize("name", ["TranslateX", "TranslateY"])
def test_translate_matches_pil(photo, name, level, sign):
  # 14.4 / 28.8 px across, 10.8 / 21.6 px down: never a half pixel, where TF rounds, PIL floors.
  pixels = _signed(level, 0.45, sign) * photo.shape[1 if name == "TranslateX" else 0]
  coeffs = (1, 0, -pixels, 0, 1, 0) if name == "TranslateX" else (1, 0, 0, 0, 1, -pixels)
  np.testing.assert_array_equal(_ours(name, photo, level, sign), _pil_affine(photo, coeffs))


@pytest.mark.parametrize("sign", [False, True])
@pytest.mark.parametrize("level", [3.0, 10.0])
@pytest.mark.parametrize("shape", ["square", "photo"])
def test_rotate_matches_pil(request, shape, level, sign):
  image = request.getfixturevalue(shape)  # 48x48, and 48x64 (rotated about its own centre)
  expected = Image.fromarray(image).rotate(_signed(level, 30.0, sign), Image.Resampling.NEAREST,
                                           fillcolor=(128, 128, 128))  # counter-clockwise
  np.testing.assert_array_equal(_ours("Rotate", image, level, sign), np.asarray(expected))


@pytest.mark.parametrize("name,level,reference", [
    ("SolarizeAdd", 3.0, lambda x: np.where(x < 128, np.minimum(x + 33, 255), x)),
    ("SolarizeAdd", 10.0, lambda x: np.where(x < 128, np.minimum(x + 110, 255), x)),
    ("Identity", 10.0, lambda x: x),
])
def test_pixel_ops_match_numpy(photo, name, level, reference):
  np.testing.assert_array_equal(_ours(name, photo, level), reference(photo.astype(np.float32)))


@pytest.mark.parametrize("level,first,last", [(5.0, 19, 29), (10.0, 14, 34)])
def test_cutout_is_a_centred_grey_square(square, level, first, last):
  # Side 2 * int(0.45 * 48 * level / 20) + 1 (11 or 21 px, about 0.45 * 48 at level 10),
  # centred on pixel 24 of 48.
  expected = square.astype(np.float32)
  expected[first:last + 1, first:last + 1] = augment.FILL
  np.testing.assert_array_equal(_ours("Cutout", square, level), expected)


def test_cutout_is_centred_on_a_wide_image(photo):
  expected = photo.astype(np.float32)
  expected[14:35, 22:43] = augment.FILL  # centre (24, 32) of 48x64, side 21 at level 10
  np.testing.assert_array_equal(_ours("Cutout", photo, 10.0), expected)


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
