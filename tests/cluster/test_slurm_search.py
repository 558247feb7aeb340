"""The README's SLURM search script (scripts/slurm/search.sbatch), submitted for real: a job
array of two workers on one PostgreSQL study, one worker requeued mid-candidate. Its
candidate's step is saved, its trial marked failed and the candidate queued again; a worker
(the requeued one, rerun, or the other) resumes it from that step; every candidate finishes
once and both array tasks end COMPLETED.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import sys
import time

import pytest
from helpers import PYTHONPATH, ROOT, tiny_run_flags

pytestmark = pytest.mark.slurm

SCRIPT = pathlib.Path(ROOT, "scripts", "slurm", "search.sbatch")
STEPS = 30  # per candidate: compilation (30-60 s on a loaded core) dominates anyway
STOP_LINE = (r"^stopped by SIGTERM during candidate (\S+) seed 1 \(trial (\d+)\) at step "
             r"(\d+), checkpoint saved; the trial is marked failed and the next worker "
             r"retries it; rerun the same command to continue$")


def _workers(cluster, digits_dir: str, url: str, workdir: pathlib.Path) -> list:
  """search.sbatch as a user submits it (its own --array=0-1), pointed at a tiny search;
  each array task as a job of its own (JOB_TASK: what scontrol takes), with its own log."""
  flags = [*tiny_run_flags(digits_dir, STEPS), "--config.search.seeds=1"]
  env = {"PYTHON": sys.executable, "SEARCH_CONFIG": "configs/search_lite0.py",
         "SEARCH_WORKDIR": str(workdir), "SEARCH_STORAGE": url, "SEARCH_FLAGS": " ".join(flags),
         "JAX_PLATFORMS": "cpu", "PYTHONPATH": PYTHONPATH}
  array = cluster.submit(SCRIPT.read_text(), cwd=ROOT, env=env,
                         output=workdir.parent / "worker-%a.out", name="search")
  return [dataclasses.replace(array, job_id=f"{array.job_id}_{task}",
                              output=workdir.parent / f"worker-{task}.out") for task in (0, 1)]


def test_a_worker_requeued_mid_candidate_leaves_every_candidate_finished_once(
    slurm_cluster, digits_dir, postgres, tmp_path):
  """Worker A is requeued once its candidate has trained a step: it saves the step, marks
  the trial failed, queues the candidate again (one line, exit 143). Released, A reruns;
  some worker resumes the candidate from the saved step ("retry 1 of candidate ...,
  resuming from step N"). In the end each candidate has one COMPLETE trial; the stopped
  one is FAIL, without a score, and its retry points back at it."""
  import optuna
  from optuna.trial import TrialState

  from configs import search_lite0
  from effnetlite.search import grid, study
  workdir = tmp_path / "search"
  workers = _workers(slurm_cluster, digits_dir, postgres, workdir)
  started = re.compile(r"^candidate \d/3, seed 1/1: .*\n(?:.*\n)*?first step done", re.M)
  victim, deadline = None, time.monotonic() + 600
  while victim is None:  # whichever worker first trains a step of its candidate
    victim = next((worker for worker in workers if started.search(worker.read_log())), None)
    if victim is None:
      for worker in workers:  # fails at once, with the log, if a worker has ended
        worker.wait_for_state(("PENDING", "RUNNING"), timeout=5)
      assert time.monotonic() < deadline, workers[0].describe() + workers[1].describe()
      time.sleep(1)
  other = workers[1 - workers.index(victim)]
  victim.requeue()
  stop = victim.wait_for_log(STOP_LINE, timeout=120)
  short, number, step = stop.group(1), int(stop.group(2)), int(stop.group(3))
  victim.wait_for_state("PENDING", timeout=120)
  assert len(re.findall(STOP_LINE, victim.read_log(), re.M)) == 1, victim.describe()
  victim.release()
  for worker in workers:
    result = worker.wait(timeout=900)
    assert (result.state, result.exit_code) == ("COMPLETED", 0), worker.describe()
  assert victim.restarts == 1 and other.restarts == 0

  config = search_lite0.get_config()
  config.model.resolution = 32
  config.search.seeds = 1
  keys = [candidate.key for candidate in grid.candidates(config)]
  trials = optuna.load_study(study_name=study.default_study_name(config),
                             storage=postgres).get_trials()
  complete = sorted(t.user_attrs["trial_name"] for t in trials if t.state == TrialState.COMPLETE)
  assert complete == sorted(study.trial_name(key, 0) for key in keys), [
      (t.number, t.state.name, t.user_attrs.get("trial_name")) for t in trials]
  failed = trials[number]
  assert failed.state == TrialState.FAIL and "ema_top1" not in failed.user_attrs
  assert failed.user_attrs["error"] == f"stopped by SIGTERM at step {step}"
  retry = next(t for t in trials if t.system_attrs.get("failed_trial") == number)
  assert retry.state == TrialState.COMPLETE and retry.user_attrs["retry"] == 1
  assert retry.user_attrs["trial_name"] == failed.user_attrs["trial_name"]
  logs = victim.read_log()[stop.end():] + other.read_log()
  assert len(re.findall(rf"^retry 1 of candidate {re.escape(short)} seed 1, resuming from "
                        rf"step {step}$", logs, re.M)) == 1, logs[-3000:]
  run = workdir / "runs" / failed.user_attrs["trial_name"] / "checkpoints"
  assert sorted(int(name) for name in os.listdir(run) if name.isdigit())[-1] == STEPS
