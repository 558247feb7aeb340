"""Training: `train_and_evaluate`, the train step and its state, the TF/TPU optimiser, EMA
and the metrics it writes."""
