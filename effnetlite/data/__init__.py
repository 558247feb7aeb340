"""Input data: sources (tfds, image folders, bundled digits), the batching pipeline, TF-faithful
preprocessing and augmentation, image files and labels."""
