"""Quantisation-aware training: the int8 network a QAT run trains (its export is
`effnetlite.export.qat`).

- `fake_quant`: TFLite's int8 rules, straight-through fake quantisation, the
  `quant.fake_quant` composite the converter reads (strict QDQ);
- `integer`: XNNPACK's int8 arithmetic (requantisation, fixed-point ADD, average pool);
- `model`: `QuantizedEfficientNetLite`, the int8 twin reading EfficientNetLite's variables
  (BN folded with frozen statistics, per-channel weights, moving-average activation
  ranges in `batch_stats["quant_ranges"]`), `qat_module`, `with_ranges`,
  `without_ranges`, `observe_ranges`, `export_parameters`.
"""


def qat_enabled(config) -> bool:
  """Whether a config (or a run's saved config, perhaps older than the key) asks for QAT."""
  section = config.get("quantization") if hasattr(config, "get") else None
  return bool(section and section.get("qat", False))
