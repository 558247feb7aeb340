"""The model: the architecture table, the compound-scaling rule, exact costs, layers and
kernels, and the Flax `EfficientNetLite`. Knows nothing of optimisers, data or files."""
