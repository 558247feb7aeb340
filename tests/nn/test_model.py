"""The Flax model against the PyTorch reference (efficientnet-lite-pytorch) and itself."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from effnetlite.data import preprocessing
from effnetlite.nn import architecture
from effnetlite.nn.model import EfficientNetLite
from effnetlite.weights import factory, loading

torch = pytest.importorskip("torch")
reference = pytest.importorskip("efficientnet_lite_pytorch")


def _reference_logits(model, pixels: np.ndarray) -> np.ndarray:
  images = preprocessing.normalize(pixels).transpose(0, 3, 1, 2)
  with torch.no_grad():
    return model.eval()(torch.from_numpy(np.ascontiguousarray(images))).numpy()


def _our_logits(name: str, weights_path: str, pixels: np.ndarray, **overrides) -> np.ndarray:
  module, variables = factory.create_model(name, pretrained=weights_path, **overrides)
  return np.asarray(jax.jit(module.apply)(variables, preprocessing.normalize(pixels)))


def _assert_same(ours: np.ndarray, theirs: np.ndarray):
  assert np.abs(ours - theirs).max() <= 1e-4
  assert (np.argsort(-ours, axis=1)[:, :5] == np.argsort(-theirs, axis=1)[:, :5]).all()


@pytest.mark.parametrize("name", ["lite0", "lite1", "lite2"])
def test_pretrained_matches_reference_on_photos(name, photo_batch):
  path = loading.pretrained_weights_path(name)
  model = reference.EfficientNet.from_pretrained(f"efficientnet-{name}", weights_path=path)
  pixels = photo_batch(factory.resolve_config(name).model.resolution)
  _assert_same(_our_logits(name, path, pixels), _reference_logits(model, pixels))


@pytest.mark.parametrize("name", ["lite3", "lite4"])
def test_random_reference_weights_match(name, photo_batch, tmp_path):
  torch.manual_seed(0)
  model = reference.EfficientNet.from_name(f"efficientnet-{name}").eval()
  # Random BN statistics, so that every BN tensor is exercised.
  for module in model.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      module.running_mean.uniform_(-0.1, 0.1)
      module.running_var.uniform_(0.5, 1.5)
  path = str(tmp_path / f"{name}.pth")
  torch.save(model.state_dict(), path)
  pixels = photo_batch(factory.resolve_config(name).model.resolution)[:2]
  _assert_same(_our_logits(name, path, pixels), _reference_logits(model, pixels))


def test_conv_implementations_give_same_model(photo_batch):
  path = loading.pretrained_weights_path("lite0")
  pixels = photo_batch(224)[:2]
  fast = _our_logits("lite0", path, pixels, depthwise="shifted", pointwise="dot")
  plain = _our_logits("lite0", path, pixels, depthwise="conv", pointwise="conv")
  assert np.abs(fast - plain).max() <= 1e-4


def test_feature_maps_and_strides():
  module = EfficientNetLite(width=1.0, depth=1.0, num_classes=7)
  images = jnp.zeros((2, 224, 224, 3))
  variables = jax.jit(module.init)(jax.random.PRNGKey(0), images)
  out = jax.eval_shape(lambda: module.apply(variables, images, return_features=True))
  sizes = {k: v.shape for k, v in out.items()}
  assert sizes["stride_2"] == (2, 112, 112, 16)
  assert sizes["stride_4"] == (2, 56, 56, 24)
  assert sizes["stride_8"] == (2, 28, 28, 40)
  assert sizes["stride_16"] == (2, 14, 14, 112)
  assert sizes["stride_32"] == (2, 7, 7, 320)
  assert sizes["head"] == (2, 7, 7, 1280)
  assert sizes["pooled"] == (2, 1280) and sizes["logits"] == (2, 7)


def test_tf_initialisers():
  module = EfficientNetLite(num_classes=1000)
  params = jax.jit(module.init)(jax.random.PRNGKey(1), jnp.zeros((1, 32, 32, 3)))["params"]
  depthwise = np.asarray(params["block_4"]["depthwise_conv"]["kernel"])  # 5x5, 240 channels
  assert depthwise.shape == (5, 5, 1, 240)
  assert depthwise.std() == pytest.approx(np.sqrt(2 / 25), rel=0.05)  # fan_out = k*k
  expand = np.asarray(params["block_4"]["expand_conv"]["kernel"])  # 1x1, 40 -> 240
  assert expand.std() == pytest.approx(np.sqrt(2 / 240), rel=0.05)
  dense = np.asarray(params["classifier"]["kernel"])
  assert np.abs(dense).max() <= 1 / np.sqrt(1000) and dense.std() > 0.8 / np.sqrt(3000)
  assert not np.asarray(params["classifier"]["bias"]).any()
  assert (np.asarray(params["stem_bn"]["scale"]) == 1).all()


def test_drop_connect_rates_and_train_mode():
  specs = architecture.block_specs(1.0, 1.0)
  assert [round(s.drop_connect_rate, 4) for s in specs[:3]] == [0.0, 0.0125, 0.025]
  module = EfficientNetLite(num_classes=3, dropout_rate=0.0)
  images = jax.random.normal(jax.random.PRNGKey(0), (8, 32, 32, 3))
  variables = jax.jit(module.init)(jax.random.PRNGKey(0), images)
  train = jax.jit(lambda seed: module.apply(
      variables, images, train=True, mutable=["batch_stats"],
      rngs={"dropout": jax.random.PRNGKey(seed)})[0])
  assert not np.allclose(train(0), train(1))   # stochastic depth is active in training
  np.testing.assert_array_equal(train(2), train(2))
  evaluate = jax.jit(module.apply)
  np.testing.assert_array_equal(evaluate(variables, images), evaluate(variables, images))


def test_bfloat16_compute_keeps_float32_params():
  module, variables = factory.create_model("lite0", dtype="bfloat16", num_classes=10)
  assert all(x.dtype == np.float32 for x in jax.tree.leaves(variables))
  logits = jax.eval_shape(module.apply, variables, jnp.zeros((1, 64, 64, 3)))
  assert logits.dtype == jnp.bfloat16


def test_rematerialized_blocks_give_the_same_gradients():
  """Recomputing BN + ReLU6 in the backward pass (GPUs' default) changes no value:
  loss, gradients and BN statistics equal plain autodiff's up to float rounding."""
  images = jax.random.normal(jax.random.PRNGKey(0), (4, 32, 32, 3))

  def gradients(rematerialize: bool):
    module = EfficientNetLite(num_classes=5, width=0.25, depth=0.25, drop_connect_rate=0.3,
                              depthwise="conv", pointwise="conv", rematerialize=rematerialize)
    variables = module.init(jax.random.PRNGKey(1), images)

    def loss(params):
      logits, updated = module.apply({**variables, "params": params}, images, train=True,
                                     mutable=["batch_stats"],
                                     rngs={"dropout": jax.random.PRNGKey(2)})
      return jnp.sum(logits ** 2), updated
    return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])

  (plain_loss, plain_stats), plain = gradients(False)
  (remat_loss, remat_stats), remat = gradients(True)
  np.testing.assert_allclose(remat_loss, plain_loss, rtol=1e-6)
  for a, b in zip(jax.tree.leaves((remat, remat_stats)), jax.tree.leaves((plain, plain_stats))):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
