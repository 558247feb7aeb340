"""`import effnetlite` has no side effects; `configure_process` is the one opt-in."""

import json
import os

from helpers import run_python

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
