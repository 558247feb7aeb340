"""`import effnetlite` has no side effects; `configure_process` is the one opt-in."""

import json

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
