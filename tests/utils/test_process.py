"""`import effnetlite` has no side effects; `configure_process` is the one opt-in."""

import json
import os
import re
import subprocess
import sys

import pytest
from helpers import PYTHONPATH, ROOT, run_python

_IMPORT = """
import json, os, sys
os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)  # what the old import used to set
before = dict(os.environ)
import effnetlite
from effnetlite import config, validation  # what the CLIs load first
from effnetlite.export import options
from effnetlite.utils import cli, files
loaded = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps({"environ_changed": dict(os.environ) != before, "loaded": loaded}))
"""


def test_importing_changes_no_environment_and_loads_no_framework():
  result = run_python(_IMPORT)
  assert result.returncode == 0, result.stderr
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report["environ_changed"] is False
  for framework in ("tensorflow", "jax", "flax", "torch", "tensorflow_datasets", "orbax"):
    assert framework not in report["loaded"], framework


def test_public_names_load_on_first_use():
  result = run_python("import sys, effnetlite\n"
                      "assert 'jax' not in sys.modules\n"
                      "print(effnetlite.create_model.__module__, 'jax' in sys.modules)")
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == ["effnetlite.weights.factory", "True"]


def test_configure_process_quiets_tensorflow_and_sets_its_log_level():
  result = run_python("import os, logging\n"
                      "os.environ.pop('TF_CPP_MIN_LOG_LEVEL', None)\n"
                      "import effnetlite\n"
                      "effnetlite.configure_process(malloc_tuning=False)\n"
                      "print(os.environ['TF_CPP_MIN_LOG_LEVEL'],"
                      " logging.getLogger('absl').level, logging.getLogger('tensorflow').level)")
  assert result.returncode == 0, result.stderr
  assert result.stdout.split() == ["2", str(40), str(40)]


_COMPILE = """
import effnetlite
effnetlite.configure_process(malloc_tuning=False, compilation_cache={directory!r})
import jax, jax.numpy as jnp
events = []
jax.monitoring.register_event_listener(lambda name, **kwargs: events.append(name))
jax.jit(lambda x: jnp.sin(x) * 2 + 1)(jnp.ones(7)).block_until_ready()
print(events.count("/jax/compilation_cache/cache_hits"),
      events.count("/jax/compilation_cache/cache_misses"))
"""


def _hits_and_misses(directory: str) -> list[int]:
  result = run_python(_COMPILE.format(directory=directory))
  assert result.returncode == 0, result.stderr[-2000:]
  return [int(n) for n in result.stdout.split()[-2:]]


def test_compilation_cache_serves_the_second_process(tmp_path):
  directory = str(tmp_path / "xla")
  hits, compiled = _hits_and_misses(directory)  # every program stored, however fast it was
  assert hits == 0 and compiled >= 1 and len(os.listdir(directory)) >= compiled
  assert _hits_and_misses(directory) == [compiled, 0]  # all loaded: nothing compiled
  assert _hits_and_misses("none") == [0, 0]            # off: not even looked up


def test_tensorflow_loads_without_keras_unless_asked():
  code = ("import os, sys, effnetlite\n"
          "os.environ.pop('TF_USE_LEGACY_KERAS', None)  # as a fresh shell has it\n"
          "effnetlite.configure_process(malloc_tuning=False, keras={keras})\n"
          "import tensorflow as tf\n"
          "tf.constant(1.0)\n"
          "print('keras' in sys.modules)")
  for keras in (False, True):
    result = run_python(code.format(keras=keras))
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split()[-1] == str(keras)


# The native lines as TensorFlow 2.21 and LiteRT print them, with the neighbours that must stay.
_NOISE_LINES = [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
    b"I0000 00:00:1795735892.662630   11428 port.cc:153] oneDNN custom operations are on. You "
    b"may see slightly different numerical results due to floating-point round-off errors "
    b"from different computation orders. To turn them off, set the environment variable "
    b"`TF_ENABLE_ONEDNN_OPTS=0`.\n",
    b"fully_quantize: 0, inference_type: 6, input_inference_type: INT8, "
    b"output_inference_type: INT8\n",
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n",
]
_KEPT_LINES = [
    b"E0000 00:00:1795735892.662630   11428 cuda_dnn.cc:8579] a real C++ error\n",
    b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU. and more\n",  # not the whole line
    b"Traceback (most recent call last):\n",
    b"warning: skipping 1 unreadable image(s)\n",
    b"eval:  36%|###5      | 128/359\r",  # a progress bar's redraw: no newline
]


def test_filter_drops_exactly_the_known_native_lines():
  import itertools
  import threading
  import time

  from effnetlite.utils import process, stderr_filter
  source_read, source_write = os.pipe()
  sink_read, sink_write = os.pipe()
  pump = threading.Thread(target=stderr_filter.filter_lines,
                          args=(source_read, sink_write, process.NATIVE_NOISE))
  pump.start()
  for kept, noise in itertools.zip_longest(_KEPT_LINES, _NOISE_LINES, fillvalue=b""):
    os.write(source_write, kept)
    for piece in (noise[:6], noise[6:-1], noise[-1:]):  # as fprintf on unbuffered stderr
      os.write(source_write, piece)
      time.sleep(0.01)
  os.write(source_write, b"prompt> ")  # unfinished: out after HOLD_SECONDS, not at the end
  held = os.read(sink_read, 1 << 16)
  while not held.endswith(b"prompt> "):
    held += os.read(sink_read, 1 << 16)
  os.write(source_write, b"answer\n" + _NOISE_LINES[0] + b"no newline at the end")
  os.close(source_write)
  pump.join(timeout=10)
  os.close(sink_write)
  out = held + os.read(sink_read, 1 << 16)
  assert out == b"".join(_KEPT_LINES) + b"prompt> answer\nno newline at the end"


_LOUD = """
import os, sys, effnetlite
effnetlite.configure_process(malloc_tuning=False, verbose={verbose})
import ai_edge_litert  # a package that prints native lines: the filter starts with it
for line in {lines!r}:
  os.write(2, line)  # what C++ does: straight to file descriptor 2
print("stdout", flush=True)
from effnetlite.errors import warn
warn("a warning for the user")
if {abort}:
  os.abort()  # a C++ fatal error: message written, process gone
raise RuntimeError("a Python error")
"""


def test_errors_tracebacks_and_warnings_still_reach_stderr():
  lines = _NOISE_LINES + _KEPT_LINES[:1]
  result = run_python(_LOUD.format(verbose=False, lines=lines, abort=False))
  assert result.returncode == 1 and result.stdout == "stdout\n"
  for needed in ("cuda_dnn.cc:8579] a real C++ error", "warning: a warning for the user",
                 "Traceback (most recent call last)", "RuntimeError: a Python error"):
    assert needed in result.stderr, result.stderr
  for noise in _NOISE_LINES:
    assert noise.decode() not in result.stderr, result.stderr
  # A crash: the pump is its own process and still writes what the dying one wrote.
  result = run_python(_LOUD.format(verbose=False, lines=lines, abort=True))
  assert result.returncode < 0 and "a real C++ error" in result.stderr, result.stderr
  # verbose=True: every line as the libraries write it.
  result = run_python(_LOUD.format(verbose=True, lines=lines, abort=False))
  assert "".join(line.decode() for line in lines) in result.stderr


_CAPTURED = """
import os, sys, effnetlite
effnetlite.configure_process(malloc_tuning=False)  # as tests/conftest.py does
import ai_edge_litert  # the filter starts (with -s) as the first noisy package loads
os.write(2, {noise!r} + b"native, outside any test\\n")

def test_capfd(capfd):
  os.write(2, b"native\\n")
  print("python", file=sys.stderr)
  assert capfd.readouterr().err == "native\\npython\\n"

def test_capsys(capsys):
  print("python", file=sys.stderr)
  assert capsys.readouterr().err == "python\\n"
"""


@pytest.mark.parametrize("capture", ["fd", "no"])
def test_pytest_capture_works_beside_the_filter(capture, tmp_path):
  """With capture, pytest owns stderr and no filter is installed; with -s (capture=no) the
  filter is, and capfd/capsys swap it out and back for their tests."""
  (tmp_path / "test_captured.py").write_text(_CAPTURED.format(noise=_NOISE_LINES[3]))
  result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           f"--capture={capture}", "test_captured.py"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=PYTHONPATH))
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert "2 passed" in result.stdout
  if capture == "no":
    assert "native, outside any test" in result.stderr
    assert "XNNPACK" not in result.stderr


_PUMP = """
import os, signal, effnetlite
from effnetlite.utils import stderr_filter
effnetlite.configure_process(malloc_tuning=False)
started_before = stderr_filter._installed is not None
import ai_edge_litert
print(started_before, stderr_filter._installed.pump.pid, flush=True)
if {kill}:
  os.kill(os.getpid(), signal.SIGKILL)
"""


def _alive(pid: int) -> bool:
  try:
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
      return handle.read().rsplit(")", 1)[1].split()[0] != "Z"
  except FileNotFoundError:
    return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("kill", [False, True])
def test_the_filter_starts_with_a_noisy_package_and_ends_with_the_command(kill):
  """No pump beside a program that loads no package printing native noise; once one loads,
  the pump ends with the program, also when the program is killed."""
  import time
  result = run_python(_PUMP.format(kill=kill))
  assert result.returncode == (-9 if kill else 0), result.stderr
  started_before, pid = result.stdout.split()
  assert started_before == "False"
  deadline = time.monotonic() + 10
  while _alive(int(pid)) and time.monotonic() < deadline:
    time.sleep(0.1)
  assert not _alive(int(pid))


# Everything a library could change for the whole process.
_GLOBALS = """
import json, logging, os, signal, sys, threading

def snapshot():
  return {"excepthook": repr(sys.excepthook), "unraisablehook": repr(sys.unraisablehook),
          "threading.excepthook": repr(threading.excepthook),
          "SIGINT": repr(signal.getsignal(signal.SIGINT)),
          "SIGTERM": repr(signal.getsignal(signal.SIGTERM)), "environ": dict(os.environ),
          "stderr": repr(sys.stderr), "meta_path": [repr(f) for f in sys.meta_path],
          "disabled_loggers": sorted(name for name, logger in logging.root.manager.loggerDict
                                     .items() if getattr(logger, "disabled", False))}
"""
_LIBRARY = ("effnetlite.train.loop", "effnetlite.weights.checkpoints",
            "effnetlite.evaluation.evaluate_weights")
# The packages the library loads (theirs to configure at import), by top-level name.
_THIRD_PARTY = """
import importlib, json, sys
for name in {library!r}:
  importlib.import_module(name)
loaded = {{name.split(".")[0] for name in sys.modules}} - {{"effnetlite", "__main__"}}
print(json.dumps(sorted(loaded)))
"""
# A failed read of a damaged checkpoint: the one library call that silences tracebacks.
_IMPORT_AND_CALL = """
import contextlib, glob, importlib
for name in {third_party!r}:  # their own import-time settings are theirs: loaded first
  with contextlib.suppress(Exception):
    importlib.import_module(name)
before = snapshot()
for name in {library!r}:
  importlib.import_module(name)
imported = snapshot()
import jax, numpy as np, orbax.checkpoint as ocp
from effnetlite.weights import checkpoints
rng = np.random.default_rng(0)
tree = {{f"w{{i}}": rng.random((256, 1024), np.float32) for i in range(8)}}
saver = ocp.StandardCheckpointer()
saver.save({directory!r}, tree)
saver.wait_until_finished()
data = max(glob.glob({directory!r} + "/ocdbt.process_0/d/*"), key=os.path.getsize)
os.truncate(data, os.path.getsize(data) // 2)
try:
  with checkpoints._quiet_read_failures():
    saver.restore({directory!r}, jax.tree.map(ocp.utils.to_shape_dtype_struct, tree))
except Exception as error:
  print("read failed:", type(error).__name__, file=sys.stderr)
called = snapshot()
print(json.dumps({{"before": before, "imported": imported, "called": called}}))
"""


def test_library_imports_and_calls_change_no_process_setting(tmp_path):
  """Hooks, signal handlers, the environment, stderr, import hooks and logging stay as the
  program set them: only `configure_process` (the commands' entry point) changes them."""
  third_party = run_python(_THIRD_PARTY.format(library=_LIBRARY))
  assert third_party.returncode == 0, third_party.stderr[-3000:]
  result = run_python(_GLOBALS + _IMPORT_AND_CALL.format(
      third_party=json.loads(third_party.stdout.strip().splitlines()[-1]), library=_LIBRARY,
      directory=str(tmp_path / "checkpoint")))
  assert result.returncode == 0, result.stderr[-3000:]
  assert "read failed:" in result.stderr, result.stderr[-3000:]
  assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, (
      result.stderr[-3000:])
  report = json.loads(result.stdout.strip().splitlines()[-1])
  for stage in ("imported", "called"):
    for name, value in report["before"].items():
      assert report[stage][name] == value, (stage, name)


_DEMO = os.path.join(ROOT, "configs", "demo.py")


def test_commands_keep_native_noise_off_the_console_unless_verbose(tmp_path):
  """export.py prints all four kinds of native lines (absl, TensorFlow, the converter,
  LiteRT): none reaches stderr, unless --verbose."""
  def export(*extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "scripts", "export.py"), f"--config={_DEMO}",
         "--weights=random", "--config.model.resolution=32", "--config.dataset.data_dir=tfds",
         "--quantize=int8", "--io=int8", "--calibration_steps=8", "--check_images=16",
         "--output=m.tflite", *extra], cwd=tmp_path, capture_output=True, text=True,
        timeout=300)
  from effnetlite.utils.process import NATIVE_NOISE
  quiet, verbose = export(), export("--verbose")
  for result in (quiet, verbose):
    assert result.returncode == 0, result.stderr[-3000:]
    assert "DEPTHWISE_CONV_2D" in result.stdout
  noise = [line for line in quiet.stderr.splitlines()
           if any(re.search(pattern, line) for pattern in NATIVE_NOISE)]
  assert noise == [], quiet.stderr
  for pattern in NATIVE_NOISE:  # else the library changed its words: update NATIVE_NOISE
    assert re.search(pattern, verbose.stderr), (pattern, verbose.stderr)


_TWO_MODELS = """
import effnetlite
{setup}
for _ in range(2):
  effnetlite.create_model("lite0", num_classes=10)
print("built")
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator only")
def test_a_plain_loop_is_told_once_what_configure_process_gains():
  plain = run_python(_TWO_MODELS.format(setup=""))
  assert plain.returncode == 0, plain.stderr
  assert plain.stderr.count("call effnetlite.configure_process() first thing") == 1
  assert "training on CPU runs about" in plain.stderr
  configured = run_python(_TWO_MODELS.format(setup="effnetlite.configure_process()"))
  assert configured.returncode == 0 and configured.stdout.strip() == "built"
  assert "configure_process" not in configured.stderr
