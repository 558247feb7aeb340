"""Markdown table of lite0-lite4: params, multiply-adds, final map, next to the published figures.

  python scripts/model_table.py [--verify]   (--verify also builds each module and counts)
"""

from absl import flags

from effnetlite import config as config_lib
from effnetlite.nn import architecture, costs
from effnetlite.utils import cli

_VERIFY = flags.DEFINE_bool("verify", False, "Also build each module and count its parameters.")

# TF/TPU lite README: params and "MAdds" (which also count element-wise ops).
PUBLISHED = {"lite0": (4.65, 407), "lite1": (5.42, 631), "lite2": (6.09, 899),
             "lite3": (8.20, 1440), "lite4": (13.01, 2640)}


def built_params(name: str) -> int:
  import jax

  from effnetlite.weights import factory
  module = factory.module_from_config(config_lib.variant_config(name))
  shapes = jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0),
                                              jax.numpy.zeros((1, 64, 64, 3))))
  return sum(x.size for x in jax.tree.leaves(shapes["params"]))


def table(verify: bool = False) -> str:
  lines = ["| variant | width | depth | res | params | conv+dense MACs | final map | "
           "published params | published MAdds |" + (" built params |" if verify else ""),
           "|---|---|---|---|---|---|---|---|---|" + ("---|" if verify else "")]
  for name, (width, depth, resolution, _) in config_lib.VARIANTS.items():
    side = architecture.final_feature_size(resolution)
    row = (f"| {name} | {width} | {depth} | {resolution} | "
           f"{costs.count_params(width, depth):,} | "
           f"{costs.count_macs(width, depth, resolution) / 1e6:.2f}M | {side}x{side}x1280 | "
           f"{PUBLISHED[name][0]}M | {PUBLISHED[name][1]}M |")
    lines.append(row + (f" {built_params(name):,} |" if verify else ""))
  return "\n".join(lines)


def main(argv):
  cli.no_positional_arguments(argv)
  print(table(_VERIFY.value))


if __name__ == "__main__":
  cli.run(main)
