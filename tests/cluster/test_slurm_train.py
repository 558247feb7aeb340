"""The README's SLURM training script (scripts/slurm/train.sbatch), submitted for real.

Two tasks form one JAX run (jax.distributed from SLURM's environment, gloo collectives on
CPU) that prints each message once; `scontrol requeue` mid-run stops both tasks at one
step, saves it once, and the released rerun resumes from exactly that step to the same
parameters as an uninterrupted job; USR1 before the time limit makes the script requeue
itself. The script is submitted as users submit it: its own #SBATCH lines, the training
pointed at a tiny config through its environment variables. Beside them, two checks of
the multi-process start-up: a stop signal during a resumed run's compilation (two local
processes, no SLURM needed) and python started without srun in a 2-task job.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import signal
import socket
import subprocess
import sys

import numpy as np
import pytest
from helpers import PYTHONPATH, ROOT, tiny_run_flags

pytestmark = pytest.mark.slurm

SCRIPT = pathlib.Path(ROOT, "scripts", "slurm", "train.sbatch")
DEMO = os.path.join(ROOT, "configs", "demo.py")
STEPS = 80  # long enough that a requeue after the first step lands mid-run
STOP_LINE = (r"^stopped by (SIG\w+) at step (\d+); checkpoint saved; rerun the same command "
             r"to resume$")
# A 2-task job: JAX start-up, the gloo rendezvous and compilation (cached after the first
# job) take 30-130 s on two loaded cores, the steps about one a second.
JOB_SECONDS = 600


def _flags(digits_dir: str, steps: int) -> list[str]:
  """The demo made tiny: checkpoints and evaluations only at the end, or on a stop."""
  return tiny_run_flags(digits_dir, steps, every=1000)


def _submit(cluster, workdir: pathlib.Path, digits_dir: str, steps: int = STEPS,
            sbatch_args: tuple[str, ...] = ()):
  """train.sbatch as a user submits it from the repository, its training made tiny through
  the script's environment variables; the log beside the workdir."""
  env = {"PYTHON": sys.executable, "TRAIN_CONFIG": "configs/demo.py",
         "TRAIN_WORKDIR": str(workdir), "TRAIN_FLAGS": " ".join(_flags(digits_dir, steps)),
         "JAX_PLATFORMS": "cpu", "PYTHONPATH": PYTHONPATH}
  return cluster.submit(SCRIPT.read_text(), cwd=ROOT, env=env, sbatch_args=sbatch_args,
                        output=workdir.parent / f"{workdir.name}.out", name=workdir.name)


def _final_params(workdir: pathlib.Path) -> dict[str, np.ndarray]:
  """The raw and EMA variables of the run's newest step, flattened."""
  from flax import traverse_util

  from effnetlite.weights import checkpoints
  _, _, stored = checkpoints.read_newest(str(workdir))
  return traverse_util.flatten_dict(stored, sep="/")


def _steps(workdir: pathlib.Path) -> list[int]:
  """The complete checkpoint steps (orbax renames a step's folder when it is committed)."""
  return sorted(int(name) for name in os.listdir(workdir / "checkpoints") if name.isdigit())


def _exit_codes(log: str) -> dict[int, int]:
  """Each task's exit status from srun's lines ("task 1: Exited with exit code 143", or
  "tasks 0-1: ..." when they ended together)."""
  codes = {}
  for tasks, code in re.findall(r"^srun: error: \S+: tasks? ([\d,-]+): Exited with exit code "
                                r"(\d+)$", log, re.MULTILINE):
    for part in tasks.split(","):
      first, _, last = part.partition("-")
      codes.update({task: int(code) for task in range(int(first), int(last or first) + 1)})
  return codes


def _assert_equal_params(ours: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> None:
  assert sorted(ours) == sorted(reference)
  for key, value in reference.items():
    np.testing.assert_array_equal(np.asarray(ours[key]), np.asarray(value), err_msg=key)


@pytest.fixture(scope="module")
def uninterrupted(slurm_cluster, digits_dir, tmp_path_factory):
  """A 2-task job trained straight to STEPS: the reference for the stopped ones. It has to
  be a 2-task job too: each process reads its own share of the data, so one process sees
  other batches (every parameter differed after 200 steps)."""
  workdir = tmp_path_factory.mktemp("straight") / "run"
  job = _submit(slurm_cluster, workdir, digits_dir)
  result = job.wait(timeout=JOB_SECONDS)
  assert (result.state, result.exit_code) == ("COMPLETED", 0), job.describe()
  return job, workdir


def test_two_tasks_form_one_run_that_prints_each_message_once(uninterrupted):
  """Two tasks are one JAX run: one checkpoint written by both processes (orbax keeps one
  ocdbt folder per process), every message printed once, by process 0."""
  job, workdir = uninterrupted
  log = job.read_log()
  assert "Traceback" not in log, job.describe()
  assert re.findall(r"^job \d+ on \S+: SLURM_RESTART_COUNT=(\d+)", log, re.MULTILINE) == ["0"]
  assert len(re.findall(r"^classes: 0 0, 1 1, 2 2, 3 3, 4 4, 5 5, 6 6, 7 7, 8 8, 9 9$", log,
                        re.MULTILINE)) == 1, job.describe()
  assert len(re.findall(r"first step done [\d.]+ s after the start", log)) == 1, job.describe()
  assert len(re.findall(rf"step {STEPS}: top-1 [\d.]+ \(EMA [\d.]+\) on 359 images", log)) == 1
  assert _steps(workdir) == [STEPS]
  state = workdir / "checkpoints" / str(STEPS) / "state"
  assert sorted(path.name for path in state.glob("ocdbt.process_*")) == [
      "ocdbt.process_0", "ocdbt.process_1"]
  with open(workdir / "final_metrics.json") as handle:
    assert json.load(handle)["step"] == STEPS


def _requeued_stop(job, workdir: pathlib.Path, after: re.Match) -> tuple[int, re.Match]:
  """`scontrol requeue` now; waits for the stop it causes and for the job to be pending
  again, and checks what that stop left: one line, both tasks' exit status 143 (they beat
  KillWait's SIGKILL), one new checkpoint written by both processes. The step it saved."""
  job.requeue()
  stop = job.wait_for_log(STOP_LINE, timeout=120, start=after.end())
  job.wait_for_state("PENDING", timeout=120)
  this_run = job.read_log()[after.start():]
  assert stop.group(1) == "SIGTERM", job.describe()
  assert len(re.findall(STOP_LINE, this_run, re.MULTILINE)) == 1, job.describe()
  assert _exit_codes(this_run) == {0: 143, 1: 143}, job.describe()
  step = int(stop.group(2))
  assert sorted(path.name for path in (workdir / "checkpoints" / str(step) / "state").glob(
      "ocdbt.process_*")) == ["ocdbt.process_0", "ocdbt.process_1"]
  return step, stop


def _rerun(job, after: re.Match, restarts: int) -> tuple[re.Match, int]:
  """Releases the requeued job and waits for its rerun to say where it resumes."""
  job.release()
  rerun = job.wait_for_log(rf"^job \d+ on \S+: SLURM_RESTART_COUNT={restarts} ", timeout=120,
                           start=after.end())
  resumed = job.wait_for_log(r"^resuming from step (\d+) ", timeout=JOB_SECONDS,
                             start=rerun.end())
  return resumed, int(resumed.group(1))


def test_a_requeued_job_resumes_from_the_step_its_stop_saved(slurm_cluster, digits_dir,
                                                             uninterrupted, tmp_path):
  """`scontrol requeue` mid-run: both tasks stop at one step N, saved once (by both
  processes) and said once, within KillWait; the released rerun (SLURM_RESTART_COUNT=1)
  resumes from N, finishes, and its parameters equal the uninterrupted job's bit for bit."""
  workdir = tmp_path / "run"
  job = _submit(slurm_cluster, workdir, digits_dir)
  started = job.wait_for_log(r"first step done", timeout=JOB_SECONDS)
  step, stop = _requeued_stop(job, workdir, started)
  assert 1 <= step < STEPS, job.describe()
  assert _steps(workdir) == [step]

  resumed, resumed_from = _rerun(job, stop, restarts=1)
  assert resumed_from == step
  result = job.wait(timeout=JOB_SECONDS)
  assert (result.state, result.exit_code) == ("COMPLETED", 0), job.describe()
  assert job.restarts == 1
  last_run = job.read_log()[resumed.start():]
  assert "Traceback" not in last_run and not re.search(STOP_LINE, last_run, re.MULTILINE)
  assert _steps(workdir) == [step, STEPS]
  _assert_equal_params(_final_params(workdir), _final_params(uninterrupted[1]))


def test_usr1_before_the_time_limit_requeues_the_job(slurm_cluster, digits_dir, tmp_path):
  """`--time` with `--signal=USR1@N`: SLURM warns the tasks, they stop at one step and save
  it (exit 138), the script requeues the job itself, and the rerun, with
  SLURM_RESTART_COUNT=1, resumes from that step. The controller looks at time limits every
  30 s, so the warning comes 0-30 s after the limit minus N: here 180-210 s into the job,
  after start-up (30-130 s here, compilation cached by the jobs before). The rerun gets a
  longer limit (as an admin's `scontrol update` would), so no second warning comes before
  it resumes; then the test ends it."""
  workdir = tmp_path / "run"
  steps = 100_000  # still training when the warning comes, whatever this machine's speed
  job = _submit(slurm_cluster, workdir, digits_dir, steps=steps,
                sbatch_args=("--time=5", "--signal=USR1@120"))
  stop = job.wait_for_log(STOP_LINE, timeout=420)
  signal_name, step = stop.group(1), int(stop.group(2))
  assert signal_name == "SIGUSR1", job.describe()
  requeued = job.wait_for_log(rf"^stopped before the time limit; requeueing job {job.job_id}$",
                              timeout=60, start=stop.end())
  job.wait_for_state("PENDING", timeout=120)
  assert _steps(workdir) == [step]
  assert len(re.findall(STOP_LINE, job.read_log(), re.MULTILINE)) == 1, job.describe()
  assert _exit_codes(job.read_log()) == {0: 138, 1: 138}, job.describe()
  # The rerun: long enough to finish a short remainder (max_steps can only grow on resume).
  subprocess.run(["scontrol", "update", f"JobId={job.job_id}", "TimeLimit=30"], check=True,
                 timeout=30)
  job.release()
  rerun = job.wait_for_log(r"^job \d+ on \S+: SLURM_RESTART_COUNT=1 ", timeout=120,
                           start=requeued.end())
  resumed = job.wait_for_log(r"^resuming from step (\d+) ", timeout=JOB_SECONDS,
                             start=rerun.end())
  assert int(resumed.group(1)) == step
  job.cancel()  # 100,000 steps: the resume is what this test is about


def _two_processes(workdir: pathlib.Path, digits_dir: str, steps: int,
                   env: dict[str, str]) -> list[subprocess.Popen]:
  """train.py as the two processes of one JAX run on this machine (explicit coordinator)."""
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=PYTHONPATH, JAX_NUM_PROCESSES="2",
             JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}", **env)
  command = [sys.executable, os.path.join(ROOT, "train.py"), f"--config={DEMO}",
             *_flags(digits_dir, steps), f"--workdir={workdir}"]
  return [subprocess.Popen(command, cwd=ROOT, env=dict(env, JAX_PROCESS_ID=str(rank)),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
          for rank in range(2)]


def test_a_stop_during_a_resumed_runs_start_up_is_agreed_two_steps_on(digits_dir, tmp_path):
  """SIGTERM to both processes of a run resumed from step 2, while its step compiles (no
  compilation cache: tens of seconds): they stop at step 4 and save it. The first step
  boundary is where this session first tells JAX's preemption sync point its step; the
  notice goes out then, and the agreed step is the next one. (A notice given to JAX before
  that was agreed at step 1, which a resumed run never reaches: it trained on to the end,
  or under SLURM until SIGKILL.) No SLURM needed; the processes are this machine's."""
  workdir = tmp_path / "run"
  first = _two_processes(workdir, digits_dir, 2, {})
  for process in first:
    _, err = process.communicate(timeout=JOB_SECONDS)
    assert process.returncode == 0, err[-3000:]
  assert _steps(workdir) == [2]
  resumed = _two_processes(workdir, digits_dir, 6, {"EFFNETLITE_COMPILATION_CACHE": "none"})
  for line in resumed[0].stdout:  # process 0 says it; the session's handlers are set
    if line.startswith("resuming from step 2 "):
      break
  for process in resumed:
    process.send_signal(signal.SIGTERM)
  errors = [process.communicate(timeout=JOB_SECONDS)[1] for process in resumed]
  assert [process.returncode for process in resumed] == [143, 143], errors[0][-3000:]
  assert errors[0].strip().splitlines()[-1] == (
      "stopped by SIGTERM at step 4; checkpoint saved; rerun the same command to resume")
  assert "stopped by" not in errors[1] and "Traceback" not in errors[0] + errors[1]
  assert _steps(workdir) == [2, 4]


def test_python_without_srun_in_a_2_task_job_trains_alone_and_says_so(slurm_cluster, tmp_path):
  """A batch script that runs python itself, not through srun, in a 2-task job: SLURM_NTASKS
  says 2 but there is no job step for JAX to read (SLURM_STEP_NODELIST, set by srun), where
  jax.distributed.initialize() would fail; the process runs alone and says how to get one
  per task."""
  code = ("from effnetlite.train.loop import initialize_distributed; initialize_distributed(); "
          "import jax; print('processes:', jax.process_count())")
  job = slurm_cluster.submit(f"{sys.executable} -c \"{code}\"\n", cwd=ROOT,
                             env={"JAX_PLATFORMS": "cpu", "PYTHONPATH": PYTHONPATH},
                             sbatch_args=["--ntasks=2"], output=tmp_path / "job.out")
  result = job.wait(timeout=300)
  assert (result.state, result.exit_code) == ("COMPLETED", 0), job.describe()
  assert job.read_log().splitlines() == [
      "warning: SLURM_NTASKS=2, but this process was not started by srun: it trains alone; "
      "run `srun python ...` in the batch script for one process per task", "processes: 1"]
