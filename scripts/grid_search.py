"""Grid-searches alpha/beta/gamma under the FLOPs constraint; restartable, shardable over workers.

  python scripts/grid_search.py --config=configs/search_lite0.py --workdir=DIR \
      [--worker=I --num_workers=N]      # one job-array task per worker, one shared workdir
  python scripts/grid_search.py --config=... --workdir=DIR --report_only
"""

from absl import flags

from effnetlite import cli
from effnetlite.errors import UserError
from effnetlite.validation import validate_config

_CONFIG = cli.DEFINE_config_file("config", required=True,
                                 help_string="Search config file (with a `search` section).")
_WORKDIR = cli.DEFINE_path("workdir", None, "Shared directory for all workers.", required=True)
_WORKER = flags.DEFINE_integer("worker", 0, "This worker's index.", lower_bound=0)
_NUM_WORKERS = flags.DEFINE_integer("num_workers", 1, "How many workers share the grid.",
                                    lower_bound=1)
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rebuild the table and plot.")


def main(argv):
  cli.no_positional_arguments(argv)
  config = validate_config(_CONFIG.value, search=True)
  from effnetlite import search  # plain Python; training (JAX/TF) loads per candidate
  grid = search.candidates(config)
  share = search.my_candidates(grid, _WORKER.value, _NUM_WORKERS.value)
  print(f"{len(grid)} candidates within tolerance; worker {_WORKER.value} of "
        f"{_NUM_WORKERS.value} takes {len(share)}: {', '.join(c.key for c in share)}")
  if not _REPORT_ONLY.value:
    search.run_search(config, _WORKDIR.value, _WORKER.value, _NUM_WORKERS.value)
  elif not search.read_results(_WORKDIR.value):
    raise UserError(f"--workdir={_WORKDIR.value} holds no search results yet; run the search "
                    "without --report_only first")
  markdown, best = search.write_report(_WORKDIR.value)
  print(markdown)
  if best:
    print(f"table: {_WORKDIR.value}/results.md, plot: {_WORKDIR.value}/pareto.png")


if __name__ == "__main__":
  cli.run(main)
