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
from helpers import PYTHONPATH, ROOT, tiny_run_flags

DEMO = os.path.join(ROOT, "configs", "demo.py")


def _flags(digits_dir: str, steps: int) -> list[str]:
  return [f"--config={DEMO}", *tiny_run_flags(digits_dir, steps, every=2)]


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


def _truncate_data(step_dir: str, item: str) -> None:
  """Cuts every data file of an item in half, as a crashed copy leaves them. (Only the
  largest was cut once: which arrays it holds varies between runs, and when it held only
  the optimizer state, evaluation read nothing damaged.)"""
  files = glob.glob(os.path.join(step_dir, item, "ocdbt.process_0", "d", "*"))
  assert files, f"no data files in {step_dir}/{item}"
  for path in files:
    with open(path, "r+b") as handle:
      handle.truncate(os.path.getsize(path) // 2)


def _final_params(workdir: str) -> dict:
  """The raw and EMA variables of the run's newest step, flattened."""
  from flax import traverse_util

  from effnetlite.weights import checkpoints
  _, _, stored = checkpoints.read_newest(workdir)
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
  _truncate_data(os.path.join(cwd, "run/checkpoints/4"), "state")

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
  _truncate_data(os.path.join(cwd, "run/checkpoints/2"), "state")
  error = _one_error(_run("eval.py", "--weights=run", cwd=cwd))
  assert "no readable checkpoint in" in error and "step(s) 2 are damaged" in error
  assert os.path.isdir(os.path.join(cwd, "run/checkpoints/2"))  # left on disk


@pytest.fixture
def small_disk(tmp_path):
  """A 105 MB tmpfs (the test needs the right to mount; skipped without it)."""
  mount_point = str(tmp_path / f"disk-{uuid.uuid4().hex[:6]}")
  os.makedirs(mount_point)
  if shutil.which("mount") is None or subprocess.run(
      ["mount", "-t", "tmpfs", "-o", "size=105m", "tmpfs", mount_point],
      capture_output=True).returncode != 0:
    pytest.skip("mounting a size-limited tmpfs is not allowed here")
  yield mount_point
  subprocess.run(["umount", "-l", mount_point], check=False)


def test_a_full_disk_stops_the_run_in_one_line_and_the_resume_is_exact(digits_dir, straight,
                                                                       small_disk, tmp_path):
  # A lite0 step takes ~46 MB in checkpoints/ (the train state) and ~25 MB in best/ (the
  # first ones are estimated from the arrays' bytes, +10%): step 2 fits in 105 MB, and at
  # step 4 the new best does, the train state does not.
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


def test_sigterm_saves_the_step_reached_and_a_live_run_keeps_its_directory(digits_dir, straight,
                                                                           tmp_path):
  """A preempted job: SIGTERM while the step compiles stops after step 1 with it saved; a
  second train.py on the directory meanwhile is refused naming the holder; the rerun
  resumes from step 1 and ends where an uninterrupted run does."""
  import signal
  import time
  cwd = str(tmp_path)
  command = [sys.executable, os.path.join(ROOT, "train.py"), *_flags(digits_dir, 6),
             "--workdir=run"]
  first = subprocess.Popen(command, cwd=cwd, env=dict(os.environ, PYTHONPATH=PYTHONPATH),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  for line in first.stdout:  # the lock is taken before the classes are printed
    if line.startswith("classes:"):
      break
  second = _run("train.py", *_flags(digits_dir, 6), "--workdir=run", cwd=cwd)
  error = _one_error(second)
  assert error.startswith(f"error: workdir {os.path.join(cwd, 'run')} is being written by "
                          f"another live run (host {os.uname().nodename}, pid {first.pid}, "
                          "since "), error
  assert error.endswith("wait for it to finish or stop it, or pass another --workdir to train.py")
  assert first.poll() is None, "the first run ended before it could be stopped"
  started = time.time()
  first.send_signal(signal.SIGTERM)
  _, stderr = first.communicate(timeout=600)
  assert first.returncode == 143, stderr[-3000:]
  assert stderr.strip().splitlines()[-1] == ("stopped by SIGTERM at step 1; checkpoint saved; "
                                             "rerun the same command to resume")
  assert "Traceback" not in stderr
  assert sorted(os.listdir(os.path.join(cwd, "run/checkpoints"))) == ["1"]
  print(f"SIGTERM during the first step's compile -> exit in {time.time() - started:.1f} s")

  resumed = _ok(_run("train.py", *_flags(digits_dir, 6), "--workdir=run", cwd=cwd))
  assert "resuming from step 1" in resumed.stdout
  ours, reference = _final_params(os.path.join(cwd, "run")), _final_params(straight)
  assert ours.keys() == reference.keys()
  for name in ours:
    np.testing.assert_array_equal(ours[name], reference[name], err_msg=name)
