"""The training step compiled for TPUs and H100s on this machine, without the hardware.

  python benchmarks/accelerators.py [--target=h100x8] [--variant=lite0] [--dtype=bfloat16]
      [--per_chip_batch=128] [--cuda=cuda12|cuda13] [--max_batch] [--table]
      [--output=results.json]

For each target and variant: compile time, per-chip peak memory (arguments + outputs
not aliased to the donated state + temporaries), MiB of temporaries per image, and with
--max_batch the largest per-chip batch that fits the chip (effnetlite.train.aot).
--table prints the README's Backends table: every variant in bfloat16 on v5e, v6e and
H100, the largest per-chip batch, and the chips the recipe's global batch 4096 needs.
Needs `make toolchains` (each compiler in its own directory; no system CUDA is used).
"""

from __future__ import annotations

import dataclasses
import json
import math

from absl import flags

from effnetlite import config as config_lib
from effnetlite.train import aot
from effnetlite.utils import cli, toolchains
from effnetlite.utils.files import write_atomically

_TARGETS = flags.DEFINE_list("target", ["h100x8"], f"Targets: {', '.join(aot.TARGETS)}.")
_VARIANTS = flags.DEFINE_list("variant", ["lite0"], "Variants (lite0 ... lite4).")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", list(config_lib.DTYPES), "Compute dtype.")
_BATCH = flags.DEFINE_integer("per_chip_batch", 128, "Images per chip.", lower_bound=1)
_CUDA = flags.DEFINE_enum("cuda", "cuda12", list(aot.CUDA_TOOLCHAINS),
                          "Toolchain for GPU targets (jax[cuda12] or jax[cuda13]'s).")
_MAX_BATCH = flags.DEFINE_bool("max_batch", False, "Also search the largest per-chip batch.")
_TABLE = flags.DEFINE_bool("table", False, "The README's table: lite0-lite4 (or the --variant "
                           "given), bfloat16, largest batches on v5e:2x2, v6e:2x2 and h100x8 "
                           "(or the --target given); slow: three compiles per cell.")
_OUTPUT = flags.DEFINE_string("output", None, "Also write the results as JSON here.")

TABLE_TARGETS = ("v5e:2x2", "v6e:2x2", "h100x8")
RECIPE_GLOBAL_BATCH = 4096


def _config(variant: str, dtype: str):
  config = config_lib.variant_config(variant)
  config.model.dtype = dtype
  return config


def _line(variant: str, dtype: str, memory: aot.StepMemory) -> str:
  mib = lambda n: f"{n / aot.MiB:,.0f} MiB"  # noqa: E731
  return (f"{variant} {dtype} on {memory.target} ({memory.toolchain}), "
          f"{memory.per_chip_batch}/chip: compiled in {memory.compile_seconds:.0f} s, "
          f"peak {mib(memory.peak_bytes)} per chip (arguments {mib(memory.argument_bytes)}, "
          f"temporaries {mib(memory.temp_bytes)}), "
          f"{memory.temp_mib_per_image:.1f} MiB/image of temporaries")


def measure_one(variant: str, target: aot.Target, dtype: str, batch: int | None,
                search: bool) -> dict:
  """One compile at `batch` images per chip (None: none), then the search if asked."""
  config = _config(variant, dtype)
  toolchain = aot.default_toolchain(target, _CUDA.value)
  memory = None if batch is None else aot.measure_with_toolchain(config, target, batch,
                                                                 toolchain)
  if batch is None:
    row = {"variant": variant, "target": target.name, "dtype": dtype}
  elif memory is None:
    print(f"{variant} {dtype} on {target.name}: {batch}/chip does not fit "
          f"{target.memory_bytes / aot.GiB:.0f} GiB (the compiler refused it)")
    row = {"variant": variant, "target": target.name, "dtype": dtype, "fits": False}
  else:
    fits = "" if memory.fits() else (f" — over the chip's "
                                     f"{target.memory_bytes / aot.GiB:.0f} GiB")
    print(_line(variant, dtype, memory) + fits, flush=True)
    row = {"variant": variant, "dtype": dtype, **dataclasses.asdict(memory),
           "peak_bytes": memory.peak_bytes, "temp_mib_per_image": memory.temp_mib_per_image,
           "fits": memory.fits()}
  if search:
    largest, at_largest = aot.largest_batch(config, target, toolchain)
    row.update(largest_per_chip_batch=largest, peak_bytes_at_largest=at_largest.peak_bytes,
               temp_mib_per_image_at_largest=at_largest.temp_mib_per_image)
    print(f"{variant} {dtype} on {target.name}: largest per-chip batch that fits: {largest} "
          f"(peak {at_largest.peak_bytes / aot.MiB:,.0f} MiB, "
          f"{at_largest.temp_mib_per_image:.1f} MiB/image)", flush=True)
  return row


def table(rows: list[dict], targets: list[str], variants: list[str]) -> str:
  by_cell = {(r["variant"], r["target"]): r for r in rows}
  head = "| variant | resolution |"
  rule = "|---|---|"
  for name in targets:
    head += f" {name} MiB/image | {name} batch/chip | {name} chips for 4096 |"
    rule += "---|---|---|"
  lines = [head, rule]
  for variant in variants:
    line = f"| {variant} | {config_lib.variant_config(variant).model.resolution} |"
    for name in targets:
      r = by_cell[(variant, name)]
      largest = r["largest_per_chip_batch"]
      line += (f" {r['temp_mib_per_image_at_largest']:.1f} | {largest} | "
               f"{math.ceil(RECIPE_GLOBAL_BATCH / largest)} |")
    lines.append(line)
  return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
  cli.no_positional_arguments(argv)
  table_targets = _TARGETS.value if _TARGETS.present else list(TABLE_TARGETS)
  targets = [aot.get_target(name) for name in (table_targets if _TABLE.value else _TARGETS.value)]
  # The table's rows: every variant, or those named (a table is filled in over sessions).
  variants = (list(config_lib.VARIANTS) if _TABLE.value and not _VARIANTS.present
              else _VARIANTS.value)
  for variant in variants:
    config_lib.variant_config(variant)  # an unknown name is one error line, before compiling
  for target in targets:  # a missing compiler is one error line, before compiling
    toolchains.toolchain_dir(aot.default_toolchain(target, _CUDA.value))
  dtype = "bfloat16" if _TABLE.value else _DTYPE.value
  batch = None if _TABLE.value else _BATCH.value  # the table needs only the search
  result = {"rows": []}
  for target in targets:
    for variant in variants:
      result["rows"].append(
          measure_one(variant, target, dtype, batch, _MAX_BATCH.value or _TABLE.value))
      if _OUTPUT.value:  # after every row: a table takes hours on a small machine
        write_atomically(_OUTPUT.value, json.dumps(result, indent=2))
  if _TABLE.value:
    result["table"] = table(result["rows"], [target.name for target in targets], variants)
    print(result["table"])
    if _OUTPUT.value:
      write_atomically(_OUTPUT.value, json.dumps(result, indent=2))


if __name__ == "__main__":
  cli.run(main)
