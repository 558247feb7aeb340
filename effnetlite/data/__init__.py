"""Input data: sources (tfds, image folders, bundled digits) and the batching pipeline."""
