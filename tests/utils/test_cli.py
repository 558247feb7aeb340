"""Bad input to every entry point: one `error:` line naming the key or file, exit 2, no
traceback, nothing written. Run as users run them: subprocesses, relative paths, another
current directory.

The config walk covers every enumerated key with a value outside its choices and every
numeric key with a value outside its range (from `validation.SCHEMA`, so a new key is
walked too); the flag cases cover each CLI's own flags.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import ROOT

from effnetlite import validation

DEMO = os.path.join(ROOT, "configs", "demo.py")
SEARCH = os.path.join(ROOT, "configs", "search_lite0.py")


def _run(script: str, *args: str, cwd: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd,
                        capture_output=True, text=True, timeout=300)


def _assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
  where = f"exit {result.returncode}, stderr:\n{result.stderr[-3000:]}"
  assert result.returncode == 2, where
  assert "Traceback" not in result.stderr, where
  errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
  assert len(errors) == 1, where
  for needle in needles:
    assert needle in errors[0], where


def _flag_value(value) -> str:
  if isinstance(value, tuple):
    return "(" + ",".join(str(v) for v in value) + ")"
  return str(value)


# model.name / dataset.name / splits are strings with no override value ml_collections
# refuses: their bad example (an empty string) is walked in test_validation in-process.
WALKED = sorted(key for key, rule in {**validation.SCHEMA, **validation.SEARCH_SCHEMA}.items()
                if rule.bad_example not in (None, ""))


@pytest.mark.parametrize("key", WALKED)
def test_every_config_key_refuses_a_bad_value_before_anything_runs(key, tmp_path):
  rule = {**validation.SCHEMA, **validation.SEARCH_SCHEMA}[key]
  script, config = (("scripts/grid_search.py", SEARCH) if key.startswith("search.")
                    else ("train.py", DEMO))
  result = _run(script, f"--config={os.path.relpath(config, tmp_path)}", "--workdir=runs/x",
                f"--config.{key}={_flag_value(rule.bad_example)}", cwd=str(tmp_path))
  _assert_one_line_error(result, key)
  assert os.listdir(tmp_path) == []  # no workdir, no file


def _broken_config(directory: str, body: str) -> str:
  path = os.path.join(directory, "broken.py")
  with open(path, "w", encoding="utf-8") as handle:
    handle.write(body)
  return "broken.py"


TRAIN = "train.py"
EVAL = "eval.py"
EXPORT = "scripts/export.py"
PREDICT = "scripts/predict.py"
TFLITE = "scripts/tflite_predict.py"
SEARCH_SCRIPT = "scripts/grid_search.py"
SCALE = "scripts/scale.py"
TABLE = "scripts/model_table.py"
THROUGHPUT = "benchmarks/throughput.py"
PIPELINE = "benchmarks/input_pipeline.py"
demo = f"--config={DEMO}"

CASES = [
    # Config files: missing, broken, raising, not a ConfigDict, unknown override keys.
    (TRAIN, ["--config=configs/nope.py", "--workdir=w"], ["configs/nope.py", "does not exist"]),
    (TRAIN, ["--config=BROKEN:x = (", "--workdir=w"], ["broken.py", "SyntaxError at line 1"]),
    (TRAIN, ["--config=BROKEN:def get_config():\n  return 1 / 0\n", "--workdir=w"],
     ["broken.py", "ZeroDivisionError"]),
    (TRAIN, ["--config=BROKEN:def get_config():\n  return {'a': 1}\n", "--workdir=w"],
     ["get_config() returned dict"]),
    (TRAIN, [demo, "--workdir=w", "--config.model.widht=2"], ["'widht'", "'width'"]),
    (TRAIN, [demo, "--workdir=w", "--config.model.width=abc"], ["config.model.width=abc"]),
    (TRAIN, [demo, "--workdir=w", "--config.init_from=runs/old"], ["config.init_from=runs/old"]),
    (TRAIN, [demo, "--workdir=w", "--config.dataset.name=folder"],
     ["config.dataset.data_dir"]),
    (TRAIN, [demo, "--workdri=w"], ["workdri", "workdir"]),
    (TRAIN, [demo], ["--workdir"]),
    (TRAIN, ["--workdir=w"], ["--config"]),
    (TRAIN, [demo, "--workdir=w", "extra"], ["unexpected arguments extra"]),
    (TRAIN, [demo, "--workdir=FILE"], ["workdir", "not writable", "not a directory"]),
    (EVAL, [demo, "--weights=runs/missing"], ["--weights=runs/missing", "does not exist"]),
    (EVAL, [f"--config={ROOT}/configs/lite3.py"], ["--weights=pretrained", "'lite3'"]),
    (EVAL, [demo, "--weights=random", "--output=no/dir/eval.json"], ["--output", "no/dir"]),
    (EVAL, [demo, "--weights=random", "--split=tset"], ["tset"]),
    (EVAL, [demo, "--weights=model.tflite"], ["model.tflite", "does not exist"]),
    (EVAL, [demo, "--weights=random", "--compilation_cache=FILE/xla"],
     ["--compilation_cache=", "not a writable directory"]),
    (EXPORT, [demo, "--weights=random", "--quantize=int4", "--output=m.tflite"],
     ["--quantize=int4"]),
    (EXPORT, [demo, "--weights=random", "--io=int8", "--output=m.tflite"],
     ["--io=int8 needs --quantize=int8"]),
    (EXPORT, [demo, "--weights=random", "--format=onnx", "--output=m.tflite"], ["--format"]),
    (EXPORT, [demo, "--weights=random", "--batch_size=0", "--output=m.tflite"],
     ["--batch_size"]),
    (EXPORT, [demo, "--weights=random", "--quantize=int8", "--calibration_steps=0",
              "--output=m.tflite"], ["--calibration_steps"]),
    (EXPORT, [demo, "--weights=random", "--quantize=int8", "--calibration_dir=photos",
              "--output=m.tflite"], ["--calibration_dir=", "photos"]),
    (EXPORT, [demo, "--weights=random", "--output=no/dir/m.tflite"], ["--output", "no/dir"]),
    (EXPORT, [demo, "--weights=w.pth", "--output=m.tflite"], ["--weights=w.pth"]),
    (EXPORT, [demo, "--weights=random"], ["--output"]),
    (EXPORT, [demo, "--weights=FILE", "--output=m.tflite"], ["is not a weights file"]),
    (PREDICT, [demo, "--weights=random"], ["no image given"]),
    (PREDICT, [demo, "--weights=random", "cat.jpg"], ["cat.jpg", "does not exist"]),
    (PREDICT, [demo, "--weights=random", "FILE"], ["is not a readable image"]),
    (PREDICT, [demo, "--weights=random", "--top=0", "FILE"], ["--top"]),
    (TFLITE, ["-i", "cat.jpg", "-m", "m.tflite"], ["--image=", "cat.jpg"]),
    (TFLITE, ["-i", "FILE", "-m", "m.tflite"], ["--model_file=", "m.tflite"]),
    (TFLITE, ["-i", "FILE", "-m", "FILE"], ["is not a loadable TFLite model"]),
    (TFLITE, ["-i", "FILE"], ["--model_file"]),
    (TFLITE, ["-i", "FILE", "-m", "FILE", "-k", "0"], ["--top=0"]),
    (SEARCH_SCRIPT, [demo, "--workdir=s"], ["search.alpha_range", "search config"]),
    (SEARCH_SCRIPT, [f"--config={SEARCH}", "--workdir=s", "--storage=nosuchdb://x"],
     ["--storage=nosuchdb://x"]),
    (SEARCH_SCRIPT, [f"--config={SEARCH}", "--workdir=s", "--config.search.pruner=median",
                     "--config.search.objective=accuracy_latency"], ["single-objective"]),
    (SEARCH_SCRIPT, [f"--config={SEARCH}", "--workdir=s", "--config.search.tolerance=0.0001"],
     ["no grid point"]),
    (SEARCH_SCRIPT, [f"--config={SEARCH}", "--workdir=s", "--report_only"],
     ["holds no study (study.db)"]),
    (SCALE, ["--alpha=0.5"], ["--alpha=0.5"]),
    (SCALE, ["--phi=x"], ["--phi='x'"]),
    (SCALE, ["--config=configs/nope.py"], ["--config=configs/nope.py", "does not exist"]),
    (SCALE, ["--output_dir=FILE"], ["--output_dir=", "is a file"]),
    (SCALE, ["--config.model.width=-1"], ["config.model.width=-1"]),
    (SCALE, [f"--config={os.path.join(ROOT, 'configs', 'finetune_folder.py')}"],
     ["num_classes=-1", "--config.dataset.num_classes=N"]),
    (EVAL, ["--weights=random"], ["--config is needed unless --weights is a training run"]),
    # From outside the checkout, the checkout's own file is suggested, not the path that failed.
    (TRAIN, ["--config=configs/lite0.py", "--workdir=w"],
     [f"did you mean {os.path.join(ROOT, 'configs', 'lite0.py')}?"]),
    (TABLE, ["--verify=maybe"], ["--verify"]),
    (TABLE, ["lite0"], ["unexpected arguments lite0"]),
    (THROUGHPUT, ["--variant=lite9"], ["--variant"]),
    (THROUGHPUT, ["--batch=0"], ["--batch"]),
    (PIPELINE, ["--images=0"], ["--images"]),
]


@pytest.mark.parametrize("script,args,needles", CASES,
                         ids=[f"{s.split('/')[-1]}-{i}" for i, (s, _, _) in enumerate(CASES)])
def test_each_cli_answers_bad_flags_in_one_line(script, args, needles, tmp_path):
  cwd = str(tmp_path)
  with open(os.path.join(cwd, "FILE"), "w", encoding="utf-8") as handle:
    handle.write("not an image, not weights, not a model\n")
  resolved = []
  for arg in args:
    if arg.startswith("--config=BROKEN:"):
      arg = "--config=" + _broken_config(cwd, arg.split(":", 1)[1])
    resolved.append(arg)
  before = set(os.listdir(cwd))
  _assert_one_line_error(_run(script, *resolved, cwd=cwd), *needles)
  assert set(os.listdir(cwd)) == before  # nothing written, not even a directory


def test_home_relative_config_and_output_paths_expand(tmp_path):
  """`--config=~/...` reaches us unexpanded (the shell expands ~ only at a word's start)."""
  result = subprocess.run([sys.executable, os.path.join(ROOT, SCALE), "--config=~/configs/lite1.py",
                           "--phi=1", "--output_dir=~/scaled"], cwd=str(tmp_path),
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, HOME=str(tmp_path)))
  assert result.returncode == 2 and "does not exist" in result.stderr  # no configs in HOME
  os.symlink(os.path.join(ROOT, "configs"), tmp_path / "configs")
  result = subprocess.run([sys.executable, os.path.join(ROOT, SCALE), "--config=~/configs/lite1.py",
                           "--phi=1", "--output_dir=~/scaled"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, HOME=str(tmp_path)))
  assert result.returncode == 0, result.stderr
  assert os.listdir(tmp_path / "scaled") == ["lite1_phi1.py"]


# Each command's own flags, as its --help lists them (not only --helpfull).
OWN_FLAGS = {
    TRAIN: ["--config", "--workdir", "--compilation_cache", "--[no]verbose", "config_keys.py"],
    EVAL: ["--config", "--weights", "--[no]ema", "--split", "--output", "RUN/best"],
    EXPORT: ["--weights", "--quantize", "--io", "--calibration_steps", "--calibration_dir",
             "--check_dir", "--check_images", "--output"],
    PREDICT: ["--weights", "--top", "--json"],
    "scripts/tflite_predict.py": ["--image", "--model_file", "--top", "--[no]verbose"],
    SCALE: ["--config", "--alpha", "--phi", "--output_dir"],
    "scripts/config_keys.py": ["--config"],
}


@pytest.mark.parametrize("script", sorted(OWN_FLAGS))
def test_help_lists_the_commands_own_flags(script, tmp_path):
  result = _run(script, "--help", cwd=str(tmp_path))
  assert result.returncode == 0, result.stderr
  for flag in OWN_FLAGS[script]:
    assert flag in result.stdout, f"{script} --help lacks {flag}:\n{result.stdout}"


_SIDE_EFFECT_CONFIG = """
import os
with open(os.environ["EVALUATIONS"], "a", encoding="utf-8") as handle:
  handle.write(f"{os.getpid()}\\n")
from effnetlite.config import base_config

def get_config():
  return base_config("lite0")
"""


def test_a_config_file_is_evaluated_once_per_command(tmp_path):
  """The malloc re-exec comes before flags parse: a config file with a side effect (this one
  appends a line to a file) runs once, in the process that runs the command."""
  (tmp_path / "counting.py").write_text(_SIDE_EFFECT_CONFIG)
  evaluations = tmp_path / "evaluations"
  result = subprocess.run(
      [sys.executable, os.path.join(ROOT, "scripts", "config_keys.py"), "--config=counting.py"],
      cwd=tmp_path, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, EVALUATIONS=str(evaluations)))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "model.width" in result.stdout
  assert len(evaluations.read_text().splitlines()) == 1


def test_weights_inside_a_run_take_only_the_documented_forms(tmp_path):
  from effnetlite import runs
  from effnetlite.config import base_config
  run = runs.Run(str(tmp_path / "run"))
  run.save_config(base_config())
  os.makedirs(os.path.join(run.checkpoints_dir, "4"))
  os.makedirs(run.tensorboard_dir)
  _assert_one_line_error(
      _run(EVAL, "--weights=run/tensorboard", cwd=str(tmp_path)),
      f"--weights=run/tensorboard: {run.tensorboard_dir} lies inside run {run.path} but names "
      "no weights; pass one of RUN, RUN/checkpoints, RUN/checkpoints/STEP, RUN/best or "
      "RUN/best/STEP")
