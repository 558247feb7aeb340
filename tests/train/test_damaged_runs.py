"""Damaged run directories: a truncated checkpoint file, nothing readable, a full disk.

Each case runs the commands as a user does and asserts the one line they print, then
what a resumed run or an evaluation reports, against an uninterrupted run.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
import uuid

import numpy as np
import pytest
from helpers import PYTHONPATH, ROOT, tiny_config

from effnetlite.data import sources

DEMO = os.path.join(ROOT, "configs", "demo.py")


@pytest.fixture(scope="module")
def digits_dir(tmp_path_factory) -> str:
  directory = str(tmp_path_factory.mktemp("tfds"))
  sources.make_source(tiny_config(data_dir=directory).dataset, "train")
  return directory


def _flags(digits_dir: str, steps: int) -> list[str]:
  return [f"--config={DEMO}", "--config.model.resolution=32", "--config.batch_size=16",
          "--config.eval_batch_size=64", f"--config.dataset.data_dir={digits_dir}",
          f"--config.max_steps={steps}", "--config.checkpoint_every_steps=2",
          "--config.eval_every_steps=2"]


def _run(script: str, *args: str, cwd: str) -> subprocess.CompletedProcess:
  env = dict(os.environ, PYTHONPATH=PYTHONPATH)
  return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd, env=env,
                        capture_output=True, text=True, timeout=600)


def _ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
  assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-3000:]
  return result


def _one_error(result: subprocess.CompletedProcess) -> str:
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert result.returncode == 2 and len(errors) == 1, result.stderr[-3000:]
  assert "Traceback" not in result.stderr, result.stderr[-3000:]
  return errors[0]


def _warnings(result: subprocess.CompletedProcess) -> list[str]:
  return [line for line in result.stderr.splitlines() if line.startswith("warning:")]


def _truncate_largest(step_dir: str, item: str) -> None:
  """Cuts the largest data file of an item in half, as a crashed copy leaves it."""
  files = glob.glob(os.path.join(step_dir, item, "ocdbt.process_0", "d", "*"))
  largest = max(files, key=os.path.getsize)
  with open(largest, "r+b") as handle:
    handle.truncate(os.path.getsize(largest) // 2)


def _final_params(workdir: str) -> dict:
  import orbax.checkpoint as ocp
  from flax import traverse_util
  steps = sorted(int(s) for s in os.listdir(os.path.join(workdir, "checkpoints")) if s.isdigit())
  stored = ocp.StandardCheckpointer().restore(
      os.path.join(workdir, "checkpoints", str(steps[-1]), "model"))
  return traverse_util.flatten_dict(stored, sep="/")


@pytest.fixture(scope="module")
def straight(digits_dir, tmp_path_factory) -> str:
  """An uninterrupted 6-step run: the reference for every resumed one."""
  cwd = str(tmp_path_factory.mktemp("straight"))
  _ok(_run("train.py", *_flags(digits_dir, 6), "--workdir=run", cwd=cwd))
  return os.path.join(cwd, "run")


def test_a_truncated_newest_step_is_passed_over_by_eval_and_by_train(digits_dir, straight,
                                                                      tmp_path):
  cwd = str(tmp_path)
  _ok(_run("train.py", *_flags(digits_dir, 4), "--workdir=run", cwd=cwd))
  _truncate_largest(os.path.join(cwd, "run/checkpoints/4"), "model")
  _truncate_largest(os.path.join(cwd, "run/checkpoints/4"), "state")

  damaged = _ok(_run("eval.py", "--weights=run", "--output=damaged.json", cwd=cwd))
  warnings = _warnings(damaged)
  assert len(warnings) == 1 and "checkpoint step 4 in" in warnings[0] and (
      "cannot be read" in warnings[0]), damaged.stderr[-2000:]
  assert "step 2, the run's latest checkpoint" in damaged.stdout
  _ok(_run("eval.py", "--weights=run/checkpoints/2", "--output=step2.json", cwd=cwd))
  results = [json.load(open(os.path.join(cwd, name))) for name in ("damaged.json", "step2.json")]
  assert results[0]["top1"] == results[1]["top1"] and results[0]["loss"] == results[1]["loss"]

  resumed = _ok(_run("train.py", *_flags(digits_dir, 6), "--workdir=run", cwd=cwd))
  warnings = _warnings(resumed)
  assert len(warnings) == 1 and "checkpoint step 4" in warnings[0] and (
      "run/checkpoints/4.damaged" in warnings[0]), resumed.stderr[-2000:]
  assert "resuming from step 2" in resumed.stdout
  assert os.path.isdir(os.path.join(cwd, "run/checkpoints/4.damaged"))  # kept to inspect
  ours, reference = _final_params(os.path.join(cwd, "run")), _final_params(straight)
  assert ours.keys() == reference.keys()
  for name in ours:
    np.testing.assert_array_equal(ours[name], reference[name], err_msg=name)


def test_no_readable_checkpoint_is_one_line(digits_dir, tmp_path):
  cwd = str(tmp_path)
  _ok(_run("train.py", *_flags(digits_dir, 2), "--workdir=run", cwd=cwd))
  _truncate_largest(os.path.join(cwd, "run/checkpoints/2"), "model")
  error = _one_error(_run("eval.py", "--weights=run", cwd=cwd))
  assert "no readable checkpoint in" in error and "step(s) 2 are damaged" in error
  assert os.path.isdir(os.path.join(cwd, "run/checkpoints/2"))  # left on disk


@pytest.fixture
def small_disk(tmp_path):
  """A 150 MB tmpfs (the test needs the right to mount; skipped without it)."""
  mount_point = str(tmp_path / f"disk-{uuid.uuid4().hex[:6]}")
  os.makedirs(mount_point)
  if shutil.which("mount") is None or subprocess.run(
      ["mount", "-t", "tmpfs", "-o", "size=150m", "tmpfs", mount_point],
      capture_output=True).returncode != 0:
    pytest.skip("mounting a size-limited tmpfs is not allowed here")
  yield mount_point
  subprocess.run(["umount", "-l", mount_point], check=False)


def test_a_full_disk_stops_the_run_in_one_line_and_the_resume_is_exact(digits_dir, straight,
                                                                       small_disk, tmp_path):
  # A lite0 step takes 71 MB in checkpoints/ and 25 MB in best/ (the first one is estimated
  # from the arrays' bytes, ~105 and ~30 MB): step 2 fits in 150 MB, step 4 does not.
  workdir = os.path.join(small_disk, "run")
  result = _run("train.py", *_flags(digits_dir, 6), f"--workdir={workdir}", cwd=str(tmp_path))
  error = _one_error(result)
  assert f"no space left on device in {workdir}" in error and "for checkpoint step 4" in error
  assert "MB are free" in error and "it needs about" in error
  steps = sorted(os.listdir(os.path.join(workdir, "checkpoints")))
  assert steps == ["2"]  # the previous step stays the latest, nothing half-written is kept
  subprocess.run(["mount", "-o", "remount,size=400m", small_disk], check=True)
  resumed = _ok(_run("train.py", *_flags(digits_dir, 6), f"--workdir={workdir}",
                     cwd=str(tmp_path)))
  assert "resuming from step 2" in resumed.stdout
  ours, reference = _final_params(workdir), _final_params(straight)
  for name in reference:
    np.testing.assert_array_equal(ours[name], reference[name], err_msg=name)
