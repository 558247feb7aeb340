"""The one decision of which layer formulations run where: concrete per platform, explicit
config values kept, bad values one line, and every module built from its answer."""

import jax
import pytest

from effnetlite import config as config_lib
from effnetlite.errors import UserError
from effnetlite.nn import backend
from effnetlite.weights import factory


@pytest.mark.parametrize("platform, expected", [
    ("cpu", ("shifted", "dot", False)), ("gpu", ("conv", "conv", True)),
    ("tpu", ("conv", "conv", False))])
def test_auto_is_concrete_for_each_platform(platform, expected):
  resolved = backend.resolve_backend(config_lib.variant_config("lite0"), platform)
  assert (resolved.depthwise, resolved.pointwise, resolved.rematerialize) == expected
  assert resolved.as_dict() == {"platform": platform, "depthwise": expected[0],
                                "pointwise": expected[1], "rematerialize": expected[2]}


def test_default_platform_is_jaxs():
  assert backend.resolve_backend(config_lib.variant_config("lite0")).platform == (
      jax.default_backend())


@pytest.mark.parametrize("platform", ["cpu", "gpu", "tpu"])
def test_explicit_config_values_win_on_every_platform(platform):
  config = config_lib.variant_config("lite0")
  config.model.depthwise, config.model.pointwise = "shifted", "conv"
  config.rematerialize = "elementwise"
  assert backend.resolve_backend(config, platform).as_dict() == {
      "platform": platform, "depthwise": "shifted", "pointwise": "conv", "rematerialize": True}
  config.rematerialize = "off"
  assert backend.resolve_backend(config, platform).rematerialize is False


@pytest.mark.parametrize("key, value, message", [
    ("model.depthwise", "fast", "config.model.depthwise='fast' is not allowed; use auto, conv, "
                                "shifted"),
    ("model.pointwise", "matmul", "config.model.pointwise='matmul' is not allowed; use auto, "
                                  "conv, dot"),
    ("rematerialize", "yes", "config.rematerialize='yes' is not allowed; use auto, off, "
                             "elementwise")])
def test_bad_values_are_one_line(key, value, message):
  config = config_lib.variant_config("lite0")
  section, _, name = key.rpartition(".")
  (config[section] if section else config)[name] = value
  with pytest.raises(UserError) as error:
    backend.resolve_backend(config, "cpu")
  assert str(error.value) == message


def test_unknown_platform_is_one_line():
  with pytest.raises(UserError, match=r"^platform 'metal' has no layer formulations; use cpu, "
                                      r"gpu, tpu$"):
    backend.resolve_backend(config_lib.variant_config("lite0"), "metal")


@pytest.mark.parametrize("qat", [False, True])
@pytest.mark.parametrize("platform", ["cpu", "gpu", "tpu"])
def test_float_and_int8_modules_take_the_resolved_values(platform, qat):
  """A step compiled on this CPU for an accelerator gets the accelerator's formulations;
  the int8 twin copies them; module overrides win."""
  config = config_lib.variant_config("lite0")
  config.quantization.qat = qat
  resolved = backend.resolve_backend(config, platform)
  module = factory.module_from_config(config, platform=platform)
  assert (module.depthwise, module.pointwise) == (resolved.depthwise, resolved.pointwise)
  if not qat:
    assert module.rematerialize == resolved.rematerialize
  module = factory.module_from_config(config, platform=platform, depthwise="shifted")
  assert module.depthwise == "shifted"
