"""Compares finished runs: one table and a plot of accuracy against multiply-adds.

  python scripts/compare.py RUN [RUN ...] [--plot=compare.png]

A run is a train.py --workdir. Runs that differ only in their seed are averaged
(mean ± std, error bars); runs evaluated on different splits are refused. The
int8 top-1 and latency columns show what eval.py and export.py wrote into a run.
"""

from effnetlite.errors import UserError
from effnetlite.utils import cli, files
from effnetlite.validation import absolute_path

_PLOT = cli.DEFINE_path("plot", "compare.png", "Where the PNG of top-1 against MACs goes.")


def main(argv):
  if len(argv) < 2:
    raise UserError("pass one or more run directories: python scripts/compare.py RUN [RUN ...]")
  from effnetlite.evaluation import compare
  files.check_writable(_PLOT.value, "--plot")
  paths = list(dict.fromkeys(absolute_path(path) for path in argv[1:]))  # each run once
  summaries = [compare.summarise(path) for path in paths]
  compare.check_same_split(summaries)
  print(compare.table(summaries))
  files.write_atomically(_PLOT.value, compare.plot(summaries))
  print(f"plot: {_PLOT.value}")


if __name__ == "__main__":
  cli.run(main)
