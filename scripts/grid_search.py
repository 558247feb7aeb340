"""Grid-searches alpha/beta/gamma under the FLOPs constraint; restartable, shardable over workers.

  python scripts/grid_search.py --config=configs/search_lite0.py --workdir=DIR \
      [--worker=I --num_workers=N]      # one job-array task per worker, one shared workdir
  python scripts/grid_search.py --config=... --workdir=DIR --report_only
"""

import effnetlite  # noqa: F401  (first: quiets TensorFlow before anything imports it)
from absl import app, flags
from ml_collections import config_flags

from effnetlite import search
from effnetlite.errors import UserError, exit_with, parse_flags_or_exit, quiet_library_logs

_CONFIG = config_flags.DEFINE_config_file("config", None, "Search config file.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Shared directory for all workers.")
_WORKER = flags.DEFINE_integer("worker", 0, "This worker's index.")
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 1, "How many workers share the grid.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rebuild the table and plot.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  quiet_library_logs()
  try:
    config = _CONFIG.value
    grid = search.candidates(config)
    share = search.my_candidates(grid, _WORKER.value, _NUM_WORKERS.value)
    print(f"{len(grid)} candidates within tolerance; worker {_WORKER.value} of "
          f"{_NUM_WORKERS.value} takes {len(share)}: {', '.join(c.key for c in share)}")
    if not _REPORT_ONLY.value:
      search.run_search(config, _WORKDIR.value, _WORKER.value, _NUM_WORKERS.value)
    markdown, best = search.write_report(_WORKDIR.value)
  except UserError as error:
    exit_with(error)
  print(markdown)
  if best:
    print(f"table: {_WORKDIR.value}/results.md, plot: {_WORKDIR.value}/pareto.png")


if __name__ == "__main__":
  app.run(main, flags_parser=parse_flags_or_exit)
