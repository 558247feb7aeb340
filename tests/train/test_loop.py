"""train_and_evaluate end to end: mock ImageNet, devices, processes, exact resume, bad configs."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds
from helpers import PYTHONPATH, ROOT, run_python, tiny_config

from effnetlite.data import pipeline, sources
from effnetlite.train.loop import train_and_evaluate
from effnetlite.weights import factory, loading


def _latest_step(directory) -> int:
  """The newest finalised step orbax finds (a killed save leaves only a temporary)."""
  import orbax.checkpoint as ocp
  from etils import epath
  latest = ocp.step.latest_step_metadata(epath.Path(directory), ocp.step.standard_name_format())
  return latest.step


def _losses(workdir):
  with open(os.path.join(workdir, "metrics.jsonl"), encoding="utf-8") as handle:
    rows = [json.loads(line) for line in handle]
  return {row["step"]: row["loss"] for row in rows if "loss" in row}


@pytest.mark.slow  # for the 15-minute default run: a 1000-class step on mock data
def test_one_step_on_mock_imagenet(tmp_path):
  config = tiny_config("imagenet2012", resolution=32, batch=8, num_classes=1000)
  config.max_steps = 1
  config.num_epochs = 1
  with tfds.testing.mock_data(num_examples=12):
    metrics = train_and_evaluate(config, str(tmp_path))
    eval_batches = list(pipeline.eval_batches(config,
                                              sources.make_source(config.dataset, "validation")))
  assert metrics["eval_count"] == 12 and metrics["ema_eval_count"] == 12
  assert list(_losses(str(tmp_path))) == [1]
  assert _latest_step(tmp_path / "checkpoints") == 1
  assert json.load(open(tmp_path / "config.json"))["dataset"]["name"] == "imagenet2012"
  assert os.listdir(tmp_path / "tensorboard")
  # The checkpoint loads as weights (format d), EMA and raw, and gives the reported loss
  # when its images go through the module one by one, without the evaluator.
  module, template = factory.create_model(config)
  for ema, prefix in ((True, "ema_"), (False, "")):
    variables = loading.load_weights(str(tmp_path), config, template, ema=ema)
    losses = []
    for batch in eval_batches:
      keep = batch["mask"] > 0
      for image, label in zip(batch["image"][keep], batch["label"][keep]):
        logits = module.apply(variables, (image[None] - 127.0) / 128.0)[0]
        losses.append(float(jax.nn.logsumexp(logits) - logits[label]))
    assert len(losses) == 12
    assert metrics[f"{prefix}eval_loss"] == pytest.approx(np.mean(losses), rel=1e-4)


@pytest.mark.slow  # for the 15-minute default run: the README's family chain checks the record
def test_a_run_records_what_comparing_it_needs(digits_dir, tmp_path):
  """final_metrics.json names the evaluation split (with a hash of its example ids), the
  seed and the versions; eval_examples.json holds each held-out image's EMA top-1, which
  the images put through the module one by one reproduce."""
  config = tiny_config(data_dir=digits_dir, holdout_fraction=0.1)
  config.dataset.eval_split, config.max_steps, config.seed = "holdout", 3, 7
  metrics = train_and_evaluate(config, str(tmp_path))
  final = json.load(open(tmp_path / "final_metrics.json"))
  held = sources.make_source(config.dataset, "holdout")
  assert final["eval_split"] == {"dataset": "effnetlite_digits", "split": "holdout",
                                 "holdout_fraction": 0.1, "examples": held.total_examples,
                                 "ids_sha256": sources.ids_digest(held.example_ids())}
  assert final["seed"] == 7 and final["versions"]["jax"] == jax.__version__
  assert final["session"]["from_step"] == 0 and final["session"]["wall_seconds"] > 0
  examples = json.load(open(tmp_path / "eval_examples.json"))
  assert examples["ids"] == held.example_ids() and examples["split"] == final["eval_split"]
  module, template = factory.create_model(config)
  variables = loading.load_weights(str(tmp_path), config, template, ema=True)
  by_hand = []
  for batch in pipeline.eval_batches(config, held):
    keep = batch["mask"] > 0
    for image, label in zip(batch["image"][keep], batch["label"][keep]):
      by_hand.append(int(np.argmax(module.apply(variables, (image[None] - 127.0) / 128.0)[0])
                         == label))
  assert examples["correct"] == by_hand
  assert metrics["ema_eval_top1"] == pytest.approx(np.mean(by_hand))


_TRAIN = """
import sys
from helpers import tiny_config
from effnetlite.data import pipeline, sources
from effnetlite.train.loop import train_and_evaluate
config = tiny_config(data_dir={data_dir!r}, batch=16, resolution={resolution})
config.eval_batch_size = 400
config.max_steps = {steps}
config.checkpoint_every_steps = {every}
config.eval_every_steps = 1000
train_and_evaluate(config, {workdir!r})
"""


@pytest.mark.slow  # ~160 s of the default run's budget: two training runs at resolution 160
def test_one_and_four_devices_give_same_losses(digits_dir, tmp_path):
  losses = {}
  for devices in (1, 4):
    workdir = str(tmp_path / f"devices{devices}")
    # Resolution 160: at tiny maps the gradients at init are ill-conditioned (float32 vs
    # float64 differ by 0.5%), and 1 vs 4 devices only differ in reduction order. Three
    # steps: the first updates of a fresh net (loss 7 -> 5 -> 4 -> 6.5) amplify that
    # rounding ~30x per step (2e-6, 6e-5, then 1.5e-4 at step 4); per-device BN statistics
    # would already change the step-1 loss, a missing gradient all-reduce the step-2 loss.
    result = run_python(_TRAIN.format(data_dir=digits_dir, steps=3, every=100, workdir=workdir,
                                      resolution=160), devices=devices)
    assert result.returncode == 0, result.stderr[-3000:]
    losses[devices] = _losses(workdir)
  assert list(losses[1]) == [1, 2, 3]
  for step, loss in losses[1].items():
    assert losses[4][step] == pytest.approx(loss, rel=1e-4)


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow  # for the 15-minute default run; test_study runs a 2-process job
def test_two_processes_train_and_checkpoint(digits_dir, tmp_path):
  workdir = str(tmp_path / "two")
  port = _free_port()
  code = _TRAIN.format(data_dir=digits_dir, steps=3, every=3, workdir=workdir, resolution=32)
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
             JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", JAX_NUM_PROCESSES="2",
             PYTHONPATH=PYTHONPATH)
  processes = [subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE,
                                text=True, env=dict(env, JAX_PROCESS_ID=str(i)))
               for i in range(2)]
  errors = [p.communicate(timeout=600)[1] for p in processes]
  for process, error in zip(processes, errors):
    assert process.returncode == 0, error[-3000:]
  assert _latest_step(os.path.join(workdir, "checkpoints")) == 3
  assert list(_losses(workdir)) == [1, 2, 3]  # written once, by process 0


def _complete(workdir, step):
  directory = os.path.join(workdir, "checkpoints", str(step))
  return os.path.isdir(os.path.join(directory, "state")) and os.path.exists(
      os.path.join(directory, "_CHECKPOINT_METADATA"))


@pytest.mark.slow  # minutes; exact resume stays in the default run via test_damaged_runs
def test_exact_resume_after_sigkill(digits_dir, tmp_path):
  n = 8
  straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
  started = time.time()
  result = run_python(_TRAIN.format(data_dir=digits_dir, steps=2 * n, every=n, workdir=straight,
                                    resolution=32))
  assert result.returncode == 0, result.stderr[-3000:]
  # The process's own clock (from /proc) agrees with ours: after the imports, within the run.
  with open(os.path.join(straight, "final_metrics.json")) as handle:
    first_step = json.load(handle)["seconds_to_first_step"]
  assert 0.5 < first_step < time.time() - started

  code = _TRAIN.format(data_dir=digits_dir, steps=2 * n, every=n, workdir=resumed, resolution=32)
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
             PYTHONPATH=PYTHONPATH)
  process = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                             stderr=subprocess.DEVNULL)
  deadline = time.time() + 600
  while not _complete(resumed, n) and process.poll() is None and time.time() < deadline:
    time.sleep(0.05)
  process.send_signal(signal.SIGKILL)
  process.wait()
  assert process.returncode == -signal.SIGKILL, "the run finished before it could be killed"
  assert _latest_step(os.path.join(resumed, "checkpoints")) == n

  result = run_python(code)
  assert result.returncode == 0, result.stderr[-3000:]
  assert _losses(resumed) == _losses(straight)
  config = tiny_config(data_dir=digits_dir)
  _, template = factory.create_model(config)
  for ema in (False, True):
    a = loading.load_weights(straight, config, template, ema=ema)
    b = loading.load_weights(resumed, config, template, ema=ema)
    assert max(float(np.abs(x - y).max()) for x, y in zip(jax.tree.leaves(a),
                                                          jax.tree.leaves(b))) <= 1e-6


def test_batch_that_does_not_divide_over_the_devices_stops_in_one_line(tmp_path):
  # Other bad input to train.py is walked in test_cli; this one needs 4 devices.
  message = "config.batch_size=6 is not a positive multiple of the 4 devices"
  args = [sys.executable, os.path.join(ROOT, "train.py"),
          f"--config={os.path.join(ROOT, 'configs', 'demo.py')}", f"--workdir={tmp_path}/run",
          "--config.batch_size=6"]
  env = dict(os.environ, JAX_PLATFORMS="cpu",
             XLA_FLAGS="--xla_force_host_platform_device_count=4")
  start = time.time()
  result = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300)
  assert result.returncode != 0
  assert message in result.stderr and "Traceback" not in result.stderr
  assert time.time() - start < 60  # before any data loading or compilation
  assert not os.path.exists(f"{tmp_path}/run")


@pytest.mark.slow
def test_demo_reaches_95_percent_within_10_minutes(tmp_path):
  start = time.time()
  result = subprocess.run([sys.executable, os.path.join(ROOT, "train.py"),
                           f"--config={os.path.join(ROOT, 'configs', 'demo.py')}",
                           f"--workdir={tmp_path}"], capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  assert time.time() - start < 600
  assert json.load(open(tmp_path / "final_metrics.json"))["ema_eval_top1"] >= 0.95


def _digit_folder(root, per_class_train=30, per_class_val=10):
  """A 10-class image folder (JPEG/PNG files) made from scikit-learn's digits."""
  from PIL import Image
  from sklearn.datasets import load_digits
  digits = load_digits()
  counts = {}
  for image, label in zip(digits.images, digits.target):
    seen = counts.get(label, 0)
    if seen >= per_class_train + per_class_val:
      continue
    counts[label] = seen + 1
    split = "train" if seen < per_class_train else "validation"
    directory = root / split / f"digit_{label}"
    directory.mkdir(parents=True, exist_ok=True)
    pixels = (image * 255 / 16).astype(np.uint8)
    Image.fromarray(pixels).resize((96, 96)).convert("RGB").save(directory / f"{seen}.jpg")
  return str(root)


@pytest.mark.slow
def test_finetuning_pretrained_beats_random_init(tmp_path):
  from configs import finetune_folder
  data_dir = _digit_folder(tmp_path / "folder")
  results = {}
  for init in ("pretrained", ""):
    config = finetune_folder.get_config()
    config.dataset.data_dir = data_dir
    config.model.resolution = 96
    config.augment.random_flip = False
    config.max_steps = 60
    config.init_from = init
    results[init or "random"] = train_and_evaluate(config, str(tmp_path / (init or "random")))
  assert results["pretrained"]["eval_top1"] > results["random"]["eval_top1"]


def test_a_session_records_its_backend_and_says_when_the_platform_changed(tmp_path, capsys):
  from effnetlite import runs
  from effnetlite.nn.backend import resolve_backend
  from effnetlite.train.loop import record_session
  from effnetlite.validation import validate_config
  config = validate_config(tiny_config())
  run = runs.Run(str(tmp_path / "run"))
  record_session(config, run, None, [], True, ["a", "b"])
  here = resolve_backend(config)
  assert run.backend() == here.as_dict() and run.backend()["platform"] == "cpu"
  assert run.load_config().model.depthwise == "auto"  # the reusable config keeps 'auto'
  run.save_backend({**here.as_dict(), "platform": "gpu", "depthwise": "conv"})
  capsys.readouterr()
  record_session(config, run, 4, [], True, ["a", "b"])
  out = capsys.readouterr().out
  assert ("resuming on cpu, trained on gpu: layers re-resolved for cpu (depthwise shifted, "
          "pointwise dot, rematerialize False)") in out
  assert run.backend()["depthwise"] == "shifted"
