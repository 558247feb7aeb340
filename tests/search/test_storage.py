"""Where a search's study lives: a storage URL whose driver is missing, or that is no
database, is one line; workers that open a fresh SQLite file together all succeed, and two
workers on SQLite never take the same waiting trial (BEGIN IMMEDIATE). The retry of a failed
candidate is tested with the study's flow in test_study.py.
"""

from __future__ import annotations

import os
import subprocess
import sys

import optuna
import pytest
from helpers import PYTHONPATH, ROOT

from configs import search_lite0
from effnetlite.errors import UserError
from effnetlite.search import storage


@pytest.mark.parametrize("url, module, package", [
    ("postgresql+psycopg2://search:secret@db.example/search", "psycopg2", "psycopg2-binary"),
    ("postgresql+psycopg://search:secret@db.example/search", "psycopg", "'psycopg[binary]'"),
    ("mysql+pymysql://search:secret@db.example/search", "pymysql", "PyMySQL")])
def test_storage_without_its_driver_is_one_line(url, module, package, monkeypatch):
  monkeypatch.setitem(sys.modules, module, None)  # what Python does for a missing package
  with pytest.raises(UserError) as error:
    storage.check_storage(url)
  message = str(error.value)
  assert message.startswith(f"--storage={url.replace('secret', '***')}: the ")
  assert f"driver {module!r} cannot be imported" in message
  assert f"; pip install {package} in this environment" in message and "\n" not in message


def test_storage_url_that_is_no_database_is_one_line():
  with pytest.raises(UserError, match="--storage=studies.db is not a database URL SQLAlchemy "
                                      "knows; pass one such as postgresql"):
    storage.check_storage("studies.db")
  storage.check_storage(storage.storage_url("", "/tmp/w"))  # the default: SQLite, built in


_OPENER = """
import sys
from configs import search_lite0
from effnetlite.search import storage
config = search_lite0.get_config()
for url in sys.stdin:  # each line wakes every opener at the same instant
  storage.make_storage(url.strip(), config)
  print("opened", flush=True)
"""


def test_workers_starting_together_all_open_a_fresh_sqlite_file(tmp_path):
  """The race that made CI fail once: SQLite answers the losers of Optuna's table creation
  with "table ... already exists"; each must wait and open the tables (before the fix,
  most fresh files failed one of the openers)."""
  openers = [subprocess.Popen([sys.executable, "-c", _OPENER], cwd=ROOT, text=True,
                              env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
  for fresh in range(6):
    url = storage.storage_url("", str(tmp_path / f"{fresh}"))
    os.makedirs(tmp_path / f"{fresh}")
    for opener in openers:
      opener.stdin.write(url + "\n")
      opener.stdin.flush()
    for opener in openers:
      assert opener.stdout.readline() == "opened\n", opener.communicate()[1][-2000:]
  for opener in openers:
    opener.stdin.close()
    assert opener.wait(timeout=60) == 0


_ASKER = """
import sys, warnings
import optuna
from configs import search_lite0
from effnetlite.search import storage
warnings.simplefilter("ignore")  # heartbeats outside Study.optimize
opened = storage.make_storage(sys.argv[1], search_lite0.get_config())
the_study = optuna.load_study(study_name="queue", storage=opened)
sys.stdin.readline()  # both start asking at the same instant
print(" ".join(str(the_study.ask().number) for _ in range(50)))
"""


def test_two_workers_on_sqlite_never_take_the_same_waiting_trial(tmp_path):
  """The race behind "Cannot tell a COMPLETE trial": without BEGIN IMMEDIATE both workers
  read a trial as WAITING and both set it RUNNING (about 1 in 6 trials here)."""
  url = storage.storage_url("", str(tmp_path))
  opened = storage.make_storage(url, search_lite0.get_config())
  queue = optuna.create_study(study_name="queue", storage=opened)
  for x in range(100):
    queue.enqueue_trial({"x": x})
  askers = [subprocess.Popen([sys.executable, "-c", _ASKER, url], cwd=ROOT, text=True,
                             env=dict(os.environ, PYTHONPATH=PYTHONPATH), stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for _ in range(2)]
  for asker in askers:
    asker.stdin.write("go\n")
    asker.stdin.flush()
  taken = []
  for asker in askers:
    out, err = asker.communicate(timeout=120)
    assert asker.returncode == 0, err[-2000:]
    taken.append(set(map(int, out.split())))
  assert len(taken[0]) == len(taken[1]) == 50
  assert taken[0].isdisjoint(taken[1]), sorted(taken[0] & taken[1])
