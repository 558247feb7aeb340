"""A researcher's own images, end to end, from a fresh directory with relative paths.

A 3-class folder of real photos -> train.py -> eval.py, export.py, predict.py with only
--weights=RUN and tflite_predict.py with only the .tflite: each names the folder's
classes. Then the run as a Python object (create_model(pretrained=RUN)), re-running the
finished training, resuming with a changed learning rate (refused, then accepted), and a
changed architecture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from helpers import ROOT

CLASSES = ("astronaut", "cat", "coffee")
TRAIN = ["--config.model.resolution=32", "--config.batch_size=6", "--config.eval_batch_size=6",
         "--config.max_steps=4", "--config.checkpoint_every_steps=2",
         "--config.eval_every_steps=2", "--config.init_from="]


def _write_folder(root: str) -> None:
  """<root>/{train,validation}/<class>/*.jpg: shifted crops of scikit-image's photos."""
  import skimage.data
  from PIL import Image
  photos = {"astronaut": skimage.data.astronaut(), "cat": skimage.data.chelsea(),
            "coffee": skimage.data.coffee()}
  rng = np.random.default_rng(0)
  for split, count in (("train", 4), ("validation", 2)):
    for name, pixels in photos.items():
      os.makedirs(os.path.join(root, split, name))
      height, width = pixels.shape[:2]
      for index in range(count):
        top, left = rng.integers(0, height // 5), rng.integers(0, width // 5)
        crop = pixels[top:top + height * 4 // 5, left:left + width * 4 // 5]
        Image.fromarray(crop).save(os.path.join(root, split, name, f"{index}.jpg"))
  Image.fromarray(photos["cat"]).save(os.path.join(os.path.dirname(root), "cat.jpg"))


def _run(cwd: str, script: str, *args: str) -> subprocess.CompletedProcess:
  checkout = os.path.relpath(ROOT, cwd)
  return subprocess.run([sys.executable, os.path.join(checkout, script), *args], cwd=cwd,
                        capture_output=True, text=True, timeout=900)


def _ok(result: subprocess.CompletedProcess) -> str:
  assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
  return result.stdout


def _tree(root: str) -> dict[str, tuple[int, int]]:
  """path -> (size, mtime in ns) of every file under root."""
  return {os.path.join(d, f): (os.stat(os.path.join(d, f)).st_size,
                               os.stat(os.path.join(d, f)).st_mtime_ns)
          for d, _, names in os.walk(root) for f in names}


def _train(cwd: str) -> str:
  """Trains runs/ft on my_images/ in `cwd` as the README says."""
  result = _run(cwd, "train.py", "--config=" + os.path.join(os.path.relpath(ROOT, cwd),
                                                            "configs/finetune_folder.py"),
                "--workdir=runs/ft", "--config.dataset.data_dir=my_images", *TRAIN)
  assert "classes: 0 astronaut, 1 cat, 2 coffee" in _ok(result)
  return cwd


def test_own_images_end_to_end(tmp_path):
  """One test, stage by stage: xdist could split separate tests over workers that would
  each train the run."""
  project = str(tmp_path / "my_project")
  os.makedirs(project)
  _write_folder(os.path.join(project, "my_images"))
  _train(project)
  check_training_records_the_class_names(project)
  check_eval_with_only_the_run(project)
  check_predict_and_export_with_only_the_run(project)
  check_create_model_from_the_run_has_the_trained_head(project)
  check_rerunning_the_finished_run_writes_nothing(project)
  check_another_architecture_in_the_run_directory_is_one_line(project)
  check_resuming_with_another_learning_rate_lists_the_change(project, str(tmp_path / "copy"))


def check_training_records_the_class_names(project):
  with open(os.path.join(project, "runs/ft/labels.txt"), encoding="utf-8") as handle:
    assert handle.read().splitlines() == list(CLASSES)
  with open(os.path.join(project, "runs/ft/config.json"), encoding="utf-8") as handle:
    assert json.load(handle)["dataset"]["num_classes"] == 3  # -1 resolved from the folder


def check_eval_with_only_the_run(project):
  out = _ok(_run(project, "eval.py", "--weights=runs/ft"))
  assert "step 4, the run's latest checkpoint" in out
  assert "folder/validation: 6 images" in out
  for index, name in enumerate(CLASSES):
    assert f"{index:4d}  {name}" in out and " of 2" in out
  assert "top-5" not in out  # 3 classes: top-5 is always 100%
  best = _ok(_run(project, "eval.py", "--weights=runs/ft/best", "--no-ema"))
  assert "the run's best checkpoint" in best


def check_predict_and_export_with_only_the_run(project):
  out = _ok(_run(project, "scripts/predict.py", "cat.jpg", "--weights=runs/ft", "--top=3"))
  lines = out.splitlines()
  assert lines[0] == "cat.jpg"
  assert sorted(line.split()[-1] for line in lines[1:]) == sorted(CLASSES)
  out = _ok(_run(project, "scripts/export.py", "--weights=runs/ft", "--quantize=int8",
                 "--calibration_steps=500", "--output=ft-int8.tflite"))
  assert "checked on                    6 images of folder/validation" in out
  assert "classes                       3: astronaut, cat, coffee" in out
  result = _run(project, "scripts/export.py", "--weights=runs/ft", "--quantize=int8",
                "--calibration_steps=500", "--output=ft-int8.tflite")
  assert "warning: calibrated on 12 images" in result.stderr  # the train split holds 12
  out = _ok(_run(project, "scripts/tflite_predict.py", "-i", "cat.jpg", "-m", "ft-int8.tflite",
                 "-k", "3"))
  assert out.splitlines()[0] == "cat.jpg"
  assert sorted(line.split()[-1] for line in out.splitlines()[1:]) == sorted(CLASSES)


def check_create_model_from_the_run_has_the_trained_head(project):
  import orbax.checkpoint as ocp

  import effnetlite
  from effnetlite.errors import UserError
  run = os.path.join(project, "runs/ft")
  module, variables = effnetlite.create_model(pretrained=run)
  stored = ocp.StandardCheckpointer().restore(os.path.join(run, "checkpoints/4/state"))
  kernel = variables["params"]["classifier"]["kernel"]
  assert module.num_classes == 3 and kernel.shape == (1280, 3)
  np.testing.assert_array_equal(kernel, stored["ema_params"]["classifier"]["kernel"])
  np.testing.assert_array_equal(variables["params"]["classifier"]["bias"],
                                stored["ema_params"]["classifier"]["bias"])
  assert effnetlite.class_names(pretrained=run) == list(CLASSES)
  same_module, _ = effnetlite.create_model("lite0", pretrained=run)
  assert same_module.num_classes == 3
  with pytest.raises(UserError, match="3-class classifier but num_classes=10"):
    effnetlite.create_model("lite0", pretrained=run, num_classes=10)
  with pytest.raises(UserError, match="model.width"):
    effnetlite.create_model("lite2", pretrained=run)
  _, reset = effnetlite.create_model("lite0", pretrained=run, num_classes=10,
                                     reset_classifier=True)
  assert reset["params"]["classifier"]["kernel"].shape == (1280, 10)


def check_rerunning_the_finished_run_writes_nothing(project):
  before = _tree(os.path.join(project, "runs/ft"))
  out = _ok(_run(project, "train.py", "--config=runs/ft/config.json", "--workdir=runs/ft"))
  assert "already finished at step 4 (of 4); nothing to train" in out
  assert _tree(os.path.join(project, "runs/ft")) == before


def check_resuming_with_another_learning_rate_lists_the_change(project, cwd):
  import shutil
  shutil.copytree(os.path.join(project, "runs"), os.path.join(cwd, "runs"))
  shutil.copytree(os.path.join(project, "my_images"), os.path.join(cwd, "my_images"))
  changed = ("--config=runs/ft/config.json", "--workdir=runs/ft", "--config.max_steps=6",
             "--config.optimizer.base_learning_rate=0.008")
  refused = _run(cwd, "train.py", *changed)
  assert refused.returncode == 2, refused.stderr[-2000:]
  assert refused.stderr.strip().splitlines() == [
      f"error: resuming {os.path.join(cwd, 'runs/ft')} would change "
      "config.optimizer.base_learning_rate from 0.004 to 0.008, which its checkpoints cannot "
      "honour; pass a new --workdir, start a new run from these weights with "
      f"--config.init_from={os.path.join(cwd, 'runs/ft')}, or continue anyway with "
      "--config.accept_changes_on_resume=True (recorded as a non-reproducible continuation)"]
  out = _ok(_run(cwd, "train.py", *changed, "--config.accept_changes_on_resume=True"))
  assert f"resuming from step 4 (checkpoint {os.path.join(cwd, 'runs/ft/checkpoints/4')})" in out
  assert ("config changed since the last session: max_steps 4 -> 6, "
          "optimizer.base_learning_rate 0.004 -> 0.008 (accepted by "
          "config.accept_changes_on_resume") in out
  with open(os.path.join(cwd, "runs/ft/config_history.jsonl"), encoding="utf-8") as handle:
    rows = [json.loads(line) for line in handle]
  assert [(r["step"], r["changed"], r.get("reproducible")) for r in rows] == [
      (4, {"max_steps": [4, 6], "optimizer.base_learning_rate": [0.004, 0.008]}, False)]
  with open(os.path.join(cwd, "runs/ft/config.json"), encoding="utf-8") as handle:
    assert json.load(handle)["optimizer"]["base_learning_rate"] == 0.008
  with open(os.path.join(cwd, "runs/ft/metrics.jsonl"), encoding="utf-8") as handle:
    evaluated = [row["step"] for row in map(json.loads, handle) if "ema_eval_top1" in row]
  assert evaluated == [2, 4, 6]  # each evaluation once, across both sessions


def check_another_architecture_in_the_run_directory_is_one_line(project):
  result = _run(project, "train.py", "--config=runs/ft/config.json", "--workdir=runs/ft",
                "--config.model.width=1.1", "--config.max_steps=8")
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert result.returncode == 2 and len(errors) == 1, result.stderr[-2000:]
  assert "config.model.width=1.1 but the run has 1.0" in errors[0]
  assert "pass a new --workdir" in errors[0]
  result = _run(project, "eval.py", "--weights=runs/ft", "--config.dataset.num_classes=5")
  assert result.returncode == 2 and "config.dataset.num_classes=5 but the run has 3" in (
      result.stderr)
  # Overrides apply to the run's config in the commands with a default config too.
  result = _run(project, "scripts/predict.py", "cat.jpg", "--weights=runs/ft",
                "--config.model.width=1.1")
  assert result.returncode == 2 and "config.model.width=1.1 but the run has 1.0" in (
      result.stderr), result.stderr[-2000:]
  out = _ok(_run(project, "scripts/predict.py", "cat.jpg", "--weights=runs/ft",
                 "--config.model.resolution=48", "--top=1"))
  assert out.splitlines()[1].split()[-1] in CLASSES
