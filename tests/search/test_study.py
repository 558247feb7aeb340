"""The search as an Optuna study: exactly-once trials (candidate x seed), restarts, pruning,
two objectives, the report's ranking, test column and paired comparisons, two workers on
SQLite, and two workers on a real PostgreSQL server with one SIGKILLed.

Training is replaced by a fast stand-in that behaves like `train_and_evaluate` where the
search depends on it: it evaluates every few steps (calling `on_eval`), checkpoints its
step to the run directory and resumes from it. The real training runs in test_readme
(one candidate) and in test_search's slow test (the whole grid).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import optuna
import pytest
from helpers import PYTHONPATH, ROOT
from optuna.trial import TrialState

from configs import search_lite0
from effnetlite import runs
from effnetlite.errors import UserError
from effnetlite.search import grid, report, storage, study

STEPS, EVAL_EVERY = 8, 2
# configs/search_lite0.py's kept candidates, cheapest family first (tests/search/test_grid.py).
KEYS = ["a1.400_b1.100_g1.100", "a1.400_b1.000_g1.200", "a1.200_b1.100_g1.200"]
IMAGES = 100  # the stand-in's ranking split


def search_config(**overrides):
  config = search_lite0.get_config()
  config.search.update(overrides)
  return config


def accuracy_of(config) -> float:
  """Stand-in accuracy: deeper and wider is better (a1.4 b1.1 g1.1 wins with 0.92, then
  a1.4 b1.0 g1.2 with 0.90 and a1.2 b1.1 g1.2 with 0.82); the same for every seed."""
  return round(0.5 * config.model.depth + 0.2 * config.model.width, 6)


def fake_train(config, workdir, on_eval=None, step_seconds=0.0, log=None):
  """Resumable stand-in for train_and_evaluate: a checkpoint every step, an empty folder
  named by the step as orbax leaves them (`Run.latest_step`); `on_eval` after every
  evaluation but the last, whose metrics are returned. Like the real loop it records final
  metrics with the split's identity and per-image correctness: the first accuracy * IMAGES
  images are right."""
  run = runs.Run(workdir)
  step = run.latest_step() or 0
  if log is not None:
    log.append((config.model.name, config.seed, step))
  target = accuracy_of(config)
  while step < STEPS:
    time.sleep(step_seconds)
    step += 1
    os.makedirs(os.path.join(run.checkpoints_dir, str(step)), exist_ok=True)
    if step % EVAL_EVERY == 0 and step < STEPS and on_eval is not None:  # the last: returned
      on_eval(step, {"eval_top1": target * step / STEPS, "ema_eval_top1": target * step / STEPS})
  right = int(round(target * IMAGES))
  split = {"dataset": "fake", "split": "holdout", "holdout_fraction": 0.1, "examples": IMAGES,
           "ids_sha256": "f"}
  run.save_eval_examples(split, [f"img{i}" for i in range(IMAGES)],
                         [i < right for i in range(IMAGES)])
  metrics = {"eval_top1": target, "ema_eval_top1": target, "train_images_per_sec": 100.0}
  run.save_final_metrics({"step": step, **metrics, "eval_split": split})
  return metrics


def fake_test(config, run_dir, split):
  """Stand-in test evaluation: one point below the ranking accuracy."""
  assert split == "test" and config.dataset.eval_split == "holdout"
  return {"top1": accuracy_of(config) - 0.01, "top5": 1.0, "count": 359}


def _open(config, tmp_path, name="s"):
  return study.open_study(config, storage.storage_url("", str(tmp_path)), name)


def _read(config, tmp_path, name="s"):
  """The study as --report_only opens it: nothing enqueued."""
  return study.open_study(config, storage.storage_url("", str(tmp_path)), name, enqueue=False)


def _worker(config, tmp_path, train=fake_train, **kwargs):
  study.run_worker(config, _open(config, tmp_path), str(tmp_path), train=train,
                   evaluate_test=fake_test, **kwargs)


def test_every_trial_once_readable_with_plain_optuna(tmp_path):
  config = search_config(pruner="none")  # 2 seeds
  log = []
  _worker(config, tmp_path, train=lambda c, w, e: fake_train(c, w, e, log=log))
  # Seed 0 of every candidate first, then seed 1; each trial in its own run directory.
  assert log == [(f"lite0_{key}", seed, 0) for seed in (0, 1) for key in KEYS]
  for key in KEYS:
    for seed in (0, 1):
      assert runs.Run(tmp_path / "runs" / key / f"seed{seed}").latest_step() == STEPS
  plain = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path}/study.db")
  trials = plain.get_trials(states=(TrialState.COMPLETE,))
  assert len(trials) == 6 and len(plain.trials) == 6
  by_key = {c.key: c for c in grid.candidates(config)}
  for trial in trials:
    candidate = by_key[trial.user_attrs["candidate"]]
    assert trial.params == candidate.coefficients
    assert trial.values == [accuracy_of(grid.candidate_config(config, candidate))]
    assert trial.user_attrs["test_top1"] == pytest.approx(trial.values[0] - 0.01)
    assert trial.user_attrs["eval_examples"] == os.path.join(
        "runs", candidate.key, f"seed{trial.user_attrs['seed_index']}", "eval_examples.json")
  # A rerun (or a late worker) finds nothing to do.
  log.clear()
  _worker(config, tmp_path, train=lambda c, w, e: fake_train(c, w, e, log=log))
  the_study = _open(config, tmp_path)
  assert log == [] and len(the_study.trials) == 6
  markdown, best = report.write_report(the_study, str(tmp_path))
  assert ("best: alpha=1.4, beta=1.1, gamma=1.1 (EMA top-1 0.9200 on the ranking split, mean "
          "of 2 seeds; noise of one such accuracy: ± 2.7 pt standard error)") in markdown
  ranked = [line.split(" | ")[1] for line in markdown.splitlines() if line.startswith("| 1 |")
            or line.startswith("| 2 |") or line.startswith("| 3 |")][:3]
  assert ranked == ["a1.4_b1.1_g1.1", "a1.4_b1_g1.2", "a1.2_b1.1_g1.2"]
  # The test split in its own column, after the ranking: 0.91 for the winner.
  assert "| 0.9200 ± 0.0000 | 2 | 0.9100 ± 0.0000 |" in markdown
  assert "ranked on split 'holdout' of fake (10% of each class of the training split" in markdown
  # Paired on the same 100 images: 92 vs 90 right (2 discordant) is noise; 92 vs 82 is not.
  assert "- a1.4_b1.1_g1.1 leads a1.4_b1_g1.2 by 2.0 pt" in markdown
  assert "2 seeds, 100 images): not separable — more seeds, more validation images" in markdown
  assert "- a1.4_b1.1_g1.1 leads a1.2_b1.1_g1.2 by 10.0 pt" in markdown
  assert "2 seeds, 100 images): separable" in markdown
  assert markdown.count("| complete |") == 6
  with open(tmp_path / "pareto.png", "rb") as handle:
    assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_candidate_held_by_a_live_worker_is_waited_for_not_a_crash(tmp_path, capsys,
                                                                      monkeypatch):
  """A retry racing a live worker whose heartbeat came late: the retry waits for the run's
  lock and then trains (here: reads the finished run), and the worker goes on."""
  monkeypatch.setattr(study, "LOCK_POLL_SECONDS", 0.01)
  config = search_config(pruner="none", seeds=1)
  refusals = []

  def held_twice(c, w, e):
    if len(refusals) < 2:
      refusals.append(w)
      raise runs.RunLockedError(f"workdir {w} is being written by another live run")
    return fake_train(c, w, e)
  _worker(config, tmp_path, train=held_twice)
  assert capsys.readouterr().out.count("is being trained by another worker") == 1
  trials = _read(config, tmp_path).trials
  assert [t.state for t in trials] == [TrialState.COMPLETE] * len(KEYS)


def test_one_seed_compares_with_exact_mcnemar(tmp_path):
  config = search_config(pruner="none", seeds=1)
  _worker(config, tmp_path)
  markdown = report.markdown(_open(config, tmp_path), str(tmp_path))
  assert ("a1.4_b1.1_g1.1 leads a1.2_b1.1_g1.2 by 10.0 pt (95% interval" in markdown
          and "exact McNemar p = 0.002, 10 vs 0 images only one of them gets right" in markdown)


def test_failed_candidate_is_recorded_and_retried_by_a_restart(tmp_path):
  config = search_config(pruner="none", seeds=1)

  def flaky(derived, workdir, on_eval):
    if derived.model.name.endswith("a1.400_b1.000_g1.200"):
      raise RuntimeError("out of memory")
    return fake_train(derived, workdir, on_eval)
  _worker(config, tmp_path, train=flaky)
  failed = [r for r in report.candidate_rows(_read(config, tmp_path))
            if r["state"] == "FAIL"]
  assert [r["candidate"] for r in failed] == ["a1.400_b1.000_g1.200"]
  assert failed[0]["error"] == "RuntimeError: out of memory"
  markdown = report.markdown(_read(config, tmp_path), str(tmp_path))
  assert "| - | a1.4_b1_g1.2 |" in markdown and "| 1 fail |" in markdown  # unranked, said so
  log = []
  # The restart re-enqueues the failed trial only.
  _worker(config, tmp_path, train=lambda c, w, e: fake_train(c, w, e, log=log))
  assert log == [("lite0_a1.400_b1.000_g1.200", 0, 0)]
  states = [t.state for t in _open(config, tmp_path).trials]
  assert states.count(TrialState.COMPLETE) == 3 and states.count(TrialState.FAIL) == 1


def test_a_retry_starts_clean_and_says_where_it_resumes(tmp_path, capsys):
  """Optuna's own retry copies the failed attempt's accuracy, error and evaluations into the
  retry; ours keeps what the trial trains, counts the retry, and the retried candidate
  resumes from its checkpoint."""
  config = search_config(pruner="none", seeds=1, max_retries=1)
  died = []

  def dies_once_at_step_4(derived, workdir, on_eval):
    def evaluated(step, metrics):
      on_eval(step, metrics)
      if step == 4 and not died:
        died.append(step)
        raise RuntimeError("node lost")
    return fake_train(derived, workdir, evaluated)
  _worker(config, tmp_path, train=dies_once_at_step_4)
  the_study = _read(config, tmp_path)
  failed = the_study.trials[0]
  assert failed.state == TrialState.FAIL and failed.user_attrs["ema_top1"] == pytest.approx(0.46)
  assert failed.intermediate_values == {2: pytest.approx(0.23), 4: pytest.approx(0.46)}
  retry = storage.RetryCandidate(max_retries=1)
  assert retry(the_study, failed) == 1
  waiting = the_study.trials[-1]
  assert waiting.state == TrialState.WAITING and waiting.intermediate_values == {}
  assert waiting.user_attrs == {**{k: v for k, v in failed.user_attrs.items()
                                   if k in storage.ENQUEUED_ATTRS}, "retry": 1}
  assert not {"ema_top1", "top1", "error", "worker", "train_seconds"} & set(waiting.user_attrs)
  assert waiting.params == failed.params
  assert (waiting.system_attrs["failed_trial"], waiting.system_attrs["retry_history"]) == (0, [0])
  assert retry(the_study, waiting) is None  # a second retry is past max_retries=1
  # Failed, it shows as failed: no accuracy, in the table or the ranking.
  markdown = report.markdown(_read(config, tmp_path), str(tmp_path))
  assert "| 0 | a1.4_b1.1_g1.1 | 1 | fail | - | - |" in markdown
  assert "| 3 | a1.4_b1.1_g1.1 | 1 | waiting | - | - |" in markdown
  assert "| - | a1.4_b1.1_g1.1 |" in markdown  # unranked until a seed completes
  capsys.readouterr()
  log = []
  _worker(config, tmp_path, train=lambda c, w, e: fake_train(c, w, e, log=log))
  assert log == [(f"lite0_{KEYS[0]}", 0, 4)]
  assert "retry 1 of candidate a1.4_b1.1_g1.1 seed 1, resuming from step 4\n" in (
      capsys.readouterr().out)
  done = _read(config, tmp_path).trials[3]
  assert done.state == TrialState.COMPLETE and done.values == [pytest.approx(0.92)]
  assert done.intermediate_values == {6: pytest.approx(0.69)}  # its own evaluations only
  markdown = report.markdown(_read(config, tmp_path), str(tmp_path))
  assert "| 3 | a1.4_b1.1_g1.1 | 1 | complete | 0.9200 | 0.9100 |" in markdown
  assert "| retry of trial 0 |" in markdown and "| RuntimeError: node lost |" in markdown


def test_a_stop_signal_in_training_stops_the_worker_and_queues_its_candidate(tmp_path, caplog):
  """SIGTERM or SIGUSR1 (a cluster's stop), or Ctrl-C, reach the training loop, which saves
  its step and raises TrainingStopped: the worker stops too, never on to the next candidate,
  with the signal's status, one line, the trial failed and its candidate queued again."""
  from effnetlite.train.stop import TrainingStopped
  config = search_config(pruner="none", seeds=1)

  def stopped_at_step_4(derived, workdir, on_eval):
    def evaluated(step, metrics):
      on_eval(step, metrics)
      if step == 4:
        raise TrainingStopped("SIGTERM", step, 143)
    return fake_train(derived, workdir, evaluated)
  optuna_log = logging.getLogger("optuna")  # logs to its own handler, not the root's
  optuna_log.addHandler(caplog.handler)
  try:
    with pytest.raises(study.WorkerStopped) as stopped:
      _worker(config, tmp_path, train=stopped_at_step_4)
  finally:
    optuna_log.removeHandler(caplog.handler)
  assert stopped.value.exit_code == 143
  assert str(stopped.value) == (
      "stopped by SIGTERM during candidate a1.4_b1.1_g1.1 seed 1 (trial 0) at step 4, "
      "checkpoint saved; the trial is marked failed and the next worker retries it; rerun the "
      "same command to continue")
  # Optuna's warnings (one with a traceback) about the trial: the worker's line says it.
  assert not [r for r in caplog.records if r.getMessage().startswith("Trial 0 failed")]
  trials = _read(config, tmp_path).trials
  assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.WAITING] * 3
  assert trials[0].user_attrs["error"] == "stopped by SIGTERM at step 4"
  assert trials[3].user_attrs["retry"] == 1 and trials[3].system_attrs["failed_trial"] == 0


# scripts/grid_search.py as run from a shell, with `prelude` run first in its process.
_SCRIPT = """
import runpy, sys
{prelude}
sys.argv = ["grid_search.py", *{args!r}]
runpy.run_path({script!r}, run_name="__main__")
"""
# The search's training and test evaluation replaced by the stand-ins; Ctrl-C as from a
# terminal (a test's child may start with SIGINT ignored, which Python would keep).
_FAKE_TRAINING = """
import signal
signal.signal(signal.SIGINT, signal.default_int_handler)
from effnetlite.search import study
from effnetlite.train import loop
from test_study import fake_test, fake_train
loop.train_and_evaluate = lambda c, w, e: fake_train(c, w, e, step_seconds={step_seconds})
study.evaluate_on_test = fake_test
"""


def _search_script(prelude: str, *args: str) -> subprocess.Popen:
  code = _SCRIPT.format(prelude=prelude, script=os.path.join(ROOT, "scripts", "grid_search.py"),
                        args=[f"--config={os.path.join(ROOT, 'configs', 'search_lite0.py')}",
                              *args])
  return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          env=dict(os.environ, PYTHONPATH=PYTHONPATH))


def test_grid_search_refuses_a_storage_without_its_driver_before_anything(tmp_path):
  script = _search_script("sys.modules['pymysql'] = None", f"--workdir={tmp_path / 'w'}",
                          "--storage=mysql+pymysql://search:secret@db.example/search")
  out, err = script.communicate(timeout=300)
  assert script.returncode == 2 and out == ""  # not even the grid
  assert err == ("error: --storage=mysql+pymysql://search:***@db.example/search: the mysql driver "
                 "'pymysql' cannot be imported (import of pymysql halted; None in sys.modules); "
                 "pip install PyMySQL in this environment, or pass a URL whose driver is "
                 "installed\n")
  assert not os.path.exists(tmp_path / "w")


def test_ctrl_c_in_a_worker_is_one_line_and_the_next_worker_resumes_its_candidate(tmp_path):
  """grid_search.py, its training replaced by the stand-in, stopped by Ctrl-C mid-candidate:
  one line and exit 130; the trial is failed and its candidate queued again; the report
  shows the running trial while it runs and the failed one after, never as an accuracy;
  the rerun resumes the candidate from its checkpoint."""
  config = search_config(pruner="none", seeds=1)
  flags = (f"--workdir={tmp_path}", "--config.search.seeds=1")
  worker = _search_script(_FAKE_TRAINING.format(step_seconds=2.0), *flags)
  run = runs.Run(tmp_path / "runs" / KEYS[0] / "seed0")
  deadline = time.time() + 240
  while (run.latest_step() or 0) < 3 and time.time() < deadline:  # evaluated at step 2
    time.sleep(0.1)
  assert (run.latest_step() or 0) >= 3, "the worker reached no step 3 in 240 s"
  name = study.default_study_name(config)
  running = _read(config, tmp_path, name)
  assert 0 < running.trials[0].user_attrs["ema_top1"] < 0.92  # progress so far
  during = report.markdown(running, str(tmp_path))
  assert f"| 0 | a1.4_b1.1_g1.1 | 1 | running | - | - | - | on {socket.gethostname()}:" in during
  worker.send_signal(signal.SIGINT)
  out, err = worker.communicate(timeout=120)
  assert worker.returncode == 130, err[-3000:]
  assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
  assert err.splitlines()[-1] == (
      "stopped by Ctrl-C during candidate a1.4_b1.1_g1.1 seed 1 (trial 0); the trial is marked "
      "failed and the next worker retries it; rerun the same command to continue")
  saved = run.latest_step()
  stopped = _read(config, tmp_path, name).trials
  assert [t.state for t in stopped] == [TrialState.FAIL] + [TrialState.WAITING] * 3
  assert stopped[0].user_attrs["error"] == "stopped by Ctrl-C"
  assert stopped[3].user_attrs["retry"] == 1 and "ema_top1" not in stopped[3].user_attrs
  # --report_only after the stop: the failed trial as failed, its retry waiting.
  reader = _search_script("", *flags, "--report_only")
  out, err = reader.communicate(timeout=300)
  assert reader.returncode == 0, err[-3000:]
  assert "| 0 | a1.4_b1.1_g1.1 | 1 | fail | - | - |" in out and "| stopped by Ctrl-C |" in out
  assert "| 3 | a1.4_b1.1_g1.1 | 1 | waiting | - | - | - | retry of trial 0 |" in out
  # The same command again: the retry resumes from the step the stop left.
  rerun = _search_script(_FAKE_TRAINING.format(step_seconds=0.0), *flags)
  out, err = rerun.communicate(timeout=300)
  assert rerun.returncode == 0, err[-3000:]
  assert f"retry 1 of candidate a1.4_b1.1_g1.1 seed 1, resuming from step {saved}\n" in out
  assert "best: alpha=1.4, beta=1.1, gamma=1.1 (EMA top-1 0.9200" in out
  finished = _read(config, tmp_path, name).trials
  assert [t.state for t in finished] == [TrialState.FAIL] + [TrialState.COMPLETE] * 3



@pytest.mark.parametrize("signum, exit_code", [(signal.SIGTERM, 143), (signal.SIGUSR1, 138)])
def test_a_stop_signal_between_training_sessions_is_one_line_too(tmp_path, signum, exit_code):
  """SIGTERM (a requeue) or SIGUSR1 outside a training session, which would take the
  signal itself (the stand-in does not): the worker stops as on Ctrl-C, with the signal's
  status and one line; the trial is failed and its candidate queued again, not left
  running until the heartbeats fail it."""
  config = search_config(pruner="none", seeds=1)
  flags = (f"--workdir={tmp_path}", "--config.search.seeds=1")
  worker = _search_script(_FAKE_TRAINING.format(step_seconds=2.0), *flags)
  run = runs.Run(tmp_path / "runs" / KEYS[0] / "seed0")
  deadline = time.time() + 240
  while (run.latest_step() or 0) < 1 and time.time() < deadline:
    time.sleep(0.1)
  assert run.latest_step(), "the worker reached no step in 240 s"
  worker.send_signal(signum)
  out, err = worker.communicate(timeout=120)
  assert worker.returncode == exit_code, err[-3000:]
  assert "Traceback" not in err, err[-3000:]
  name = signal.Signals(signum).name
  assert err.splitlines()[-1] == (
      f"stopped by {name} during candidate a1.4_b1.1_g1.1 seed 1 (trial 0); the trial is "
      "marked failed and the next worker retries it; rerun the same command to continue")
  trials = _read(config, tmp_path, study.default_study_name(config)).trials
  assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.WAITING] * 3
  assert trials[0].user_attrs["error"] == f"stopped by {name}"
  assert trials[3].user_attrs["retry"] == 1

def test_median_pruner_stops_weak_candidates_keeping_their_last_value(tmp_path):
  config = search_config(pruner="median", seeds=1)
  _worker(config, tmp_path)
  the_study = _open(config, tmp_path)
  by_key = {t.user_attrs["candidate"]: t for t in the_study.trials}
  # By hand, in queue order (cheapest family first), EMA top-1 at step 2 = accuracy * 2 / 8:
  # 0.23 and 0.225 (the two start-up trials), then 0.205 < their median 0.2275: pruned.
  assert [c.key for c in grid.candidates(config)] == KEYS
  assert [by_key[k].state for k in KEYS] == [TrialState.COMPLETE] * 2 + [TrialState.PRUNED]
  trial = by_key["a1.200_b1.100_g1.200"]
  assert trial.user_attrs["ema_top1"] == pytest.approx(0.205)  # the last value reported
  assert trial.intermediate_values == {2: pytest.approx(0.205)}
  assert the_study.best_trial.user_attrs["candidate"] == "a1.400_b1.100_g1.100"
  markdown = report.markdown(the_study, str(tmp_path))
  assert "| - | a1.2_b1.1_g1.2 |" in markdown and "1 pruned |" in markdown


def test_accuracy_latency_has_two_objectives_and_a_pareto_front(tmp_path):
  config = search_config(objective="accuracy_latency", pruner="none", latency_budget_ms=2.5,
                         seeds=1)
  latency = {"a1.400_b1.100_g1.100": 3.0, "a1.400_b1.000_g1.200": 2.0,
             "a1.200_b1.100_g1.200": 1.0}
  _worker(config, tmp_path, measure_latency=lambda c, run_dir, output: latency[
      os.path.basename(os.path.dirname(run_dir))])
  the_study = _open(config, tmp_path)
  assert len(the_study.directions) == 2
  # By hand, over the feasible (<= 2.5 ms) candidates: 0.90 at 2.0 ms and 0.82 at 1.0 ms;
  # the most accurate (0.92) is over the budget.
  best = report.best_rows(the_study)
  assert sorted(r["candidate"] for r in best) == ["a1.200_b1.100_g1.200", "a1.400_b1.000_g1.200"]
  markdown, _ = report.write_report(the_study, str(tmp_path))
  assert "Pareto front (EMA top-1 up, latency down):" in markdown


def test_pruning_needs_a_single_objective():
  from effnetlite.validation import validate_config
  with pytest.raises(UserError, match="Optuna prunes single-objective studies only"):
    validate_config(search_config(objective="accuracy_latency", pruner="median"), search=True)


_WORKER = """
import sys, time
from configs import search_lite0
from effnetlite.search import study
from test_study import fake_test, fake_train
config = search_lite0.get_config()
config.search.pruner = "none"
config.search.heartbeat_seconds = 1
the_study = study.open_study(config, {url!r}, "two")
study.run_worker(config, the_study, {workdir!r}, evaluate_test=fake_test,
                 train=lambda c, w, e: fake_train(c, w, e, step_seconds={step_seconds}))
"""


def _start_worker(url: str, workdir: str, step_seconds: float) -> subprocess.Popen:
  code = _WORKER.format(url=url, workdir=workdir, step_seconds=step_seconds)
  return subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stderr=subprocess.PIPE,
                          text=True, env=dict(os.environ, PYTHONPATH=PYTHONPATH))


def _check_once_each(url: str) -> list:
  trials = optuna.load_study(study_name="two", storage=url).get_trials()
  done = [t.user_attrs.get("trial_name") for t in trials if t.state == TrialState.COMPLETE]
  assert sorted(done) == sorted(study.trial_name(k, s) for k in KEYS for s in (0, 1)), [
      (t.number, t.state, t.user_attrs) for t in trials]
  return trials


def test_two_workers_share_one_sqlite_study(tmp_path):
  url = storage.storage_url("", str(tmp_path))
  workers = [_start_worker(url, str(tmp_path), 0.05) for _ in range(2)]
  for worker in workers:
    assert worker.wait(timeout=300) == 0, worker.stderr.read()[-3000:]
  trials = _check_once_each(url)
  # Besides the six, only the race's leftovers: a trial Optuna created when both workers
  # saw the last waiting candidate, recorded as FAIL and marked, never trained.
  extra = [t for t in trials if t.state != TrialState.COMPLETE]
  assert all(t.state == TrialState.FAIL and ({"unused", "duplicate"} & set(t.user_attrs))
             for t in extra), [(t.number, t.state, t.user_attrs) for t in extra]


def test_two_workers_on_postgresql_one_killed_mid_candidate(postgres, tmp_path):
  workdir = str(tmp_path / "search")
  victim = _start_worker(postgres, workdir, 0.25)
  survivor = _start_worker(postgres, workdir, 0.25)
  # SIGKILL the first worker once it is half-way through a candidate (checkpoint at step 3+).
  deadline = time.time() + 120
  killed = None
  while killed is None and time.time() < deadline:
    time.sleep(0.2)
    try:
      running = optuna.load_study(study_name="two", storage=postgres).get_trials(
          states=(TrialState.RUNNING,))
    except KeyError:  # the workers have not created the study yet
      continue
    for trial in running:
      if trial.user_attrs.get("worker", "").split(":")[-1] != str(victim.pid):
        continue
      key = trial.user_attrs["trial_name"]
      if (runs.Run(os.path.join(workdir, "runs", key)).latest_step() or 0) >= 3:
        victim.kill()
        killed = key
        break
  assert killed is not None, "no candidate reached step 3 in time"
  victim.wait()
  assert survivor.wait(timeout=300) == 0, survivor.stderr.read()[-3000:]
  trials = _check_once_each(postgres)
  of_killed = [t for t in trials if t.user_attrs.get("trial_name") == killed]
  states = sorted(t.state.name for t in of_killed if "duplicate" not in t.user_attrs)
  assert states == ["COMPLETE", "FAIL"], states
  retry = next(t for t in of_killed if t.state == TrialState.COMPLETE)
  first = next(t for t in of_killed if t.state == TrialState.FAIL)
  assert retry.system_attrs["failed_trial"] == first.number
  assert json.loads(json.dumps(retry.params)) == first.params
  # The retry started clean: the killed attempt's evaluation at step 2 stayed with it.
  assert EVAL_EVERY in first.intermediate_values and EVAL_EVERY not in retry.intermediate_values
  # Not one candidate trained twice to the end: the retry resumed from the checkpoint.
  assert runs.Run(os.path.join(workdir, "runs", killed)).latest_step() == STEPS


_PROCESS = """
import json, jax
from configs import search_lite0
from effnetlite.search import study
from effnetlite.train.loop import initialize_distributed
from test_study import fake_test, fake_train
initialize_distributed()
config = search_lite0.get_config()
config.search.pruner = "median"
leader = jax.process_index() == 0
the_study = study.open_study(config, {url!r}, "hosts") if leader else None
log = []
study.run_worker(config, the_study, {workdir!r}, evaluate_test=fake_test,
                 train=lambda c, w, e: fake_train(c, w + f"-p{{jax.process_index()}}", e, log=log))
print(json.dumps(log))
"""


def test_multi_process_trial_follows_process_0_candidates_and_pruning(tmp_path):
  with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
  url, workdir = storage.storage_url("", str(tmp_path)), str(tmp_path)
  env = dict(os.environ, JAX_PLATFORMS="cpu", JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
             JAX_NUM_PROCESSES="2", PYTHONPATH=PYTHONPATH)
  processes = [subprocess.Popen([sys.executable, "-c", _PROCESS.format(url=url, workdir=workdir)],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=dict(env, JAX_PROCESS_ID=str(i)))
               for i in range(2)]
  outputs = [p.communicate(timeout=300) for p in processes]
  for process, (_, error) in zip(processes, outputs):
    assert process.returncode == 0, error[-3000:]
  logs = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
  assert logs[0] == logs[1] and len(logs[0]) == 6  # the same trials, in the same order
  trials = optuna.load_study(study_name="hosts", storage=url).trials
  assert len(trials) == 6  # only process 0 talks to the study
  for trial in trials:  # pruned together: both processes stopped at the same step
    key = trial.user_attrs["trial_name"]
    steps = [runs.Run(os.path.join(workdir, "runs", f"{key}-p{i}")).latest_step()
             for i in (0, 1)]
    assert steps[0] == steps[1]
    assert steps[0] == (STEPS if trial.state == TrialState.COMPLETE else EVAL_EVERY)


def test_cost_front_by_hand():
  rows = [{"state": "COMPLETE", "macs": m, "ema_top1": a, "k": k} for k, m, a in (
      ("cheap", 60, 0.80), ("dominated", 62, 0.79), ("better", 63, 0.85), ("same", 63, 0.84),
      ("best", 70, 0.90))] + [{"state": "PRUNED", "macs": 50, "ema_top1": 0.99, "k": "pruned"}]
  assert [r["k"] for r in report._cost_front(rows)] == ["cheap", "better", "best"]


def test_latency_is_timed_on_the_exported_int8_tflite(tmp_path):
  from helpers import tiny_config
  config = tiny_config(data_dir=str(tmp_path / "tfds"), resolution=32)
  output = str(tmp_path / "model-int8.tflite")
  latency = study.measure_tflite_latency(config, "random", output, "int8", threads=1)
  with open(output + ".report.json") as handle:
    report = json.load(handle)
  assert latency == report["latency_ms_batch1"]
  assert report["quantize"] == "int8" and report["threads"] == 1
  # An int8 graph with float I/O: QUANTIZE in, DEQUANTIZE out, integer kernels between.
  assert {"QUANTIZE", "DEPTHWISE_CONV_2D", "CONV_2D", "DEQUANTIZE"} <= set(report["ops"])
  assert report["input"]["dtype"] == "float32"


def test_proxy_check_retrains_the_top_k_and_reports_kendall_tau(tmp_path):
  from effnetlite.search import proxy_check
  config = search_config(pruner="none", seeds=1, proxy_check_top_k=3, proxy_check_epochs=50.0)
  _worker(config, tmp_path)
  trained = []

  def longer(derived, run_dir, on_eval):
    """The longer schedule reverses the proxy's order of the last two (0.90 vs 0.82)."""
    trained.append((derived.model.name, derived.num_epochs, derived.seed, run_dir))
    score = {"a1.400_b1.100_g1.100": 0.95, "a1.400_b1.000_g1.200": 0.91,
             "a1.200_b1.100_g1.200": 0.93}[os.path.basename(os.path.dirname(run_dir))]
    return {"ema_eval_top1": score, "ema_eval_count": IMAGES}
  result = proxy_check.run_proxy_check(config, _read(config, tmp_path), str(tmp_path), longer)
  assert [t[1:3] for t in trained] == [(50.0, 0)] * 3
  assert [os.path.relpath(t[3], tmp_path) for t in trained] == [
      os.path.join("runs", key, "long") for key in KEYS]
  # By hand: pairs (1,2) and (1,3) concordant, (2,3) discordant: tau = (2 - 1) / 3.
  assert result["kendall_tau"] == pytest.approx(1 / 3)
  markdown = report.markdown(_read(config, tmp_path), str(tmp_path))
  assert "Kendall tau = 0.33 (p = " in markdown
  assert "3 candidates): the proxy ranks partly" in markdown
  assert "| a1.2_b1.1_g1.2 | 0.8200 | 0.9300 |" in markdown
  assert "the longer schedule's scores span 4 of 100 images\n" in markdown
