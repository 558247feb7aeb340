"""The one place that makes jax2tf's StableHLO readable by the pinned TFLite converter.

jax 0.10.2 serialises the StableHLO of `jax2tf.convert` (native serialisation) for
StableHLO 1.15.0, a version hard-coded in the private
`jax._src.export._export._module_to_bytecode` (no flag or config reaches it). TF 2.21's
converter reads up to 1.13.7; for the ops of a float model the two encodings agree, but
`jax.lax.composite` is written as `vhlo.composite_v2` from 1.14 on, which TF 2.21 rejects
("unregistered operation 'vhlo.composite_v2'"). Serialising those modules for 1.13.7
writes the composite as TF 2.21 knows it.

`serialized_for_converter()` swaps that function for the duration of a `with` block and
puts it back afterwards; only QAT exports (the composite route) use it, so float and
post-training exports are untouched. `tests/quant/test_stablehlo.py` checks the version
written with and without it, that the private function still exists (a jax upgrade that
renames it fails there, not in an export), and that a composite converts.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

# The newest StableHLO version tensorflow-cpu==2.21.0's TFLite converter deserialises.
CONVERTER_STABLEHLO_VERSION = "1.13.7"


def _serializer(target_version: str):
  from jax._src import xla_bridge
  from jax._src.lib import _jax

  def module_to_bytecode(module) -> bytes:
    return _jax.mlir.serialize_portable_artifact(
        module, target_version, xla_bridge.get_backend().serialize_with_sdy)
  return module_to_bytecode


@contextlib.contextmanager
def serialized_for_converter(target_version: str = CONVERTER_STABLEHLO_VERSION
                             ) -> Iterator[None]:
  """Within the block, jax.export / jax2tf serialise StableHLO for `target_version`."""
  from jax._src.export import _export
  original = getattr(_export, "_module_to_bytecode", None)
  if original is None:
    raise RuntimeError("jax._src.export._export._module_to_bytecode is gone (a jax upgrade): "
                       "update effnetlite/export/stablehlo.py for the new serialisation hook")
  _export._module_to_bytecode = _serializer(target_version)
  try:
    yield
  finally:
    _export._module_to_bytecode = original


def serialized_version(exported) -> str:
  """The StableHLO version a `jax.export.Exported` was written for (from its bytecode)."""
  data = exported.mlir_module_serialized
  marker = b"StableHLO_v"
  start = data.find(marker)
  if start < 0:
    raise ValueError("not a StableHLO portable artifact")
  end = start + len(marker)
  while end < len(data) and (data[end:end + 1].isdigit() or data[end:end + 1] == b"."):
    end += 1
  return data[start + len(marker):end].decode()
