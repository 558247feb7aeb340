"""Input pipeline: sources, TF-faithful crops, exact evaluation counts, seeded order."""

import json
import os

import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import run_python, tiny_config
from PIL import Image

from effnetlite.data import pipeline, preprocessing, sources
from effnetlite.errors import UserError


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory):
  return str(tmp_path_factory.mktemp("tfds"))


# --- crops -------------------------------------------------------------------------------

def _coordinate_image(height, width):
  """Each pixel encodes its own (row, column), so a crop reveals its box."""
  rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
  return np.stack([rows % 256, cols % 256, (rows // 256) * 16 + cols // 256], -1).astype(np.uint8)


def _png(array, path):
  Image.fromarray(array).save(path)
  with open(path, "rb") as handle:
    return handle.read()


@pytest.mark.parametrize("height,width,resolution,box", [
    # 224: pad 32; side = int(224/256 * 256) = 224; top = (256-224+1)//2; left = (320-224+1)//2
    (256, 320, 224, (16, 48, 224)),
    # 219: pad = round(219 * (1/0.875 - 1)) = round(31.29) = 31; side = int(219/250 * 250) = 219
    (250, 300, 219, (16, 41, 219)),
])
def test_eval_crop_matches_hand_computed_box(tmp_path, height, width, resolution, box):
  image = _coordinate_image(height, width)
  data = _png(image, str(tmp_path / "grid.png"))
  top, left, side = box
  # Resizing side -> resolution is the identity here, so the crop is visible exactly.
  cropped = np.asarray(preprocessing.decode_and_center_crop(data, resolution))
  np.testing.assert_array_equal(cropped, image[top:top + side, left:left + side])


def test_eval_crop_of_jpeg_uses_same_box(tmp_path):
  image = _coordinate_image(300, 250)
  Image.fromarray(image).save(tmp_path / "grid.jpg", quality=100)
  data = (tmp_path / "grid.jpg").read_bytes()
  # side = int(100/114 * 250) = 219, top = (300-219+1)//2 = 41, left = (250-219+1)//2 = 16
  import tensorflow as tf
  decoded = tf.io.decode_jpeg(data, channels=3).numpy().astype(np.float32)  # full decode
  expected = tf.image.resize([decoded[41:41 + 219, 16:16 + 219]], [100, 100], "bilinear")[0]
  # The fused decode-and-crop must take the same box as decode-then-crop.
  np.testing.assert_allclose(preprocessing.decode_and_center_crop(data, 100), expected,
                             atol=1e-3)


def test_normalize_is_lite_normalisation():
  pixels = np.array([0, 127, 255], np.uint8)
  np.testing.assert_allclose(preprocessing.normalize(pixels), [-127 / 128, 0, 1])


def test_to_uint8_rounds_and_saturates():
  pixels = np.array([-3.2, 0.49, 0.51, 1.5, 2.5, 127.4, 254.6, 255.0, 300.0], np.float32)
  np.testing.assert_array_equal(preprocessing.to_uint8(pixels),
                                [0, 0, 1, 2, 2, 127, 255, 255, 255])  # ties to even


def test_unknown_resize_method():
  with pytest.raises(ValueError, match="unknown resize method 'fancy'"):
    preprocessing.check_resize_method("fancy")


# --- imagenet2012 under mock data ------------------------------------------------------

def test_imagenet_mock_train_and_eval_batches():
  config = tiny_config("imagenet2012", resolution=48, batch=8, num_classes=1000)
  with tfds.testing.mock_data(num_examples=21):
    train = sources.make_source(config.dataset, "train")
    batch = next(pipeline.train_batches(config, train))
    # Training pixels leave the host as uint8 (the train step normalises on the device).
    assert batch["image"].shape == (8, 48, 48, 3) and batch["image"].dtype == np.uint8
    assert batch["image"].std() > 1.0  # real decoded pixels, not zeros
    assert batch["label"].dtype == np.int32 and (0 <= batch["label"]).all()
    assert (batch["label"] < 1000).all()
    evaluation = sources.make_source(config.dataset, "validation")
    batches = list(pipeline.eval_batches(config, evaluation))
  assert len(batches) == 3 and sum(b["mask"].sum() for b in batches) == 21
  assert batches[0]["image"].dtype == np.float32  # evaluation keeps TF's float pixels
  assert batches[-1]["mask"].tolist() == [1.0] * 5 + [0.0] * 3


_COUNT_SCRIPT = """
import json, jax, tensorflow_datasets as tfds
from helpers import tiny_config
from effnetlite.evaluation import jax_eval
from effnetlite.weights import factory
from effnetlite.data import pipeline, sources
config = tiny_config("imagenet2012", resolution=32, batch=64, num_classes=1000)
mesh = pipeline.make_mesh()
module = factory.module_from_config(config)
variables = factory.init_variables(module, 32)
with tfds.testing.mock_data(num_examples=1001):
  source = sources.make_source(config.dataset, "validation")
  result = jax_eval.evaluate(jax_eval.make_evaluator(module, 1000, mesh), variables,
                             pipeline.eval_batches(config, source), mesh,
                             pipeline.eval_steps(source, 64))
  # The same top-1 without the mesh, masks or sums: every example through the module once.
  hits, losses = 0, []
  apply = jax.jit(module.apply)
  for batch in pipeline.eval_batches(config, source):
    keep = batch["mask"] > 0
    logits = apply(variables, (batch["image"] - 127.0) / 128.0)[keep]
    labels = batch["label"][keep]
    hits += int((logits.argmax(-1) == labels).sum())
    picked = jax.numpy.take_along_axis(logits, labels[:, None], -1)[:, 0]
    losses += (jax.nn.logsumexp(logits, -1) - picked).tolist()
print(json.dumps({"devices": jax.device_count(), "plain_top1": hits / 1001,
                  "plain_loss": sum(losses) / len(losses), "plain_count": len(losses), **result}))
"""


@pytest.mark.parametrize("devices", [pytest.param(1, marks=pytest.mark.slow), 4])
def test_eval_counts_every_example_once(devices):  # 1 device: slow (4 is the harder case)
  result = run_python(_COUNT_SCRIPT, devices=devices)
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.loads(result.stdout.strip().splitlines()[-1])
  assert metrics["devices"] == devices and metrics["count"] == 1001
  assert metrics["steps"] == 16 and metrics["plain_count"] == 1001
  assert metrics["top1"] == metrics["plain_top1"]
  assert metrics["loss"] == pytest.approx(metrics["plain_loss"], rel=1e-5)


# --- order and resume ------------------------------------------------------------------

def _first_batches(config, source, start, count):
  iterator = pipeline.train_batches(config, source, start)
  return [next(iterator) for _ in range(count)]


def test_seeded_order_and_exact_resume(digits_dir):
  config = tiny_config(data_dir=digits_dir, batch=32)
  config.augment.mixup_alpha = 0.2
  source = sources.make_source(config.dataset, "train")
  per_epoch = pipeline.steps_per_epoch(source, 32)
  assert per_epoch == 1438 // 32
  straight = _first_batches(config, source, 0, per_epoch + 3)  # crosses an epoch boundary
  again = _first_batches(config, source, 0, 2)
  for a, b in zip(straight, again):
    for key in a:
      np.testing.assert_array_equal(a[key], b[key])
  for start in (5, per_epoch + 1):
    resumed = _first_batches(config, source, start, 2)
    for a, b in zip(straight[start:start + 2], resumed):
      for key in a:
        np.testing.assert_array_equal(a[key], b[key])
  config.seed = 1
  other = _first_batches(config, source, 0, 1)[0]
  assert not np.array_equal(other["label"], straight[0]["label"])
  assert {"mix", "mix_label"} <= set(straight[0])


def test_epochs_are_reshuffled(digits_dir):
  config = tiny_config(data_dir=digits_dir, batch=32)
  source = sources.make_source(config.dataset, "train")
  per_epoch = pipeline.steps_per_epoch(source, 32)
  batches = _first_batches(config, source, 0, per_epoch + 1)
  assert not np.array_equal(batches[0]["label"], batches[per_epoch]["label"])


# --- image folders ---------------------------------------------------------------------

@pytest.fixture
def image_folder(tmp_path):
  rng = np.random.default_rng(0)
  for split in ("train", "validation"):
    for label in ("cat", "dog"):
      directory = tmp_path / split / label
      directory.mkdir(parents=True)
      pixels = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
      Image.fromarray(pixels).save(directory / "rgb.jpg")
      Image.fromarray(pixels).save(directory / "rgb.png")
      Image.fromarray(pixels[..., 0]).save(directory / "grey.png")
      Image.fromarray(np.dstack([pixels, pixels[..., :1]])).save(directory / "rgba.png")
      (directory / "notes.txt").write_text("not an image")
  (tmp_path / "train" / "cat" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
  return tmp_path


def test_image_folder_skips_corrupt_files_with_warning(image_folder, capsys):
  config = tiny_config("folder", batch=4, data_dir=str(image_folder), train_split="train",
                       eval_split="validation", num_classes=2)
  train = sources.make_source(config.dataset, "train")
  assert "warning: skipping 1 unreadable image(s)" in capsys.readouterr().err
  assert train.num_examples == 8 and train.class_names == ("cat", "dog")
  batch = next(pipeline.train_batches(config, train))
  assert batch["image"].shape == (4, 32, 32, 3)
  evaluation = sources.make_source(config.dataset, "validation")
  labels = np.concatenate([b["label"][b["mask"] > 0]
                           for b in pipeline.eval_batches(config, evaluation)])
  assert sorted(labels.tolist()) == [0] * 4 + [1] * 4


def test_training_pixels_are_the_float_preprocessing_rounded(image_folder, monkeypatch):
  """uint8 batches carry the TF crop/resize/flip of before, each pixel within 0.5."""
  config = tiny_config("folder", batch=4, data_dir=str(image_folder), train_split="train",
                       eval_split="validation", num_classes=2)
  assert config.augment.random_flip
  source = sources.make_source(config.dataset, "train")
  rounded = _first_batches(config, source, 0, 3)
  monkeypatch.setattr(preprocessing, "to_uint8", lambda image: image)
  floats = _first_batches(config, source, 0, 3)
  for a, b in zip(rounded, floats):
    assert a["image"].dtype == np.uint8 and b["image"].dtype == np.float32
    np.testing.assert_array_equal(a["label"], b["label"])
    np.testing.assert_allclose(a["image"], b["image"], atol=0.5)


def test_mixup_blend_is_the_rounded_mixture():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
  weight = np.float32(0.3)
  mixed = pipeline._mixup_blend()(images, weight).numpy()
  pixels = images.astype(np.float32)
  expected = weight * pixels + (1 - weight) * pixels[::-1]
  assert mixed.dtype == np.uint8
  np.testing.assert_allclose(mixed, expected, atol=0.5 + 1e-4)


@pytest.mark.parametrize("mixup_alpha", [0.0, 0.2])
def test_train_batch_spec_is_what_train_batches_yields(image_folder, mixup_alpha):
  config = tiny_config("folder", batch=4, data_dir=str(image_folder), train_split="train",
                       eval_split="validation", num_classes=2)
  config.augment.mixup_alpha = mixup_alpha
  batch = _first_batches(config, sources.make_source(config.dataset, "train"), 0, 1)[0]
  assert {k: (v.shape, v.dtype) for k, v in batch.items()} == pipeline.train_batch_spec(config, 4)


def test_closing_train_batches_early(image_folder):
  """A loop that stops mid-epoch leaves no error behind (the next epoch may be starting)."""
  config = tiny_config("folder", batch=4, data_dir=str(image_folder), train_split="train",
                       eval_split="validation", num_classes=2)
  batches = pipeline.train_batches(config, sources.make_source(config.dataset, "train"))
  next(batches)
  batches.close()


def test_pipelines_run_without_the_autotuning_model():
  """TF 2.21's autotuning model thread sleeps out its period (doubling up to 60 s) before a
  deleted iterator may go, so a stop could outlast SLURM's 30 s grace. Without the model an AUTOTUNE map runs one call per core this process may use."""
  import tensorflow as tf
  options = pipeline._options(tf.data.Dataset.range(4)).options()
  assert options.autotune.enabled is False
  assert options.autotune.initial_parallelism == len(os.sched_getaffinity(0))
  assert options.deterministic is True


def test_closing_the_device_prefetch_closes_its_source():
  """A stopped loop closes the prefetcher, which closes the input pipeline with it: a
  stop's exit does not wait for the traceback holding it to be freed."""
  closed = []

  def source():
    try:
      for index in range(10):
        yield {"image": np.full((1, 2, 2, 3), index, np.uint8), "label": np.zeros(1, np.int32)}
    finally:
      closed.append(True)

  batches = pipeline.prefetch_to_device(source(), pipeline.make_mesh(), size=2)
  assert int(next(batches)["image"][0, 0, 0, 0]) == 0
  assert not closed
  batches.close()
  assert closed == [True]

def test_image_folder_corrupt_file_error_mode(image_folder):
  config = tiny_config("folder", data_dir=str(image_folder), corrupt_images="error")
  with pytest.raises(sources.DataError, match=r"1 unreadable image.*corrupt\.jpg"):
    sources.make_source(config.dataset, "train")


def test_empty_or_missing_folder(tmp_path):
  (tmp_path / "train" / "cat").mkdir(parents=True)
  config = tiny_config("folder", data_dir=str(tmp_path))
  with pytest.raises(sources.DataError, match="holds no images"):
    sources.make_source(config.dataset, "train")
  config.dataset.data_dir = str(tmp_path / "nowhere")
  with pytest.raises(sources.DataError, match="does not exist"):
    sources.make_source(config.dataset, "train")


# --- errors for tfds sources -----------------------------------------------------------

def test_missing_imagenet_archives_say_where(tmp_path):
  config = tiny_config("imagenet2012", data_dir=str(tmp_path / "tfds"),
                       manual_dir=str(tmp_path / "manual"))
  with pytest.raises(sources.DataError, match=r"lacks ILSVRC2012_img_train\.tar, "
                     r"ILSVRC2012_img_val\.tar.*manual"):
    sources.make_source(config.dataset, "validation")


def test_unknown_dataset_and_wrong_features(tmp_path):
  with pytest.raises(sources.DataError, match="unknown dataset 'no_such_set'"):
    sources.make_source(tiny_config("no_such_set").dataset, "train")
  with tfds.testing.mock_data(num_examples=4):
    with pytest.raises(sources.DataError, match="not 'image' and 'label'"):
      sources.make_source(tiny_config("imdb_reviews").dataset, "train")


def test_digits_builds_offline(digits_dir):
  config = tiny_config(data_dir=digits_dir)
  train = sources.make_source(config.dataset, "train")
  test = sources.make_source(config.dataset, "test")
  assert (train.num_examples, test.num_examples, train.num_classes) == (1438, 359, 10)


@pytest.mark.parametrize("policy", ["randaugment", "autoaugment"])
def test_augmentation_policies_run_in_the_pipeline(digits_dir, policy):
  config = tiny_config(data_dir=digits_dir, batch=8)
  config.augment.policy = policy
  source = sources.make_source(config.dataset, "train")
  first = _first_batches(config, source, 0, 2)
  again = _first_batches(config, source, 0, 2)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a["image"], b["image"])
  assert first[0]["image"].shape == (8, 32, 32, 3) and first[0]["image"].max() <= 255


def test_a_split_smaller_than_one_batch_is_one_error(image_folder):
  """Its epochs would hold no batch: training would wait for one forever."""
  config = tiny_config("folder", batch=16, data_dir=str(image_folder), train_split="train",
                       eval_split="validation", num_classes=2)
  source = sources.make_source(config.dataset, "train")  # 8 readable images
  with pytest.raises(UserError, match=r"holds 8 examples, fewer than one batch "
                     r"\(config.batch_size=16\); set config.batch_size to at most 8"):
    pipeline.steps_per_epoch(source, 16)
  assert pipeline.steps_per_epoch(source, 8) == 1
