"""The cluster's own mechanics, which the SLURM tests of training and the search build on:
tasks of one job see each other's rank, a requeued job runs again and knows it, and a
time-limit warning reaches the batch script. If these fail, the cluster is broken, not
effnetlite."""

import re

import pytest

pytestmark = pytest.mark.slurm


def test_two_tasks_get_distinct_ranks(slurm_cluster, tmp_path):
  """`srun` in a 2-task job starts two processes with SLURM_PROCID 0 and 1 of SLURM_NTASKS=2:
  what jax.distributed.initialize() reads to form one run."""
  job = slurm_cluster.submit('srun bash -c \'echo "task $SLURM_PROCID of $SLURM_NTASKS"\'\n',
                             cwd=tmp_path, sbatch_args=["--ntasks=2"])
  result = job.wait(timeout=120)
  assert (result.state, result.exit_code) == ("COMPLETED", 0), job.describe()
  tasks = sorted(re.findall(r"^task (\d+) of (\d+)$", job.read_log(), re.MULTILINE))
  assert tasks == [("0", "2"), ("1", "2")], job.describe()


def test_requeued_job_runs_again(slurm_cluster, tmp_path):
  """`scontrol requeue` stops the running job with SIGTERM and, once released, runs the same
  script again with SLURM_RESTART_COUNT=1; the log (appended) holds both runs. Also checks
  the environment passed to `submit` reaches the job."""
  script = """\
echo "run restart=${SLURM_RESTART_COUNT:-0} marker=$EFFNETLITE_TEST_MARKER"
if [ "${SLURM_RESTART_COUNT:-0}" = 0 ]; then
  trap 'echo "got SIGTERM"; exit 143' TERM
  sleep 300 &  # in the background: bash runs a trap only between commands
  wait
fi
echo "finished"
"""
  job = slurm_cluster.submit(script, cwd=tmp_path, env={"EFFNETLITE_TEST_MARKER": "m42"},
                             sbatch_args=["--requeue"])
  first = job.wait_for_log(r"^run restart=0 marker=m42$", timeout=120)
  job.requeue()
  job.wait_for_log(r"^got SIGTERM$", timeout=60, start=first.end())
  # PENDING with Reason=BeginTime: SLURM holds a requeued job back for 120 s.
  job.release()
  job.wait_for_log(r"^run restart=1 marker=m42$", timeout=60, start=first.end())
  result = job.wait(timeout=60)
  assert (result.state, result.exit_code) == ("COMPLETED", 0), job.describe()
  assert job.restarts == 1
  assert job.read_log().count("finished") == 1, job.describe()


def test_time_limit_warning_lets_the_job_requeue_itself(slurm_cluster, tmp_path):
  """`--signal=B:USR1@50` with a one-minute limit: USR1 reaches the batch shell before the
  limit, and the script requeues itself, the pattern of the README's sbatch script. The
  controller looks at time limits every 30 s, so the signal comes at its first look after
  the nominal 10 s (10 to 30 s after the start), always before the limit. The rerun would
  start by itself after SLURM's 120 s requeue delay; the test releases it at once instead."""
  script = """\
echo "run restart=${SLURM_RESTART_COUNT:-0}"
if [ "${SLURM_RESTART_COUNT:-0}" = 0 ]; then
  trap 'echo "got SIGUSR1"; scontrol requeue "$SLURM_JOB_ID"; exit 0' USR1
  sleep 300 &
  wait
fi
echo "finished"
"""
  job = slurm_cluster.submit(script, cwd=tmp_path,
                             sbatch_args=["--requeue", "--time=1", "--signal=B:USR1@50"])
  warned = job.wait_for_log(r"^got SIGUSR1$", timeout=90)
  job.release()
  job.wait_for_log(r"^run restart=1$", timeout=60, start=warned.end())
  result = job.wait(timeout=60)
  assert (result.state, result.exit_code) == ("COMPLETED", 0), job.describe()
