"""Export: TFLite/SavedModel conversion, calibration, the self-check against JAX, and the
LiteRT runtime. Knows nothing of training."""
