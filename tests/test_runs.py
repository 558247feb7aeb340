"""The run directory read without JAX: finding it, its saved config, class names, changes."""

import json
import os

import pytest
from helpers import tiny_config

from effnetlite import runs
from effnetlite.errors import UserError
from effnetlite.validation import validate_config


def _run_dir(root, config) -> str:
  run = os.path.join(root, "run")
  os.makedirs(os.path.join(run, "checkpoints", "4"))
  os.makedirs(os.path.join(run, "checkpoints", "6.orbax-checkpoint-tmp-1733"))  # unfinished
  os.makedirs(os.path.join(run, "best", "2"))
  runs.Run(run).save_config(config)
  return run


def test_weights_are_named_by_exactly_the_documented_forms(tmp_path):
  run = _run_dir(tmp_path, tiny_config())
  expected = {"": ("latest", None), "checkpoints": ("latest", None), "best": ("best", None),
              "checkpoints/4": ("latest", 4), "best/2": ("best", 2)}
  for path, (kept_as, step) in expected.items():
    named = runs.run_weights(os.path.join(run, path))
    assert (named.run.path, named.kept_as, named.step) == (run, kept_as, step)
  assert runs.run_weights(os.path.join(run, "best")).folder == os.path.join(run, "best")
  assert runs.run_weights(str(tmp_path)) is None  # not a run: an external checkpoint or file
  os.makedirs(tmp_path / "config_only")
  (tmp_path / "config_only" / "config.json").write_text("{}")
  assert runs.run_weights(str(tmp_path / "config_only")) is None  # no checkpoints: not a run
  os.makedirs(os.path.join(run, "tensorboard"))
  for inside in ("tensorboard", "checkpoints/4/state"):
    with pytest.raises(UserError, match=r"lies inside run .* but names no weights; pass one of "
                                        r"RUN, RUN/checkpoints"):
      runs.run_weights(os.path.join(run, inside))


def test_the_run_answers_what_it_holds(tmp_path):
  run = runs.Run(_run_dir(tmp_path, tiny_config()))
  assert run.is_run() and run.has_checkpoints()
  assert run.saved_steps() == [4] and run.latest_step() == 4  # the unfinished save is no step
  assert run.saved_steps(best=True) == [2]
  assert run.final_metrics() is None and run.eval_examples() is None and run.backend() is None
  run.save_final_metrics({"step": 4, "ema_eval_top1": 0.5})
  run.save_backend({"platform": "cpu", "depthwise": "shifted"})
  assert run.final_metrics()["ema_eval_top1"] == 0.5 and run.backend()["platform"] == "cpu"
  assert not runs.Run(str(tmp_path / "elsewhere")).is_run()


def test_the_saved_config_loads_back_equal_and_valid(tmp_path):
  config = validate_config(tiny_config())
  run = _run_dir(tmp_path, config)
  with open(os.path.join(run, "config.json"), encoding="utf-8") as handle:
    assert json.load(handle)["augment"]["area_range"] == [0.08, 1.0]  # JSON has no tuples
  loaded = runs.Run(run).load_config()
  assert loaded.augment.area_range == (0.08, 1.0)
  assert loaded.to_dict() == config.to_dict()
  assert validate_config(loaded).to_dict() == config.to_dict()


def test_an_unreadable_saved_config_is_one_user_error(tmp_path):
  (tmp_path / "config.json").write_text("{not json")
  with pytest.raises(UserError, match="config.json is not a readable config"):
    runs.load_config(str(tmp_path / "config.json"))


def test_differences_list_changed_keys_old_and_new():
  old, new = tiny_config(), tiny_config()
  new.optimizer.base_learning_rate = 0.1
  new.augment.area_range = (0.5, 1.0)
  assert runs.differences(old, new) == [("augment.area_range", [0.08, 1.0], [0.5, 1.0]),
                                        ("optimizer.base_learning_rate", 0.016, 0.1)]
  assert runs.describe(runs.differences(old, new, ["optimizer.base_learning_rate"])) == (
      "optimizer.base_learning_rate 0.016 -> 0.1")


def test_another_architecture_is_refused_and_num_classes_minus_one_taken(tmp_path):
  run = _run_dir(tmp_path, tiny_config())
  config = tiny_config()
  config.batch_size = 64  # may differ
  assert runs.config_for_weights(config, run) is config
  config.dataset.num_classes = runs.FROM_DATA
  assert runs.config_for_weights(config, run).dataset.num_classes == 10
  config.model.head_channels = 640
  with pytest.raises(UserError, match=r"config.model.head_channels=640 but the run has 1280"):
    runs.config_for_weights(config, os.path.join(run, "best"))
  unresolved = tiny_config()
  unresolved.dataset.num_classes = runs.FROM_DATA
  with pytest.raises(UserError, match="num_classes=-1"):
    runs.config_for_weights(unresolved, "pretrained")


def test_class_names_round_trip_and_history_rows(tmp_path):
  run = _run_dir(tmp_path, tiny_config())
  run = runs.Run(run)
  run.save_class_names(["astronaut", "cat", "coffee"])
  assert run.class_names() == ["astronaut", "cat", "coffee"]
  assert runs.format_class_names(["a", "b", "c"], shown=2) == "0 a, 1 b, ... (3 in all)"
  run.record_changes(4, [("log_every_steps", 16, 32)])
  run.record_changes(8, [("batch_size", 16, 32)], reproducible=False)
  with open(run.file(runs.Run.HISTORY), encoding="utf-8") as handle:
    rows = [json.loads(line) for line in handle]
  assert rows[0]["step"] == 4 and rows[0]["changed"] == {"log_every_steps": [16, 32]}
  assert "reproducible" not in rows[0] and rows[1]["reproducible"] is False


def test_a_run_stopped_before_its_first_checkpoint_has_none(tmp_path):
  run = _run_dir(tmp_path, tiny_config())
  assert runs.Run(run).has_checkpoints()
  os.rmdir(os.path.join(run, "checkpoints", "4"))
  os.rmdir(os.path.join(run, "best", "2"))
  assert not runs.Run(run).has_checkpoints()  # a new architecture may then use the directory


def test_one_writer_holds_a_run_and_a_killed_holder_blocks_nothing(tmp_path):
  import signal
  import socket
  import subprocess
  import sys

  from helpers import PYTHONPATH
  run = runs.Run(str(tmp_path / "run"))
  code = ("import sys, time; from effnetlite import runs; lock = runs.Run(sys.argv[1]).lock(); "
          "lock.acquire(); "
          "print('held', flush=True); time.sleep(120)")
  holder = subprocess.Popen([sys.executable, "-c", code, run.path], stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=PYTHONPATH))
  try:
    assert holder.stdout.readline() == "held\n"
    with pytest.raises(runs.RunLockedError) as refused:
      run.lock().acquire()
    assert str(refused.value).startswith(
        f"workdir {run.path} is being written by another live run (host "
        f"{socket.gethostname()}, pid {holder.pid}, since ")
    assert str(refused.value).endswith("or pass another --workdir to train.py")
    with pytest.raises(runs.RunLockedError, match="pass another --output to export.py$"):
      run.lock("export.py").acquire()
    run.save_final_metrics({"step": 1})  # readers and the holder's own writes need no lock
    assert run.final_metrics() == {"step": 1}
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  with run.lock():  # the kernel dropped the dead holder's lock: nothing to clean up
    assert f'"pid": {os.getpid()}' in open(run.lock_file, encoding="utf-8").read()
