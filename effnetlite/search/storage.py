"""Where a search's study lives: the storage URL (SQLite in the workdir by default, any
SQLAlchemy URL such as PostgreSQL for many machines), its database driver checked before
anything starts, Optuna's RDBStorage with worker heartbeats, and the retry of a failed
trial's candidate that starts clean (no inherited score).
"""

from __future__ import annotations

import dataclasses
import os
import random
import time
import warnings
from typing import Any

import ml_collections

from effnetlite.errors import UserError
from effnetlite.search import grid as grid_lib

STUDY_FILE = "study.db"


# A trial's user attributes set when it is enqueued: what it trains. A retry keeps these only;
# the rest (accuracies, errors, timings) are results of the failed attempt.
ENQUEUED_ATTRS = frozenset({"candidate", "trial_name", "seed_index", "seed",
                            *(f.name for f in dataclasses.fields(grid_lib.Candidate))})


def storage_url(storage: str, workdir: str) -> str:
  """`--storage` as given, or the SQLite file in the workdir."""
  return storage or "sqlite:///" + os.path.join(workdir, STUDY_FILE)


# pip packages of SQLAlchemy's synchronous database drivers, by SQLAlchemy's driver name.
DRIVER_PACKAGES = {
    "psycopg": "'psycopg[binary]'", "psycopg2": "psycopg2-binary", "pg8000": "pg8000",
    "mysqldb": "mysqlclient", "pymysql": "PyMySQL", "mysqlconnector": "mysql-connector-python",
    "mariadbconnector": "mariadb", "pyodbc": "pyodbc", "pymssql": "pymssql",
    "oracledb": "oracledb", "cx_oracle": "cx_Oracle"}


def check_storage(url: str) -> None:
  """A storage URL SQLAlchemy can parse and whose database driver is installed.

  Checked before the grid is built or anything compiles: Optuna would otherwise
  fail on the missing driver with a long ImportError once the search starts.
  """
  import sqlalchemy.exc
  from sqlalchemy.engine import make_url
  example = "postgresql+psycopg://user:password@host/db, or sqlite:///path/study.db"
  try:
    parsed = make_url(url)
    dialect = parsed.get_dialect()
  except sqlalchemy.exc.ArgumentError:  # unparsable, or a dialect SQLAlchemy does not have
    raise UserError(f"--storage={url} is not a database URL SQLAlchemy knows; pass one such as "
                    f"{example}") from None
  try:
    dialect.import_dbapi()
  except ImportError as error:
    shown = parsed.render_as_string(hide_password=True)
    package = DRIVER_PACKAGES.get(dialect.driver)
    install = (f"pip install {package}" if package else
               f"install the Python package of the {dialect.driver!r} driver")
    raise UserError(f"--storage={shown}: the {parsed.get_backend_name()} driver "
                    f"{dialect.driver!r} cannot be imported ({str(error).splitlines()[0]}); "
                    f"{install} in this environment, or pass a URL whose driver is "
                    "installed") from None


def make_storage(url: str, config: ml_collections.ConfigDict) -> Any:
  """RDBStorage with heartbeats and retries of dead workers' candidates.

  Workers that start together race to create Optuna's tables (PostgreSQL answers
  the loser with an IntegrityError, SQLite with "table ... already exists"): the
  loser waits a moment and opens them.
  """
  import optuna
  import sqlalchemy.exc
  heartbeat = config.search.heartbeat_seconds
  engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
  for attempt in range(6):
    try:
      with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            url, engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat,
            grace_period=2 * heartbeat,
            heartbeat_stale_trial_callback=RetryCandidate(config.search.max_retries))
      if url.startswith("sqlite"):
        _lock_sqlite_on_begin(storage.engine)
      return storage
    except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError,
            sqlalchemy.exc.ArgumentError, sqlalchemy.exc.OperationalError,
            ModuleNotFoundError) as error:
      lost_race = (isinstance(error, (sqlalchemy.exc.IntegrityError,
                                      sqlalchemy.exc.ProgrammingError))
                   or "already exists" in str(error))
      if lost_race:
        time.sleep(0.5 + random.random() * 2 ** attempt / 4)
        continue
      raise UserError(f"--storage={url} cannot be opened ({type(error).__name__}: "
                      f"{str(error).splitlines()[0]}); pass a SQLAlchemy URL such as "
                      "postgresql+psycopg://user:password@host/db (pip install psycopg)") from None
  raise UserError(f"--storage={url}: could not create Optuna's tables after 6 attempts")


class RetryCandidate:
  """Re-enqueues a failed trial's (candidate, seed) as a waiting trial, up to `max_retries`
  times per trial (a dead worker's, through the storage's heartbeats, or a Ctrl-C's).

  Optuna's RetryHeartbeatStaleTrialCallback copies every user attribute, so the
  retry would start with the failed attempt's accuracy; this one keeps what the
  trial trains (`ENQUEUED_ATTRS`), its parameters and its queue entry, and counts
  the retry (attribute `retry`). System attributes `failed_trial` (the first
  attempt) and `retry_history` are Optuna's, so its helpers read them.
  """

  def __init__(self, max_retries: int):
    self.max_retries = max_retries

  def __call__(self, study: Any, trial: Any) -> int | None:
    """Enqueues the retry of `trial` (a FrozenTrial); how many retries the (candidate, seed)
    has had with it (1 for the first), or None past the limit."""
    import optuna
    from optuna.trial import TrialState
    history = [*trial.system_attrs.get("retry_history", []), trial.number]
    if len(history) > self.max_retries:
      return None
    fixed = {k: v for k, v in trial.system_attrs.items() if k == "fixed_params"}
    attrs = {k: v for k, v in trial.user_attrs.items() if k in ENQUEUED_ATTRS}
    study.add_trial(optuna.trial.create_trial(
        state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
        user_attrs={**attrs, "retry": len(history)},
        system_attrs={**fixed, "failed_trial": history[0], "retry_history": history}))
    return len(history)


def _lock_sqlite_on_begin(engine: Any) -> None:
  """Every transaction takes SQLite's write lock when it begins (BEGIN IMMEDIATE).

  Python's sqlite3 begins a transaction only at the first write, so Optuna's
  "take the next waiting trial" (read its state, then set RUNNING) is not atomic
  on SQLite: two workers read WAITING for the same trial, both set it RUNNING and
  train the same candidate, and the second to finish fails with "Cannot tell a
  COMPLETE trial". PostgreSQL locks the row (SELECT ... FOR UPDATE), SQLite
  ignores that; the immediate lock serialises workers instead (SQLAlchemy's
  recipe for pysqlite transactions).
  """
  from sqlalchemy import event

  @event.listens_for(engine, "connect")
  def _driver_begins_nothing(dbapi_connection, connection_record):
    dbapi_connection.isolation_level = None

  @event.listens_for(engine, "begin")
  def _begin_immediate(connection):
    connection.exec_driver_sql("BEGIN IMMEDIATE")
  engine.dispose()  # connections opened while creating the tables predate the listeners
