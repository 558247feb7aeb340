"""Evaluation: exact metrics of Flax variables or a .tflite file on a split, eval.py's
orchestration, and predict's top-k."""
