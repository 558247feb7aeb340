"""A real SLURM cluster for the tests marked `slurm`: the `slurm_cluster` fixture and helpers
to submit a batch script, follow its log and steer it (requeue, release, signal, cancel).

The cluster is the one-node cluster of `.ci/slurm_cluster.sh` (SLURM 22.05 from Debian). Where
sbatch/sinfo are missing or no node is up, the tests skip with the reason, so that a default
`make test` on a laptop passes; CI sets EFFNETLITE_REQUIRE_SLURM=1 (`make test-slurm`) so a
broken cluster fails instead of quietly skipping everything.

Facts about that SLURM the helpers rely on (checked on 22.05.8):
- No slurmdbd, so `sacct` has no data: job state and exit code come from `scontrol show job`,
  which keeps finished jobs for MinJobAge (a day in our slurm.conf, 300 s by default).
- `scontrol requeue` sends SIGCONT+SIGTERM to the batch shell and every step, SIGKILL after
  KillWait (30 s); the job stays COMPLETING until its processes are gone, then goes PENDING
  with Reason=BeginTime and a begin time 120 s (the credential lifetime) after that.
  `scontrol update StartTime=now` releases it, but only once it is PENDING (sent while
  COMPLETING it is accepted and lost) and not within the requeue's second (the rerun is
  refused, "Job credential revoked", and the job ends FAILED): `SlurmJob.release` waits.
- A batch script running `srun ...` in the foreground needs no trap: on requeue or scancel
  its shell dies of the SIGTERM, but srun forwards the signal, waits for the tasks (up to
  KillWait) and their output still reaches the log.
- The rerun sees SLURM_RESTART_COUNT=1 (unset on the first run). With the default open mode
  the rerun truncates the output file; `submit` appends, so one log holds every run.
"""

from __future__ import annotations

import dataclasses
import datetime
import os
import pathlib
import re
import shutil
import subprocess
import time
from typing import Iterable, Iterator, Mapping

import pytest

# States after which a job never runs again (a requeue passes through PENDING instead).
FINISHED_STATES = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED", "OUT_OF_MEMORY",
    "BOOT_FAIL", "DEADLINE"})
# Node states (sinfo %t, without the flags' suffixes) in which the node takes jobs.
UP_NODE_STATES = ("idle", "mix", "alloc")
_HERE = pathlib.Path(__file__).parent
_COMMAND_TIMEOUT = 30  # seconds for one sbatch/scontrol call; the controller answers in ms


@pytest.hookimpl(tryfirst=True)  # before the `-m` deselection, another modifyitems hook
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
  """Marks every test in this folder `slurm`, so a test added here without the marker still
  stays out of the default run (which deselects `slurm`) instead of skipping there."""
  for item in items:
    if _HERE in item.path.parents:
      item.add_marker(pytest.mark.slurm)


def _run(*command: str, env: Mapping[str, str] | None = None, check: bool = True,
         input_script: str | None = None) -> subprocess.CompletedProcess:
  """Runs a SLURM client command (feeding sbatch its script on stdin); a failure raises with
  the command's stderr, not a bare exit code."""
  result = subprocess.run(command, capture_output=True, text=True, env=env, input=input_script,
                          timeout=_COMMAND_TIMEOUT)
  if check and result.returncode != 0:
    raise RuntimeError(f"{' '.join(command)} exited {result.returncode}: "
                       f"{(result.stderr or result.stdout).strip()}")
  return result


def _parse_scontrol(line: str) -> dict[str, str]:
  """`scontrol -o show job` prints Key=Value pairs on one line; values such as Command or
  WorkDir may hold spaces, so split at ' Key=' rather than at every space."""
  fields = {}
  for match in re.finditer(r"(?:^|\s)([A-Za-z:/_]+)=(.*?)(?=\s[A-Za-z:/_]+=|$)", line.strip()):
    fields[match.group(1)] = match.group(2)
  return fields


@dataclasses.dataclass(frozen=True)
class JobResult:
  """How a job ended: its final state and the batch script's exit status (or signal)."""
  state: str
  exit_code: int
  signal: int


@dataclasses.dataclass
class SlurmJob:
  """A submitted batch job; every method asks the controller afresh (no cached state)."""
  job_id: str
  output: pathlib.Path  # the batch script's stdout and stderr, every run appended

  def info(self) -> dict[str, str]:
    """The job's record from `scontrol show job` (JobState, Reason, Restarts, ExitCode, ...)."""
    result = _run("scontrol", "-o", "show", "job", self.job_id, check=False)
    if result.returncode == 0 and result.stdout.strip():
      # One line per array task: for a plain job there is exactly one.
      return _parse_scontrol(result.stdout.strip().splitlines()[0])
    return self._info_from_sacct()

  def _info_from_sacct(self) -> dict[str, str]:
    """After MinJobAge the controller forgets a job; a cluster with accounting still knows."""
    result = _run("sacct", "-n", "-P", "-X", "-j", self.job_id, "-o", "State,ExitCode",
                  check=False)
    lines = result.stdout.strip().splitlines() if result.returncode == 0 else []
    if not lines:
      raise RuntimeError(f"SLURM has no record of job {self.job_id}")
    state, exit_code = lines[0].split("|")
    return {"JobState": state.split()[0], "ExitCode": exit_code, "Reason": "None"}

  @property
  def state(self) -> str:
    """JobState, e.g. PENDING, RUNNING, COMPLETING, COMPLETED, FAILED, CANCELLED."""
    return self.info()["JobState"]

  @property
  def restarts(self) -> int:
    """How often the job was requeued (what the next run sees as SLURM_RESTART_COUNT)."""
    return int(self.info().get("Restarts", "0"))

  def read_log(self) -> str:
    """The output file so far ('' before the job first starts)."""
    try:
      return self.output.read_text(errors="replace")
    except FileNotFoundError:
      return ""

  def describe(self) -> str:
    """State and the log's tail, for assertion messages: why a wait failed."""
    try:
      info = self.info()
      status = (f"JobState={info.get('JobState')} Reason={info.get('Reason')} "
                f"Restarts={info.get('Restarts')} ExitCode={info.get('ExitCode')}")
    except RuntimeError as error:
      status = str(error)
    tail = "\n".join(self.read_log().splitlines()[-40:])
    return f"job {self.job_id}: {status}\n--- {self.output} (tail) ---\n{tail}"

  def wait_for_state(self, states: str | Iterable[str], timeout: float = 120,
                     poll: float = 0.5) -> str:
    """Waits until the job is in one of `states` and returns it. Fails early when the job
    finished in another state, since it will never get there."""
    wanted = {states} if isinstance(states, str) else set(states)
    deadline = time.monotonic() + timeout
    while True:
      state = self.state
      if state in wanted:
        return state
      if state in FINISHED_STATES:
        raise AssertionError(f"job finished as {state}, not {sorted(wanted)}\n"
                             f"{self.describe()}")
      if time.monotonic() > deadline:
        raise AssertionError(f"job not {sorted(wanted)} after {timeout:.0f} s\n"
                             f"{self.describe()}")
      time.sleep(poll)

  def wait_for_log(self, pattern: str | re.Pattern, timeout: float = 300, start: int = 0,
                   poll: float = 0.5) -> re.Match:
    """Waits until the log matches `pattern` (re.MULTILINE) at or after character `start`;
    pass a previous match's end() to wait for the next occurrence, e.g. after a requeue.
    Fails early, with the log, when the job has finished without printing it."""
    regex = re.compile(pattern, re.MULTILINE) if isinstance(pattern, str) else pattern
    deadline = time.monotonic() + timeout
    while True:
      match = regex.search(self.read_log(), start)
      if match:
        return match
      finished = self.state in FINISHED_STATES
      if finished:  # the last lines may land just after the state changes
        match = regex.search(self.read_log(), start)
        if match:
          return match
        raise AssertionError(f"job finished without printing /{regex.pattern}/\n"
                             f"{self.describe()}")
      if time.monotonic() > deadline:
        raise AssertionError(f"no /{regex.pattern}/ in the log after {timeout:.0f} s\n"
                             f"{self.describe()}")
      time.sleep(poll)

  def wait(self, timeout: float = 600) -> JobResult:
    """Waits until the job has finished for good and returns its state and exit status."""
    state = self.wait_for_state(FINISHED_STATES, timeout)
    exit_code, _, signal = self.info().get("ExitCode", "0:0").partition(":")
    return JobResult(state, int(exit_code or 0), int(signal or 0))

  def requeue(self) -> None:
    """`scontrol requeue`, as preemption would: SIGTERM now, SIGKILL after KillWait; the
    job then waits PENDING (Reason=BeginTime) until `release()` or 120 s pass."""
    _run("scontrol", "requeue", self.job_id)

  def release(self, timeout: float = 120) -> None:
    """Lets a requeued job start now, as the scheduler would once resources free up, instead
    of after SLURM's requeue delay (the credential lifetime, 120 s). Two waits first:
    - for PENDING: while the old run is COMPLETING (up to KillWait) SLURM accepts the update
      and then overwrites it with the requeue's begin time;
    - until 2 s after the requeue (the record's SubmitTime): slurmd revokes the old run's
      credential with a one-second timestamp, and a rerun launched within that second is
      refused ("Job credential revoked") and the job ends FAILED, never to run again."""
    self.wait_for_state("PENDING", timeout)
    info = self.info()
    requeued = datetime.datetime.strptime(info["SubmitTime"], "%Y-%m-%dT%H:%M:%S")
    time.sleep(max(0.0, (requeued - datetime.datetime.now()).total_seconds() + 2))
    if "Held" in info.get("Reason", ""):  # scontrol requeuehold / hold
      _run("scontrol", "release", self.job_id)
    _run("scontrol", "update", f"JobId={self.job_id}", "StartTime=now")

  def signal(self, name: str, batch_only: bool = False) -> None:
    """Sends a signal (e.g. 'USR1', 'TERM') to the job's steps, or only to its batch shell."""
    _run("scancel", f"--signal={name}", *(["--batch"] if batch_only else []), self.job_id)

  def cancel(self) -> None:
    """Ends the job for good (no requeue): SIGTERM, SIGKILL after KillWait."""
    _run("scancel", self.job_id, check=False)


@dataclasses.dataclass
class SlurmCluster:
  """The running cluster: what it offers and how to submit to it."""
  node: str
  cpus: int
  jobs: list[SlurmJob] = dataclasses.field(default_factory=list)

  def submit(self, script: str, cwd: str | os.PathLike, env: Mapping[str, str] | None = None,
             sbatch_args: Iterable[str] = (), output: str | os.PathLike | None = None,
             name: str = "effnetlite-test") -> SlurmJob:
    """Submits `script` (a batch script's text; '#!/bin/bash' is added when it has no shebang,
    and its #SBATCH lines apply) to run in `cwd`, with this process's environment updated by
    `env`, and returns the job. Output goes to `output` (default `cwd/slurm-<id>.out`),
    appended across requeues. `sbatch_args` (e.g. '--ntasks=2', '--requeue') override the
    script's #SBATCH lines."""
    cwd = pathlib.Path(cwd).resolve()
    if not script.startswith("#!"):
      script = "#!/bin/bash\n" + script
    # sbatch reads SBATCH_* and SLURM_* from its environment: a pytest that itself runs inside
    # a SLURM job must not hand the test job its own job's settings.
    environment = {key: value for key, value in os.environ.items()
                   if not key.startswith(("SBATCH_", "SLURM_"))}
    environment.update(env or {})
    output = pathlib.Path(output) if output else cwd / "slurm-%j.out"
    result = _run("sbatch", "--parsable", f"--chdir={cwd}", f"--output={output}",
                  "--open-mode=append", f"--job-name={name}", *sbatch_args,
                  env=environment, input_script=script)
    job_id = result.stdout.strip().split(";")[0]  # "id" or "id;cluster"
    job = SlurmJob(job_id, pathlib.Path(str(output).replace("%j", job_id)))
    self.jobs.append(job)
    return job


def _cluster_problem() -> tuple[str | None, SlurmCluster | None]:
  """(why there is no usable cluster, None) or (None, the cluster)."""
  missing = [tool for tool in ("sbatch", "sinfo", "scontrol", "srun") if not shutil.which(tool)]
  if missing:
    return f"SLURM client commands not found ({', '.join(missing)})", None
  try:
    result = _run("sinfo", "-h", "-N", "-o", "%N %t %c", check=False)
  except subprocess.TimeoutExpired:
    return "sinfo did not answer within 30 s (is slurmctld running?)", None
  if result.returncode != 0:
    return f"sinfo failed: {(result.stderr or result.stdout).strip()}", None
  for line in result.stdout.splitlines():
    node, state, cpus = line.split()
    if state.rstrip("*~#!%$@^-") in UP_NODE_STATES:
      return None, SlurmCluster(node, int(cpus))
  return f"no SLURM node is up (sinfo: {result.stdout.strip() or 'no nodes'})", None


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
  """The running cluster. Skips with the reason when there is none, or fails when
  EFFNETLITE_REQUIRE_SLURM=1 (CI, `make test-slurm`): there a missing cluster is a bug."""
  problem, cluster = _cluster_problem()
  if problem:
    message = (f"needs a running SLURM cluster: {problem}; start one as root with "
               f"`bash .ci/slurm_cluster.sh`, then `make test-slurm`")
    if os.environ.get("EFFNETLITE_REQUIRE_SLURM") == "1":
      pytest.fail(message + " (EFFNETLITE_REQUIRE_SLURM=1)", pytrace=False)
    pytest.skip(message)
  yield cluster
  # A failed test can leave its job running and holding the node's CPUs for the next one.
  for job in cluster.jobs:
    job.cancel()
