"""Compound-scaling search: alpha/beta/gamma under the FLOPs constraint, as one Optuna study.

  python scripts/grid_search.py --config=configs/search_lite0.py --workdir=DIR \
      [--storage=postgresql+psycopg://user:pw@host/db] [--study=NAME]
  python scripts/grid_search.py --config=... --workdir=DIR --report_only
  python scripts/grid_search.py --config=... --workdir=DIR --proxy_check

N workers are this command run N times (on any machines, one --storage, one shared
--workdir); each takes the next waiting trial (a candidate with one seed). The study is
readable with plain Optuna (`optuna.load_study`) and `optuna-dashboard STORAGE_URL`.
--proxy_check, once the search is done, retrains its top candidates with a longer
schedule and reports whether the proxy ranks like it (Kendall's tau).

Ctrl-C stops a worker with one line and exit status 130 (SIGTERM, SIGUSR1: 128 + the
signal's number, once the candidate's training saved its step): its trial is marked failed
and its candidate queued again, for another worker or the same command run again.
"""

import os
import sys

import ml_collections
from absl import flags

from effnetlite.errors import UserError
from effnetlite.utils import cli
from effnetlite.validation import validate_config

_CONFIG = cli.DEFINE_config_file("config", required=True,
                                 help_string="Search config file (with a `search` section).")
_WORKDIR = cli.DEFINE_path("workdir", None, "Shared directory: candidate runs and reports.",
                           required=True)
_STORAGE = flags.DEFINE_string("storage", "", "SQLAlchemy URL of the study's database "
                               "(default: sqlite:///WORKDIR/study.db, one machine).")
_STUDY = flags.DEFINE_string("study", "", "Study name (default: derived from the config).")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rebuild the table and plot.")
_PROXY_CHECK = flags.DEFINE_bool(
    "proxy_check", False, "After the search: retrain the top config.search.proxy_check_top_k "
    "candidates for config.search.proxy_check_epochs and compare the rankings.")


def main(argv):
  cli.no_positional_arguments(argv)
  config = validate_config(_CONFIG.value, search=True)
  from effnetlite.search import storage, study  # after the checks
  url = storage.storage_url(_STORAGE.value, _WORKDIR.value)
  storage.check_storage(url)  # its database driver installed: one line now, not a traceback later
  from effnetlite.train.stop import TrainingStopped
  try:
    search(config, url)
  except (study.WorkerStopped, TrainingStopped) as stopped:  # the latter: --proxy_check's runs
    import jax                                                # and processes other than 0
    if jax.process_index() == 0:  # every process stopped at the same step: one line a job
      print(stopped, file=sys.stderr, flush=True)
    sys.exit(stopped.exit_code)
  except KeyboardInterrupt:  # before or after the worker: nothing of the study's to put right
    print("stopped by Ctrl-C; rerun the same command to continue", file=sys.stderr, flush=True)
    sys.exit(130)


def search(config: ml_collections.ConfigDict, url: str) -> None:
  """A worker of the search, then the report (or only the report, or the proxy check)."""
  from effnetlite.search import grid, report, storage, study
  if not (_REPORT_ONLY.value or _PROXY_CHECK.value):
    study.check_latency_target(config)  # Vela installed, if it gives the latencies
  from effnetlite.train import loop
  built = grid.build_grid(config)
  print("\n".join(built.summary(config.search.tolerance, config.search.max_family_departure)))
  print(grid.family_table(built.kept))
  print(f"{len(built.kept)} candidates x {config.search.seeds} seed(s) = "
        f"{len(built.kept) * config.search.seeds} trials, ranked on split "
        f"{config.dataset.eval_split!r}" + (f", test split {config.search.test_split!r} reported "
                                            "after" if config.search.test_split else ""))
  loop.initialize_distributed()
  import jax
  leader = jax.process_index() == 0
  name = _STUDY.value or study.default_study_name(config)
  reading = _REPORT_ONLY.value or _PROXY_CHECK.value  # an existing study, not a new search
  if _PROXY_CHECK.value and jax.process_count() > 1:
    raise UserError("--proxy_check trains in one process; run it without srun/multi-process")
  if reading and not _STORAGE.value and not os.path.exists(
      os.path.join(_WORKDIR.value, storage.STUDY_FILE)):
    raise UserError(f"--workdir={_WORKDIR.value} holds no study ({storage.STUDY_FILE}); run the "
                    "search first, or pass the --storage it used")
  the_study = None
  if leader:  # in a multi-process job only process 0 talks to the study
    if not _STORAGE.value and not reading:
      os.makedirs(_WORKDIR.value, exist_ok=True)  # the SQLite file's home
    the_study = study.open_study(config, url, name, enqueue=not reading)
  if not reading:
    study.run_worker(config, the_study, _WORKDIR.value)
  if _PROXY_CHECK.value and leader:
    from effnetlite.search import proxy_check
    print("\n".join(proxy_check.describe(
        proxy_check.run_proxy_check(config, the_study, _WORKDIR.value))))
  if leader:
    markdown, _ = report.write_report(the_study, _WORKDIR.value)
    print(markdown)
    print(f"study {name!r} in {url}\ntable: {_WORKDIR.value}/results.md, plot: "
          f"{_WORKDIR.value}/pareto.png\nbrowse: optuna-dashboard {url}")


if __name__ == "__main__":
  cli.run(main)
