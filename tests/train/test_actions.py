"""The loop's periodic actions, each on its own: when it acts, what it writes, what it stops."""

import signal
import time

import numpy as np
import pytest

from effnetlite.train import actions, stop
from effnetlite.weights import checkpoints


class _Bar:
  def __init__(self):
    self.updates, self.postfix, self.lines = 0, {}, []

  def update(self, n):
    self.updates += n

  def set_postfix(self, refresh=False, **values):
    self.postfix = values

  def write(self, line):
    self.lines.append(line)


def _metrics(loss, finite=1.0):
  return {"cross_entropy": np.float32(loss), "learning_rate": np.float32(0.1),
          "finite": np.float32(finite)}


class _Recorder:
  def __init__(self):
    self.rows = []

  def write(self, step, scalars):
    self.rows.append((step, dict(scalars)))


def test_log_metrics_writes_the_window_mean_every_n_steps_and_at_the_last():
  recorder, bar = _Recorder(), _Bar()
  log = actions.LogMetrics(every=2, total_steps=5, steps_per_epoch=4, nonfinite_loss="stop",
                           writer=recorder, throughput=actions.Throughput(8), bar=bar)
  for step, loss in enumerate([1.0, 3.0, 5.0, 7.0, 9.0], start=1):
    log(step, None, _metrics(loss))
  assert [(step, row["cross_entropy"], row["epoch"]) for step, row in recorder.rows] == [
      (2, 2.0, 0.5), (4, 6.0, 1.0), (5, 9.0, 1.25)]
  assert bar.updates == 5 and bar.postfix["xent"] == "9.0000"
  assert all(row["images_per_sec"] > 0 for _, row in recorder.rows)


def test_a_non_finite_loss_stops_the_run_naming_its_first_step():
  log = actions.LogMetrics(every=4, total_steps=8, steps_per_epoch=4, nonfinite_loss="stop",
                           writer=_Recorder(), throughput=actions.Throughput(8), bar=_Bar())
  log(1, None, _metrics(1.0))
  log(2, None, _metrics(float("nan"), finite=0.0))
  log(3, None, _metrics(float("nan"), finite=0.0))
  with pytest.raises(actions.NonFiniteLossError, match="non-finite at step 2; lower"):
    log(4, None, _metrics(1.0))
  skipping = actions.LogMetrics(every=1, total_steps=8, steps_per_epoch=4, nonfinite_loss="skip",
                                writer=_Recorder(), throughput=actions.Throughput(8), bar=_Bar())
  skipping(1, None, _metrics(1.0, finite=0.0))  # skipped steps never reached the weights



class _Pending:
  """A step's metric that records when the loop waits for it."""

  def __init__(self, step: int, waited: list[int]):
    self.step, self.waited = step, waited

  def block_until_ready(self):
    self.waited.append(self.step)
    return self


def test_run_ahead_waits_for_the_step_two_back_and_no_other():
  """After step N the host waits for step N - 2 only: at most two steps queued on the
  device (one running, one next), so a stop's save waits for two steps, not a log
  interval of them."""
  waited = []
  run_ahead = actions.RunAhead(steps=2)
  for step in range(1, 7):
    run_ahead(step, None, {"loss": _Pending(step, waited)})
    assert waited == list(range(1, step - 1))

def test_throughput_leaves_out_paused_work():
  throughput = actions.Throughput(batch_size=100)
  throughput.count_step()
  with throughput.paused():
    time.sleep(0.3)
  assert throughput.close_window() > 100 / 0.3  # the sleep is not counted
  assert throughput.overall() == pytest.approx(throughput.images / throughput.seconds)


def _state(value):
  """A train state's inference part, as a plain pytree."""
  tree = {"w": np.full((2,), value, np.float32)}
  return {"params": tree, "batch_stats": tree, "ema_params": tree, "ema_batch_stats": tree}


def test_evaluate_runs_every_n_steps_keeps_the_best_and_calls_back_but_not_at_the_last(tmp_path):
  best = checkpoints.make_manager(str(tmp_path / "best"), keep=1, best_metric="ema_top1",
                                  asynchronous=False)
  scores = {2: 0.5, 4: 0.7, 5: 0.6}
  calls, bar = [], _Bar()

  def evaluate(state, step, final):
    calls.append((step, final))
    return {"eval_top1": scores[step], "ema_eval_top1": scores[step], "eval_count": 10}

  called_back = []
  action = actions.Evaluate(2, 5, evaluate, best, _config(), actions.Throughput(1), bar.write,
                            on_eval=lambda step, metrics: called_back.append(step))
  for step in range(1, 6):
    action(step, _state(step), {})
  assert calls == [(2, False), (4, False), (5, True)]
  assert called_back == [2, 4]
  assert best.all_steps() == [4]  # the best EMA top-1 is kept; inference variables only
  assert sorted(p.name for p in (tmp_path / "best" / "4").iterdir()
                if not p.name.startswith(("_", "commit"))) == ["config", "metrics", "model"]
  assert bar.lines[-1] == "step 5: top-1 0.6000 (EMA 0.6000) on 10 images"


def _config():
  import ml_collections
  return ml_collections.ConfigDict({"model": {"name": "x"}})


def test_checkpoints_follow_the_step_interval_and_the_last_step(tmp_path):
  manager = checkpoints.make_manager(str(tmp_path / "checkpoints"), keep=10, every_steps=3,
                                     asynchronous=False)
  action = actions.SaveCheckpoint(manager, 7, _config(), actions.Throughput(1))
  for step in range(1, 8):
    action(step, _state(step), {})
  assert manager.all_steps() == [3, 6, 7]
  assert sorted(p.name for p in (tmp_path / "checkpoints" / "3").iterdir()
                if not p.name.startswith(("_", "commit"))) == ["config", "state"]


def test_checkpoints_also_follow_the_clock(tmp_path):
  manager = checkpoints.make_manager(str(tmp_path / "checkpoints"), keep=10, every_steps=1000,
                                     every_minutes=1 / 60, asynchronous=False)
  action = actions.SaveCheckpoint(manager, 100, _config(), actions.Throughput(1))
  for step in range(1, 4):
    action(step, _state(step), {})
    time.sleep(1.1)  # more than the 1 s interval between saves
  assert manager.all_steps() == [1, 2, 3]


def test_a_stop_request_saves_the_step_it_reached_and_ends_the_loop(tmp_path):
  manager = checkpoints.make_manager(str(tmp_path / "checkpoints"), every_steps=1000)
  requests = stop.StopRequests()
  action = actions.StopOnRequest(requests, manager, _config())
  action(1, _state(1), {})  # nothing requested: nothing saved
  requests.signum = signal.SIGTERM
  with pytest.raises(stop.TrainingStopped) as stopped:
    action(2, _state(2), {})
  assert manager.all_steps() == [2]  # saved and committed before the exception
  assert stopped.value.exit_code == 143
  assert str(stopped.value) == ("stopped by SIGTERM at step 2; checkpoint saved; rerun the same "
                                "command to resume")
