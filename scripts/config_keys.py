"""Every config key with its value in a config, its type, allowed values and meaning.

  python scripts/config_keys.py [--config=configs/demo.py] [--config.KEY=VALUE ...]

Any key is set on any command with --config.KEY=VALUE; a run's config.json (or the
run directory) is a config too.
"""

from effnetlite.utils import cli
from effnetlite.validation import describe_keys

_CONFIG = cli.DEFINE_config_file("config", "configs/lite0.py")


def main(argv):
  cli.no_positional_arguments(argv)
  rows = [(key, repr(value), kind, allowed or "-", meaning)
          for key, value, kind, allowed, meaning in describe_keys(_CONFIG.value)]
  widths = [max(len(row[i]) for row in rows) for i in range(3)]
  for key, value, kind, allowed, meaning in rows:
    print(f"{key:<{widths[0]}}  {value:<{widths[1]}}  {kind:<{widths[2]}}  {meaning}; "
          f"{allowed}")


if __name__ == "__main__":
  cli.run(main)
