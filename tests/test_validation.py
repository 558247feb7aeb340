"""The one config validation: every key known, every bad value named, paths made absolute."""

import importlib.util
import os
import re

import ml_collections
import pytest
from helpers import ROOT

from effnetlite import validation
from effnetlite.config import base_config
from effnetlite.errors import UserError


def _config_file(name: str) -> ml_collections.ConfigDict:
  spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()


def _flat_keys(config, prefix=""):
  keys = set()
  for key, value in config.items():
    if isinstance(value, ml_collections.ConfigDict):
      keys |= _flat_keys(value, f"{prefix}{key}.")
    else:
      keys.add(prefix + key)
  return keys


def test_schema_knows_exactly_the_keys_of_the_base_and_search_configs():
  assert _flat_keys(base_config()) == set(validation.SCHEMA)
  search = _config_file("search_lite0")
  assert _flat_keys(search) == set(validation.SCHEMA) | set(validation.SEARCH_SCHEMA)


@pytest.mark.parametrize("name", ["lite0", "lite1", "lite2", "lite3", "lite4", "demo"])
def test_shipped_configs_pass(name):
  checked = validation.validate_config(_config_file(name))
  assert checked.to_dict() == _config_file(name).to_dict()


def test_search_config_passes_as_a_search_and_others_do_not():
  validation.validate_config(_config_file("search_lite0"), search=True)
  with pytest.raises(UserError, match="has no key search.alpha_range; pass a search config"):
    validation.validate_config(_config_file("demo"), search=True)


@pytest.mark.parametrize("split,message", [
    ("test", "config.dataset.eval_split='test' is also config.search.test_split: the search "
             "would choose on the split it reports"),
    ("train", "config.dataset.eval_split='train' is the training split: the search would rank "
              "on data it trained on"),
])
def test_a_search_never_ranks_on_the_test_or_training_split(split, message):
  config = _config_file("search_lite0")
  config.dataset.eval_split = split
  with pytest.raises(UserError, match=re.escape(message)):
    validation.validate_config(config, search=True)
  config.dataset.eval_split, config.search.test_split = "validation", "test"  # its own split
  validation.validate_config(config, search=True)


def test_evaluating_on_holdout_needs_a_fraction():
  config = _config_file("demo")
  config.dataset.eval_split = "holdout"
  with pytest.raises(UserError, match="config.dataset.eval_split='holdout' is the part of the "
                                      "training split held out by config.dataset.holdout_fraction"):
    validation.validate_config(config)
  config.dataset.holdout_fraction = 0.1
  validation.validate_config(config)


def test_a_config_saved_before_holdout_fraction_existed_still_loads():
  config = _config_file("demo")
  del config.dataset["holdout_fraction"]
  assert validation.validate_config(config).dataset.holdout_fraction == 0.0


def test_folder_dataset_needs_a_data_dir(tmp_path, monkeypatch):
  config = _config_file("finetune_folder")
  with pytest.raises(UserError,
                     match=r"config.dataset.name='folder' needs config.dataset.data_dir"):
    validation.validate_config(config)
  monkeypatch.chdir(tmp_path)
  config.dataset.data_dir = "images"
  assert validation.validate_config(config).dataset.data_dir == str(tmp_path / "images")


@pytest.mark.parametrize("key", sorted({**validation.SCHEMA, **validation.SEARCH_SCHEMA}))
def test_every_key_refuses_its_bad_example_naming_key_and_value(key):
  rule = {**validation.SCHEMA, **validation.SEARCH_SCHEMA}[key]
  if rule.bad_example is None:
    pytest.skip("accepts any value of its type")
  config = _config_file("search_lite0")
  section, _, name = key.rpartition(".")
  holder = config[section] if section else config
  with holder.ignore_type():
    holder[name] = rule.bad_example
  with pytest.raises(UserError) as raised:
    validation.validate_config(config, search=True)
  message = str(raised.value)
  assert message.startswith(f"config.{key}={rule.bad_example!r}"), message
  assert rule.allowed in message


@pytest.mark.parametrize("rule,good,bad", [
    (validation.number(low=0, high=1, high_open=True), [0.0, 0.5, 0.999], [-0.1, 1.0, 1.5]),
    (validation.number(low=0, high=1, low_open=True, high_open=True), [1e-9, 0.9999],
     [0.0, 1.0]),
    (validation.number("int", low=1, or_minus_one=True), [-1, 1, 7], [0, -2]),
    (validation.number("int", low=32), [32, 260], [31, 0]),
    (validation.choice(("a", "b")), ["a", "b"], ["c", ""]),
])
def test_rules_accept_and_refuse_by_hand(rule, good, bad):
  assert all(rule.test(value) for value in good)
  assert not any(rule.test(value) for value in bad)


def test_types_are_checked_before_ranges():
  config = base_config()
  with config.ignore_type():
    config.model.resolution = 224.0
  with pytest.raises(UserError, match=r"config.model.resolution=224.0 must be an integer"):
    validation.validate_config(config)
  config = base_config()
  with config.ignore_type():
    config.model.width = float("nan")
  with pytest.raises(UserError, match=r"config.model.width=nan must be a number"):
    validation.validate_config(config)


def test_unknown_and_missing_keys_are_named():
  config = base_config()
  config.model.widht = 1.0
  with pytest.raises(UserError, match=r"config.model.widht is not a key effnetlite reads"):
    validation.validate_config(config)
  config = base_config()
  del config.optimizer["momentum"]
  with pytest.raises(UserError, match=r"has no key optimizer.momentum"):
    validation.validate_config(config)


def test_paths_become_absolute_and_init_from_must_exist(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  config = base_config()
  config.dataset.data_dir, config.dataset.manual_dir = "tfds", "~/archives"
  checked = validation.validate_config(config)
  assert checked.dataset.data_dir == str(tmp_path / "tfds")
  assert checked.dataset.manual_dir == os.path.expanduser("~/archives")
  assert config.dataset.data_dir == "tfds"  # the caller's config is left as it was
  config.init_from = "runs/missing"
  with pytest.raises(UserError, match=r"config.init_from=runs/missing: .* does not exist"):
    validation.validate_config(config)
  (tmp_path / "runs" / "old").mkdir(parents=True)
  config.init_from = "runs/old"
  assert validation.validate_config(config).init_from == str(tmp_path / "runs" / "old")
  config.init_from = "pretrained"
  assert validation.validate_config(config).init_from == "pretrained"


def test_pretrained_weights_exist_only_for_lite0_to_2():
  validation.check_pretrained(_config_file("lite2"))
  with pytest.raises(UserError, match=r"no offline ImageNet weights for config.model.name='lite3'"):
    validation.check_pretrained(_config_file("lite3"))


def test_check_weights(tmp_path):
  assert validation.check_weights("pretrained") == "pretrained"
  model = tmp_path / "model.tflite"
  with pytest.raises(UserError, match="does not exist"):
    validation.check_weights(str(model), tflite=True)
  model.write_bytes(b"")
  assert validation.check_weights(str(model), tflite=True) == str(model)
  with pytest.raises(UserError, match="is a TFLite file; this command needs JAX weights"):
    validation.check_weights(str(model))


def test_every_key_has_a_description_and_describe_keys_lists_them():
  from effnetlite.validation import DESCRIPTIONS, SCHEMA, SEARCH_SCHEMA, describe_keys
  assert set(DESCRIPTIONS) == set(SCHEMA) | set(SEARCH_SCHEMA)
  rows = {row[0]: row for row in describe_keys(base_config())}
  assert set(rows) == set(SCHEMA)
  assert rows["optimizer.base_learning_rate"][1:4] == (0.016, "float", "> 0")
  assert "per learning_rate_batch_base images" in rows["optimizer.base_learning_rate"][4]


def test_an_npu_latency_target_needs_int8_latencies():
  config = _config_file("search_lite0")
  config.search.latency_target = "ethos-u65-256"
  validation.validate_config(config, search=True)  # int8, the default: Vela compiles it
  config.search.latency_format = "float"
  with pytest.raises(UserError, match=r"^config.search.latency_target='ethos-u65-256' needs "
                                      r"config.search.latency_format='int8'"):
    validation.validate_config(config, search=True)
  config.search.latency_target = "litert"
  validation.validate_config(config, search=True)
